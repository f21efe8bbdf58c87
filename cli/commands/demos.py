"""`riskops drift-demo` and `riskops demo`: the closed loop, live (the code lives in cli/drift_demo/ and cli/demo.py)."""

from __future__ import annotations

import argparse
import os
import signal

from cli.arguments import DRIFT_SCENARIOS, add_pipeline_args
from riskops.training.params import TRAINING


def exit_on_sigterm() -> None:
    """SIGTERM -> SystemExit(143) in the main thread, so that `finally` blocks run (the demos stop
    the model server they started; without this a `kill` left it running, orphaned)."""

    def _exit(_signum, _frame) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, _exit)


def cmd_drift_demo(args: argparse.Namespace) -> int:
    """Train a champion, serve it, drift, detect, retrain, gate: see cli/drift_demo/."""
    from cli.drift_demo import run_drift_demo  # numpy, pandas, httpx: not for `riskops --help`

    exit_on_sigterm()
    return run_drift_demo(args)


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole loop, narrated (what `make demo` runs): see cli/demo.py."""
    from cli.demo import run_demo  # the drift demo's imports: not for `riskops --help`

    exit_on_sigterm()
    return run_demo(args)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `drift-demo` and `demo` to the `riskops` parser."""
    p = sub.add_parser(
        "drift-demo", help="the closed loop live: serve, drift, detect, retrain, gate, new champion",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a champion with the real pipeline (small, tiny encoder), serve it with KServe, replay "
        "normal generated traffic over HTTP, switch to a drift scenario with delayed feedback labels, run a "
        "monitor pass every N transactions; on drift the retraining pipeline starts as a local subprocess, the "
        "promotion gate compares the new model with the champion on labelled post-drift traffic, and the server "
        "hot-swaps the new champion (or keeps the old one and says why). Prints a timeline and the figures; "
        "writes the timeline JSON to $RISKOPS_HOME/reports/drift-demo/.",
        epilog="scenarios (riskops/data/generator/): fraud_ring (a new ring: hosting IPs, shared devices, new\n"
        "accounts), promotion_season (2.5x volume, many legitimate newcomers), price_shift (prices x1.3-1.5),\n"
        "new_payment_method (bnpl / crypto, favoured by fraud).\n"
        "After a promotion the reference is re-baselined on the new champion's traffic; the learned shift must\n"
        "stay quiet and a second, different shift must be caught (--second-scenario none: end at the decision).\n"
        "--topology cluster: the same loop through what k8s/ deploys, as processes (`riskops up`).\n"
        "Exit code: 0 when the loop closed (a gate decision was taken and serving reflects it, on every replica)\n"
        "and, after a promotion, settled; 1 otherwise.",
    )
    p.add_argument("--scenario", default="fraud_ring",
                   choices=DRIFT_SCENARIOS,
                   help="the drift after the onset (default %(default)s)")
    p.add_argument("--seed", type=int, default=7, help="the simulated world (default %(default)s)")
    p.add_argument("--train-rows", type=int, default=20_000, help="transactions the first champion trains on")
    p.add_argument("--normal-rows", type=int, default=1_500, help="normal transactions replayed before the onset")
    p.add_argument("--drift-rows", type=int, default=6_000, help="drifted transactions generated (replayed as needed)")
    p.add_argument("--monitor-every", type=int, default=250, help="a monitor pass every N transactions")
    p.add_argument("--window", type=int, default=1500, help="the monitor's window (transactions)")
    p.add_argument("--label-delay", type=int, default=300, help="a label arrives N transactions after its transaction")
    p.add_argument("--batch", type=int, default=1, help="transactions per predict request (default one at a time)")
    p.add_argument("--retrain-rate", type=float, default=20.0,
                   help="replay rate (tx/s) while the retraining runs, to leave it the CPU (0 = no limit)")
    p.add_argument("--encoder", choices=("minilm", "tiny"), default="tiny", help="text encoder (default tiny: fast)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs, first champion and retraining")
    p.add_argument("--max-train-rows", type=int, default=12_000,
                   help="train on every fraud plus at most N legit rows, first champion and retraining (default %(default)s)")
    p.add_argument("--val-fraction", type=float, default=0.05,
                   help="retraining: validation share (small: the drifted rows are the newest, and the gate decides)")
    p.add_argument("--test-fraction", type=float, default=0.05, help="retraining: test share")
    p.add_argument("--timeout", dest="timeout_s", type=float, default=900.0, help="onset -> loop closed, at most (s)")
    p.add_argument("--canary", action="store_true",
                   help="after the gate, let the server's online canary (50%% share) decide the promotion")
    p.add_argument("--feedback", choices=("auto", "api", "file"), default="auto",
                   help="label delivery: POST /v1/feedback, dropped files (riskops feedback), or auto")
    p.add_argument("--config", help="base monitor config (default configs/monitor.yaml)")
    p.add_argument("--monitor-all-inputs", action="store_true",
                   help="also compare the windowed counters a freshly started server over-counts (see SERVING_SKEWED_INPUTS"
                   " in cli/drift_demo/monitoring.py); expect a drift verdict ~1,000 transactions after the start")
    p.add_argument("--reuse-champion", action="store_true",
                   help="keep the current champion instead of training one (it must come from the same world)")
    p.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    p.add_argument("--topology", choices=("process", "cluster"), default="process",
                   help="process: one combined server (default); cluster: what k8s/ deploys, as processes "
                   "(Redis, the predictor, transformer replicas; the monitor reads the shipped log; needs redis-server)")
    p.add_argument("--replicas", type=int, default=2, help="transformer replicas with --topology cluster")
    p.add_argument("--second-scenario", default="auto",
                   help="after a promotion, a second, different shift the loop must catch: auto | none | a scenario")
    p.add_argument("--settle-rows", type=int, default=1_500,
                   help="learned-shift rows replayed against the re-baselined reference before the second shift")
    p.add_argument("--second-rows", type=int, default=3_000, help="second-shift rows generated")
    p.add_argument("--quiet", action="store_true", help="do not print monitor passes without news")
    p.set_defaults(func=cmd_drift_demo)

    p = sub.add_parser("demo", help="run the whole loop end to end (what `make demo` runs)",
                       description="Train through the real pipeline and print metrics, model version and reports; serve the "
                       "champion and score new orders; then close the loop (unless --skip-loop): normal traffic, a drift "
                       "scenario with delayed feedback, monitor -> retraining -> promotion gate -> new champion. Exit 1 when "
                       "the loop did not close.")
    # the pipeline's own training profile (riskops.training.params.TRAINING) for the first champion and
    # the loop's retraining: about a minute of training on 2 CPU cores for the demo's 20,000 rows
    add_pipeline_args(p, rows=int(os.environ.get("RISKOPS_DEMO_ROWS", 20_000)), epochs=TRAINING.epochs,
                      max_train_rows=TRAINING.max_train_rows)
    p.add_argument("--fresh", action="store_true",
                   help="empty the state folder ($RISKOPS_HOME, default ./.riskops) first; without it a folder "
                   "that holds an earlier run's state is refused (exit 2), as the replayed world would read it back")
    p.add_argument("--skip-loop", action="store_true",
                   help="stop after training and serving (no drift / monitor / retraining / promotion loop)")
    p.add_argument("--scenario", default="fraud_ring",
                   choices=DRIFT_SCENARIOS,
                   help="the drift the closed loop meets (default %(default)s; see `riskops drift-demo --help`)")
    p.set_defaults(func=cmd_demo)
