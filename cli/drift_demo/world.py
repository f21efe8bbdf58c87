"""The simulated world of the drift demo: its options, and the traffic it replays (one generated timeline)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cli.arguments import DRIFT_SCENARIOS
from riskops.data.generator import GeneratorConfig
from riskops.data.generator.config import default_days, parse_start, volume_factor
from riskops.data.generator.segment import Segment
from riskops.data.generator.tables import DAY_NS
from riskops.data.generator.traffic import run_segment, to_frame
from riskops.data.generator.world import World
from riskops.monitoring.rebaseline import RebaselineSettings

DEMO_DIR = "drift-demo"  # under the home folder: inputs, effective config, server log


@dataclass
class LoopOptions:
    """The drift demo's settings (`riskops drift-demo` flags): the world, the replay, training, the monitor."""

    scenario: str = "fraud_ring"
    seed: int = 7
    train_rows: int = 20_000  # the first champion's training data (and the retraining history)
    normal_rows: int = 1_500  # replayed before the onset
    drift_rows: int = (
        6_000  # generated after the onset up to the decision (replayed as far as the loop needs)
    )
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
    # process: one combined server (embedded state); cluster: the k8s topology as processes
    # (Redis, predictor, transformer replicas; cli/drift_demo/cluster.py)
    topology: str = "process"
    replicas: int = 2  # transformer replicas of the cluster topology
    monitor_all_inputs: bool = False  # False: leave SERVING_SKEWED_INPUTS out of the drift comparison
    feedback: str = "auto"  # auto (POST /v1/feedback when the server has it, else files) | api | file
    config: str | None = None  # base monitor config (default configs/monitor.yaml)
    port: int = 0  # 0 = a free port
    quiet: bool = False
    # after a promotion (the loop settles): the re-baselined reference, then a second, different shift
    second_scenario: str = "auto"  # auto: new_payment_method (price_shift after it) | none | a scenario
    settle_rows: int = 1_500  # learned-shift rows checked against the re-baselined reference before it
    second_rows: int = 3_000  # second-shift rows generated (replayed until it is caught)

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
    """The world: training history, normal replay, drifted replay (raw transactions with labels).

    ``reserve``: drifted rows at the end of ``drift`` kept for after the decision (the re-baselining
    and the settled learned shift); ``world`` / ``base`` / ``generated``: the generator's world, its
    config and the rows drawn so far, so that `second_shift` can continue the same world later."""

    train: pd.DataFrame
    normal: pd.DataFrame
    drift: pd.DataFrame
    onset: str
    scenario: str
    reserve: int = 0
    world: Any = None
    base: GeneratorConfig | None = None
    generated: int = 0


def second_scenario(opts: LoopOptions) -> str | None:
    """The different shift injected after a promotion (None: ``none``, the loop ends as before)."""
    if opts.second_scenario == "none":
        return None
    if opts.second_scenario == "auto":
        return "price_shift" if opts.scenario == "new_payment_method" else "new_payment_method"
    if opts.second_scenario not in DRIFT_SCENARIOS or opts.second_scenario == opts.scenario:
        raise ValueError(
            f"second scenario {opts.second_scenario!r}: expected auto, none or one of "
            f"{', '.join(DRIFT_SCENARIOS)} other than {opts.scenario!r}"
        )
    return opts.second_scenario


def rows_per_day(base: GeneratorConfig, scenario: str) -> float:
    """Transactions per simulated day under `scenario` after `base` traffic (the generator's rate)."""
    base_days = default_days(base) / volume_factor(base.scenario)
    return base.rows / base_days * volume_factor(scenario) / volume_factor(base.scenario)


def after_decision_rows(opts: LoopOptions, base: GeneratorConfig) -> int:
    """Drifted rows to keep for after the decision: what the re-baselining needs (two windows of the
    new champion's traffic spanning a day, riskops.monitoring.rebaseline; 30% spare for the weekly
    cycle), a monitor pass, and the settle rows."""
    if second_scenario(opts) is None:
        return 0
    day = rows_per_day(base, opts.scenario) * RebaselineSettings().min_hours / 24.0
    return opts.monitor_every + max(2 * opts.window, math.ceil(1.3 * day)) + opts.settle_rows


