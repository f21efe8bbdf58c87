"""Re-baselining the drift reference after a promotion (riskops.monitoring.rebaseline).

The data: synthetic model inputs with a real clock (hour-of-day features follow the event time, 100
transactions an hour; two 30-day aggregates wander from one day to the next, which only a reference
of several days shows); a shift "learned" by the promoted champion (amounts up) and a later,
different one (a new payment method). Monitor passes run through the lifecycle loop with the fast
drift engine and a dry-run retraining trigger without cooldown, so any drift verdict would show up
as a call of the retraining trigger.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from riskops.features.contract import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from riskops.lifecycle.loop import LoopConfig, run_loop_once
from riskops.lifecycle.promotion import PREVIOUS_CHAMPION, promote
from riskops.lifecycle.retrain import RetrainTrigger
from riskops.monitoring import monitor, rebaseline
from riskops.monitoring.drift import compute_drift
from riskops.monitoring.drift_settings import DriftSettings
from riskops.monitoring.drift_thresholds import calibrate_reference
from riskops.monitoring.rebaseline import RebaselineSettings, served_window, was_promoted
from riskops.monitoring.reference import Reference, current_frame, load_reference, save_reference
from riskops.monitoring.rules import evaluate_rules
from riskops.registry.store import ModelRegistry
from riskops.settings import paths as home_paths

PER_HOUR, WINDOW = 100, 1000
START = pd.Timestamp("2026-03-02", tz="UTC")
# natural day-to-day wander (in stds, by day since START) of two inputs: not a shift
WANDER = ("user_amount_std_30d", "merchant_amount_mean_30d")
DAY_LEVEL = {-4: 0.0, -3: 0.4, -2: 0.0, -1: 0.4, 0: 0.2, 1: 0.2, 2: 0.2, 3: 0.5}
CATS = {c: ["a", "b", "c"] for c in CATEGORICAL_FEATURES} | {
    "payment_method": ["credit_card", "paypal", "debit_card"]
}
CONFIG = {
    "window": {"size": WINDOW, "min_rows": 500},
    "drift": {"engine": "fast"},
    "volume": {"enabled": False},
    "reports": {"html": False, "keep_last": 3},
    "retrain": {"mode": "dry_run", "cooldown_seconds": 0, "min_rows": 10, "min_frauds": 0},
    "promotion": {"auto": False},
}


def traffic(start: pd.Timestamp, hours: float, seed: int, shift: str = "none") -> pd.DataFrame:
    """Model inputs over `hours` from `start`: amounts up under "learned", crypto under "new_method"."""
    rng = np.random.default_rng(seed)
    n = int(hours * PER_HOUR)
    ts = start + pd.to_timedelta(np.sort(rng.random(n)) * hours * 3600, unit="s")
    df = pd.DataFrame(rng.normal(size=(n, len(NUMERIC_FEATURES))), columns=list(NUMERIC_FEATURES))
    angle = 2 * np.pi * (ts.hour.to_numpy() + ts.minute.to_numpy() / 60) / 24
    df["hour_sin"], df["hour_cos"] = np.sin(angle), np.cos(angle)
    df["is_weekend"] = (ts.dayofweek >= 5).astype(float)
    day = pd.Series(np.floor((ts - START).total_seconds() / 86400))
    for f in WANDER:
        df[f] += day.map(DAY_LEVEL).fillna(0.0).to_numpy()
    for c, values in CATS.items():
        df[c] = rng.choice(values, n)
    if shift in ("learned", "new_method"):  # the new method arrives while the learned shift persists
        df["amount_log"] += 0.6
        df["unit_price_log"] += 0.6
    if shift == "new_method":
        df.loc[rng.random(n) < 0.2, "payment_method"] = "crypto"
    df["risk_score"] = rng.beta(1, 20, n)
    df["event_timestamp"] = ts
    df["logged_at"] = ts
    df["transaction_id"] = [f"tx-{seed}-{i}" for i in range(n)]
    df["degraded"] = False
    return df


def served(df: pd.DataFrame, version: str) -> pd.DataFrame:
    return df.assign(model_version=version)


@pytest.fixture
def home(riskops_home, tmp_path):
    """A registry with v0001 (champion; 4 days of reference) and v0002, a retrained model whose
    validation + test period is half a day of pre-shift traffic: too short to calibrate (< 2 windows)."""
    paths = home_paths(riskops_home)
    registry = ModelRegistry(paths.registry)
    for i, days in ((1, 4), (2, 0.5)):
        ref = traffic(START - pd.Timedelta(days=days), 24 * days, seed=i)
        model_dir = tmp_path / f"model{i}"
        save_reference(model_dir, ref, ref["risk_score"], event_timestamps=ref["event_timestamp"])
        (model_dir / "policy.json").write_text(json.dumps({"review": 0.5, "block": 0.9}))
        registry.register(model_dir)
    registry.set_alias("champion", "v0001")
    rebaseline._CACHE.clear()
    monitor._REFERENCE_CACHE.clear()
    return paths, registry


def one_pass(paths, log_df):
    trigger = RetrainTrigger(paths, CONFIG["retrain"], data_provider=lambda: None)  # called on drift only
    return run_loop_once(
        paths, LoopConfig.from_dict(CONFIG), trigger=trigger, log_df=log_df.reset_index(drop=True)
    )


def test_who_is_rebaselined():
    assert not was_promoted("v2", None, None)  # the first champion: its evaluation reference
    assert not was_promoted("v2", "v2", {"version": "v1"})  # alias points at itself (a rollback)
    assert was_promoted("v2", "v1", {"version": "v1", "source": "evaluation"})
    assert was_promoted("v2", "v1", None)  # a monitor without a record follows the registry
    # a stale alias: v3 was registered as champion directly after v2 had replaced v1
    assert not was_promoted("v3", "v1", {"version": "v2", "source": "served"})


def test_served_window_is_the_first_day_of_clean_champion_rows():
    before = served(traffic(START, 10, seed=3), "v1")
    mine = served(traffic(START + pd.Timedelta(hours=10), 30, seed=4), "v2")
    mine.loc[mine.index[:40], "degraded"] = True  # an online-store outage at the start
    log = pd.concat([before, mine]).sample(frac=1.0, random_state=0)  # segments of two replicas, merged
    rows, progress = served_window(log, "v2", rows=500, min_hours=24)
    clean = mine.iloc[40:]
    t = clean["event_timestamp"]
    expect = int(np.argmax((t - t.iloc[0]) >= pd.Timedelta(hours=24))) + 1
    assert rows is not None and len(rows) == expect and len(rows) >= 500
    assert rows["transaction_id"].tolist() == clean["transaction_id"].iloc[:expect].tolist()  # serving order
    assert progress["degraded_excluded"] == 40 and progress["rows"] == len(clean)
    # not enough yet: 12 hours hold more than 500 rows but not a daily cycle
    early = served(traffic(START, 12, seed=5), "v2")
    rows, progress = served_window(early, "v2", rows=500, min_hours=24)
    assert rows is None and progress["rows"] == 12 * PER_HOUR and progress["hours"] < 12
    rows, _ = served_window(early, "v2", rows=12 * PER_HOUR + 1, min_hours=0)
    assert rows is None  # the row count must be reached as well


def test_promotion_rebaselines_settles_survives_a_restart_and_still_catches_a_new_shift(home):
    paths, registry = home
    old = served(traffic(START, 12, seed=10), "v0001")
    first = one_pass(paths, old)
    assert first.status == "ok" and not first.verdict.drift
    assert first.reference["source"] == "evaluation" and first.reference["version"] == "v0001"

    promote(registry, "v0002")
    assert registry.aliases()[PREVIOUS_CHAMPION] == "v0001"
    t0 = START + pd.Timedelta(hours=12)
    learned = served(traffic(t0, 72, seed=11, shift="learned"), "v0002")
    half = learned[learned["event_timestamp"] < t0 + pd.Timedelta(hours=12)]
    half_day = pd.concat([old, half])
    res = one_pass(paths, half_day)
    # the window is the learned shift: against the old reference it drifts (what used to retrain again) ...
    window = current_frame(half_day.tail(WINDOW))
    old_verdict = evaluate_rules(
        compute_drift(
            load_reference(registry.get("v0002").path),
            window,
            DriftSettings(engine="fast", window_size=WINDOW),
        ).metrics
    )
    assert old_verdict.drift
    # ... but re-baselining waits for two windows of the new champion's traffic over a day, and
    # nothing is retrained meanwhile
    assert res.status == "rebaselining" and not res.verdict.drift and res.trigger is None
    assert res.reference["source"] == "rebaselining" and res.reference["replaces"] == "v0001"
    progress = res.reference["progress"]
    assert progress["rows"] == len(half) < 2 * WINDOW == progress["needed_rows"] and progress["hours"] < 12

    day = pd.concat([old, learned[learned["event_timestamp"] < t0 + pd.Timedelta(hours=30)]])
    res = one_pass(paths, day)
    ref = res.reference
    assert res.status == "ok" and ref["source"] == "served" and ref["version"] == "v0002"
    t = learned["event_timestamp"]
    expect = int(np.argmax((t - t.iloc[0]) >= pd.Timedelta(hours=24))) + 1  # a day holds > 2 windows here
    assert expect >= 2 * WINDOW
    assert (
        ref["window"]["rows"] == expect
        and ref["window"]["first_transaction_id"] == learned["transaction_id"].iloc[0]
    )
    assert ref["window"]["last_transaction_id"] == learned["transaction_id"].iloc[expect - 1]
    stored = pd.read_parquet(paths.root / ref["file"])
    assert len(stored) == expect and set(stored["model_version"]) == {"v0002"}
    assert not res.verdict.drift and res.trigger is None

    # a restarted monitor (no caches) keeps the reference recorded in its state; the shift persists, quietly
    rebaseline._CACHE.clear()
    monitor._REFERENCE_CACHE.clear()
    state = json.loads((paths.root / "monitoring" / "state.json").read_text())
    assert state["reference"] == ref
    res = one_pass(paths, pd.concat([old, learned]))
    assert res.status == "ok" and res.reference == ref and not res.verdict.drift and res.trigger is None
    assert "feature_drift" not in [s["rule"] for s in res.verdict.skipped]  # the check ran, and is quiet
    # quiet although two inputs moved since the served day (day 3 vs day 1): a day cannot show the
    # day-to-day wander and v0002's own evaluation reference (half a day) measured nothing, so the
    # thresholds carry v0001's natural drift (4 days) where it is larger; at the floors it fires
    settings = DriftSettings(engine="fast", window_size=WINDOW)
    assert calibrate_reference(load_reference(registry.get("v0002").path), settings)["blocks"] == 0
    own = calibrate_reference(
        Reference(frame=stored, thresholds={"review": 0.5, "block": 0.9}, baseline={}), settings
    )
    carried, cal = first.reference["calibration"]["features"], ref["calibration"]["features"]
    assert own["blocks"] >= 2 and cal == {f: max(carried[f], own["features"][f]) for f in cal}
    assert all(cal[f] == carried[f] > own["features"][f] for f in WANDER)
    window = current_frame(pd.concat([old, learned]).tail(WINDOW))
    floors = Reference(frame=stored, thresholds={"review": 0.5, "block": 0.9}, baseline={})
    at_floors = evaluate_rules(compute_drift(floors, window, replace(settings, calibrate=False)).metrics)
    assert at_floors.drift and set(WANDER) <= set(
        at_floors.metrics["feature_drift.drifted_columns"].split(",")
    )

    # a different shift later on is still caught, against the served reference, and would retrain
    new = served(traffic(t0 + pd.Timedelta(hours=72), 12, seed=12, shift="new_method"), "v0002")
    res = one_pass(paths, pd.concat([old, learned, new]))
    assert res.status == "ok" and res.reference["source"] == "served" and res.verdict.drift
    reason = next(r for r in res.verdict.reasons if r["rule"] == "new_category")
    assert "crypto" in reason["message"]
    assert res.trigger is not None and "new_category" in res.trigger.reason["rules"]  # the trigger was called


def test_a_directly_registered_champion_and_the_switch_off_keep_the_evaluation_reference(home):
    paths, registry = home
    one_pass(paths, served(traffic(START, 20, seed=20), "v0001"))
    registry.set_alias("champion", "v0002")  # `riskops models set-champion`: no promotion
    res = one_pass(
        paths, served(traffic(START + pd.Timedelta(hours=20), 20, seed=21, shift="learned"), "v0002")
    )
    assert res.reference["source"] == "evaluation" and res.status == "ok" and res.verdict.drift

    cfg = LoopConfig.from_dict({**CONFIG, "rebaseline": {"enabled": False}})
    assert cfg.rebaseline == RebaselineSettings(enabled=False)
    with pytest.raises(ValueError, match="rebaseline"):
        LoopConfig.from_dict({**CONFIG, "rebaseline": {"window": 3}})
