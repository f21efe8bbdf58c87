"""`riskops demo`: the whole loop on synthetic data, narrated (what `make demo` runs)."""

from __future__ import annotations

import argparse
import time

from riskops.config import paths


def run_demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.rule import Rule

    from pipelines.runner import PipelineFailed, run_local
    from riskops.cli import _pipeline_params, _print_failure, _print_run_summary

    console = Console(highlight=False)
    started = time.perf_counter()
    home = paths()
    console.print(Rule("riskops demo"))
    console.print(f"state folder: {home.root}  (rm -rf it to start over)")
    console.print(
        "1/1 training pipeline on kfp.local: synthetic transactions -> Great Expectations gate -> "
        "Feast features -> fine-tune MiniLM risk model -> evaluate vs baselines -> register"
    )
    params = _pipeline_params(args)
    if params["promotion"] == "if-none":
        params["promotion"] = "always"  # the demo serves what it just trained
    try:
        run = run_local(home, **params)
    except PipelineFailed as exc:
        _print_failure(exc)
        return 1
    _print_run_summary(run)
    console.print(Rule(f"demo finished in {time.perf_counter() - started:.0f}s"))
    return 0
