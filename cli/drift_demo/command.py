"""`riskops drift-demo`: build the world, train the first champion, run the loop, print the figures."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from rich.rule import Rule

from cli.console import narration_console
from cli.drift_demo.events import Events
from cli.drift_demo.loop import run_loop
from cli.drift_demo.report import fmt_metric, print_figures
from cli.drift_demo.world import DEMO_DIR, LoopOptions, Timeline, build_timeline, options_from_args
from riskops.data.generator import write_transactions
from riskops.registry.store import ModelRegistry
from riskops.settings import PROJECT_ROOT, Paths, paths


def train_champion(home: Paths, timeline: Timeline, opts: LoopOptions) -> dict:
    """The first champion: `riskops pipeline run` (the real pipeline on kfp.local) on the timeline's
    training part, promotion always; its output goes to ``<home>/drift-demo/train-champion.log``."""
    d = home.root / DEMO_DIR
    f = write_transactions(timeline.train, d / "history.parquet")
    cmd = [
        sys.executable,
        "-m",
        "cli.main",
        "pipeline",
        "run",
        "--input",
        str(f),
        "--promotion",
        "always",
        *opts.pipeline_args(),
    ]
    env = {**os.environ, "RISKOPS_HOME": str(home.root)}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PROJECT_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    )
    started = time.monotonic()
    with open(d / "train-champion.log", "w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(PROJECT_ROOT))  # noqa: S603
    champion = ModelRegistry(home.registry).champion()
    if rc != 0 or champion is None:
        raise RuntimeError(f"training the first champion failed (exit {rc}); see {d / 'train-champion.log'}")
    return {
        "seconds": time.monotonic() - started,
        "version": champion.version,
        "log": str(d / "train-champion.log"),
        "pr_auc": champion.metrics.get("pr_auc"),
    }


def run_drift_demo(args: Any) -> int:
    """`riskops drift-demo`: build the world, train the first champion, run the loop, report."""
    console = narration_console()
    home = paths()
    opts = options_from_args(args)
    console.print(Rule(f"riskops drift-demo: {opts.scenario}"))
    console.print(f"state folder: {home.root}")
    ev = Events(console)
    timeline = build_timeline(opts)
    ev.add(
        "world",
        f"simulated world: {len(timeline.train)} training + {len(timeline.normal)} normal + "
        f"{len(timeline.drift)} '{opts.scenario}' transactions (seed {opts.seed}); onset {timeline.onset}",
        0,
    )
    if not getattr(args, "reuse_champion", False) or ModelRegistry(home.registry).champion() is None:
        ev.add(
            "train",
            f"training the first champion: the real pipeline on the {len(timeline.train)} training rows "
            f"(encoder {opts.encoder}, {opts.epochs} epochs)...",
            0,
        )
        reg = train_champion(home, timeline, opts)
        ev.add(
            "champion",
            f"champion {reg['version']} registered in {reg['seconds']:.0f}s (test PR-AUC "
            f"{fmt_metric(reg.get('pr_auc'))}; reference.parquet captured for the monitor; log {reg['log']})",
            0,
        )
    result = run_loop(home, timeline, opts, console, events=ev)
    print_figures(console, result)
    console.print(f"timeline: {result.timeline_file}")
    verdict = "[green]loop closed[/green]" if result.closed else "[red]loop NOT closed[/red]"
    if result.settled is not None:  # after a promotion: (a) the learned shift quiet, (b) a new one caught
        verdict += ", [green]and settled[/green]" if result.settled else ", [red]but NOT settled[/red]"
    console.print(Rule(f"{verdict}: {result.outcome}"))
    return 0 if result.closed and result.settled is not False else 1
