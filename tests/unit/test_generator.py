"""The synthetic transaction generator: schema, determinism, fraud typology, drift scenarios, file I/O."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from riskops import schema
from riskops.data.generator import (
    SCENARIOS,
    GeneratorConfig,
    generate,
    generate_with_drift,
    read_transactions,
    to_usd,
    write_transactions,
)

FRAUD_TYPES_NORMAL = tuple(t for t in schema.FRAUD_TYPES if t not in ("none", "fraud_ring"))


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate(GeneratorConfig(rows=20_000, seed=7))


@pytest.fixture(scope="module")
def usd(frame) -> pd.Series:
    return pd.Series(to_usd(frame["amount"], frame["currency"]), index=frame.index)


@pytest.fixture(scope="module")
def drift_frames() -> dict[str, pd.DataFrame]:
    base = GeneratorConfig(rows=8_000, seed=11)
    return {s: generate_with_drift(base, s, 5_000) for s in SCENARIOS}


def _split(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    onset = pd.Timestamp(df.attrs["drift_onset"])
    return df[df["event_timestamp"] < onset], df[df["event_timestamp"] >= onset]


# -- schema ----------------------------------------------------------------------------------------


def test_columns_dtypes_order_and_ids(frame):
    assert tuple(frame.columns) == schema.COLUMNS
    for f in schema.TRANSACTION_FIELDS:
        assert str(frame[f.name].dtype) == str(pd.Series([], dtype=schema.pandas_dtype(f)).dtype), f.name
    assert len(frame) == 20_000
    assert frame["event_timestamp"].is_monotonic_increasing
    assert frame["transaction_id"].is_unique
    assert not frame[list(schema.REQUIRED_COLUMNS)].isna().any().any()


def test_allowed_values(frame):
    assert set(frame["is_fraud"].unique()) <= {0, 1}
    assert set(frame["fraud_type"].unique()) <= set(schema.FRAUD_TYPES)
    assert ((frame["fraud_type"] == "none") == (frame["is_fraud"] == 0)).all()
    for col, allowed in [
        ("currency", schema.CURRENCIES),
        ("payment_method", schema.PAYMENT_METHODS),
        ("channel", schema.CHANNELS),
        ("order_status", schema.ORDER_STATUSES),
        ("billing_country", schema.COUNTRIES),
        ("shipping_country", schema.COUNTRIES),
        ("product_category", schema.PRODUCT_CATEGORIES),
    ]:
        assert set(frame[col].unique()) <= set(allowed), col
    assert (frame["amount"] > 0).all()
    assert (frame["quantity"] >= 1).all()
    assert (frame["account_age_days"] >= 0).all()
    assert (frame.loc[frame["is_refund"], "order_status"] == "refunded").all()


def test_pii_and_card_fields_look_real(frame):
    assert frame["email"].str.fullmatch(r"[a-z0-9._+]+@[a-z0-9.]+\.[a-z]+").all()
    octets = frame["ip_address"].str.split(".", expand=True).astype(int)
    assert octets.shape[1] == 4 and octets.ge(0).all().all() and octets.le(255).all().all()
    card = frame["payment_method"].isin(["credit_card", "debit_card", "apple_pay", "google_pay"])
    assert (frame.loc[~card, "card_bin"] == "").all()
    assert (frame.loc[~card, "card_number_masked"] == "").all()
    assert frame.loc[card, "card_bin"].str.fullmatch(r"\d{6}").all()
    masked = frame.loc[card, "card_number_masked"]
    assert masked.str.fullmatch(r"\d{6}\*{5,6}\d{4}").all()
    assert (masked.str[:6] == frame.loc[card, "card_bin"]).all()


def test_product_titles_are_text(frame):
    titles = frame["product_title"]
    assert titles.str.split().str.len().median() >= 4
    assert titles.nunique() > 1000
    for word in ("gift card", "iPhone", "GPU", "PlayStation", "limited edition", "prepaid"):
        assert titles.str.contains(word, regex=False).any(), word
    # both fraud and legit buy resellable items: text helps but does not decide
    hot = titles.str.contains("gift card|iPhone|GPU|PlayStation|limited edition|prepaid|license key", regex=True)
    fraud = frame["is_fraud"] == 1
    assert hot[fraud].mean() > 2 * hot[~fraud].mean()
    assert hot[~fraud].sum() > hot[fraud].sum()


# -- determinism -----------------------------------------------------------------------------------


def test_same_seed_same_frame_other_seed_differs():
    a = generate(GeneratorConfig(rows=3_000, seed=3))
    b = generate(GeneratorConfig(rows=3_000, seed=3))
    pd.testing.assert_frame_equal(a, b)
    c = generate(GeneratorConfig(rows=3_000, seed=4))
    assert not a["amount"].equals(c["amount"])
    assert len(set(a["transaction_id"]) & set(c["transaction_id"])) == 0


def test_config_validation():
    with pytest.raises(ValueError, match="scenario"):
        generate(GeneratorConfig(rows=100, scenario="nope"))
    with pytest.raises(ValueError, match="scenario"):
        generate_with_drift(GeneratorConfig(rows=100), "nope", 10)


# -- legit traffic realism -------------------------------------------------------------------------


def test_legit_traffic_realism(frame, usd):
    legit = frame[frame["is_fraud"] == 0]
    assert 0.02 <= legit["is_refund"].mean() <= 0.045
    assert (legit["quantity"] == 1).mean() > 0.75
    per_user = legit.groupby("user_id").size()
    assert per_user.median() >= 2 and per_user.max() >= 20  # returning users, heavy-tailed activity
    log_amt = np.log(usd[legit.index])
    assert log_amt.std() > 1.0  # heavy-tailed amounts
    by_cat = usd[legit.index].groupby(legit["product_category"]).median()
    assert by_cat["jewelry"] > 3 * by_cat["grocery"]
    # seasonality: US users shop in the evening more than at night (local time)
    us = legit[legit["billing_country"] == "US"]
    local_hour = (us["event_timestamp"] - pd.Timedelta(hours=5)).dt.hour
    assert (local_hour.between(18, 21)).mean() > 3 * (local_hour.between(2, 5)).mean()
    # account age grows with time and is consistent per user
    signup_day = (legit["event_timestamp"].dt.floor("D") - pd.to_timedelta(legit["account_age_days"], unit="D"))
    spread = signup_day.groupby(legit["user_id"]).agg(lambda s: (s.max() - s.min()).days)
    assert (spread <= 1).mean() > 0.99
    # most users are loyal to one device and one IP or two
    assert legit.groupby("user_id")["device_id"].nunique().median() <= 2
    assert (legit["billing_country"] != legit["shipping_country"]).mean() < 0.06


def test_legit_look_alikes_exist(frame):
    legit = frame[frame["is_fraud"] == 0]
    assert (legit["billing_country"] != legit["shipping_country"]).sum() > 100  # travellers, gifts
    assert (legit["account_age_days"] <= 2).sum() > 100  # new customers
    dev_users = legit.groupby("device_id")["user_id"].nunique()
    assert (dev_users >= 2).sum() > 10  # households
    ip_users = legit.groupby("ip_address")["user_id"].nunique()
    assert ip_users.max() >= 5  # carrier NAT / offices


# -- fraud -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.01, 0.03])
def test_fraud_rate_follows_config(rate):
    df = generate(GeneratorConfig(rows=6_000, seed=5, fraud_rate=rate))
    assert rate * 0.7 <= df["is_fraud"].mean() <= rate * 1.3


def test_every_fraud_type_appears(frame):
    counts = frame["fraud_type"].value_counts()
    for t in FRAUD_TYPES_NORMAL:
        assert counts.get(t, 0) >= 10, t
    assert "fraud_ring" not in counts.index


def test_card_testing_is_small_and_bursty(frame, usd):
    ct = frame[frame["fraud_type"] == "card_testing"]
    assert (usd[ct.index] <= 12).all()
    for _, g in ct.groupby("user_id"):
        if len(g) >= 5:
            assert g["event_timestamp"].max() - g["event_timestamp"].min() < pd.Timedelta(hours=1)
            assert g["device_id"].nunique() == 1
    assert ct.groupby("user_id").size().median() >= 5


def test_abnormal_order_far_above_user_norm(frame, usd):
    legit_median = usd[frame["is_fraud"] == 0].groupby(frame["user_id"]).median()
    ao = frame[frame["fraud_type"] == "abnormal_order"]
    ratio = usd[ao.index] / ao["user_id"].map(legit_median)
    assert ratio.dropna().median() > 5
    assert ao.groupby("user_id").size().max() >= 2


def test_payment_mismatch_countries_differ(frame):
    pm = frame[frame["fraud_type"] == "payment_mismatch"]
    assert (pm["billing_country"] != pm["shipping_country"]).all()


def test_refund_abuse_many_refunds(frame):
    ra = frame[frame["fraud_type"] == "refund_abuse"]
    assert ra["is_refund"].mean() > 0.6
    assert ra.groupby("user_id")["is_refund"].sum().median() >= 3


def test_abnormal_goods_price_far_off(frame, usd):
    legit = frame["is_fraud"] == 0
    unit = usd / frame["quantity"]
    norm = unit[legit].groupby(frame.loc[legit, "product_title"]).median()
    ag = frame[frame["fraud_type"] == "abnormal_goods"]
    ratio = (unit[ag.index] / ag["product_title"].map(norm)).dropna()
    assert len(ratio) > 0
    assert ((ratio < 0.4) | (ratio > 3)).mean() > 0.9
    # a spike: several sales at one merchant within hours
    spike = ag.groupby("merchant_id").size()
    assert spike.max() >= 6


def test_new_account_burst(frame):
    nb = frame[frame["fraud_type"] == "new_account_burst"]
    assert (nb["account_age_days"] <= 2).all()
    assert nb.groupby("user_id").size().median() >= 4


def test_account_farm_devices_have_many_users(frame):
    af = frame[frame["fraud_type"] == "account_farm"]
    per_device = af.groupby("device_id")["user_id"].nunique()
    assert (per_device >= 4).all()


def test_account_takeover_new_device_and_country(frame, usd):
    ato = frame[frame["fraud_type"] == "account_takeover"]
    assert (ato["account_age_days"] >= 180).all()
    assert (ato["shipping_country"] != ato["billing_country"]).all()
    assert usd[ato.index].median() > 150
    for _, row in ato.iterrows():
        before = frame[(frame["user_id"] == row["user_id"]) & (frame["event_timestamp"] < row["event_timestamp"])
                       & (frame["fraud_type"] != "account_takeover")]
        assert row["device_id"] not in set(before["device_id"])


# -- drift -----------------------------------------------------------------------------------------


def test_drift_onset_and_continuity(drift_frames):
    for scenario, df in drift_frames.items():
        assert tuple(df.columns) == schema.COLUMNS
        assert df["transaction_id"].is_unique
        assert df["event_timestamp"].is_monotonic_increasing
        pre, post = _split(df)
        assert len(pre) == 8_000 and len(post) == 5_000, scenario
        assert post["user_id"].isin(set(pre["user_id"])).mean() > 0.5  # same world


def test_drift_base_part_is_plain_traffic(drift_frames):
    pre_a, _ = _split(drift_frames["normal"])
    pre_b, _ = _split(drift_frames["price_shift"])
    pd.testing.assert_frame_equal(pre_a.reset_index(drop=True), pre_b.reset_index(drop=True))


def test_price_shift_raises_amounts(drift_frames):
    pre, post = _split(drift_frames["price_shift"])
    ratio = np.median(to_usd(post["amount"], post["currency"])) / np.median(to_usd(pre["amount"], pre["currency"]))
    assert 1.2 < ratio < 1.7


def test_new_payment_method_share(drift_frames):
    pre, post = _split(drift_frames["new_payment_method"])
    new = ["crypto", "bnpl"]
    assert pre["payment_method"].isin(new).mean() == 0
    assert post["payment_method"].isin(new).mean() > 0.1
    crypto = post["payment_method"] == "crypto"  # fraudsters like it more than customers do
    assert crypto[post["is_fraud"] == 1].mean() > 1.5 * crypto[post["is_fraud"] == 0].mean()


def test_fraud_ring(drift_frames):
    pre, post = _split(drift_frames["fraud_ring"])
    assert 0.035 < post["is_fraud"].mean() < 0.07 and pre["is_fraud"].mean() < 0.025
    ring = post[post["fraud_type"] == "fraud_ring"]
    assert len(ring) > 50
    assert not ring["merchant_id"].isin(set(pre["merchant_id"])).any()  # never targeted before
    assert ring["device_id"].nunique() <= 6 and ring["user_id"].nunique() >= 8
    assert not ring["product_title"].isin(set(pre["product_title"])).any()  # a new vocabulary


def test_promotion_season(drift_frames):
    pre, post = _split(drift_frames["promotion_season"])
    rate = lambda d: len(d) / ((d["event_timestamp"].max() - d["event_timestamp"].min()).total_seconds())  # noqa: E731
    assert 2.0 <= rate(post) / rate(pre) <= 3.2
    assert post["product_title"].str.contains(r"deal|SALE|offer|special|clearance|%", regex=True).mean() > 0.4
    assert np.median(to_usd(post["amount"], post["currency"])) < np.median(to_usd(pre["amount"], pre["currency"]))
    assert (post["account_age_days"] <= 7).mean() > 2 * (pre["account_age_days"] <= 7).mean()
    assert post["is_fraud"].mean() <= pre["is_fraud"].mean() * 1.1


def test_scenario_in_config_applies_to_whole_frame():
    df = generate(GeneratorConfig(rows=3_000, seed=2, scenario="new_payment_method"))
    assert df["payment_method"].isin(["crypto", "bnpl"]).mean() > 0.1
    ring = generate(GeneratorConfig(rows=3_000, seed=2, scenario="fraud_ring"))
    assert (ring["fraud_type"] == "fraud_ring").sum() > 50


# -- files -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["parquet", "jsonl"])
def test_round_trip(tmp_path, ext):
    df = generate(GeneratorConfig(rows=1_500, seed=9))
    path = write_transactions(df, tmp_path / f"tx.{ext}")
    assert path.exists()
    back = read_transactions(path)
    pd.testing.assert_frame_equal(df, back, check_like=False)


def test_bad_extension(tmp_path):
    df = generate(GeneratorConfig(rows=200, seed=9))
    with pytest.raises(ValueError, match=r"\.csv"):
        write_transactions(df, tmp_path / "tx.csv")
    with pytest.raises(ValueError, match=r"\.txt"):
        read_transactions(tmp_path / "tx.txt")


def test_small_frames_work():
    df = generate(GeneratorConfig(rows=50, seed=1))
    assert len(df) == 50 and tuple(df.columns) == schema.COLUMNS
    assert re.fullmatch(r"tx_[0-9a-f]{16}", df["transaction_id"].iloc[0])
