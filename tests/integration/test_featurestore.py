"""riskops.features.store + riskops.features.build on a real (local) Feast repo.

(a) point in time: a transaction sees no event after it, nor its own event, nor a tie;
(b) nothing dropped: rows in == rows out, keys join back, never-seen entities get defaults;
(c) the online store after materialize holds the latest state; (d) a push is visible on the next read.
"""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from riskops.features import store as fs
from riskops.features.aggregates import ENTITIES, EntityWindowState, compute_entity_features, event_order
from riskops.features.contract import (
    ALL_ENTITY_FEATURES,
    ENTITY_FEATURE_DEFAULTS,
    ENTITY_FEATURES,
    ENTITY_KEYS,
    snapshot_time_key,
)

T0 = pd.Timestamp("2024-03-01T12:00:00Z")
MIN = pd.Timedelta(minutes=1)
H = pd.Timedelta(hours=1)
D = pd.Timedelta(days=1)


def _tx(tid, t, user, merchant, device, ip, amount, refund=False, fraud=0):
    return {
        "transaction_id": tid,
        "event_timestamp": t,
        "user_id": user,
        "merchant_id": merchant,
        "device_id": device,
        "ip_hash": ip,
        "amount": amount,
        "is_refund": refund,
        "shipping_country": "US",
        "is_fraud": fraud,
    }


HISTORY = pd.DataFrame(
    [
        _tx("t01", T0, "u1", "m1", "d1", "h1", 10.0),
        _tx("t02", T0 + 10 * MIN, "u1", "m1", "d1", "h1", 20.0),  # tie with t03
        _tx("t03", T0 + 10 * MIN, "u1", "m2", "d2", "h1", 30.0, refund=True),
        _tx("t04", T0 + 30 * MIN, "u2", "m1", "d3", "h2", 40.0),  # u2: no history
        _tx("t05", T0 + 2 * H, "u1", "m1", "d1", "h1", 50.0, fraud=1),
        _tx("t06", T0 + 3 * H, "u3", "m2", "d4", "", 60.0),  # no IP
        _tx("t07", T0 + 40 * D, "u3", "m2", "d4", "h3", 70.0),  # u3 back after the ttl
        _tx("t08", T0 + 40 * D + pd.Timedelta(seconds=1), "u1", "m1", "d1", "h1", 80.0),
        _tx("t09", T0 + 40 * D + H, "u4", "m1", "d1", "h1", 5.0),  # new user, known device/IP
    ]
)


