"""Serving's entity-state interface (serving/state_backends.py): the same tests for both backends.

`embedded` is this process's tracks over an online store that knows no entity (`NeverSeen` stands
in for an empty Feast online store; the real Feast store is exercised by the integration tests);
`redis` is the shared state in a real redis-server (tests/support/redis_server.py).
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from support.state import offline_state_before

from riskops.data.generator import GeneratorConfig, generate
from riskops.features.aggregates import event_order
from riskops.features.sequences import SEQUENCE_COLUMNS, add_sequence_columns
from riskops.features.shared_state import (
    SharedEntityState,
    history_records,
    load_history_file,
    write_history_file,
)
from riskops.pii import hash_pii
from riskops.schema import coerce
from serving.entity_state import EntityTracker
from serving.state_backends import EmbeddedState, RedisState

T0 = datetime(2026, 3, 1, tzinfo=UTC)


class NeverSeen:
    """An online store that knows no entity (what an empty Feast online store answers)."""

    async def baselines(self, pairs, now):
        return {p: None for p in pairs}

    def enqueue(self, pushes) -> None:
        pass


@pytest.fixture(params=["embedded", "redis"])
def make_state(request):
    """A factory of fresh states of the backend under test."""
    if request.param == "embedded":
        yield lambda: EmbeddedState(NeverSeen(), EntityTracker())
        return
    url = request.getfixturevalue("redis_url")
    made: list[RedisState] = []

    def make() -> RedisState:
        made.append(RedisState(SharedEntityState(url)))
        return made[-1]

    yield make
    for s in made:
        s.close()


_LOOP = asyncio.new_event_loop()  # one loop: the async Redis client's connections belong to it


def lookup(state, records, update=True):
    return _LOOP.run_until_complete(state.lookup(records, update))


def _tx(i: int, minutes: float, user="u1", device="d1", ip="i1", amount=10.0, **extra) -> dict:
    return {
        "transaction_id": f"t{i}",
        "event_timestamp": T0 + timedelta(minutes=minutes),
        "amount": amount,
        "is_refund": False,
        "user_id": user,
        "merchant_id": extra.pop("merchant", "m1"),
        "device_id": device,
        "ip_hash": ip,
        "shipping_country": extra.pop("country", "US"),
        "payment_method": "card",
        "channel": "web",
        "product_category": "electronics",
        **extra,
    }


@pytest.fixture(scope="module")
def stream() -> pd.DataFrame:
    """Generated traffic, hashed, in processing order (time, transaction id)."""
    tx = hash_pii(coerce(generate(GeneratorConfig(rows=900, seed=21, days=5))))
    return tx.iloc[event_order(tx)].reset_index(drop=True)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_features_and_history_before_each_transaction_equal_the_offline_backfill(make_state, stream):
    state = make_state()
    records = history_records(stream)
    rng = np.random.default_rng(0)
    answers = []
    i = 0
    while i < len(records):  # requests of 1 to 4 transactions
        n = int(rng.integers(1, 5))
        got = lookup(state, records[i : i + n])
        assert not any(got.degraded)
        answers += list(zip(got.features, got.tokens, strict=True))
        i += n
    offline = offline_state_before(stream)
    tokens = add_sequence_columns(stream)[list(SEQUENCE_COLUMNS)].to_numpy()
    for row, ((features, (vector, _)), want) in enumerate(zip(answers, offline, strict=True)):
        for name, value in want.items():
            if not pd.isna(value):  # NaN: no earlier event of the entity (serving answers its defaults)
                assert _same(features[name], float(value)), (row, name, features[name], value)
        np.testing.assert_array_equal(vector, tokens[row])
    assert max(f["user_txn_count_24h"] for f, _ in answers) >= 3  # the stream did exercise the windows


def test_a_request_counts_its_own_earlier_transactions(make_state):
    state = make_state()
    got = lookup(state, [_tx(1, 0), _tx(2, 1), _tx(3, 2, device="d2")])
    assert [f["user_txn_count_1h"] for f in got.features] == [0.0, 1.0, 2.0]
    assert [f["user_distinct_devices_24h"] for f in got.features] == [0.0, 1.0, 1.0]
    assert [len(ids) for _, ids in got.tokens] == [0, 1, 2]
    assert got.tokens[2][1] == ["t2", "t1"]  # newest first


def test_looking_up_without_update_changes_nothing(make_state):
    state = make_state()
    lookup(state, [_tx(1, 0)])
    peeked = lookup(state, [_tx(2, 1)], update=False)
    assert peeked.features[0]["user_txn_count_1h"] == 1.0
    again = lookup(state, [_tx(3, 2)])
    assert again.features[0]["user_txn_count_1h"] == 1.0  # the explained t2 was not counted
    assert again.tokens[0][1] == ["t1"]


def test_a_retried_transaction_is_answered_the_same_and_counted_once(make_state):
    state = make_state()
    first = lookup(state, [_tx(1, 0, amount=5.0), _tx(2, 1, amount=7.0)])
    retried = lookup(state, [_tx(2, 1, amount=7.0)])
    assert retried.features[0] == first.features[1]
    assert retried.tokens[0][1] == first.tokens[1][1]
    nxt = lookup(state, [_tx(3, 2)])
    assert nxt.features[0]["user_txn_count_1h"] == 2.0
    assert nxt.features[0]["user_amount_sum_24h"] == 12.0


def test_an_event_older_than_the_entity_clock_counts_at_the_clock(make_state):
    state = make_state()
    lookup(state, [_tx(1, 0), _tx(2, 90)])
    lookup(state, [_tx(3, 5)])  # a client clock 85 minutes behind
    got = lookup(state, [_tx(4, 91)])
    # t3 counted at minute 90: inside the 1h window at minute 91 (at minute 5 it would have left)
    assert got.features[0]["user_txn_count_1h"] == 2.0
    assert got.features[0]["user_txn_count_24h"] == 3.0


def test_windows_forget_and_distinct_counts_are_exact(make_state):
    state = make_state()
    lookup(state, [_tx(i, i, device=f"d{i % 3}", amount=1.0 + i) for i in range(6)])
    got = lookup(state, [_tx(99, 6)])
    assert got.features[0]["user_distinct_devices_24h"] == 3.0
    # 30 hours on, the features before the next event are the state after t100: the earlier
    # seven have left the 1h and 24h windows, not the 7d one
    later = lookup(state, [_tx(100, 60 * 30), _tx(101, 60 * 30 + 1)])
    f = later.features[1]
    assert (f["user_txn_count_1h"], f["user_txn_count_24h"], f["user_txn_count_7d"]) == (1.0, 1.0, 8.0)
    assert f["user_distinct_devices_24h"] == 1.0
    amounts = [1.0 + i for i in range(6)] + [10.0, 10.0]
    assert math.isclose(f["user_amount_std_30d"], float(np.std(amounts)), rel_tol=1e-12)


# ------------------------------------------------------------------------------------- Redis only
def test_a_fresh_redis_state_starts_from_the_offline_history_exactly(redis_url, stream, tmp_path):
    history, live = stream.iloc[:700], stream.iloc[700:]
    path = tmp_path / "state_history.parquet"
    write_history_file(history, [], path)
    state = SharedEntityState(redis_url)
    assert load_history_file(state, path) == len(history)
    assert load_history_file(state, path) == 0  # the same history is not replayed twice
    got = state.observe(history_records(live))
    offline = offline_state_before(stream)[700:]
    tokens = add_sequence_columns(stream)[list(SEQUENCE_COLUMNS)].to_numpy()[700:]
    for (features, vector, _), want, token_row in zip(got, offline, tokens, strict=True):
        for name, value in want.items():
            if not pd.isna(value):
                assert _same(features[name], float(value)), name
        np.testing.assert_array_equal(vector, token_row)


def test_redis_keys_expire_after_the_entity_goes_silent(redis_url, redis_server):
    state = SharedEntityState(redis_url, ttl_s=1000, answer_ttl_s=60)
    state.observe([_tx(1, 0)])
    client = redis_server.client()
    keys = client.keys("riskops:*:user:u1")
    assert {k.split(b":")[1] for k in keys} == {b"s", b"e", b"h"}
    assert all(0 < client.ttl(k) <= 1000 for k in keys)
    assert 0 < client.ttl("riskops:tx:t1") <= 60  # a retry window, not the entity's lifetime


def test_redis_outage_answers_degraded_then_applies_what_was_scored_meanwhile(tmp_path):
    from support.redis_server import running_redis

    with running_redis(tmp_path / "redis", persistent=True) as server:
        state = RedisState(SharedEntityState(server.url, timeout_s=0.5), retry_after_s=0.0)
        lookup(state, [_tx(1, 0)])
        server.stop()
        down = lookup(state, [_tx(2, 1), _tx(3, 2)])
        assert down.degraded == [True, True] and state.pending
        assert down.features[0]["user_txn_count_1h"] == 0.0  # defaults, flagged
        server.start()  # the append-only file brings the state back
        back = lookup(state, [_tx(4, 3)])
        assert back.degraded == [False]
        assert back.features[0]["user_txn_count_1h"] == 3.0  # t1, and t2 + t3 applied on return
        assert back.tokens[0][1] == ["t3", "t2", "t1"]
        assert not state.pending
        state.close()


def test_a_live_redis_state_is_never_replaced_by_a_later_history(redis_url, stream, tmp_path):
    first, second = tmp_path / "first.parquet", tmp_path / "second.parquet"
    write_history_file(stream.iloc[:300], [], first)
    write_history_file(stream.iloc[:600], [], second)  # a later feature build
    state = SharedEntityState(redis_url)
    assert load_history_file(state, first) == 300
    state.observe(history_records(stream.iloc[300:320]))  # live traffic
    assert load_history_file(state, second) == 0  # replaying 300..600 on top would count them twice
    peeked = state.observe(history_records(stream.iloc[320:321]), update=False)[0][0]
    want = offline_state_before(stream.iloc[:321])[320]  # exactly events 0..319 were counted
    for name, value in want.items():
        if not pd.isna(value):
            assert _same(peeked[name], float(value)), name
