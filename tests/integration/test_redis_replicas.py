"""Two real serving replicas over one real Redis: read-your-writes across replicas, offline parity,
a replica started later, and a Redis restart under load.

Each replica is `python -m serving` over its own copy of the built home (its own prediction log,
as each pod has), with ``state_backend=redis``; the first to start replays the feature build's
history into Redis (`riskops.features.shared_state`), the other finds it loaded.
"""

from __future__ import annotations

import itertools
import math
import shutil
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from support.redis_server import running_redis
from support.servers import T_BASE, logged, predict, running_server, tx
from support.state import offline_state_before

from riskops.data.generator import GeneratorConfig, generate
from riskops.features.contract import ALL_ENTITY_FEATURES
from riskops.features.sequences import ENTITY_COLUMN, event_columns, prior_positions
from riskops.pii import hash_pii
from riskops.schema import COLUMNS, LABEL_COLUMN, coerce
from riskops.settings import paths

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    """This module's own Redis (persistent: the restart test must find its state again)."""
    with running_redis(tmp_path_factory.mktemp("redis"), persistent=True) as server:
        yield server


def _replica_settings(redis) -> tuple[str, ...]:
    return ("state_backend=redis", f"redis_url={redis.url}", "feast_retry_after_s=0.5")


def _home_copy(tmp_path_factory, built_home, name: str):
    root = tmp_path_factory.mktemp(name)
    shutil.copytree(built_home[0].root, root / "home")
    return root, paths(root / "home")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, built_home, redis):
    (root_a, home_a), (root_b, home_b) = (_home_copy(tmp_path_factory, built_home, n) for n in ("a", "b"))
    settings = _replica_settings(redis)
    with running_server(root_a, home_a, built_home[1], *settings) as a:
        with running_server(root_b, home_b, built_home[1], *settings) as b:
            yield a, b


def _both_logs(replicas) -> pd.DataFrame:
    log = pd.concat([logged(r) for r in replicas], ignore_index=True)
    return log.sort_values(["event_timestamp", "transaction_id"]).reset_index(drop=True)


def test_a_burst_alternating_between_replicas_counts_as_in_one_process(replicas):
    burst = [
        tx(user_id="burst-user", device_id="burst-device", ip_address="10.9.9.9",
           event_timestamp=(T_BASE + timedelta(days=2, minutes=i)).isoformat())
        for i in range(6)
    ]  # fmt: skip
    for order, replica in zip(burst, itertools.cycle(replicas), strict=False):
        assert predict(replica, [order]).status_code == 200
    log = _both_logs(replicas).set_index("transaction_id").loc[[o["transaction_id"] for o in burst]]
    assert log["user_txn_count_1h"].tolist() == [0, 1, 2, 3, 4, 5]
    assert log["device_txn_count_24h"].tolist() == [0, 1, 2, 3, 4, 5]
    ids = [o["transaction_id"] for o in burst]
    assert [list(h) for h in log["history"]] == [ids[:i][::-1] for i in range(6)]
    assert not log["degraded"].any()


def _request(row: pd.Series) -> dict:
    rec = {c: row[c] for c in COLUMNS if c in row.index and c not in (LABEL_COLUMN, "fraud_type", "order_status")}
    rec["event_timestamp"] = row["event_timestamp"].isoformat()
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in rec.items()}


def test_a_stream_through_both_replicas_equals_the_offline_backfill(replicas):
    """Known users, devices and IPs of the built history (tests/support/servers.build_home) order
    again, alternating replicas: their windows continue the offline history exactly."""
    history = generate(GeneratorConfig(rows=1200, seed=5, days=7))
    rng = np.random.default_rng(8)
    picks = np.concatenate([rng.choice(len(history), 30, replace=False), np.repeat([3, 50, 700], 3)])
    stream = history.iloc[picks].copy()
    stream["transaction_id"] = [f"par-{i:03d}" for i in range(len(stream))]
    stream["event_timestamp"] = [T_BASE + timedelta(days=1, minutes=2 * i) for i in range(len(stream))]
    for (_, row), replica in zip(stream.iterrows(), itertools.cycle(replicas), strict=False):
        assert predict(replica, [_request(row)]).status_code == 200

    log = _both_logs(replicas).set_index("transaction_id").loc[stream["transaction_id"]]
    both = hash_pii(coerce(pd.concat([history, stream], ignore_index=True)))
    both = both.sort_values(["event_timestamp", "transaction_id"], kind="stable").reset_index(drop=True)
    before = offline_state_before(both)
    position = {tid: i for i, tid in enumerate(both["transaction_id"])}
    checked = 0
    for tid, served in log.iterrows():
        for name, value in before[position[tid]].items():
            if not pd.isna(value):
                assert math.isclose(served[name], value, rel_tol=1e-12, abs_tol=1e-9), (tid, name)
                checked += 1
    assert checked > 20 * len(ALL_ENTITY_FEATURES)  # known entities: most windows had history
    ev = event_columns(both)
    prior = prior_positions(ev["t_us"], {e: ev[c] for e, c in ENTITY_COLUMN.items()})
    ids = both["transaction_id"].to_numpy()
    for tid, served in log.iterrows():
        assert list(served["history"]) == [ids[j] for j in prior[position[tid]] if j >= 0], tid