def random_history(n=300, seed=5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    secs = rng.integers(0, 70 * 86400, n) // 900 * 900  # 15-min grid: ties happen
    return pd.DataFrame(
        {
            "transaction_id": [f"r{i:04d}" for i in range(n)],
            "event_timestamp": T0 + pd.to_timedelta(secs, unit="s"),
            "user_id": rng.choice([f"ru{i}" for i in range(30)], n),
            "merchant_id": rng.choice([f"rm{i}" for i in range(5)], n),
            "device_id": rng.choice([f"rd{i}" for i in range(40)], n),
            "ip_hash": rng.choice([f"rh{i}" for i in range(20)] + [""], n),
            "amount": np.round(rng.lognormal(3, 1, n), 2),
            "is_refund": rng.random(n) < 0.1,
            "shipping_country": rng.choice(["US", "GB"], n),
            "is_fraud": (rng.random(n) < 0.05).astype(int),
        }
    )


def expected_before(tx: pd.DataFrame) -> pd.DataFrame:
    """Reference, the slow obvious way: per transaction, replay the entity's events strictly before it."""
    ordered = tx.iloc[event_order(tx)]
    records = ordered.to_dict("records")
    times = pd.to_datetime(ordered["event_timestamp"], utc=True).tolist()
    out = {}
    for label, rec, t in zip(ordered.index, records, times, strict=True):
        row = {}
        for entity, key in ENTITY_KEYS.items():
            k = rec[key]
            prior = [r for r, s in zip(records, times, strict=True) if k and r[key] == k and s < t]
            expired = (
                not prior or pd.Timestamp(prior[-1]["event_timestamp"]) < t - fs.QUERY_OFFSET - fs.FEATURE_TTL
            )
            if expired:
                row.update({f: ENTITY_FEATURE_DEFAULTS[f] for f in ENTITY_FEATURES[entity]})
                continue
            state = EntityWindowState(entity)
            for r in prior:
                state.update(r)
            row.update(state.snapshot())
        out[label] = row
    return pd.DataFrame.from_dict(out, orient="index").loc[tx.index]


def assert_features_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    for f in ALL_ENTITY_FEATURES:
        np.testing.assert_allclose(
            got[f].to_numpy(dtype="float64"), want[f].to_numpy(dtype="float64"), rtol=0, atol=1e-9, err_msg=f
        )


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    return pd.concat([HISTORY, random_history()], ignore_index=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory, history):
    repo = fs.prepare_repo(tmp_path_factory.mktemp("feast") / "repo")
    fs.write_feature_sources(repo, history)
    return fs.apply(repo)


def _read_while_a_writer_holds_the_lock(db: Path) -> None:
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")  # a writer in the middle of its commit
        reader = sqlite3.connect(db, timeout=0.05)
        try:
            reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            reader.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_the_sqlite_online_store_lets_readers_in_while_a_push_writes(store, tmp_path):
    # Serving reads first-seen entities while its pusher writes (use_wal's docstring): in WAL mode
    # the read goes through; in SQLite's default journal mode the same read is locked out.
    db = fs.sqlite_online_path(store)
    assert db is not None and db.exists()
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    _read_while_a_writer_holds_the_lock(db)
    assert fs.use_wal(fs.open_store(store.repo_path))  # idempotent on an open repo

    rollback = tmp_path / "rollback.db"
    with sqlite3.connect(rollback) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _read_while_a_writer_holds_the_lock(rollback)


@pytest.mark.parametrize("engine", ["feast", "asof"])
def test_point_in_time_excludes_own_and_later_events(store, history, engine):
    frame = fs.training_frame(store, history, engine=engine)
    by_id = frame.set_index("transaction_id")
    # t01: nothing before it
    for f in ALL_ENTITY_FEATURES:
        d, v = ENTITY_FEATURE_DEFAULTS[f], by_id.loc["t01", f]
        assert (math.isnan(d) and math.isnan(v)) or v == d, f
    # t02/t03 share a timestamp: each sees t01 only, not itself, not its tie
    for tid in ("t02", "t03"):
        assert by_id.loc[tid, "user_txn_count_24h"] == 1
        assert by_id.loc[tid, "user_amount_sum_24h"] == 10.0
        assert by_id.loc[tid, "ip_txn_count_24h"] == 1
        assert by_id.loc[tid, "user_last_event_epoch"] == T0.timestamp()
    assert by_id.loc["t02", "device_txn_count_24h"] == 1 and by_id.loc["t03", "device_txn_count_24h"] == 0
    assert by_id.loc["t04", "merchant_txn_count_24h"] == 2  # t01, t02 (t03 is m2; t05 is later)
    # t05 sees the state after the events at T0+10min (windows anchored there), not t05 itself
    assert by_id.loc["t05", "user_txn_count_24h"] == 3
    assert by_id.loc["t05", "user_txn_count_1h"] == 3
    assert by_id.loc["t05", "user_refund_rate_30d"] == pytest.approx(1 / 3)
    assert by_id.loc["t05", "user_last_event_epoch"] == (T0 + 10 * MIN).timestamp()
    # after the 30-day ttl a state is not used: u3 and u1 look new again
    assert (
        math.isnan(by_id.loc["t07", "user_last_event_epoch"]) and by_id.loc["t07", "user_txn_count_7d"] == 0
    )
    assert math.isnan(by_id.loc["t08", "user_last_event_epoch"])
    # t09: a brand-new user on a device/IP that t08 used one hour earlier
    assert math.isnan(by_id.loc["t09", "user_last_event_epoch"])
    assert by_id.loc["t09", "device_txn_count_1h"] == 1  # the state after t08: windows anchored at t08
    assert by_id.loc["t09", "device_txn_count_24h"] == 1
    assert by_id.loc["t09", "ip_txn_count_24h"] == 1
    # every transaction, every feature: equal to replaying the strictly earlier events
    assert_features_equal(frame, expected_before(history))


def test_no_row_dropped_and_keys_join_back(store, history):
    shuffled = history.sample(frac=1.0, random_state=1)
    shuffled.index = pd.RangeIndex(1000, 1000 + len(shuffled))[::-1]  # unusual index labels
    frame = fs.training_frame(store, shuffled)
    assert len(frame) == len(shuffled)
    assert frame.index.equals(shuffled.index)
    assert frame["transaction_id"].tolist() == shuffled["transaction_id"].tolist()
    assert frame["is_fraud"].tolist() == shuffled["is_fraud"].tolist()  # label kept
    assert set(ALL_ENTITY_FEATURES) <= set(frame.columns)
    base = fs.training_frame(store, history).set_index("transaction_id")
    assert_features_equal(frame.set_index("transaction_id").loc[base.index], base)
    # never-seen entity (u2 at t04; a key the store has never heard of) -> defaults, not dropped
    extra = pd.DataFrame([_tx("x1", T0 + 41 * D, "ghost", "m1", "d-ghost", "h-ghost", 1.0)])
    one = fs.training_frame(store, extra)
    assert len(one) == 1 and one["user_txn_count_24h"].iloc[0] == 0
    assert math.isnan(one["user_amount_mean_30d"].iloc[0])
    assert one["merchant_txn_count_24h"].iloc[0] == 2  # m1 is known: the state after t09 (t08, t09)
    row = frame.set_index("transaction_id").loc["t04"]
    assert row["user_txn_count_24h"] == 0 and math.isnan(row["user_last_event_epoch"])
    assert frame.set_index("transaction_id").loc["t06", "ip_txn_count_24h"] == 0  # no IP -> default
    with pytest.raises(ValueError, match="unique"):
        fs.training_frame(store, pd.concat([extra, extra]))


def _latest_states(history: pd.DataFrame, end: pd.Timestamp) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for entity, frame in compute_entity_features(history).items():
        key = ENTITY_KEYS[entity]
        last = frame.groupby(key, observed=True).tail(1)
        last = last[last["event_timestamp"] >= end - fs.FEATURE_TTL]
        out[entity] = {r[key]: r for r in last.to_dict("records")}
    return out


def test_online_after_materialize_then_push(store, history):
    end = pd.to_datetime(history["event_timestamp"], utc=True).max()
    fs.materialize(store, end.to_pydatetime())
    latest = _latest_states(history, end)
    users = sorted(latest["user"]) + ["ghost"]
    rows = [{"user_id": u, "merchant_id": "m1", "device_id": "d1", "ip_hash": "h1"} for u in users]
    got = fs.online_features(store, rows)
    assert len(got) == len(rows)
    for u, feats in zip(users, got, strict=True):
        want = latest["user"].get(u)
        for f in ENTITY_FEATURES["user"]:
            w = ENTITY_FEATURE_DEFAULTS[f] if want is None else float(want[f])
            assert (math.isnan(w) and math.isnan(feats[f])) or feats[f] == pytest.approx(w, abs=1e-9), (u, f)
        for f in ENTITY_FEATURES["merchant"]:
            w = float(latest["merchant"]["m1"][f])
            assert (math.isnan(w) and math.isnan(feats[f])) or feats[f] == pytest.approx(w, abs=1e-9)
    assert (
        got[users.index("u1")]["user_last_event_epoch"] == (T0 + 40 * D + pd.Timedelta(seconds=1)).timestamp()
    )
    # the ttl applies online too when the request time is given
    stale = fs.online_features(store, rows[:1], now=end + 31 * D)[0]
    assert stale["user_txn_count_24h"] == 0 and math.isnan(stale["user_last_event_epoch"])
    assert math.isnan(stale[snapshot_time_key("user")])
    # with the request time, each entity's snapshot time comes along (serving ages windows with it)
    timed = fs.online_features(store, rows, now=end)
    m1_last = pd.to_datetime(history.loc[history["merchant_id"] == "m1", "event_timestamp"], utc=True).max()
    assert timed[0][snapshot_time_key("merchant")] == int(m1_last.timestamp())  # Feast keeps whole seconds
    assert math.isnan(timed[users.index("ghost")][snapshot_time_key("user")])
    assert snapshot_time_key("merchant") not in got[0]  # only asked for with `now`
    # a row without keys gets defaults
    assert fs.online_features(store, [{}])[0]["ip_txn_count_1h"] == 0

    # (d) serving-style update: replay u1, add a new event, push the snapshot, read it back
    u1 = history[history["user_id"] == "u1"]
    state = EntityWindowState("user")
    for r in u1.iloc[event_order(u1)].to_dict("records"):
        state.update(r)
    new_t = end + 5 * MIN
    state.update(_tx("live1", new_t, "u1", "m1", "d9", "h9", 999.0))
    snap = state.snapshot()
    push_row = {"user_id": "u1", "event_timestamp": new_t, **snap}
    others = [{"user_id": u} for u in users if u != "u1"]
    others_before = fs.online_features(store, others)
    fs.push_entity_state(store, "user", [push_row])
    # visible to the very next read (how fast: `make bench-serving`, Feast push->visible staleness)
    after = fs.online_features(store, [{"user_id": "u1"}])[0]
    assert after["user_last_event_epoch"] == new_t.timestamp()
    assert after["user_txn_count_1h"] == snap["user_txn_count_1h"] == 1
    assert after["user_amount_sum_1h"] == 999.0
    # and it wrote that one user's state only
    others_after = fs.online_features(store, others)
    for before, now in zip(others_before, others_after, strict=True):
        assert before.keys() == now.keys()
        for f in ENTITY_FEATURES["user"]:
            assert (math.isnan(before[f]) and math.isnan(now[f])) or before[f] == now[f], f
    with pytest.raises(ValueError, match="missing columns"):
        fs.push_entity_state(store, "user", pd.DataFrame([{"user_id": "u1"}]))


def _sdk_online_features(store, rows: list[dict], now) -> list[dict]:
    """The reference: Feast's own FeatureStore.get_online_features, with riskops' defaults and ttl."""
    keys = [{ENTITY_KEYS[e]: fs._key_str(r.get(ENTITY_KEYS[e])) for e in ENTITIES} for r in rows]
    resp = store.get_online_features(features=fs.online_feature_refs(), entity_rows=keys).to_dict(
        include_event_timestamps=now is not None
    )
    cutoff = None if now is None else (now - fs.FEATURE_TTL).timestamp()
    out: list[dict] = [{} for _ in rows]
    for entity in ENTITIES:
        names = ENTITY_FEATURES[entity]
        ts = resp.get(f"{names[0]}__ts")
        for i, row in enumerate(keys):
            known = bool(row[ENTITY_KEYS[entity]]) and not (ts is not None and (ts[i] or 0) < cutoff)
            for f in names:
                v = resp[f][i] if known else None
                out[i][f] = ENTITY_FEATURE_DEFAULTS[f] if v is None else float(v)
            if ts is not None:
                out[i][snapshot_time_key(entity)] = float(ts[i]) if known and ts[i] else float("nan")
    return out


def test_online_features_equal_feasts_get_online_features(store, history):
    """online_features reads through the provider's online_read; Feast's SDK call must agree with it
    on known, unknown, keyless, repeated and expired entities, with and without the request time."""
    end = pd.to_datetime(history["event_timestamp"], utc=True).max()
    fs.materialize(store, end.to_pydatetime())
    latest = _latest_states(history, end)
    users, merchants = sorted(latest["user"]), sorted(latest["merchant"])
    devices, ips = sorted(latest["device"]), sorted(latest["ip"])
    rows = [
        {
            "user_id": u,
            "merchant_id": merchants[i % len(merchants)],
            "device_id": devices[i % len(devices)],
            "ip_hash": ips[i % len(ips)],
        }
        for i, u in enumerate(users)
    ]
    rows += [
        {"user_id": "ghost", "merchant_id": merchants[0], "device_id": None, "ip_hash": float("nan")},
        {},  # no keys at all
        dict(rows[0]),  # the same entities twice in one read
    ]
    known_values = 0
    for now in (None, end, end + 10 * D, end + 31 * D):
        got = fs.online_features(store, rows, now=now)
        want = _sdk_online_features(store, rows, now)
        assert len(got) == len(want) == len(rows)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g.keys() == w.keys(), (now, i)
            for f in w:
                both_nan = isinstance(w[f], float) and math.isnan(w[f]) and math.isnan(g[f])
                assert both_nan or g[f] == w[f], (now, i, f, g[f], w[f])
                known_values += (
                    f in ENTITY_FEATURES["user"] and g[f] != ENTITY_FEATURE_DEFAULTS[f] and not both_nan
                )
    assert known_values > 0  # the comparison saw real stored states, not only defaults
    # past the ttl every stored state reads as unknown on both paths
    expired = fs.online_features(store, rows[:1], now=end + 31 * D)[0]
    assert expired["user_txn_count_24h"] == 0 and math.isnan(expired[snapshot_time_key("user")])


def test_definitions_honour_data_dir_env(tmp_path, monkeypatch):
    repo = fs.prepare_repo(tmp_path / "repo")
    mod = fs.load_definitions(repo)
    assert mod.user_source.path == "data/user_features.parquet"
    assert {
        v.name for v in (mod.user_features, mod.merchant_features, mod.device_features, mod.ip_features)
    } == {
        "user_features",
        "merchant_features",
        "device_features",
        "ip_features",
    }
    assert {o.name for o in fs.feast_objects(mod) if type(o).__name__ == "PushSource"} == {
        "user_push",
        "merchant_push",
        "device_push",
        "ip_push",
    }
    monkeypatch.setenv("RISKOPS_FEATURE_DATA_DIR", str(tmp_path / "elsewhere"))
    mod = fs.load_definitions(repo)
    assert mod.ip_source.path == str((tmp_path / "elsewhere" / "ip_features.parquet").resolve())


def test_feast_cli_apply_on_a_repo_copy(tmp_path):
    repo = fs.prepare_repo(tmp_path / "repo")
    fs.write_feature_sources(repo, HISTORY)
    feast = Path(sys.executable).parent / "feast"
    env = {**os.environ, "FEAST_USAGE": "False"}
    done = subprocess.run(
        [str(feast), "-c", str(repo), "apply"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    views = {fv.name for fv in fs.open_store(repo).list_feature_views()}
    assert views == {"user_features", "merchant_features", "device_features", "ip_features"}


def test_build_features_component(tmp_path):
    from components.build_features import build_features_op
    from riskops.features.build import build_features

    raw = HISTORY.drop(columns=["ip_hash"]).assign(
        ip_address=["10.0.0.1"] * 3 + ["10.0.0.2", "10.0.0.1", "", "10.0.0.3", "10.0.0.1", "10.0.0.1"],
        email=[f"{u}@example.com" for u in HISTORY["user_id"]],
    )
    result = build_features(raw, tmp_path / "repo")
    frame = result.training_frame
    assert len(frame) == len(raw) and frame["transaction_id"].tolist() == raw["transaction_id"].tolist()
    assert "ip_address" not in frame.columns and "email" not in frame.columns
    assert {"ip_hash", "email_hash", "is_fraud"} <= set(frame.columns)
    assert frame.set_index("transaction_id").loc["t05", "ip_txn_count_24h"] == 3  # hashed IP still joins
    assert result.materialized_until == HISTORY["event_timestamp"].max().to_pydatetime()
    assert result.metrics()["rows"] == len(raw)
    online = fs.online_features(fs.open_store(result.repo), [{"user_id": "u4"}])[0]
    assert online["user_txn_count_1h"] == 1  # materialized up to the last event (t09)
    spec = build_features_op.component_spec
    assert {"transactions", "feature_repo_dir"} <= set(spec.inputs) and {"training_set", "metrics"} <= set(
        spec.outputs
    )
