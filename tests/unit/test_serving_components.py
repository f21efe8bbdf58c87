"""Serving building blocks without a server: policy, reasons, entity state, prediction log,
alerts, micro-batching, the online-store wrapper and metrics registration."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import http.server
import importlib
import json
import math
import os
import sys
import threading
import time
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from riskops.features.aggregates import EntityWindowState, compute_entity_features
from riskops.features.contract import (
    ENTITY_FEATURE_DEFAULTS,
    ENTITY_FEATURES,
    ColumnFrame,
    snapshot_time_key,
    take_rows,
)
from riskops.monitoring.prediction_log import read_prediction_log
from serving import prometheus_metrics
from serving.alerts import AlertManager
from serving.batching import MicroBatcher
from serving.entity_baseline import combine
from serving.entity_state import EntityTracker
from serving.online import OnlineFeatureStore
from serving.policy import PolicySource, Thresholds, describe, top_reasons
from serving.predlog import PredictionLog, PredictionLogError

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- policy
def test_decisions_and_fail_mode_floor():
    t = Thresholds(review=0.3, block=0.8, fail_mode="review")
    assert [t.decide(s) for s in (0.1, 0.3, 0.79, 0.8, 1.0)] == [
        "approve",
        "review",
        "review",
        "block",
        "block",
    ]
    assert t.decide(0.1, degraded=True) == "review"
    assert t.decide(0.9, degraded=True) == "block"  # a degraded answer never lowers a decision
    assert Thresholds(0.3, 0.8, "approve").decide(0.1, degraded=True) == "approve"
    assert Thresholds(0.3, 0.8, "block").decide(0.1, degraded=True) == "block"


def test_policy_precedence_and_hot_reload(tmp_path):
    override = tmp_path / "policy.yaml"
    src = PolicySource(override, 0.5, 0.9, "review", check_interval_s=0.0)
    assert src.thresholds() == Thresholds(0.5, 0.9, "review", "defaults")
    model_policy = {"review": 0.2, "block": 0.7}
    assert src.thresholds(model_policy) == Thresholds(0.2, 0.7, "review", "policy.json")

    override.write_text("block: 0.6\nfail_mode: block\n")
    t = src.thresholds(model_policy)
    assert (t.review, t.block, t.fail_mode, t.source) == (0.2, 0.6, "block", "policy.json+policy.yaml")

    # a broken edit keeps the last good policy
    time.sleep(0.01)
    override.write_text("block: [oops\n")
    os.utime(override, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    assert src.thresholds(model_policy).block == 0.6
    # inconsistent thresholds fall back to the defaults instead of serving nonsense
    override.write_text("review: 0.95\n")
    os.utime(override, ns=(time.time_ns(), time.time_ns() + 20_000_000))
    assert src.thresholds(model_policy) == Thresholds(0.5, 0.9, "review", "defaults")
    override.unlink()
    assert src.thresholds(model_policy).source == "policy.json"


def test_policy_rejects_unknown_keys(tmp_path):
    override = tmp_path / "policy.yaml"
    override.write_text("reviw: 0.1\n")
    src = PolicySource(override, 0.5, 0.9, check_interval_s=0.0)
    assert src.thresholds().source == "defaults"


class _Norm:
    features = ("user_txn_count_1h", "amount_log", "account_age_days_log")
    center = [0.0, math.log1p(50.0), math.log1p(300)]
    scale = [1.0, 1.0, 1.0]


def test_reasons_are_human_readable():
    row = {
        "user_txn_count_1h": 7.0,
        "amount_log": math.log1p(1234.5),
        "account_age_days_log": math.log1p(2),
        "country_mismatch": 1.0,
        "payment_method": "crypto",
        "user_amount_mean_30d": math.log1p(80.0),
        "text": "Gift card 500 USD | category gift_cards",
    }
    assert describe("user_txn_count_1h", row, _Norm()) == "user_txn_count_1h=7 (high)"
    assert describe("amount_log", row, _Norm()) == "amount=1234 (high)"
    assert describe("account_age_days_log", row, _Norm()) == "account_age_days=2 (low)"
    assert describe("country_mismatch", row) == "country_mismatch=yes"
    assert describe("payment_method", row) == "payment_method=crypto"
    assert describe("user_amount_mean_30d", row) == "user_amount_mean_30d=80"
    assert describe("text", row).startswith('text="Gift card 500 USD')
    attributions = {
        "user_txn_count_1h": 0.9,
        "payment_method": 0.5,
        "amount_log": -2.0,
        "country_mismatch": 0.1,
    }
    assert top_reasons(attributions, row, _Norm(), k=2) == [
        "user_txn_count_1h=7 (high)",
        "payment_method=crypto",
    ]
    assert top_reasons({"amount_log": -1.0}, row) == []


def test_frame_row_reads_like_the_records_row():
    from serving.predictor import FrameRow

    frame = pd.DataFrame(
        {"amount_log": [1.0, 2.5], "payment_method": ["card", "crypto"], "text": ["a", "b | c"]},
        index=[10, 11],
    )
    for i, record in enumerate(frame.to_dict("records")):
        row = FrameRow(frame, i)
        assert dict(row) == record and len(row) == 3
        assert row.get("missing") is None and "missing" not in row
    attributions = {"payment_method": 0.5, "amount_log": 0.2, "text": -0.1}
    assert top_reasons(attributions, FrameRow(frame, 1), k=3) == top_reasons(
        attributions, frame.to_dict("records")[1], k=3
    )
    # serving's scoring batches are ColumnFrames: the same rows, read by position
    columns = ColumnFrame({c: frame[c].to_numpy() for c in frame.columns})
    for i, record in enumerate(frame.to_dict("records")):
        assert dict(FrameRow(columns, i)) == record and len(FrameRow(columns, i)) == 3
    assert top_reasons(attributions, FrameRow(columns, 1), k=3) == ["payment_method=crypto", "amount=11.18"]


def test_column_frame_rows_and_take_rows():
    frame = pd.DataFrame({"amount_log": [1.0, 2.0, 3.0], "text": ["a", "b", "c"]}, index=[7, 8, 9])
    columns = ColumnFrame({c: frame[c].to_numpy() for c in frame.columns})
    assert len(columns) == 3 and columns.columns == ("amount_log", "text") and "text" in columns.columns
    assert take_rows(columns, [0, 1, 2]) is columns and take_rows(frame, [0, 1, 2]) is frame
    for picked in ([2, 0], [1], []):
        sub, ref = take_rows(columns, picked), take_rows(frame, picked)
        assert len(sub) == len(ref) == len(picked) and list(ref.index) == list(range(len(picked)))
        pd.testing.assert_frame_equal(sub.to_pandas(), ref)
    assert len(take_rows(columns, [0, 0])) == 2  # a repeated position is two rows, not "all of them"
    with pytest.raises(ValueError, match="different lengths"):
        ColumnFrame({"a": np.zeros(2), "b": np.zeros(3)})


# --------------------------------------------------------------------------- entity state
def _tx(i: int, user: str = "u1", minutes: float = 0.0, amount: float = 10.0, **kw) -> dict:
    return {
        "transaction_id": f"t{i}",
        "event_timestamp": T0 + timedelta(minutes=minutes),
        "amount": amount,
        "is_refund": False,
        "user_id": user,
        "merchant_id": "m1",
        "device_id": kw.get("device", "d1"),
        "ip_hash": kw.get("ip", "ip1"),
        "shipping_country": "US",
    }


def test_tracker_matches_the_offline_aggregates_for_new_entities():
    """Features served before each event == the offline state after the previous event (same code)."""
    txs = [_tx(i, minutes=7 * i, amount=10 + i, device=f"d{i % 2}") for i in range(12)]
    tracker = EntityTracker()
    unknown = {f: ENTITY_FEATURE_DEFAULTS[f] for f in ENTITY_FEATURE_DEFAULTS}
    served = []
    for tx in txs:
        baselines = {ek: {f: unknown[f] for f in ENTITY_FEATURES[ek[0]]} for ek in tracker.untracked([tx])}
        feats, pushes, degraded = tracker.observe(tx, baselines)
        assert not degraded and {p.entity for p in pushes} == {"user", "merchant", "device", "ip"}
        served.append(feats)
    offline = compute_entity_features(pd.DataFrame(txs))["user"].reset_index(drop=True)
    for i in range(1, len(txs)):
        for f in ENTITY_FEATURES["user"]:
            want, got = offline.loc[i - 1, f], served[i][f]
            assert (math.isnan(want) and math.isnan(got)) or math.isclose(
                want, got, rel_tol=1e-9, abs_tol=1e-9
            ), f
    assert served[0]["user_txn_count_1h"] == 0.0 and math.isnan(served[0]["user_amount_mean_30d"])
    assert [s["user_txn_count_1h"] for s in served] == [
        0,
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        9,
        9,
        9,
    ]  # 1h holds 9 events 7 min apart


def test_combine_ages_a_baseline_linearly_until_its_window_has_passed():
    base = {f: ENTITY_FEATURE_DEFAULTS[f] for f in ENTITY_FEATURES["user"]}
    base.update(
        user_txn_count_1h=3.0,
        user_txn_count_24h=5.0,
        user_txn_count_7d=5.0,
        user_amount_mean_30d=100.0,
        user_amount_std_30d=0.0,
        user_distinct_devices_24h=2.0,
        user_last_event_epoch=T0.timestamp(),
    )
    st = EntityWindowState("user")
    st.update(_tx(0, minutes=10, amount=10.0))
    f = combine("user", base, int(T0.timestamp() * 1e6), st)
    # 10 minutes on: 5/6 of the baseline's last hour is still inside the 1h window; the 24h window
    # keeps that hour's 3 events in full and loses 10/1380 of the 2 spread over the 23 hours before
    assert math.isclose(f["user_txn_count_1h"], 3 * 5 / 6 + 1)
    assert math.isclose(f["user_txn_count_24h"], 3 + 2 * (1 - 10 / 1380) + 1)
    assert f["user_distinct_devices_24h"] == 2  # max(baseline, live): the overlap is unknown
    n_base = 5 * (1 - 10 / (30 * 1440))  # the 7d count weighs the 30d mean, aged over 30 days
    assert math.isclose(f["user_amount_mean_30d"], (n_base * 100 + 10) / (n_base + 1))
    assert f["user_amount_std_30d"] > 0
    assert f["user_last_event_epoch"] == (T0 + timedelta(minutes=10)).timestamp()
    st.update(_tx(1, minutes=70, amount=10.0))
    f = combine("user", base, int(T0.timestamp() * 1e6), st)
    assert f["user_txn_count_1h"] == 1  # the baseline's 1h window has passed; the event 60 min old has left
    assert math.isclose(f["user_txn_count_24h"], 3 + 2 * (1 - 70 / 1380) + 2)


def test_frozen_baseline_ages_like_aged_baseline_sum():
    """The tracker prepares each baseline once (FrozenBaseline); its ageing is aged_baseline_sum's."""
    from riskops.features.aggregates import WINDOW_SECONDS
    from serving.entity_baseline import FrozenBaseline, aged_baseline_sum

    rng = np.random.default_rng(5)
    t0 = int(T0.timestamp() * 1e6)
    checked = 0
    for entity in ("user", "merchant", "device", "ip"):
        for _ in range(40):
            base = {
                f: (float(rng.integers(0, 30)) if rng.random() < 0.85 else rng.choice([np.nan, None, np.inf]))
                for f in ENTITY_FEATURES[entity]
            }
            frozen = FrozenBaseline(entity, base, t0)
            for name in ENTITY_FEATURES[entity]:
                w = name.rpartition("_")[2]
                if ("_txn_count_" not in name and "_amount_sum_" not in name) or w not in WINDOW_SECONDS:
                    continue
                for elapsed_s in (0, 30, 3599, 3600, 5000, 86_399, 90_000, 700_000, 3_000_000):
                    anchor = t0 + elapsed_s * 1_000_000
                    want = aged_baseline_sum(name, base, t0, anchor, WINDOW_SECONDS[w])
                    assert frozen.aged_sum(name, anchor, WINDOW_SECONDS[w]) == pytest.approx(want, abs=1e-12)
                    checked += 1
    assert checked > 1000
    # and combine gives the same features from the raw mapping as from the frozen one
    st = EntityWindowState("user")
    st.update(_tx(0, minutes=10, amount=10.0))
    base = {f: 4.0 for f in ENTITY_FEATURES["user"]}
    assert combine("user", base, t0, st) == combine("user", FrozenBaseline("user", base, t0), None, st)


