"""`riskops up`: the cluster's topology on this machine, as processes started from the rendered manifests."""

from __future__ import annotations

import argparse
import time

from cli.console import console
from riskops.settings import paths


def schedule_seconds(schedule: str | None, default: float = 600.0) -> float:
    """Seconds between runs of a ``*/N * * * *`` CronJob schedule (other schedules: `default`)."""
    if schedule:
        minute = schedule.split()[0]
        if minute.startswith("*/") and minute[2:].isdigit():
            return 60.0 * int(minute[2:])
    return default


def cmd_up(args: argparse.Namespace) -> int:
    from rich.table import Table

    from cli.topology.processes import ClusterTopology
    from riskops.registry.store import RegistryError

    term = console()
    home = paths()
    topology = ClusterTopology(
        home, overlay=args.overlay, transformers=args.replicas, observability=not args.no_prometheus
    )
    term.print(f"starting k8s/overlays/{args.overlay} as processes over {home.root} ...")
    try:
        topology.start()
    except RegistryError as exc:
        term.print(f"[red]{exc}[/red]: build a model first (`riskops pipeline run` or `make demo`)")
        return 2
    except (RuntimeError, FileNotFoundError, KeyError) as exc:
        topology.stop()
        term.print(f"[red]could not start the topology: {exc}[/red]")
        return 1
    table = Table(title="riskops up", show_lines=False)
    for column in ("process", "pid", "address", "log"):
        table.add_column(column)
    for p in topology.processes:
        address = p.url or (f"redis://127.0.0.1:{topology.redis_port}" if p.name == "redis" else "")
        table.add_row(p.name, str(p.proc.pid), address, str(p.log))
    term.print(table)
    _, env = topology.monitor_job()
    every = args.monitor_every or schedule_seconds(topology.monitor_schedule())
    term.print(
        f"prediction log shipped to {env.get('RISKOPS_PREDICTION_LOG_URI')}; the monitor runs every {every:g}s.\n"
        f"Send transactions to any transformer: POST <address>/v1/models/risk-model:predict. Ctrl-C stops."
    )
    if topology.prometheus_url:
        term.print(
            f"Prometheus evaluates the alert rules at {topology.prometheus_url} (alerts page: /alerts, or "
            "/classic/alerts with Debian's package); the monitor pushes its "
            f"verdicts to {topology.pushgateway_url}. Grafana: import k8s/base/monitoring/riskops-dashboard.json "
            f"with this Prometheus as its data source. Drift history (Evidently's UI): {topology.ui_url} "
            "(docs/operations.md)."
        )
    try:
        next_run = time.monotonic() + every
        while all(p.proc.poll() is None for p in topology.processes):
            if time.monotonic() >= next_run:
                done = topology.run_monitor()
                term.print(f"monitor pass: exit {done.returncode}")
                next_run = time.monotonic() + every
            time.sleep(1.0)
        dead = [p for p in topology.processes if p.proc.poll() is not None]
        term.print(f"[red]{', '.join(p.name for p in dead)} exited; see {dead[0].log}[/red]")
        return 1
    except KeyboardInterrupt:
        term.print("stopping ...")
        return 0
    finally:
        topology.stop()


def register(sub: argparse._SubParsersAction) -> None:
    """Add `up` to the `riskops` parser."""
    p = sub.add_parser(
        "up",
        help="run the cluster's topology here: Redis, the predictor, transformer replicas, the monitor",
        description="Start what k8s/overlays/OVERLAY deploys, as local processes whose commands and "
        "environment are read from the rendered manifests (`kubectl kustomize`): Redis, the "
        "InferenceService's predictor and transformer replicas sharing entity state in it, and the "
        "monitor CronJob on its schedule, reading the prediction log the transformers ship; beside them "
        "Prometheus (the overlay's PodMonitor, ServiceMonitor and PrometheusRule), the Pushgateway the "
        "monitor pushes its verdicts to, and riskops-ui (Evidently's UI over the drift history). Needs a "
        "built home ($RISKOPS_HOME with a Feast repo and a champion) and redis-server, prometheus and "
        "prometheus-pushgateway on the PATH (`make up` installs them).",
    )
    p.add_argument("--overlay", default="dev", help="k8s overlay to run (default %(default)s)")
    p.add_argument("--replicas", type=int, default=2, help="transformer replicas (default %(default)s)")
    p.add_argument("--no-prometheus", action="store_true",
                   help="do not start Prometheus, the Pushgateway and riskops-ui (by default they run "
                   "beside the servers: the overlay's alert rules, every server scraped, the drift history)")  # fmt: skip
    p.add_argument("--monitor-every", type=float, default=None,
                   help="seconds between monitor passes (default: the CronJob's schedule)")  # fmt: skip
    p.set_defaults(func=cmd_up)
