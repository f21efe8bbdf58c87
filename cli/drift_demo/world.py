"""The simulated world of the drift demo: its options, and the traffic it replays (one generated timeline)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from cli.arguments import DRIFT_SCENARIOS
from riskops.data.generator import GeneratorConfig, generate_with_drift

DEMO_DIR = "drift-demo"  # under the home folder: inputs, effective config, server log


@dataclass
class LoopOptions:
    """The drift demo's settings (`riskops drift-demo` flags): the world, the replay, training, the monitor."""
    scenario: str = "fraud_ring"
    seed: int = 7
    train_rows: int = 20_000  # the first champion's training data (and the retraining history)
    normal_rows: int = 1_500  # replayed before the onset
    drift_rows: int = 6_000  # generated after the onset (replayed as far as the loop needs)
    monitor_every: int = 250  # a monitor pass every N replayed transactions
    label_delay: int = 300  # a transaction's label arrives N transactions after it was scored
    batch: int = 1  # transactions per predict request
    encoder: str = "tiny"  # pipeline flags for the first champion and every retraining
    epochs: int = 10
    max_train_rows: int = 12_000  # every fraud + legit rows up to N (the tiny encoder trains fast)
    val_fraction: float = 0.05  # retraining split (see the module doc); the first champion uses 0.15 / 0.2
    test_fraction: float = 0.05
    window: int = 1500  # monitor window (transactions)
    timeout_s: float = 900.0  # onset -> loop closed, at most
    after_rows: int = 300  # replayed once the decision is served, to show who answers
    retrain_rate: float = (
        20.0  # transactions/s while the retraining runs (leaves the CPU to it; 0 = no limit)
    )
    canary: bool = False  # gate, then the server's online canary decides
    monitor_all_inputs: bool = False  # False: leave SERVING_SKEWED_INPUTS out of the drift comparison
    feedback: str = "auto"  # auto (POST /v1/feedback when the server has it, else files) | api | file
    config: str | None = None  # base monitor config (default configs/monitor.yaml)
    port: int = 0  # 0 = a free port
    quiet: bool = False

    def pipeline_args(self) -> list[str]:
        """`riskops pipeline run` flags for the first champion and every retraining run."""
        return [
            "--encoder",
            self.encoder,
            "--epochs",
            str(self.epochs),
            "--max-train-rows",
            str(self.max_train_rows),
        ]


def options_from_args(args: Any) -> LoopOptions:
    """`riskops drift-demo` flags -> LoopOptions (a flag left out keeps the default)."""
    opts = LoopOptions()
    for name in LoopOptions.__dataclass_fields__:
        v = getattr(args, name, None)
        if v is not None:
            setattr(opts, name, v)
    return opts


@dataclass
class Timeline:
    """The world: training history, normal replay, drifted replay (raw transactions with labels)."""

    train: pd.DataFrame
    normal: pd.DataFrame
    drift: pd.DataFrame
    onset: str
    scenario: str


def build_timeline(opts: LoopOptions) -> Timeline:
    """`generate_with_drift` over train_rows + normal_rows of normal traffic, then the scenario.

    The first ``train_rows`` (by event time) are the champion's training data; the rest of the
    normal segment is replayed before the onset; the drifted segment after it.

    The generator clamps follow-up events that would fall past a segment's end (bursts, early
    orders of new accounts: riskops/data/generator/) onto its last millisecond: ~100 transactions at
    one instant just before the onset, which a 1,000-row monitor window rightly finds odd
    (user_seconds_since_last_log, account_age_days_log). That pile-up is dropped here."""
    if opts.scenario not in DRIFT_SCENARIOS:
        raise ValueError(f"unknown scenario {opts.scenario!r}; expected one of {', '.join(DRIFT_SCENARIOS)}")
    base = GeneratorConfig(rows=opts.train_rows + opts.normal_rows, seed=opts.seed)
    df = generate_with_drift(base, opts.scenario, opts.drift_rows)
    onset = df.attrs["drift_onset"]
    df = df.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    before = df[df["event_timestamp"] < pd.Timestamp(onset)]
    last = before["event_timestamp"] == before["event_timestamp"].max()
    if last.sum() > 5:
        before = before[~last]
    after = df[df["event_timestamp"] >= pd.Timestamp(onset)]
    return Timeline(
        train=before.iloc[: opts.train_rows].reset_index(drop=True),
        normal=before.iloc[opts.train_rows :].reset_index(drop=True),
        drift=after.reset_index(drop=True),
        onset=onset,
        scenario=opts.scenario,
    )


def request_records(df: pd.DataFrame) -> list[dict]:
    """Raw transactions -> request instances (labels removed, times ISO)."""
    body = df.drop(columns=[c for c in ("is_fraud", "fraud_type") if c in df.columns])
    return json.loads(body.to_json(orient="records", date_format="iso"))