def _reference_combine(entity: str, base: dict, t_us: int, st: EntityWindowState) -> dict[str, float]:
    """The combine rules of serving/entity_baseline.py, written plainly feature by feature
    over the state's snapshot: what the generated ``combine_<entity>`` functions must compute."""
    from riskops.features.aggregates import WINDOW_SECONDS
    from serving.entity_baseline import _BASE_WEIGHT, aged_baseline_sum, baseline_share

    def num(v):
        return float(v) if isinstance(v, int | float) and math.isfinite(v) else None

    live, anchor = st.snapshot(), st.last_event_us
    n_base_full = num(base.get(_BASE_WEIGHT[entity])) or 0.0
    out = {}
    for name in ENTITY_FEATURES[entity]:
        # a feature missing from the snapshot is taken at its default (count 0, no mean)
        lv, b, w = live[name], num(base.get(name, ENTITY_FEATURE_DEFAULTS[name])), name.rpartition("_")[2]
        if name.endswith("_last_event_epoch"):
            out[name] = lv if math.isfinite(lv) else (math.nan if b is None else b)
        elif "_txn_count_" in name or "_amount_sum_" in name:
            out[name] = aged_baseline_sum(name, base, t_us, anchor, WINDOW_SECONDS[w]) + lv
        elif "_distinct_" in name:
            keep = baseline_share(t_us, anchor, WINDOW_SECONDS[w])
            out[name] = max(b if b is not None and keep > 0 else 0.0, lv)
        else:  # mean, std, rate: pooled by event counts
            n_base = baseline_share(t_us, anchor, WINDOW_SECONDS[w]) * n_base_full
            n_live = float(st.windows[w].count)
            if b is None or n_base <= 0:
                out[name] = lv
            elif n_live <= 0 or not math.isfinite(lv):
                out[name] = b
            elif "_amount_std_" not in name:
                out[name] = (n_base * b + n_live * lv) / (n_base + n_live)
            else:
                mean_name = name.replace("_amount_std_", "_amount_mean_")
                mb, ml = num(base.get(mean_name, ENTITY_FEATURE_DEFAULTS[mean_name])), live.get(mean_name)
                if mb is None or ml is None or not math.isfinite(ml):
                    out[name] = lv
                else:
                    n = n_base + n_live
                    m = (n_base * mb + n_live * ml) / n
                    var = (n_base * (b * b + mb * mb) + n_live * (lv * lv + ml * ml)) / n - m * m
                    out[name] = math.sqrt(max(var, 0.0))
    return out


