"""serving/feast_process.py: Feast pushes done by a child process, and what happens when it dies."""

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
from serving.online import OnlineFeatureStore


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


@pytest.mark.slow  # 10-15 s: keeps `make test-fast` under 3 minutes
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
