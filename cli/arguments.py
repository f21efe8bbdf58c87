"""Command-line arguments that several commands and the demos share.

Light on purpose (no numpy, pandas or generator import): the parser is built for every
`riskops ... --help`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from riskops.training.params import QUICK_TRAINING

# riskops.data.generator.SCENARIOS without "normal", written out so that building the parser does
# not import the generator (numpy, pandas); tests/integration/test_cli.py checks that they match
DRIFT_SCENARIOS = ("fraud_ring", "promotion_season", "price_shift", "new_payment_method")


def add_pipeline_args(
    p: argparse.ArgumentParser,
    rows: int = 20_000,
    epochs: int = QUICK_TRAINING.epochs,
    max_train_rows: int = QUICK_TRAINING.max_train_rows,
) -> None:
    """The training pipeline's parameters as flags (`riskops pipeline run`, `riskops demo`)."""
    p.add_argument("--rows", type=int, default=rows, help="synthetic transactions to generate (default %(default)s)")
    p.add_argument("--seed", type=int, default=QUICK_TRAINING.seed, help="random seed for data and training (default %(default)s)")
    p.add_argument("--fraud-rate", type=float, default=0.015, help="synthetic fraud share (default %(default)s)")
    p.add_argument("--input", help="train on this Parquet/JSONL file (schema columns) instead of synthetic data")
    p.add_argument(
        "--encoder",
        choices=("minilm", "tiny"),
        default=QUICK_TRAINING.encoder,
        help="text encoder: the pretrained all-MiniLM-L6-v2 (default) or a tiny random BERT for smoke runs",
    )
    p.add_argument("--epochs", type=int, default=epochs, help="training epochs (default %(default)s)")
    p.add_argument("--max-steps", type=int, default=QUICK_TRAINING.max_steps, help="stop training after N steps (0 = no limit)")
    p.add_argument(
        "--max-train-rows",
        type=int,
        default=max_train_rows,
        help="train on every fraud plus at most N sampled legitimate rows, for CPU speed; validation"
        " and test are never sampled and scores are re-calibrated (0 = all rows; default %(default)s)",
    )
    p.add_argument(
        "--promotion",
        choices=("if-none", "always", "never"),
        default="if-none",
        help="make the new model champion: only if there is none (default), always, or never",
    )
    p.add_argument(
        "--when-worse",
        choices=("register", "withhold"),
        default="register",
        help="a transformer that loses to the strongest baseline on validation is registered as usual, flagged"
        " in the output, model card and record (register, default), or stored without an alias so that it can"
        " neither serve nor be canaried (withhold)",
    )
    p.add_argument("--test-fraction", type=float, default=QUICK_TRAINING.test_fraction,
                   help="newest share of the data held out as the test period (default %(default)s)")
    p.add_argument("--val-fraction", type=float, default=QUICK_TRAINING.val_fraction,
                   help="share before the test period for early stopping, calibration and the decision policy"
                   " (default %(default)s; retraining runs use less: see `riskops drift-demo --help`)")
    p.add_argument("--recent-from", default="", metavar="TIME",
                   help="retraining: rows at or after this UTC time (ISO 8601) all go to training, and"
                   " validation and test are cut from the rows before it, so that the few labelled rows of"
                   " a shift are learned from rather than validated on (set by `riskops monitor` when it"
                   " retrains on history + a recent window; default: off)")


def pipeline_params(args: argparse.Namespace) -> dict:
    """The flags of `add_pipeline_args` -> the training pipeline's parameters."""
    return {
        "source": "file" if args.input else "synthetic",
        "input_path": str(Path(args.input).resolve()) if args.input else "",
        "rows": args.rows,
        "seed": args.seed,
        "fraud_rate": args.fraud_rate,
        "encoder": args.encoder,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "max_train_rows": args.max_train_rows,
        "promotion": args.promotion,
        "when_worse": args.when_worse,
        "test_fraction": args.test_fraction,
        "val_fraction": args.val_fraction,
        "recent_from": args.recent_from,
    }
