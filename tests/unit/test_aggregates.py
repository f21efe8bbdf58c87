"""riskops.features.aggregates: exact windowed aggregates, offline == incremental."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from riskops.features.aggregates import (
    EntityWindowState,
    compute_entity_features,
    event_order,
    feature_dtype,
)
from riskops.features.contract import ENTITY_FEATURE_DEFAULTS, ENTITY_FEATURES, ENTITY_KEYS

T0 = pd.Timestamp("2024-03-01T12:00:00Z")
H = pd.Timedelta(hours=1)
D = pd.Timedelta(days=1)


def ev(i, t, amount, user="u1", device="d1", ip="h1", ship="US", refund=False, merchant="m1"):
    return {
        "transaction_id": f"t{i:04d}",
        "event_timestamp": t,
        "user_id": user,
        "merchant_id": merchant,
        "device_id": device,
        "ip_hash": ip,
        "shipping_country": ship,
        "amount": amount,
        "is_refund": refund,
    }


# One user's history; comments give the event's age at the last event (T0 + 30d).
USER_HISTORY = [
    ev(0, T0, 10.0, device="d1", ip="h1", ship="US"),  # 30d old: exactly at the edge -> out of 30d
    ev(1, T0 + 10 * D, 20.0, device="d2", ip="h2", ship="GB", refund=True),  # 20d
    ev(2, T0 + 25 * D, 30.0, device="d1", ip="h1", ship="DE"),  # 5d
    ev(3, T0 + 29 * D + 23 * H, 40.0, device="d3", ip="h3", ship="US"),  # exactly 1h old -> out of 1h
    ev(4, T0 + 30 * D - 30 * pd.Timedelta(minutes=1), 5.5, device="d3", ip="", ship="FR"),  # 30 min
    ev(5, T0 + 30 * D, 1.25, device="d4", ip="h3", ship="US", refund=True),  # now
]


def _feed(events, entity="user"):
    state = EntityWindowState(entity)
    for e in events:
        state.update(e)
    return state


def test_hand_built_user_windows_exact():
    snap = _feed(USER_HISTORY).snapshot()
    assert list(snap) == list(ENTITY_FEATURES["user"])
    # 1h window (now-1h, now]: events 4, 5 (event 3 is exactly 1h old -> excluded)
    assert snap["user_txn_count_1h"] == 2
    assert snap["user_amount_sum_1h"] == 6.75
    # 24h: events 3, 4, 5
    assert snap["user_txn_count_24h"] == 3
    assert snap["user_amount_sum_24h"] == 46.75
    assert snap["user_distinct_devices_24h"] == 2  # d3, d4
    assert snap["user_distinct_ips_24h"] == 1  # h3 ('' is not an IP)
    # 7d: events 2..5
    assert snap["user_txn_count_7d"] == 4
    assert snap["user_amount_sum_7d"] == 76.75
    assert snap["user_distinct_shipping_countries_7d"] == 3  # DE, US, FR
    # 30d: events 1..5 (event 0 is exactly 30d old -> excluded)
    amounts = np.array([20.0, 30.0, 40.0, 5.5, 1.25])
    assert snap["user_amount_mean_30d"] == pytest.approx(amounts.mean(), abs=1e-12)
    assert snap["user_amount_std_30d"] == pytest.approx(amounts.std(ddof=0), abs=1e-12)
    assert snap["user_refund_rate_30d"] == pytest.approx(2 / 5)
    assert snap["user_last_event_epoch"] == (T0 + 30 * D).timestamp()


def test_snapshot_after_each_event_and_later_now():
    state = EntityWindowState("user")
    state.update(USER_HISTORY[0])
    first = state.snapshot()
    assert first["user_txn_count_1h"] == 1 and first["user_amount_std_30d"] == 0.0
    assert first["user_amount_mean_30d"] == 10.0
    # 31 days later with no new event every window is empty; last event is remembered
    later = state.snapshot(T0 + 31 * D)
    assert later["user_txn_count_7d"] == 0 and later["user_amount_sum_7d"] == 0.0
    assert math.isnan(later["user_amount_mean_30d"]) and math.isnan(later["user_amount_std_30d"])
    assert later["user_refund_rate_30d"] == 0.0
    assert later["user_last_event_epoch"] == T0.timestamp()
    with pytest.raises(ValueError, match="time order"):
        state.update(USER_HISTORY[1])  # older than the clock moved to by snapshot(now)


def test_other_entities_hand_built():
    events = [
        ev(0, T0, 100.0, user="u1", device="dX", ip="hX", merchant="m1"),
        ev(1, T0 + 10 * pd.Timedelta(minutes=1), 50.0, user="u2", device="dX", ip="hX", merchant="m1"),
        ev(2, T0 + 2 * H, 25.0, user="u3", device="dY", ip="hX", merchant="m1", refund=True),
        ev(3, T0 + 3 * D, 25.0, user="u1", device="dX", ip="hX", merchant="m1"),
    ]
    m = _feed(events[:3], "merchant").snapshot()
    assert m["merchant_txn_count_1h"] == 1
    assert m["merchant_txn_count_24h"] == 3
    assert m["merchant_distinct_users_24h"] == 3
    assert m["merchant_refund_rate_30d"] == pytest.approx(1 / 3)
    assert m["merchant_amount_mean_30d"] == pytest.approx(175 / 3)
    d = _feed([events[0], events[1], events[3]], "device").snapshot()
    assert d["device_txn_count_24h"] == 1 and d["device_distinct_users_24h"] == 1
    assert d["device_distinct_users_7d"] == 2
    ip = _feed(events[:3], "ip").snapshot()
    assert ip["ip_txn_count_1h"] == 1 and ip["ip_txn_count_24h"] == 3
    assert ip["ip_distinct_users_24h"] == 3 and ip["ip_distinct_devices_24h"] == 2


def test_money_is_exact_after_evictions():
    state = EntityWindowState("user")
    t = T0
    for i in range(500):  # many add/evict cycles of awkward floats
        state.update(ev(i, t, 0.1 + (i % 7) * 0.01))
        t += 13 * pd.Timedelta(minutes=1)
    state.update(ev(999, t + 2 * H, 0.3))
    snap = state.snapshot()
    assert snap["user_amount_sum_1h"] == 0.3  # not 0.30000000000000004 or drift
    assert snap["user_txn_count_1h"] == 1


def random_history(n=400, seed=3):
    rng = np.random.default_rng(seed)
    secs = rng.integers(0, 40 * 86400, n)
    secs[rng.random(n) < 0.15] = secs[0]  # many ties on one timestamp
    secs = secs // 600 * 600  # coarse times: more ties
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i:05d}" for i in rng.permutation(n)],
            "event_timestamp": T0 + pd.to_timedelta(secs, unit="s"),
            "user_id": rng.choice([f"u{i}" for i in range(25)], n),
            "merchant_id": rng.choice([f"m{i}" for i in range(6)], n),
            "device_id": rng.choice([f"d{i}" for i in range(30)] + [""], n),
            "ip_hash": pd.array(rng.choice([f"h{i}" for i in range(15)] + [""], n), dtype="string"),
            "shipping_country": rng.choice(["US", "GB", "DE"], n),
            "amount": np.round(rng.lognormal(3, 1.2, n), 2),
            "is_refund": rng.random(n) < 0.1,
        }
    )


def test_offline_equals_incremental_random_history():
    tx = random_history()
    offline = compute_entity_features(tx)
    ordered = tx.iloc[event_order(tx)]
    assert ordered["event_timestamp"].is_monotonic_increasing
    for entity, frame in offline.items():
        key = ENTITY_KEYS[entity]
        states: dict[str, EntityWindowState] = {}
        rows, idx = [], []
        for label, e in zip(ordered.index, ordered.to_dict("records"), strict=True):
            k = e[key]
            if k is None or k is pd.NA or k == "":
                continue
            states.setdefault(k, EntityWindowState(entity)).update(e)
            rows.append(states[k].snapshot())
            idx.append(label)
        expected = pd.DataFrame(rows, index=idx)
        assert list(frame.columns) == [key, "event_timestamp", *ENTITY_FEATURES[entity]]
        assert list(frame.index) == idx
        for f in ENTITY_FEATURES[entity]:
            np.testing.assert_array_equal(frame[f].to_numpy(dtype="float64"), expected[f].to_numpy())
            assert str(frame[f].dtype) == feature_dtype(f)
    # rows without a key belong to no entity
    assert len(offline["ip"]) == int((tx["ip_hash"] != "").sum())


def test_input_order_does_not_matter():
    tx = random_history(200, seed=11)
    a = compute_entity_features(tx)
    b = compute_entity_features(tx.sample(frac=1.0, random_state=0))
    for entity in a:
        pd.testing.assert_frame_equal(a[entity], b[entity], check_exact=True)


def test_rejects_raw_ip_and_unknown_entity():
    raw = pd.DataFrame([ev(0, T0, 1.0)]).drop(columns=["ip_hash"]).assign(ip_address="1.2.3.4")
    with pytest.raises(ValueError, match="hash PII"):
        compute_entity_features(raw)
    with pytest.raises(ValueError, match="unknown entity"):
        EntityWindowState("card")


def test_defaults_cover_every_feature():
    for entity, names in ENTITY_FEATURES.items():
        empty = EntityWindowState(entity).snapshot()
        for f in names:
            d = ENTITY_FEATURE_DEFAULTS[f]
            assert (math.isnan(d) and math.isnan(empty[f])) or d == empty[f], f


def test_50k_rows_fold_each_event_into_each_entity_once(monkeypatch):
    """One pass: every event is added to each of its entities' state exactly once (linear work).
    The CPU time of this backfill is a benchmark figure: benchmarks/micro_backfill.py."""
    added = 0
    plain_add_event = EntityWindowState.add_event

    def counting_add_event(self, ev):
        nonlocal added
        added += 1
        return plain_add_event(self, ev)

    monkeypatch.setattr(EntityWindowState, "add_event", counting_add_event)
    rng = np.random.default_rng(0)
    n = 50_000
    tx = pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "event_timestamp": T0 + pd.to_timedelta(np.sort(rng.integers(0, 60 * 86400, n)), unit="s"),
            "user_id": [f"u{x}" for x in rng.integers(0, 2500, n)],
            "merchant_id": [f"m{x}" for x in rng.integers(0, 50, n)],
            "device_id": [f"d{x}" for x in rng.integers(0, 3000, n)],
            "ip_hash": [f"h{x}" for x in rng.integers(0, 2000, n)],
            "shipping_country": rng.choice(["US", "GB", "DE", "FR"], n),
            "amount": np.round(rng.lognormal(3, 1, n), 2),
            "is_refund": rng.random(n) < 0.05,
        }
    )
    out = compute_entity_features(tx)
    assert set(out) == set(ENTITY_KEYS) and all(len(f) == n for f in out.values())
    assert added == n * len(ENTITY_KEYS)


def test_from_epoch_us_inverts_to_epoch_us():
    from datetime import UTC, datetime

    from riskops.features.aggregates import from_epoch_us, to_epoch_us

    for t in (datetime(2026, 1, 9, 12, 30, 1, 123456, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC)):
        assert from_epoch_us(to_epoch_us(t)) == t and from_epoch_us(to_epoch_us(t)).tzinfo is not None
    assert to_epoch_us(from_epoch_us(1_767_225_600_000_001)) == 1_767_225_600_000_001
