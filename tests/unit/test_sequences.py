"""Behaviour sequences (riskops.features.sequences): point-in-time, and the same offline and online."""

from __future__ import annotations

import itertools
from collections import deque

import numpy as np
import pandas as pd
import pytest

from riskops.data.generator import GeneratorConfig, generate
from riskops.features import sequences as S
from riskops.pii import hash_pii
from riskops.schema import coerce


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    return hash_pii(coerce(generate(GeneratorConfig(rows=1500, seed=11))))


def _tokens(frame: pd.DataFrame, row: int, field: str) -> np.ndarray:
    return np.array([frame.iloc[row][S.column_name(i, field)] for i in range(S.SEQUENCE_LENGTH)])


def _tx(i: int, minutes: float, user="u1", device="d1", ip="i1", amount=10.0, **extra) -> dict:
    base = {
        "transaction_id": f"t{i}",
        "event_timestamp": pd.Timestamp("2026-03-01", tz="UTC") + pd.Timedelta(minutes=minutes),
        "user_id": user,
        "device_id": device,
        "ip_hash": ip,
        "merchant_id": "m1",
        "card_hash": "c1",
        "amount": amount,
        "payment_method": "credit_card",
        "channel": "web",
        "shipping_country": "US",
        "product_category": "electronics",
        "is_refund": False,
    }
    return {**base, **extra}


def test_history_holds_only_strictly_earlier_events_newest_first():
    frame = pd.DataFrame([_tx(0, 0, amount=5), _tx(1, 10, amount=7), _tx(2, 10, amount=9), _tx(3, 30)])
    seq = S.sequence_columns(frame)
    rel = [_tokens(seq, r, "relation") for r in range(4)]
    assert (rel[0] == 0).all()  # the first event has no history
    # the two events at minute 10 do not see each other, only minute 0
    assert rel[1][0] == rel[2][0] == 8 and (rel[1][1:] == 0).all() and (rel[2][1:] == 0).all()
    # minute 30 sees three events, newest first: equal times in row order (t2 before t1)
    assert (rel[3][:3] == 8).all() and (rel[3][3:] == 0).all()
    amounts = np.expm1(_tokens(seq, 3, "amount_log")[:3])
    assert np.allclose(amounts, [9, 7, 5])
    gaps = np.expm1(_tokens(seq, 3, "gap_log")[:3])
    assert np.allclose(gaps, [1200, 1200, 1800])


def test_relations_and_comparisons_to_the_scored_transaction():
    frame = pd.DataFrame([
        _tx(0, 0, user="u2", device="d1", ip="i9", shipping_country="NG", card_hash=""),  # another user, same device
        _tx(1, 5, user="u1", device="d7", ip="i1"),  # same user, same IP, other device
        _tx(2, 9, user="u1", device="d1", ip="i1", amount=100.0),
    ])  # fmt: skip
    seq = S.sequence_columns(frame)
    assert list(_tokens(seq, 2, "relation")[:2]) == [1 + 1 + 4, 1 + 2]
    assert list(_tokens(seq, 2, "same_shipping_country")[:2]) == [1.0, 0.0]
    assert list(_tokens(seq, 2, "same_card")[:2]) == [1.0, 0.0]  # an empty card matches nothing
    assert _tokens(seq, 2, "amount_ratio_log")[0] == pytest.approx(np.log1p(10.0) - np.log1p(100.0))


def test_future_rows_do_not_change_the_past(history):
    head = history.iloc[:1000]
    before = S.sequence_columns(head)
    after = S.sequence_columns(history).iloc[:1000]
    pd.testing.assert_frame_equal(before, after)


def test_labels_are_not_inputs(history):
    flipped = history.assign(is_fraud=1 - history["is_fraud"], fraud_type="none")
    pd.testing.assert_frame_equal(S.sequence_columns(history), S.sequence_columns(flipped))


def test_missing_keys_belong_to_no_entity():
    frame = pd.DataFrame([_tx(0, 0, device="", ip=""), _tx(1, 1, user="u9", device="", ip="")])
    seq = S.sequence_columns(frame)
    assert (_tokens(seq, 1, "relation") == 0).all()  # no shared user, and '' is not a shared device


def test_online_replay_equals_offline(history):
    """The serving path (events kept per entity, `encode_one`) gives the offline tokens exactly."""
    offline = S.sequence_columns(history).to_numpy()
    ev = S.event_columns(history)
    positions = S.prior_positions(ev["t_us"], {e: ev[c] for e, c in S.ENTITY_COLUMN.items()})
    kept: dict[tuple[str, str], deque] = {}
    arrivals = itertools.count()
    for i, record in enumerate(history.to_dict("records")):
        keys = [(e, str(record[c])) for e, c in S.ENTITY_COLUMN.items() if isinstance(record[c], str) and record[c]]
        prior = itertools.chain.from_iterable(kept.get(k, ()) for k in keys)
        event = S.event_record(record, int(ev["t_us"][i]))
        tokens, ids = S.encode_one(event, prior)
        np.testing.assert_allclose(tokens, offline[i], rtol=0, atol=1e-12)
        assert ids == [history["transaction_id"].iloc[j] for j in positions[i] if j >= 0]
        item = (next(arrivals), event)
        for k in keys:
            kept.setdefault(k, deque(maxlen=S.HISTORY_PER_ENTITY[k[0]])).append(item)


def test_recent_events_are_each_entitys_last_events(history):
    table = S.recent_events(history)
    users = table[table["entity"] == "user"]
    assert users.groupby("key").size().max() <= S.HISTORY_PER_ENTITY["user"]
    some = users["key"].iloc[0]
    expected = history[history["user_id"] == some].sort_values("event_timestamp").tail(S.HISTORY_PER_ENTITY["user"])
    assert users[users["key"] == some]["transaction_id"].tolist() == expected["transaction_id"].tolist()
    assert (table["arrival"] < 0).all()


def test_add_sequence_columns_replaces_stale_tokens(history):
    once = S.add_sequence_columns(history)
    twice = S.add_sequence_columns(once.assign(**{S.column_name(0, "relation"): 99.0}))
    assert list(twice.columns) == list(once.columns)
    pd.testing.assert_frame_equal(once, twice)