def generate(base: GeneratorConfig, scenario: str, drift_rows: int) -> tuple[pd.DataFrame, World]:
    """`riskops.data.generator.generate_with_drift` step by step (same rows), keeping its World."""
    world = World(base)
    start_ns = parse_start(base.start)
    base_span = int(default_days(base) / volume_factor(base.scenario) * DAY_NS)
    cols1 = run_segment(Segment(world, base.scenario, start_ns, base_span, base.rows, base.fraud_rate, 0))
    drift_span = int(max(drift_rows / rows_per_day(base, scenario), 1.0 / 24) * DAY_NS)
    seg = Segment(world, scenario, start_ns + base_span, drift_span, drift_rows, base.fraud_rate, 1)
    cols2 = run_segment(seg)
    df = to_frame({k: np.concatenate([cols1[k], cols2[k]]) for k in cols1}, world.key, 0)
    df.attrs["scenario"] = scenario
    df.attrs["drift_onset"] = pd.Timestamp(start_ns + base_span, tz="UTC").isoformat()
    return df, world


def build_timeline(opts: LoopOptions) -> Timeline:
    """Normal traffic (train_rows + normal_rows), then the scenario (drift_rows + the rows kept for
    after the decision), in one generated world.

    The first ``train_rows`` (by event time) are the champion's training data; the rest of the
    normal segment is replayed before the onset; the drifted segment after it.

    The generator clamps follow-up events that would fall past a segment's end (bursts, early
    orders of new accounts: riskops/data/generator/) onto its last millisecond: ~100 transactions at
    one instant just before the onset, which a 1,000-row monitor window rightly finds odd
    (user_seconds_since_last_log, account_age_days_log). That pile-up is dropped here."""
    if opts.scenario not in DRIFT_SCENARIOS:
        raise ValueError(f"unknown scenario {opts.scenario!r}; expected one of {', '.join(DRIFT_SCENARIOS)}")
    base = GeneratorConfig(rows=opts.train_rows + opts.normal_rows, seed=opts.seed)
    reserve = after_decision_rows(opts, base)
    df, world = generate(base, opts.scenario, opts.drift_rows + reserve)
    generated = len(df)
    onset = df.attrs["drift_onset"]
    df = df.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    before = _without_end_pileup(df[df["event_timestamp"] < pd.Timestamp(onset)])
    after = df[df["event_timestamp"] >= pd.Timestamp(onset)]
    return Timeline(
        train=before.iloc[: opts.train_rows].reset_index(drop=True),
        normal=before.iloc[opts.train_rows :].reset_index(drop=True),
        drift=after.reset_index(drop=True),
        onset=onset,
        scenario=opts.scenario,
        reserve=reserve,
        world=world,
        base=base,
        generated=generated,
    )


def second_shift(timeline: Timeline, scenario: str, start: pd.Timestamp, rows: int) -> pd.DataFrame:
    """`rows` transactions of `scenario` from `start` on, in the timeline's world (the same users,
    devices and merchants); transaction ids continue after the ones drawn before."""
    base = timeline.base
    span = int(max(rows / rows_per_day(base, scenario), 1.0 / 24) * DAY_NS)
    seg = Segment(timeline.world, scenario, int(pd.Timestamp(start).value), span, rows, base.fraud_rate, 2)
    df = to_frame(run_segment(seg), timeline.world.key, timeline.generated)
    timeline.generated += len(df)
    return _without_end_pileup(df.sort_values("event_timestamp", kind="stable")).reset_index(drop=True)


def _without_end_pileup(df: pd.DataFrame) -> pd.DataFrame:
    last = df["event_timestamp"] == df["event_timestamp"].max()
    return df[~last] if last.sum() > 5 else df


def request_records(df: pd.DataFrame) -> list[dict]:
    """Raw transactions -> request instances (labels removed, times ISO)."""
    body = df.drop(columns=[c for c in ("is_fraud", "fraud_type") if c in df.columns])
    return json.loads(body.to_json(orient="records", date_format="iso"))
