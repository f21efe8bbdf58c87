"""`riskops ui`: Evidently's own UI over the monitor's Evidently workspace (the drift history).

Every monitor pass adds one run to the workspace (`riskops.monitoring.workspace`); this serves
Evidently's UI app over that folder, what `evidently ui --workspace DIR --port P` runs, in this
process: no telemetry (the UI's telemetry component is switched off and DO_NOT_TRACK is set), no
network (the UI's web assets ship in the evidently wheel). New passes show up while it runs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cli.console import console
from riskops.settings import paths


def _workspace_dir(args: argparse.Namespace) -> Path | None:
    """--workspace, else the monitor config's reports.workspace under the home (None: it is off)."""
    if args.workspace:
        return Path(args.workspace).resolve()
    from riskops.lifecycle.loop import load_loop_config
    from riskops.monitoring.monitor import workspace_path

    return workspace_path(paths(), load_loop_config(args.config).reports)


def cmd_ui(args: argparse.Namespace) -> int:
    """Serve Evidently's UI over the workspace until Ctrl-C; 2 when there is no workspace to serve."""
    term = console()
    try:
        folder = _workspace_dir(args)
    except (OSError, ValueError) as exc:
        term.print(f"[red]monitor config:[/red] {exc}")
        return 2
    if folder is None:
        term.print(
            '[red]the Evidently workspace is off[/red] (reports.workspace is "" in the monitor config): '
            "set it, or give --workspace DIR"
        )
        return 2
    from riskops.monitoring.workspace import DriftWorkspace

    project = DriftWorkspace(folder).project() if args.create else DriftWorkspace(folder).find_project()
    if project is None:
        term.print(
            f"[red]no monitor runs in {folder}[/red]: run `riskops monitor --once` (or "
            "`riskops drift-demo`) first, or point --workspace at the folder reports.workspace names "
            "(--create serves an empty project until the first pass)",
            soft_wrap=True,
        )
        return 2
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from evidently.ui.service.app import get_config, run

    config = get_config(host=args.host, port=args.port, workspace=str(folder))
    config.telemetry.enabled = False
    url = f"http://{args.host}:{args.port}"
    term.print(f"Evidently UI over {folder}", soft_wrap=True)
    term.print(f"project '{project.name}': {url}/projects/{project.id}", soft_wrap=True)
    term.print(f"serving on {url} (Ctrl-C stops)", soft_wrap=True)
    run(config)  # uvicorn; returns on Ctrl-C / SIGTERM
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ui` to the `riskops` parser."""
    p = sub.add_parser(
        "ui",
        help="Evidently's UI over the monitor's drift history (one run per monitor pass)",
        description="Serve Evidently's own UI over the Evidently workspace the monitor fills "
        "(reports.workspace of the monitor config, default $RISKOPS_HOME/evidently): the project "
        "'riskops drift monitor (risk-model)' with its dashboard (drifted inputs, score drift, decision "
        "mix, performance per pass) and every pass's report. Offline, no telemetry.",
        epilog="examples:\n  riskops monitor --once && riskops ui\n"
        "  riskops ui --port 8001 --workspace /mnt/evidently",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument(
        "--workspace",
        default=None,
        help="workspace folder (default: reports.workspace of the monitor config under $RISKOPS_HOME)",
    )
    p.add_argument(
        "--create",
        action="store_true",
        help="create the project and its dashboard if no pass has yet, and serve it (what the "
        "cluster's riskops-ui Deployment does: it may start before the monitor's first pass)",
    )
    p.add_argument(
        "--config",
        default=os.environ.get("RISKOPS_MONITOR_CONFIG") or None,
        help="monitor config YAML for the default workspace (default: $RISKOPS_MONITOR_CONFIG, "
        "else configs/monitor.yaml)",
    )
    p.set_defaults(func=cmd_ui)