def test_generated_combine_follows_the_documented_rules():
    """`combine` is generated code per entity (serving.entity_baseline.COMBINE_SOURCE); random baselines
    (missing, NaN, inf values, no snapshot time), ages from 0 to 40 days and 0-25 live events must
    give exactly what the rules written plainly give, and the live values equal the getters."""
    from riskops.features.aggregates import feature_getters
    from serving.entity_baseline import COMBINE_SOURCE

    rng = np.random.default_rng(11)
    t0 = int(T0.timestamp() * 1e6)
    compared = 0
    for entity in ("user", "merchant", "device", "ip"):
        assert all(COMBINE_SOURCE[entity].count(repr(f)) >= 1 for f in ENTITY_FEATURES[entity])
        for _ in range(150):
            base = {}
            for f in ENTITY_FEATURES[entity]:
                r = rng.random()
                if r < 0.1:
                    continue
                base[f] = (
                    rng.choice([np.nan, np.inf, None])
                    if r < 0.18
                    else float(rng.choice([0, 1, 3, 7.5, 420.25]))
                )
            t_base = None if rng.random() < 0.1 else t0 - int(rng.integers(0, 40 * 86_400)) * 1_000_000
            st = EntityWindowState(entity)
            t = t0
            for i in range(int(rng.integers(1, 26))):
                t += int(rng.choice([0, 1, 600, 3_600, 30_000, 2 * 86_400])) * 1_000_000
                tx = _tx(i, user=f"u{rng.integers(0, 3)}", minutes=(t - t0) / 60e6,
                         amount=float(rng.integers(1, 500)), device=f"d{rng.integers(0, 3)}")  # fmt: skip
                st.update({**tx, "is_refund": bool(rng.random() < 0.3)})
                assert [g(st) for g in feature_getters(entity)] == pytest.approx(st._values(), nan_ok=True)
            got = combine(entity, base, t_base, st)
            assert _same_features(got, _reference_combine(entity, base, t_base, st)), (entity, base, t_base)
            compared += 1
    assert compared == 600


