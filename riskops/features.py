"""Feature definitions shared by training (Feast offline store) and serving (Feast online store).

Two kinds of features:

* **entity features** — windowed aggregates per user / merchant / device / IP, computed as the
  entity's state *after* each of its events (riskops.aggregates) and stored in Feast with the
  event's timestamp. Training asks Feast point-in-time for the state just before a transaction;
  serving reads the online store, which holds the state after the entity's latest event. Both see
  "history before this transaction", so training and serving agree.
* **request features** — derived from the transaction itself plus the looked-up entity state
  (e.g. the amount's z-score against the user's history). `build_model_frame` computes them; it is
  the single function both paths call.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from riskops.schema import CHANNELS, COUNTRIES, CURRENCIES, PAYMENT_METHODS, PRODUCT_CATEGORIES

# Feast entity name -> join key column (the IP key is the keyed hash, never the raw address).
ENTITY_KEYS: dict[str, str] = {
    "user": "user_id",
    "merchant": "merchant_id",
    "device": "device_id",
    "ip": "ip_hash",
}

# Feature view name -> feature columns. Windows: 1h, 24h, 7d, 30d.
ENTITY_FEATURES: dict[str, tuple[str, ...]] = {
    "user": (
        "user_txn_count_1h",
        "user_txn_count_24h",
        "user_txn_count_7d",
        "user_amount_sum_1h",
        "user_amount_sum_24h",
        "user_amount_sum_7d",
        "user_amount_mean_30d",
        "user_amount_std_30d",
        "user_distinct_devices_24h",
        "user_distinct_ips_24h",
        "user_distinct_shipping_countries_7d",
        "user_refund_rate_30d",
        "user_last_event_epoch",
    ),
    "merchant": (
        "merchant_txn_count_1h",
        "merchant_txn_count_24h",
        "merchant_amount_mean_30d",
        "merchant_amount_std_30d",
        "merchant_distinct_users_24h",
        "merchant_refund_rate_30d",
    ),
    "device": (
        "device_txn_count_1h",
        "device_txn_count_24h",
        "device_distinct_users_24h",
        "device_distinct_users_7d",
    ),
    "ip": (
        "ip_txn_count_1h",
        "ip_txn_count_24h",
        "ip_distinct_users_24h",
        "ip_distinct_devices_24h",
    ),
}
ALL_ENTITY_FEATURES: tuple[str, ...] = tuple(f for fs in ENTITY_FEATURES.values() for f in fs)

# What an entity never seen before looks like (a first-time user is normal, not an error).
# Means/stds/last-event are NaN here and handled explicitly in build_model_frame.
ENTITY_FEATURE_DEFAULTS: dict[str, float] = {
    f: (float("nan") if f.endswith(("_mean_30d", "_std_30d", "_last_event_epoch")) else 0.0)
    for f in ALL_ENTITY_FEATURES
}

_NEVER_SEEN_SECONDS = 30 * 24 * 3600.0

REQUEST_FEATURES: tuple[str, ...] = (
    "amount_log",
    "unit_price_log",
    "quantity",
    "account_age_days_log",
    "is_refund",
    "country_mismatch",
    "hour_sin",
    "hour_cos",
    "is_weekend",
    "amount_zscore_user",
    "amount_zscore_merchant",
    "user_seconds_since_last_log",
    "user_is_new",
    "device_is_new",
    "ip_is_new",
)

# The numeric model inputs, in a fixed order (the model's normaliser stats follow this order).
NUMERIC_FEATURES: tuple[str, ...] = REQUEST_FEATURES + tuple(
    f for f in ALL_ENTITY_FEATURES if f != "user_last_event_epoch"
)

CATEGORICAL_VOCABS: dict[str, tuple[str, ...]] = {
    "payment_method": PAYMENT_METHODS,
    "channel": CHANNELS,
    "product_category": PRODUCT_CATEGORIES,
    "currency": CURRENCIES,
    "billing_country": COUNTRIES,
    "shipping_country": COUNTRIES,
}
CATEGORICAL_FEATURES: tuple[str, ...] = tuple(CATEGORICAL_VOCABS)
TEXT_COLUMN = "text"


def transaction_text(row: dict | pd.Series) -> str:
    """The short text the encoder reads for one transaction."""
    return (
        f"{row['product_title']} | category {row['product_category']} | merchant {row['merchant_category']}"
        f" | {row['payment_method']} via {row['channel']}"
        f" | billing {row['billing_country']} shipping {row['shipping_country']}"
    )


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    if name in df.columns:
        return pd.to_numeric(df[name], errors="coerce").astype("float64")
    return pd.Series(ENTITY_FEATURE_DEFAULTS.get(name, 0.0), index=df.index, dtype="float64")


def build_model_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Transactions (+ entity features, possibly missing) -> model inputs.

    Returns a frame with NUMERIC_FEATURES (float, no NaN), CATEGORICAL_FEATURES (str) and TEXT_COLUMN,
    on the same index as `df`. Missing entity features mean "never seen": counts 0, no history.
    """
    out = pd.DataFrame(index=df.index)
    amount = pd.to_numeric(df["amount"], errors="coerce").astype("float64")
    quantity = pd.to_numeric(df["quantity"], errors="coerce").astype("float64").clip(lower=1)
    ts = pd.to_datetime(df["event_timestamp"], utc=True)
    hour = ts.dt.hour + ts.dt.minute / 60.0

    out["amount_log"] = np.log1p(amount)
    out["unit_price_log"] = np.log1p(amount / quantity)
    out["quantity"] = quantity
    out["account_age_days_log"] = np.log1p(
        pd.to_numeric(df["account_age_days"], errors="coerce").astype("float64").clip(lower=0)
    )
    out["is_refund"] = df["is_refund"].astype("float64")
    out["country_mismatch"] = (
        df["billing_country"].astype(str) != df["shipping_country"].astype(str)
    ).astype("float64")
    out["hour_sin"] = np.sin(2 * math.pi * hour / 24.0)
    out["hour_cos"] = np.cos(2 * math.pi * hour / 24.0)
    out["is_weekend"] = (ts.dt.dayofweek >= 5).astype("float64")

    for prefix in ("user", "merchant"):
        mean = _col(df, f"{prefix}_amount_mean_30d")
        std = _col(df, f"{prefix}_amount_std_30d")
        z = (amount - mean) / (std.fillna(0.0) + 0.1 * mean.abs() + 1.0)
        out[f"amount_zscore_{prefix}"] = z.fillna(0.0).clip(-20, 50)

    last = _col(df, "user_last_event_epoch")
    now = ts.astype("int64") / 1e9
    since = (now - last).clip(lower=0).fillna(_NEVER_SEEN_SECONDS)
    out["user_seconds_since_last_log"] = np.log1p(since)
    out["user_is_new"] = last.isna().astype("float64")
    out["device_is_new"] = (_col(df, "device_txn_count_24h").fillna(0) == 0).astype("float64") * (
        _col(df, "device_distinct_users_7d").fillna(0) == 0
    ).astype("float64")
    out["ip_is_new"] = (_col(df, "ip_txn_count_24h").fillna(0) == 0).astype("float64")

    for f in ALL_ENTITY_FEATURES:
        if f == "user_last_event_epoch":
            continue
        col = _col(df, f)
        if f.endswith(("_mean_30d", "_std_30d")):
            col = np.log1p(col.clip(lower=0))  # heavy-tailed money: compare on a log scale
        out[f] = col.fillna(0.0)

    for c in CATEGORICAL_FEATURES:
        out[c] = df[c].astype(str)
    out[TEXT_COLUMN] = [transaction_text(r) for r in df[list(_TEXT_INPUTS)].to_dict("records")]
    return out[list(NUMERIC_FEATURES) + list(CATEGORICAL_FEATURES) + [TEXT_COLUMN]]


_TEXT_INPUTS = (
    "product_title",
    "product_category",
    "merchant_category",
    "payment_method",
    "channel",
    "billing_country",
    "shipping_country",
)
