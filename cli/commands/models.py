"""`riskops models list|show|promote` and `riskops serve`: the registry and the model server."""

from __future__ import annotations

import argparse
import json
import sys

from rich.table import Table

from cli.console import console
from riskops.registry.store import CHAMPION, ModelRegistry
from riskops.settings import paths


def cmd_models_list(args: argparse.Namespace) -> int:
    """A table of the registered versions with their metrics and aliases."""
    registry = ModelRegistry(paths().registry)
    versions = registry.list_versions()
    if not versions:
        console().print(f"no models in {registry.root}; train one with `riskops pipeline run`")
        return 0
    by_version: dict[str, list[str]] = {}
    for alias, version in registry.aliases().items():
        by_version.setdefault(version, []).append(alias)
    table = Table(title=f"{registry.name} in {registry.root}")
    for col in ("version", "aliases", "created", "ROC-AUC", "PR-AUC", "git"):
        table.add_column(col)
    for mv in versions:
        table.add_row(
            mv.version,
            ", ".join(sorted(by_version.get(mv.version, []))),
            mv.created_at,
            f"{mv.metrics.get('roc_auc', float('nan')):.4f}",
            f"{mv.metrics.get('pr_auc', float('nan')):.4f}",
            str(mv.tags.get("git_commit", "")),
        )
    console().print(table)
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:
    """Point the champion alias at a version (a serving server follows it)."""
    registry = ModelRegistry(paths().registry)
    previous = registry.champion()
    registry.set_alias(CHAMPION, args.version)
    console().print(f"{args.version} is now the champion (was {previous.version if previous else 'none'})")
    return 0


def cmd_models_show(args: argparse.Namespace) -> int:
    """Print a version's model card (its metrics when it has none)."""
    mv = ModelRegistry(paths().registry).resolve(args.version)
    card = mv.path / "MODEL_CARD.md"
    console().print(card.read_text() if card.exists() else json.dumps(mv.metrics, indent=2))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Start KServe's ModelServer on the champion (serving/server.py); returns when it stops."""
    # kserve.model_server parses sys.argv when imported; keep `riskops serve --grpc ...` away from it
    sys.argv = sys.argv[:1]
    from serving.server import main as serve_main

    argv = ["--port", str(args.port), "--host", args.host]
    if args.model_version:
        argv += ["--model-version", args.model_version]
    if args.config:
        argv += ["--config", args.config]
    if args.grpc:
        argv += ["--grpc"]
    for item in args.set:
        argv += ["--set", item]
    serve_main(argv)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `models list|show|promote` and `serve` to the `riskops` parser."""
    pm = sub.add_parser("models", help="inspect and promote registered models",
                        description="The local model registry: versions, metrics, aliases.")
    msub = pm.add_subparsers(dest="models_command", required=True, metavar="SUBCOMMAND")
    p = msub.add_parser("list", help="list versions with metrics and aliases")
    p.set_defaults(func=cmd_models_list)
    p = msub.add_parser("show", help="print a version's model card")
    p.add_argument("version", nargs="?", default="champion", help="vNNNN or an alias (default champion)")
    p.set_defaults(func=cmd_models_show)
    p = msub.add_parser("promote", help="make a version the champion")
    p.add_argument("version", help="vNNNN")
    p.set_defaults(func=cmd_models_promote)

    p = sub.add_parser("serve", help="serve the champion with KServe (REST v1, v2, explain, metrics)",
                       description="Start KServe's ModelServer with the risk model: request validation, PII hashing, "
                       "Feast online lookup, the fine-tuned model, the decision policy, reasons, prediction log. "
                       "Stops cleanly on Ctrl-C/SIGTERM. See docs/serving.md for curl examples.")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (default %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="bind address; 0.0.0.0 in a container (default %(default)s)")
    p.add_argument("--model-version", help="vNNNN (pinned), an alias (followed and hot-swapped), or a model folder;"
                   " default: the champion")
    p.add_argument("--config", help="serving.yaml (default $RISKOPS_HOME/serving.yaml if present)")
    p.add_argument("--grpc", action="store_true", help="also serve the v2 gRPC protocol on port+1")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a serving setting, e.g. --set fail_mode=block")
    p.set_defaults(func=cmd_serve)
