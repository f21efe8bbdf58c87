"""`riskops` command line: the platform's front door for data, pipeline, models, serving and the loop.

This module builds the parser and dispatches; each command group lives in `cli/commands/`
(`register` adds its subcommands, `cmd_*` runs them). Heavy libraries (torch, feast, GX, kfp)
are imported inside the commands that need them, so `riskops --help` answers instantly.
`python -m cli.main` is the same command (the retraining trigger starts pipeline runs that way).
"""

from __future__ import annotations

import argparse
import sys

from cli.commands import data, demos, feedback, models, monitor, pipeline, retrain, ui, up
from riskops import __version__
from riskops.settings import paths, use_offline_environment

# every command runs offline and quiet: no model hub, no telemetry (settings a user may override)
use_offline_environment()

# in the order `riskops --help` lists them: the steps, the pipeline, models and serving, the cluster's
# topology here, the loop and its drift history (Evidently's UI), the demos
COMMAND_GROUPS = (data, pipeline, models, up, monitor, feedback, retrain, ui, demos)


def build_parser() -> argparse.ArgumentParser:
    """The `riskops` parser with every command group's subcommands."""
    parser = argparse.ArgumentParser(
        prog="riskops",
        description="Real-time e-commerce fraud/risk scoring that keeps itself accurate. "
        f"State lives under $RISKOPS_HOME (now: {paths().root}).",
    )
    parser.add_argument("--version", action="version", version=f"riskops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: the command line) and run the chosen command; returns its exit code."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