def _same_features(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def test_a_defaults_snapshot_combines_like_no_snapshot():
    """The online store answers a never-seen entity with the defaults; the tracker keeps no baseline
    for it (holds_only_defaults), which must not change a single feature, before or after events."""
    from serving.entity_baseline import holds_only_defaults

    rng = np.random.default_rng(3)
    t0 = int(T0.timestamp() * 1e6)
    for entity in ("user", "merchant", "device", "ip"):
        defaults = {f: ENTITY_FEATURE_DEFAULTS[f] for f in ENTITY_FEATURES[entity]}
        assert holds_only_defaults(entity, defaults)
        assert holds_only_defaults(entity, {**defaults, snapshot_time_key(entity): T0.timestamp()})
        for f in ENTITY_FEATURES[entity]:  # any one feature off its default is history to keep
            assert not holds_only_defaults(entity, {**defaults, f: 1.0})
        st = EntityWindowState(entity)
        assert _same_features(combine(entity, defaults, t0, st), combine(entity, None, None, st))
        for i in range(30):
            minutes = 37.0 * i + (600 if i > 20 else 0)  # windows fill, then some events leave them
            amount = float(rng.integers(1, 900))
            st.update(
                _tx(i, user=f"u{rng.integers(0, 3)}", minutes=minutes, amount=amount, device=f"d{i % 3}")
            )
            for t in (None, t0 - 3_600_000_000, t0):
                assert _same_features(combine(entity, defaults, t, st), combine(entity, None, None, st))


def test_epoch_microseconds_of_datetimes_match_pandas():
    from riskops.features.aggregates import to_epoch_us

    cases = [
        datetime(2026, 3, 7, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(1999, 12, 31, 1, 2, 3, 4),  # naive = UTC
        datetime(2026, 1, 1, 5, 0, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
        datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),  # before the epoch: floored
    ]
    for dt in cases:
        want = pd.Timestamp(dt if dt.tzinfo else dt.replace(tzinfo=UTC)).value // 1000
        assert to_epoch_us(dt) == want == to_epoch_us(pd.Timestamp(dt)) == to_epoch_us(dt.isoformat())


def test_a_day_old_snapshot_does_not_inflate_the_next_hour():
    """Regression: merchant/device/IP snapshots carry no last-event feature; their time comes from the
    online store's event timestamp. Before, a day-old 1h count was added in full for an hour."""
    merchant = ("merchant", "m1")
    snap = {f: ENTITY_FEATURE_DEFAULTS[f] for f in ENTITY_FEATURES["merchant"]}
    snap.update(merchant_txn_count_1h=40.0, merchant_txn_count_24h=300.0)
    snap[snapshot_time_key("merchant")] = (T0 - timedelta(days=1)).timestamp()
    tracker = EntityTracker()
    tx = _tx(0)
    baselines = {ek: ({**snap} if ek == merchant else None) for ek in tracker.untracked([tx])}
    first, _, _ = tracker.observe(tx, baselines)
    assert first["merchant_txn_count_1h"] == 40  # as of the snapshot, as a point-in-time training row
    second, _, _ = tracker.observe(_tx(1, minutes=1), {})
    assert second["merchant_txn_count_1h"] == 1 and second["merchant_txn_count_24h"] == 1
    # without a snapshot time the snapshot is taken as current: counted (aged from the first event)
    untimed = EntityTracker()
    del snap[snapshot_time_key("merchant")]
    untimed.observe(tx, {ek: ({**snap} if ek == merchant else None) for ek in untimed.untracked([tx])})
    third, _, _ = untimed.observe(_tx(1, minutes=1), {})
    assert third["merchant_txn_count_1h"] > 39


def test_tracker_degraded_when_a_baseline_is_missing_and_out_of_order_events():
    tracker = EntityTracker()
    feats, pushes, degraded = tracker.observe(_tx(0), {})
    assert degraded and pushes == [] and feats["user_txn_count_1h"] == 0
    base = {
        ek: {f: ENTITY_FEATURE_DEFAULTS[f] for f in ENTITY_FEATURES[ek[0]]}
        for ek in tracker.untracked([_tx(0)])
    }
    tracker.observe(_tx(1, minutes=30), base)
    feats, pushes, _ = tracker.observe(_tx(2, minutes=5), {})  # older than the clock: counted at the clock
    assert feats["user_txn_count_1h"] == 1
    assert all(p.event_timestamp == T0 + timedelta(minutes=30) for p in pushes)
    peek, deg = tracker.peek(_tx(3, minutes=40), {})
    assert peek["user_txn_count_1h"] == 2 and not deg


def test_tracker_features_before_an_event_are_the_pushed_state_after_the_last():
    """A track keeps the features computed after its last event and serves them before the next
    one: equal to recombining baseline and state afresh, with aged snapshots and late events."""
    rng = np.random.default_rng(11)
    snapshot_t = (T0 - timedelta(hours=5)).timestamp()
    cached, fresh = EntityTracker(), EntityTracker()
    for i in range(60):
        tx = _tx(
            i,
            user=f"u{rng.integers(0, 4)}",
            minutes=float(i * 9 - (25 if i % 7 == 3 else 0)),  # every 7th event is late
            amount=float(rng.integers(1, 500)),
            device=f"d{rng.integers(0, 3)}",
            ip=f"i{rng.integers(0, 3)}",
        )
        baselines = {}
        for ek in cached.untracked([tx]):
            snap = {f: float(rng.integers(0, 20)) for f in ENTITY_FEATURES[ek[0]]}
            snap[snapshot_time_key(ek[0])] = snapshot_t
            baselines[ek] = snap
        for track in fresh._tracks.values():
            track.features = None  # the reference recombines every time
        got, got_pushes, _ = cached.observe(tx, baselines)
        want, want_pushes, _ = fresh.observe(tx, baselines)
        assert got == want
        assert [(p.entity, p.key, p.event_timestamp, p.features) for p in got_pushes] == [
            (p.entity, p.key, p.event_timestamp, p.features) for p in want_pushes
        ]
        for p in got_pushes:  # what was pushed is what the entity's next event starts from
            assert cached.peek({**tx, "transaction_id": "peek"}, {})[0].items() >= p.features.items()


def test_tracker_lru_is_bounded():
    tracker = EntityTracker(capacity=8)
    for i in range(10):
        tx = _tx(i, user=f"u{i}", device=f"d{i}", ip=f"i{i}")
        tracker.observe(tx, {ek: None for ek in tracker.untracked([tx])})
    assert len(tracker) == 8


# --------------------------------------------------------------------------- prediction log
def test_prediction_log_group_commit_rotation_and_torn_line(tmp_path):
    plog = PredictionLog(tmp_path / "log", segment_bytes=600, segment_seconds=3600)

    def record(i: int) -> dict:
        return {
            "request_id": f"r{i}",
            "transaction_id": f"t{i}",
            "risk_score": 0.1 * (i % 10),
            "decision": "approve",
            "event_timestamp": T0.isoformat(),
            "logged_at": T0.isoformat(),
            "transaction": {"amount": 1.0 + i, "user_id": "u"},
            "entity_features": {"user_txn_count_1h": float(i), "user_amount_mean_30d": float("nan")},
            "features": {"amount_log": 0.5},
        }

    # concurrent appends share one write + fsync (group commit) ...
    futures = [plog.append([record(i)]) for i in range(30)]
    assert [f.result(10) for f in futures] == [1] * 30
    # ... sequential ones rotate segments by size
    for i in range(30, 40):
        assert plog.write([record(i)]) == 1
    plog.close()
    segments = sorted((tmp_path / "log").glob("predictions-*.jsonl"))
    assert len(segments) > 1  # rotated by size
    df = read_prediction_log(tmp_path / "log")
    assert len(df) == 40 and set(df["transaction_id"]) == {f"t{i}" for i in range(40)}
    assert df["event_timestamp"].dt.tz is not None and df["model.amount_log"].eq(0.5).all()
    assert df["user_amount_mean_30d"].isna().all() and df["amount"].iloc[0] == 1.0
    # a crash mid-write leaves a torn last line: the reader skips it
    with open(segments[-1], "ab") as fh:
        fh.write(b'{"request_id": "torn", "transaction_id": "t-tor')
    assert len(read_prediction_log(tmp_path / "log")) == 40
    assert read_prediction_log(tmp_path / "nothing").empty


def test_prediction_log_async_waiters_settle_after_the_write_once_per_commit(tmp_path, count_wakeups):
    plog = PredictionLog(tmp_path / "log", fsync=False)

    def commits() -> float:
        return next(
            s.value for s in prometheus_metrics.PREDICTION_LOG_FSYNC.collect()[0].samples if s.name.endswith("_count")
        )

    async def scenario() -> tuple[list[int], int, list[int]]:
        handoffs = count_wakeups(asyncio.get_running_loop())
        before = commits()
        # queued first, so its commit is counted by the time the last waiter resolves
        gone = plog.append_async([{"transaction_id": "cancelled"}])
        gone.cancel()  # a client that went away: its record is still written, nobody is woken for it
        waiters = [plog.append_async([{"transaction_id": f"t{i}"}] * (1 + i % 3)) for i in range(40)]
        counts = await asyncio.gather(*waiters)
        # every awaited record is on disk by the time its waiter resolves
        on_disk = sorted(
            int(t[1:]) for t in read_prediction_log(tmp_path / "log")["transaction_id"] if t != "cancelled"
        )
        return counts, handoffs() - (commits() - before), on_disk

    counts, extra_handoffs, on_disk = asyncio.run(scenario())
    assert counts == [1 + i % 3 for i in range(40)]
    assert extra_handoffs == 0  # one wake-up of the loop per commit, not one per waiter
    assert sorted(set(on_disk)) == list(range(40)) and len(on_disk) == sum(counts)
    plog.close()

    async def after_close():
        return await plog.append_async([{"transaction_id": "late"}])

    with pytest.raises(PredictionLogError, match="closed"):
        asyncio.run(after_close())


def test_prediction_log_write_failure_fails_async_waiters(tmp_path):
    (tmp_path / "not-a-dir").write_text("")
    plog = PredictionLog(tmp_path / "log", fsync=False)
    plog.directory = tmp_path / "not-a-dir"  # opening a segment under a file fails (ENOTDIR)

    async def scenario():
        return await asyncio.gather(
            *(plog.append_async([{"transaction_id": f"t{i}"}]) for i in range(5)), return_exceptions=True
        )

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, PredictionLogError) and "write failed" in str(o) for o in outcomes)
    plog.close()


