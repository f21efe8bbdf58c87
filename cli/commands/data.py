"""`riskops generate`, `validate`, `features` and `train`: the pipeline's steps one at a time."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cli.arguments import DRIFT_SCENARIOS
from cli.console import console
from riskops.settings import paths
from riskops.training.params import QUICK_TRAINING


def cmd_generate(args: argparse.Namespace) -> int:
    """Write synthetic transactions, optionally followed by a drift scenario segment."""
    from riskops.data.generator import GeneratorConfig, generate, generate_with_drift, write_transactions

    config = GeneratorConfig(rows=args.rows, seed=args.seed, fraud_rate=args.fraud_rate, start=args.start)
    if args.drift:
        df = generate_with_drift(config, args.drift, args.drift_rows or max(1, args.rows // 4))
    else:
        df = generate(config)
    out = write_transactions(df, args.out)
    fraud = df["is_fraud"].mean()
    msg = f"wrote {len(df):,} transactions ({fraud:.2%} fraud) to {out}"
    if "drift_onset" in df.attrs:
        msg += f"; drift '{args.drift}' starts at {df.attrs['drift_onset']}"
    console().print(msg)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Run the Great Expectations gate on a file; exit 1 when it fails."""
    from riskops.data.ingest import read_raw
    from riskops.data.validation import ValidationConfig, validate_transactions

    df = read_raw(args.file)
    report_dir = Path(args.report_dir) if args.report_dir else paths().reports / "validation"
    result = validate_transactions(
        df,
        ValidationConfig(fraud_rate_min=args.fraud_rate_min, fraud_rate_max=args.fraud_rate_max),
        report_dir,
    )
    term = console()
    term.print(result.summary())
    term.print(f"report: {result.report_html}")
    return 0 if result.success else 1


def cmd_features(args: argparse.Namespace) -> int:
    """Build the Feast features and write a point-in-time training set."""
    from riskops.data.ingest import read_raw
    from riskops.features.build import build_features

    df = read_raw(args.file)
    repo = Path(args.repo) if args.repo else paths().feature_repo
    result = build_features(df, repo)
    out = Path(args.out) if args.out else paths().data / "training_set.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    result.training_frame.to_parquet(out, index=False)
    console().print(f"feature repo {repo}; training set ({len(result.training_frame):,} rows) -> {out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train the risk model on a training set from `riskops features`, as the pipeline's train step does."""
    import pandas as pd

    from riskops.training.finetune import TrainConfig, train_from_training_set

    df = pd.read_parquet(args.training_set)
    config = TrainConfig(
        epochs=args.epochs, encoder=args.encoder, max_steps=args.max_steps or None, seed=args.seed,
        members=args.members,
    )  # fmt: skip
    out = Path(args.out) if args.out else paths().root / "models" / time.strftime("%Y%m%d-%H%M%S")
    # the same step as the pipeline's: each row's history over the whole set, then the time split
    result = train_from_training_set(df, out, config, args.test_fraction, args.val_fraction)
    console().print(
        f"trained on {result.device} in {result.train_seconds:.0f}s; best epoch {result.best_epoch},"
        f" validation PR-AUC {result.val_pr_auc:.4f}; model -> {result.model_dir}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `generate`, `validate`, `features` and `train` to the `riskops` parser."""
    p = sub.add_parser("generate", help="write synthetic transactions (Parquet or JSONL by extension)",
                       description="Generate labelled synthetic e-commerce transactions with a fraud typology.")
    p.add_argument("--rows", type=int, default=20_000, help="number of transactions (default %(default)s)")
    p.add_argument("--out", required=True, help="output file: .parquet or .jsonl")
    p.add_argument("--seed", type=int, default=7, help="random seed (default %(default)s)")
    p.add_argument("--fraud-rate", type=float, default=0.015, help="share of fraud (default %(default)s)")
    p.add_argument("--start", default="2026-01-01", help="first day of traffic, UTC (default %(default)s)")
    p.add_argument("--drift", choices=DRIFT_SCENARIOS,
                   help="append a drift scenario segment after the normal traffic")
    p.add_argument("--drift-rows", type=int, default=0, help="rows in the drift segment (default rows/4)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("validate", help="run the Great Expectations gate on a file",
                       description="Validate raw transactions; exit 1 and write an HTML report when the gate fails.")
    p.add_argument("file", help="Parquet/JSONL transactions")
    p.add_argument("--report-dir", help="where to write the HTML/JSON report (default $RISKOPS_HOME/reports/validation)")
    p.add_argument("--fraud-rate-min", type=float, default=0.001, help="lowest plausible fraud share")
    p.add_argument("--fraud-rate-max", type=float, default=0.10, help="highest plausible fraud share")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("features", help="build Feast features and a point-in-time training set",
                       description="Hash PII, compute windowed entity aggregates, apply the Feast repo, "
                       "materialize the online store and write the training set.")
    p.add_argument("file", help="Parquet/JSONL transactions")
    p.add_argument("--repo", help="Feast repo working copy (default $RISKOPS_HOME/feature_repo)")
    p.add_argument("--out", help="training set parquet (default $RISKOPS_HOME/data/training_set.parquet)")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("train", help="fine-tune the transformer risk model on a training set",
                       description="Train the risk model (each transaction's recent history + tabular features + product "
                                   "text) on a training set from `riskops features`: time split, early stopping "
                                   "on validation, calibration; the folder serves as it is.")
    p.add_argument("training_set", help="parquet from `riskops features`")
    p.add_argument("--out", help="model folder (default $RISKOPS_HOME/models/<timestamp>)")
    p.add_argument("--encoder", choices=("minilm", "tiny"), default=QUICK_TRAINING.encoder, help="text encoder")
    p.add_argument("--epochs", type=int, default=QUICK_TRAINING.epochs)
    p.add_argument("--max-steps", type=int, default=QUICK_TRAINING.max_steps, help="stop after N steps (0 = no limit)")
    p.add_argument("--seed", type=int, default=QUICK_TRAINING.seed)
    p.add_argument("--members", type=int, default=QUICK_TRAINING.members,
                   help="networks trained side by side whose scores are averaged (default %(default)s; 1 is "
                        "fastest)")
    p.add_argument("--test-fraction", type=float, default=QUICK_TRAINING.test_fraction, help="newest share held out for testing")
    p.add_argument("--val-fraction", type=float, default=QUICK_TRAINING.val_fraction, help="share before the test period for early stopping")
    p.set_defaults(func=cmd_train)
