"""riskops.features.behaviour: point-in-time sequence features for trees."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from riskops.data.generator import GeneratorConfig, generate
from riskops.features.behaviour import (
    BEHAVIOUR_FEATURES,
    LOG_RATIO_NO_HISTORY,
    NEVER_SECONDS,
    behaviour_features,
)
from riskops.pii import hash_pii
from riskops.schema import coerce

T0 = pd.Timestamp("2026-01-01T00:00:00Z")
NEVER = math.log1p(NEVER_SECONDS)
L = math.log1p


def frame(rows: list[tuple]) -> pd.DataFrame:
    """rows: (seconds after T0, user, device, ip, card, shipping country, payment method, amount, refund)."""
    cols = ["sec", "user_id", "device_id", "ip_hash", "card_hash", "shipping_country", "payment_method",
            "amount", "is_refund"]  # fmt: skip
    df = pd.DataFrame(rows, columns=cols)
    df.insert(0, "transaction_id", [f"t{i:03d}" for i in range(len(df))])
    df.insert(1, "event_timestamp", T0 + pd.to_timedelta(df.pop("sec"), unit="s"))
    return df


SIX = frame(
    [
        (0, "u1", "d1", "i1", "c1", "US", "credit_card", 100.0, False),
        (60, "u1", "d1", "i1", "c1", "US", "credit_card", 5.0, False),
        (120, "u2", "d1", "i2", "c1", "GB", "paypal", 8.0, True),
        (300, "u1", "d2", "i1", "c3", "DE", "debit_card", 400.0, True),
        (300, "u1", "d1", "i2", "c1", "US", "credit_card", 3.0, False),  # same time as the row above
        (3660, "u1", "d1", "i2", "", "US", "paypal", 50.0, True),
    ]
)

# Worked out by hand from SIX (row 4 does not see row 3: same timestamp).
EXPECTED = {
    "user_log_secs_since_prev": [NEVER, L(60), NEVER, L(240), L(240), L(3360)],
    "user_log_secs_on_device": [0, L(60), 0, 0, L(300), 0],  # row 5: previous block mixes d1 and d2
    "user_device_is_new": [1, 0, 1, 1, 0, 0],
    "user_shipping_country_is_new": [1, 0, 1, 1, 0, 0],
    "user_ip_is_new": [1, 0, 1, 0, 1, 0],
    "user_payment_method_is_new": [1, 0, 1, 1, 0, 1],
    "user_card_is_new": [1, 0, 1, 1, 0, 0],  # row 5 has no card
    "user_probe_orders_1h": [0, 0, 0, 1, 1, 1],  # row 5: row 1 is exactly 1 h old (out), row 4 in
    "card_probe_orders_1h": [0, 0, 1, 0, 2, 0],
    "user_log_amount_ratio_to_max": [
        LOG_RATIO_NO_HISTORY,
        math.log(0.05),
        LOG_RATIO_NO_HISTORY,
        math.log(4.0),
        math.log(0.03),
        math.log(50 / 400),
    ],  # fmt: skip
    "user_n_prev_events": [0, 1, 0, 2, 2, 4],
    "user_events_10m": [0, 1, 0, 2, 2, 0],
    "user_refunds_last5": [0, 0, 0, 0, 0, 1],
    "device_n_users_before": [0, 1, 1, 0, 2, 2],
    "device_log_secs_since_other_user": [NEVER, NEVER, L(60), NEVER, L(180), L(3540)],
    "ip_n_users_before": [0, 1, 0, 1, 1, 2],
    "card_n_users_before": [0, 1, 1, 0, 2, 0],
}


def test_hand_computed_values_on_six_rows():
    assert set(EXPECTED) == set(BEHAVIOUR_FEATURES)
    out = behaviour_features(SIX)
    assert list(out.columns) == list(BEHAVIOUR_FEATURES)
    assert (out.dtypes == "float64").all()
    for name, want in EXPECTED.items():
        np.testing.assert_allclose(out[name].to_numpy(), want, rtol=1e-12, atol=1e-12, err_msg=name)


def test_row_order_and_index_do_not_matter():
    shuffled = SIX.sample(frac=1.0, random_state=3)
    shuffled.index = shuffled.index * 7 + 10
    expected = behaviour_features(SIX).set_axis(SIX.index * 7 + 10).loc[shuffled.index]
    pd.testing.assert_frame_equal(behaviour_features(shuffled), expected)


def test_empty_keys_belong_to_no_entity():
    df = frame(
        [
            (0, "u1", "d1", "i1", "c1", "US", "paypal", 5.0, False),
            (10, "", "d1", "i1", "c1", "US", "paypal", 5.0, True),
            (20, None, "d1", "", "", "US", "paypal", 5.0, False),
            (30, "u1", "", "", "", "US", "paypal", 5.0, False),
        ]
    )
    out = behaviour_features(df)
    assert not out.isna().any().any()
    # rows 1 and 2 have no user: no history, and not each other's history
    assert out["user_n_prev_events"].tolist() == [0, 0, 0, 1]
    assert out.loc[[1, 2], "user_log_secs_since_prev"].tolist() == [NEVER, NEVER]
    # and they are no distinct users on the device or IP; row 3 has no device at all
    assert out["device_n_users_before"].tolist() == [0, 1, 1, 0]
    assert out["ip_n_users_before"].tolist() == [0, 1, 0, 0]
    assert out["device_log_secs_since_other_user"].tolist() == [NEVER, L(10), L(20), NEVER]
    # an empty attribute is never new; an entity of one row has nothing before it
    assert out["user_card_is_new"].tolist() == [1, 1, 0, 0]
    assert out["user_device_is_new"].tolist() == [1, 1, 1, 0]
    assert out["card_probe_orders_1h"].tolist() == [0, 1, 0, 0]


def _generated(rows: int, seed: int = 5) -> pd.DataFrame:
    return hash_pii(coerce(generate(GeneratorConfig(rows=rows, seed=seed, fraud_rate=0.05))))


def test_point_in_time_future_rows_change_nothing_before_them():
    df = _generated(600)
    before = behaviour_features(df)
    assert not before.isna().any().any() and np.isfinite(before.to_numpy()).all()
    future = df.tail(40).copy()  # the same users, devices, IPs and cards, one second after the last event
    future["event_timestamp"] = df["event_timestamp"].max() + pd.Timedelta(seconds=1)
    future["transaction_id"] = [f"future-{i}" for i in range(len(future))]
    future.index = range(len(df), len(df) + len(future))
    after = behaviour_features(pd.concat([future, df]))  # put first: row order must not matter either
    pd.testing.assert_frame_equal(after.loc[df.index], before)
    assert (after.loc[future.index, "user_n_prev_events"].to_numpy() > 0).any()


def _reference(df: pd.DataFrame) -> pd.DataFrame:
    """Row by row from the definitions (slow, obvious)."""
    t = (df["event_timestamp"] - T0).dt.total_seconds().to_numpy()
    key = {
        c: df[c].fillna("").to_numpy(dtype=object) for c in ("user_id", "device_id", "ip_hash", "card_hash")
    }
    rows = []
    for i in range(len(df)):

        def hist(col, i=i):  # the entity's strictly earlier events
            return [
                j for j in range(len(df)) if key[col][i] != "" and key[col][j] == key[col][i] and t[j] < t[i]
            ]

        hu, hd, hi, hc = hist("user_id"), hist("device_id"), hist("ip_hash"), hist("card_hash")
        r = {"user_log_secs_since_prev": L(t[i] - max(t[j] for j in hu)) if hu else NEVER}
        dev = key["device_id"]
        t_other = max([t[j] for j in hu if dev[j] != dev[i]], default=-np.inf)
        run = [t[j] for j in hu if dev[j] == dev[i] and t[j] > t_other]
        r["user_log_secs_on_device"] = L(t[i] - min(run)) if run else 0.0
        for name, col in (("device", "device_id"), ("shipping_country", "shipping_country"), ("ip", "ip_hash"),
                          ("payment_method", "payment_method"), ("card", "card_hash")):  # fmt: skip
            v = "" if pd.isna(df[col].iloc[i]) else df[col].iloc[i]
            r[f"user_{name}_is_new"] = float(v != "" and v not in {df[col].iloc[j] for j in hu})
        probe = df["amount"].to_numpy() < 10
        r["user_probe_orders_1h"] = sum(probe[j] and t[j] > t[i] - 3600 for j in hu)
        r["card_probe_orders_1h"] = sum(probe[j] and t[j] > t[i] - 3600 for j in hc)
        amt = df["amount"].to_numpy()
        r["user_log_amount_ratio_to_max"] = math.log(amt[i] / max(amt[hu])) if hu else LOG_RATIO_NO_HISTORY
        r["user_n_prev_events"] = len(hu)
        r["user_events_10m"] = sum(t[j] > t[i] - 600 for j in hu)
        last5 = sorted(hu, key=lambda j: (t[j], df["transaction_id"].iloc[j]))[-5:]
        r["user_refunds_last5"] = sum(bool(df["is_refund"].iloc[j]) for j in last5)
        users = key["user_id"]
        r["device_n_users_before"] = len({users[j] for j in hd} - {""})
        others = [t[j] for j in hd if users[j] != users[i]]
        r["device_log_secs_since_other_user"] = L(t[i] - max(others)) if others else NEVER
        r["ip_n_users_before"] = len({users[j] for j in hi} - {""})
        r["card_n_users_before"] = len({users[j] for j in hc} - {""})
        rows.append(r)
    return pd.DataFrame(rows, index=df.index, columns=list(BEHAVIOUR_FEATURES), dtype="float64")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_a_row_by_row_reference_with_many_ties_and_gaps(seed):
    rng = np.random.default_rng(seed)
    n = 90

    def pick(values, p_empty=0.08):
        out = rng.choice(values, n).astype(object)
        out[rng.random(n) < p_empty] = ""
        return out

    df = frame(
        list(
            zip(
                rng.integers(0, 40, n)
                * 150,  # coarse times: many simultaneous events, gaps near 1 h / 10 min
                pick(["u1", "u2", "u3", "u4"]),
                pick(["d1", "d2", "d3"]),
                pick(["i1", "i2"]),
                pick(["c1", "c2", "c3"], 0.3),
                pick(["US", "GB"], 0.0),
                pick(["paypal", "credit_card", "bnpl"], 0.0),
                rng.choice([3.0, 9.99, 10.0, 80.0, 500.0], n),
                rng.random(n) < 0.3,
                strict=True,
            )
        )
    )
    pd.testing.assert_frame_equal(behaviour_features(df), _reference(df), rtol=1e-9, atol=1e-9)


def test_missing_column_is_named_and_no_rows_is_fine():
    with pytest.raises(ValueError, match="card_hash"):
        behaviour_features(SIX.drop(columns=["card_hash"]))
    empty = behaviour_features(SIX.iloc[:0])
    assert list(empty.columns) == list(BEHAVIOUR_FEATURES) and len(empty) == 0