def test_prediction_log_unserialisable_record_fails_its_future(tmp_path):
    plog = PredictionLog(tmp_path / "log")
    with pytest.raises(Exception, match="not serialisable"):
        plog.append([{"x": object()}]).result(5)
    plog.close()


# --------------------------------------------------------------------------- alerts
class _Hook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        n = int(self.headers["Content-Length"])
        _Hook.received.append(json.loads(self.rfile.read(n)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_alerts_block_burst_and_webhook(tmp_path):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        am = AlertManager(
            tmp_path / "alerts.jsonl", f"http://127.0.0.1:{srv.server_address[1]}/hook", 2.0, 3, 600
        )
        res = {"risk_score": 0.6, "decision": "review", "above_review": True, "model_version": "v1"}
        kinds = []
        for i in range(5):  # 5 high scores within 10 minutes: one burst alert per entity, not five
            kinds += [a["kind"] for a in am.observe(res, _tx(i, minutes=i))]
        assert kinds.count("burst") == 3  # user, device and IP
        am.observe({**res, "risk_score": 0.99, "decision": "block"}, _tx(9, user="u9", device="d9", ip="i9"))
        am.close()
        lines = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
        assert [a["kind"] for a in lines].count("block") == 1
        assert {a["entity"] for a in lines if a["kind"] == "burst"} == {"user_id", "device_id", "ip_hash"}
        assert len(_Hook.received) == len(lines) == 4
    finally:
        srv.shutdown()


def test_alert_webhook_failure_never_raises(tmp_path, monkeypatch):
    """The request path only queues: the webhook call runs on the alerts thread (here held until
    observe has returned), and its failure is counted, never raised."""
    import urllib.request

    real_urlopen, release, finished, callers = urllib.request.urlopen, threading.Event(), threading.Event(), []

    def held_urlopen(*args, **kwargs):
        callers.append(threading.current_thread())
        release.wait(30)
        try:
            return real_urlopen(*args, **kwargs)
        finally:
            finished.set()

    monkeypatch.setattr(urllib.request, "urlopen", held_urlopen)
    am = AlertManager(tmp_path / "alerts.jsonl", "http://127.0.0.1:9/unreachable", 0.5, 3, 600)
    alerts = am.observe({"risk_score": 0.99, "decision": "block", "above_review": True}, _tx(0))
    assert [a["kind"] for a in alerts] == ["block"] and not finished.is_set()
    release.set()
    am.close()
    assert callers and threading.current_thread() not in callers
    assert am.webhook_failures == 1 and (tmp_path / "alerts.jsonl").read_text().count("\n") == 1


# --------------------------------------------------------------------------- batching
def test_micro_batcher_merges_concurrent_jobs_and_isolates_failures():
    calls = []

    def process(jobs):
        calls.append(list(jobs))
        time.sleep(0.02)
        if any(j == "bad" for j in jobs):
            raise ValueError("bad job")
        return [j.upper() for j in jobs]

    async def main():
        b = MicroBatcher(process, cf.ThreadPoolExecutor(1), max_rows=8)
        results = await asyncio.gather(*(b.submit(f"j{i}") for i in range(10)), return_exceptions=True)
        assert results == [f"J{i}" for i in range(10)]
        assert len(calls) < 10 and max(len(c) for c in calls) <= 8
        mixed = await asyncio.gather(b.submit("a"), b.submit("bad"), b.submit("c"), return_exceptions=True)
        assert mixed[0] == "A" and isinstance(mixed[1], ValueError) and mixed[2] == "C"

    asyncio.run(main())


# --------------------------------------------------------------------------- online store wrapper
def test_online_store_timeout_failure_breaker_and_pushes(tmp_path):
    mode = {"read": "ok"}
    pushed = []

    def reader(store, pairs, now):
        if mode["read"] == "slow":
            time.sleep(0.3)
        if mode["read"] == "fail":
            raise OSError("sqlite: file is not a database")
        return {p: dict(ENTITY_FEATURE_DEFAULTS, user_txn_count_1h=5.0) for p in pairs}

    online = OnlineFeatureStore(
        tmp_path,
        timeout_s=0.1,
        retry_after_s=0.2,
        push_interval_s=0.05,
        opener=lambda repo: object(),
        reader=reader,
        pusher=lambda store, entity, rows: pushed.append((entity, rows)),
    )

    async def main():
        got = await asyncio.gather(*(online.baselines([("user", f"u{i}")], T0) for i in range(5)))
        assert all(g[("user", f"u{i}")]["user_txn_count_1h"] == 5.0 for i, g in enumerate(got))
        mode["read"] = "fail"
        assert await online.baselines([("user", "x")], T0) is None
        mode["read"] = "ok"
        assert await online.baselines([("user", "x")], T0) is None  # breaker open: no call
        await asyncio.sleep(0.25)
        assert (await online.baselines([("user", "x")], T0)) is not None  # probed again
        mode["read"] = "slow"
        assert await online.baselines([("user", "y")], T0) is None  # deadline

    asyncio.run(main())
    from serving.entity_state import Push

    online.enqueue(
        [
            Push("user", "u1", T0, {"user_txn_count_1h": 1.0}),
            Push("user", "u1", T0, {"user_txn_count_1h": 2.0}),
        ]
    )
    assert online.flush(5)
    online.close()
    rows = [r for e, rs in pushed for r in rs if e == "user"]
    assert rows == [
        {"user_id": "u1", "event_timestamp": T0, "user_txn_count_1h": 2.0}
    ]  # coalesced, latest wins


def test_metrics_register_once():
    import serving.prometheus_metrics as m

    before = m.REQUESTS
    importlib.reload(m)
    assert m.REQUESTS is before


def test_labelled_keeps_prometheus_own_child():
    """The cached child is the series prometheus_client itself holds: counts land on /metrics."""
    from prometheus_client import REGISTRY

    import serving.prometheus_metrics as m

    child = m.labelled(m.DECISIONS, "approve")
    assert child is m.labelled(m.DECISIONS, "approve") is m.DECISIONS.labels("approve")
    assert m.labelled(m.DECISIONS, "block") is not child
    before = REGISTRY.get_sample_value("riskops_decisions_total", {"decision": "approve"})
    child.inc(2)
    assert REGISTRY.get_sample_value("riskops_decisions_total", {"decision": "approve"}) == before + 2


def test_numpy_scalars_in_log_records(tmp_path):
    plog = PredictionLog(tmp_path / "log", fsync=False)
    plog.write([{"risk_score": np.float32(0.5), "n": np.int64(3), "ts": T0}])
    plog.close()
    df = read_prediction_log(tmp_path / "log")
    assert df.loc[0, "risk_score"] == 0.5 and df.loc[0, "n"] == 3


def test_served_entity_features_stay_close_to_the_exact_offline_ones_after_a_restart():
    """Training/serving skew of the entity state: a server starts from online snapshots (state after
    each entity's last event, with that event's time) and replays newer traffic; its features must
    stay close to the exact point-in-time values the training data would hold for those rows."""
    from riskops.data.generator import GeneratorConfig, generate
    from riskops.pii import hash_pii

    txs = hash_pii(generate(GeneratorConfig(rows=6000, seed=5)))
    txs = txs.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    cut = 4000
    exact = compute_entity_features(txs)  # state after each event, per entity
    before: dict[str, pd.DataFrame] = {}  # exact state *before* each row = after the entity's previous event
    snapshots: dict[tuple[str, str], dict] = {}
    for entity, frame in exact.items():
        key = frame.columns[0]
        names = list(ENTITY_FEATURES[entity])
        before[entity] = frame.groupby(key, sort=False)[names].shift(1)
        hist = frame.loc[frame.index < cut]
        for k, row in hist.groupby(key, sort=False).tail(1).set_index(key).iterrows():
            snap = {f: float(row[f]) for f in names}
            snap[snapshot_time_key(entity)] = row["event_timestamp"].timestamp()
            snapshots[(entity, str(k))] = snap
    tracker = EntityTracker()
    served = []
    for rec in txs.iloc[cut:].to_dict("records"):
        rec["event_timestamp"] = rec["event_timestamp"].to_pydatetime()
        base = {
            ek: snapshots.get(ek, {f: ENTITY_FEATURE_DEFAULTS[f] for f in ENTITY_FEATURES[ek[0]]})
            for ek in tracker.untracked([rec])
        }
        feats, _, degraded = tracker.observe(rec, base)
        assert not degraded
        served.append(feats)
    served_df = pd.DataFrame(served, index=txs.index[cut:])

    def error(name: str) -> tuple[float, float]:
        want = before[name.split("_")[0]][name].reindex(served_df.index).fillna(0.0)
        got = served_df[name]
        return abs(got.mean() - want.mean()) / max(want.mean(), 1e-9), float((got - want).abs().mean())

    for name in (
        "merchant_txn_count_1h",
        "merchant_txn_count_24h",
        "device_txn_count_24h",
        "ip_txn_count_24h",
        "user_txn_count_24h",
        "user_amount_sum_24h",
    ):
        assert error(name)[0] < 0.03, (name, error(name))  # measured: within 1%
    assert error("user_txn_count_7d")[0] < 0.15  # measured: 9% under (a user's week is bursty)
    # a snapshot counted in full until its window had passed: mean abs error 10.5 here
    assert error("merchant_txn_count_24h")[1] < 2.0


@pytest.mark.parametrize("inherited, in_memory", [("feast_metrics_abc123", True), ("operator-set", False)])
def test_server_metrics_stay_in_memory_unless_multiprocess_was_asked_for(tmp_path, inherited, in_memory):
    """A server started by a process that imported Feast inherits Feast's temp PROMETHEUS_MULTIPROC_DIR."""
    import subprocess

    mp_dir = tmp_path / inherited
    mp_dir.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp_dir)}
    code = (
        "from serving.environment import prepare_process_environment; prepare_process_environment(); "
        "import feast, prometheus_client.values as v; print(v.ValueClass.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert (out.stdout.strip() == "MutexValue") is in_memory, out.stdout
    # a launcher that imported Feast starts its server with the same effect
    from serving.environment import server_environment

    assert ("PROMETHEUS_MULTIPROC_DIR" not in server_environment(env)) is in_memory


def test_importing_serving_changes_no_environment(tmp_path):
    """The environment is the entry points' business (serving.environment), not an import's."""
    import subprocess

    (tmp_path / "feast_metrics_x").mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "feast_metrics_x")}
    code = "import os; before = dict(os.environ); import serving, serving.server; print(dict(os.environ) == before)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True", out.stdout
