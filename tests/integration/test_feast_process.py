"""serving/feast_process.py: Feast reads and pushes done by a child process, and what happens when it dies."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest

from riskops.data.generator import GeneratorConfig, generate
from riskops.features import store as fs
from riskops.features.contract import ENTITY_FEATURES
from riskops.pii import hash_pii
from serving.entity_state import Push
from serving.feast_process import FeastProcess, FeastProcessError
from serving.online import OnlineFeatureStore, read_baselines


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = fs.prepare_repo(tmp_path_factory.mktemp("feast") / "repo")
    txs = hash_pii(generate(GeneratorConfig(rows=300, seed=2, days=2)))
    fs.write_feature_sources(repo, txs)
    fs.materialize(fs.apply(repo), end=txs["event_timestamp"].max().to_pydatetime() + timedelta(seconds=1))
    return repo


def _state(user: str, count: int) -> dict:
    row = {f: 0.0 for f in ENTITY_FEATURES["user"]}
    row.update(user_txn_count_1h=count, user_txn_count_24h=count, user_txn_count_7d=count)
    return {"user_id": user, "event_timestamp": datetime(2026, 1, 5, tzinfo=UTC), **row}


def _online_count(repo, user: str) -> float:
    return fs.online_features(fs.open_store(repo), [{"user_id": user}])[0]["user_txn_count_1h"]


def test_a_push_through_the_child_is_visible_to_any_reader(repo):
    proc = FeastProcess(repo)
    try:
        assert proc.alive() and proc.pid != os.getpid()
        assert proc.optimized  # python -O: Feast's typeguard checks off, most of a push's CPU
        assert proc.frozen_objects > 100_000  # Feast's heap frozen: no full collections walking it
        proc.push("user", [_state("pp-1", 3)])
        assert _online_count(repo, "pp-1") == 3
        with pytest.raises(FeastProcessError, match="missing columns"):  # the child's error, reported
            proc.push("user", [{"user_id": "pp-1"}])
        proc.push("user", [_state("pp-1", 4)])  # and it keeps going
        assert _online_count(repo, "pp-1") == 4
    finally:
        proc.close()
    assert not proc.alive()


def test_a_repo_that_cannot_open_fails_at_start_with_the_reason(tmp_path):
    with pytest.raises(FeastProcessError, match="cannot open the Feast repo"):
        FeastProcess(tmp_path / "no-such-repo")


def test_the_online_store_replaces_a_dead_child_and_loses_no_state(repo):
    online = OnlineFeatureStore(repo, retry_after_s=0.2, push_interval_s=0.05, push_process=True)
    try:
        online.enqueue([Push("user", "pp-2", datetime(2026, 1, 5, tzinfo=UTC), _state("pp-2", 1))])
        assert online.flush(60) and _online_count(repo, "pp-2") == 1
        first = online._push_store
        os.kill(first.pid, signal.SIGKILL)
        first._proc.wait(10)
        state = _state("pp-2", 7)
        online.enqueue([Push("user", "pp-2", state["event_timestamp"], state)])
        deadline = time.monotonic() + 60
        while _online_count(repo, "pp-2") != 7 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _online_count(repo, "pp-2") == 7  # requeued after the failure, pushed by a new child
        assert online._push_store is not first and online._push_store.alive()
    finally:
        online.close()


def test_a_read_through_the_child_equals_the_in_process_read(repo):
    """The child runs the server's own read (`read_baselines`): same floats, same snapshot times."""
    known = hash_pii(generate(GeneratorConfig(rows=300, seed=2, days=2))).iloc[-40:]
    pairs = list(
        dict.fromkeys(
            pair
            for r in known.itertuples()
            for pair in (
                ("user", r.user_id),
                ("merchant", r.merchant_id),
                ("device", r.device_id),
                ("ip", r.ip_hash),
            )
        )
    ) + [("user", "pp-3")]  # never seen: defaults
    now = known["event_timestamp"].max().to_pydatetime()  # within the ttl: the stored states count
    proc = FeastProcess(repo)
    try:
        got = proc.read(pairs, now)
    finally:
        proc.close()
    want = read_baselines(fs.open_store(repo), pairs, now)
    assert got.keys() == want.keys() == set(pairs)
    for pair in pairs:
        a, b = got[pair], want[pair]
        assert a.keys() == b.keys() and all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a), pair
    assert sum(got[p]["user_txn_count_24h"] > 0 for p in pairs if p[0] == "user") > 0  # stored states
    assert got[("user", "pp-3")]["user_txn_count_24h"] == 0.0


def test_a_dead_read_child_answers_degraded_then_is_replaced(repo):
    import asyncio

    online = OnlineFeatureStore(repo, timeout_s=2.0, retry_after_s=0.2, read_process=True)
    pairs = [("user", "pp-4")]
    try:
        assert online.open()
        first = online._read_store
        assert isinstance(first, FeastProcess) and first.alive()
        assert asyncio.run(online.baselines(pairs))[pairs[0]]["user_txn_count_1h"] == 0.0
        os.kill(first.pid, signal.SIGKILL)
        first._proc.wait(10)
        assert asyncio.run(online.baselines(pairs)) is None  # degraded, never an error
        deadline = time.monotonic() + 60
        got = None
        while got is None and time.monotonic() < deadline:
            time.sleep(0.3)  # past retry_after_s: the next read opens a new child
            got = asyncio.run(online.baselines(pairs))
        assert got is not None and got[pairs[0]]["user_txn_count_1h"] == 0.0
        assert online._read_store is not first and online._read_store.alive()
    finally:
        online.close()