def test_a_replica_started_later_reads_the_exact_state(replicas, tmp_path_factory, built_home, redis):
    first = [tx(user_id="late-user", event_timestamp=(T_BASE + timedelta(days=3, minutes=i)).isoformat())
             for i in range(3)]  # fmt: skip
    for order in first:
        assert predict(replicas[0], [order]).status_code == 200
    root, home = _home_copy(tmp_path_factory, built_home, "c")
    with running_server(root, home, built_home[1], *_replica_settings(redis)) as late:
        nxt = tx(user_id="late-user", event_timestamp=(T_BASE + timedelta(days=3, minutes=3)).isoformat())
        assert predict(late, [nxt]).status_code == 200
        row = logged(late).set_index("transaction_id").loc[nxt["transaction_id"]]
    assert row["user_txn_count_1h"] == 3 and not row["degraded"]
    assert list(row["history"]) == [o["transaction_id"] for o in first][::-1]


def test_a_redis_restart_under_load_answers_degraded_and_loses_nothing(replicas, redis):
    a, b = replicas
    t = T_BASE + timedelta(days=4)
    assert predict(a, [tx(user_id="outage-user", event_timestamp=t.isoformat())]).status_code == 200
    redis.stop()
    during = [tx(user_id="outage-user", event_timestamp=(t + timedelta(minutes=i)).isoformat()) for i in (1, 2)]
    for order, replica in zip(during, (a, b), strict=True):
        r = predict(replica, [order])
        assert r.status_code == 200
        assert r.json()["predictions"][0]["degraded"] is True
    redis.start()  # the append-only file brings the state back
    answers = []
    for i in range(3, 40):  # each replica retries Redis 0.5 s after its failure
        r = predict(a, [tx(user_id="outage-user", event_timestamp=(t + timedelta(minutes=i)).isoformat())])
        assert r.status_code == 200
        answers.append(r.json()["predictions"][0])
        if not answers[-1]["degraded"]:
            break
    assert not answers[-1]["degraded"]
    log = logged(a).set_index("transaction_id")
    last = log.loc[log.index[log["degraded"] == False][-1]]  # noqa: E712 - a pandas mask
    # every earlier order of the user counted once: the first, the two scored during the outage
    # (a's applied from its backlog; b's when b next reaches Redis) and a's retries since
    assert last["user_txn_count_1h"] == 1 + 1 + len(answers) - 1
    b_next = tx(user_id="outage-user", event_timestamp=(t + timedelta(minutes=50)).isoformat())
    assert predict(b, [b_next]).status_code == 200
    b_row = logged(b).set_index("transaction_id").loc[b_next["transaction_id"]]
    assert not b_row["degraded"]
    assert b_row["user_txn_count_1h"] == 1 + len(during) + len(answers)  # nothing acknowledged was lost


def test_the_feature_build_starts_an_empty_shared_state(redis_url, tmp_path, monkeypatch, redis_server):
    """On a cluster the pipeline's feature step starts the replicas' state (RISKOPS_REDIS_URL set)."""
    from riskops.features.build import build_features

    monkeypatch.setenv("RISKOPS_REDIS_URL", redis_url)
    build_features(generate(GeneratorConfig(rows=300, seed=2, days=3)), tmp_path / "repo")
    client = redis_server.client()
    assert client.get("riskops:loaded") is not None and client.keys("riskops:s:user:*")
    marker = client.get("riskops:loaded")
    build_features(generate(GeneratorConfig(rows=300, seed=3, days=3)), tmp_path / "repo2")
    assert client.get("riskops:loaded") == marker  # a live state is kept, never replayed over
