"""Feature definitions shared by training (Feast offline store) and serving (Feast online store).

Two kinds of features:

* **entity features** — windowed aggregates per user / merchant / device / IP, computed as the
  entity's state *after* each of its events (riskops.features.aggregates) and stored in Feast with the
  event's timestamp. Training asks Feast point-in-time for the state just before a transaction;
  serving reads the online store, which holds the state after the entity's latest event. Both see
  "history before this transaction", so training and serving agree.
* **request features** — derived from the transaction itself plus the looked-up entity state
  (e.g. the amount's z-score against the user's history). `build_model_frame` computes them; it is
  the single function both paths call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np
import pandas as pd

from riskops.features.sequences import SEQUENCE_COLUMNS, SEQUENCE_KEY, has_sequence_columns
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


def snapshot_time_key(entity: str) -> str:
    """Key of an online snapshot's event time (epoch s) in `featurestore.online_features` rows."""
    return f"{entity}__snapshot_epoch"


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
    """The short text the encoder reads for one transaction: what was bought, and where.

    Only the free-text part: payment method, channel and countries reach the model through the
    categorical tower (exact and cheap), so they are not repeated here. That keeps the number of
    distinct texts near the size of the product catalogue (1,286 in 20,000 generated orders,
    against 17,871 when the structured fields were part of the text), which is what lets the
    scorer's per-text embedding cache answer most requests without an encoder forward pass.
    """
    return (
        f"{row['product_title']} | category {row['product_category']} | merchant {row['merchant_category']}"
    )


class _FrameColumns:
    """Column access for `build_model_frame` over a DataFrame (training, batch scoring)."""

    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df
        self.n = len(df)
        self.index = df.index

    def num(self, name: str) -> np.ndarray:
        if name in self.df.columns:
            return pd.to_numeric(self.df[name], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        return np.full(self.n, ENTITY_FEATURE_DEFAULTS.get(name, 0.0), dtype="float64")

    def flag(self, name: str) -> np.ndarray:
        return self.df[name].astype("float64").to_numpy()

    def ts_ns(self) -> np.ndarray:
        ts = pd.to_datetime(self.df["event_timestamp"], utc=True)
        return ts.to_numpy(dtype="datetime64[ns]").astype("int64")

    def strings(self, name: str) -> np.ndarray:
        return self.df[name].astype(str).to_numpy(dtype=object)

    def text_inputs(self) -> list[dict]:
        return self.df[list(_TEXT_INPUTS)].to_dict("records")

    def sequence_tokens(self) -> np.ndarray | None:
        if not has_sequence_columns(self.df.columns):
            return None
        return self.df[list(SEQUENCE_COLUMNS)].to_numpy(dtype=np.float64, na_value=0.0)


def _to_float(v: object) -> float:
    """`pd.to_numeric(errors="coerce")` for one value."""
    if v is None or v is pd.NA:
        return math.nan
    try:
        return float(v)  # bools, ints, floats, numpy scalars, numeric strings
    except (TypeError, ValueError):
        return math.nan


class _RecordColumns:
    """The same columns read straight from request dicts (serving): no per-column pandas work.

    A DataFrame built from these records would give the same values (`test_model_frame_from_records_
    equals_the_frame_path`); building it costs ~4 ms per request, most of a request's feature time.
    """

    def __init__(self, rows: Sequence[Mapping[str, object]]) -> None:
        self.rows = rows
        self.n = len(rows)
        self.index = pd.RangeIndex(self.n)

    def num(self, name: str) -> np.ndarray:
        if any(name in r for r in self.rows):
            return np.array([_to_float(r.get(name)) for r in self.rows], dtype="float64")
        return np.full(self.n, ENTITY_FEATURE_DEFAULTS.get(name, 0.0), dtype="float64")

    def flag(self, name: str) -> np.ndarray:
        return np.array([_to_float(r[name]) for r in self.rows], dtype="float64")

    def ts_ns(self) -> np.ndarray:
        values = [r["event_timestamp"] for r in self.rows]
        if all(isinstance(v, datetime) and v.tzinfo is not None for v in values):  # validated requests
            return np.array([pd.Timestamp(v).value for v in values], dtype="int64")  # exact, UTC ns
        return pd.to_datetime(pd.Series(values), utc=True).to_numpy(dtype="datetime64[ns]").astype("int64")

    def strings(self, name: str) -> np.ndarray:
        return np.array([str(r[name]) for r in self.rows], dtype=object)

    def text_inputs(self) -> Sequence[Mapping[str, object]]:
        return self.rows

    def sequence_tokens(self) -> np.ndarray | None:
        vectors = [r.get(SEQUENCE_KEY) for r in self.rows]
        if not self.rows or any(v is None for v in vectors):
            return None
        return np.vstack(vectors).astype(np.float64, copy=False)


def build_model_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Transactions (+ entity features, possibly missing) -> model inputs.

    Returns a frame with NUMERIC_FEATURES (float, no NaN), CATEGORICAL_FEATURES (str) and TEXT_COLUMN,
    on the same index as `df`. Missing entity features mean "never seen": counts 0, no history.
    Written in numpy rather than per-column pandas: it runs on every scoring request, and pandas'
    per-column overhead made it ~20 ms for a single transaction.
    """
    return _model_frame(_FrameColumns(df))


def build_model_frame_records(rows: Sequence[Mapping[str, object]]) -> pd.DataFrame:
    """`build_model_frame(pd.DataFrame.from_records(rows))`, without the intermediate frame (serving)."""
    return _model_frame(_RecordColumns(rows))


class ColumnFrame:
    """A model frame held as named numpy columns: `build_model_frame`'s output without pandas.

    Serving scores batches of a few rows, where constructing the DataFrame alone cost ~0.3 ms a
    batch (~0.6 ms when, as between a server's requests, the code runs with cold caches) and
    reading its columns back out cost more again. The scorer reads either kind the same way:
    `len(frame)` rows, `name in frame.columns`, `frame[name]` (array-like, one value per row).
    """

    __slots__ = ("_columns", "_n")

    def __init__(self, columns: Mapping[str, np.ndarray]) -> None:
        self._columns = dict(columns)
        lengths = {len(v) for v in self._columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        self._n = lengths.pop() if lengths else 0

    def __len__(self) -> int:
        return self._n

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self._columns)

    def __getitem__(self, name: str) -> np.ndarray:
        return self._columns[name]

    def take(self, rows: Sequence[int]) -> ColumnFrame:
        """The frame of `rows` (positions), in that order."""
        idx = np.asarray(rows, dtype=np.int64)
        return ColumnFrame({k: v[idx] for k, v in self._columns.items()})

    def to_pandas(self) -> pd.DataFrame:
        return pd.DataFrame(self._columns)


def take_rows(frame: pd.DataFrame | ColumnFrame, rows: Sequence[int]) -> pd.DataFrame | ColumnFrame:
    """Rows of a model frame by position, renumbered from 0; the frame itself when it is all of them."""
    if len(rows) == len(frame) and list(rows) == list(range(len(frame))):
        return frame
    if isinstance(frame, ColumnFrame):
        return frame.take(rows)
    return frame.iloc[list(rows)].reset_index(drop=True)


def model_frame_and_numeric(rows: Sequence[Mapping[str, object]]) -> tuple[ColumnFrame, np.ndarray]:
    """`build_model_frame_records(rows)` as a ColumnFrame, and its NUMERIC_FEATURES as one float64
    [n, F] matrix (what serving hands to the model and to the prediction log)."""
    src = _RecordColumns(rows)
    cols = _model_frame_columns(src)
    numeric = np.column_stack([np.asarray(cols[k], dtype=np.float64) for k in NUMERIC_FEATURES])
    return ColumnFrame(_frame_columns(src, cols)), numeric


def _nan_to_zero(x: np.ndarray) -> np.ndarray:
    """`np.nan_to_num(x, nan=0.0)`; an all-finite array (the usual case) is returned as it is,
    which for serving's few-row arrays costs ~1 µs instead of nan_to_num's ~6 µs."""
    return x if np.isfinite(x).all() else np.nan_to_num(x, nan=0.0)


def _model_frame(src: _FrameColumns | _RecordColumns) -> pd.DataFrame:
    return pd.DataFrame(_frame_columns(src, _model_frame_columns(src)), index=src.index)


def _frame_columns(src: _FrameColumns | _RecordColumns, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model frame's columns in order: NUMERIC_FEATURES, CATEGORICAL_FEATURES, TEXT_COLUMN."""
    out: dict[str, np.ndarray] = {k: cols[k] for k in NUMERIC_FEATURES}
    for c in CATEGORICAL_FEATURES:
        out[c] = src.strings(c)
    texts = np.empty(src.n, dtype=object)
    texts[:] = [transaction_text(r) for r in src.text_inputs()]
    out[TEXT_COLUMN] = texts
    tokens = src.sequence_tokens()
    if tokens is not None:  # the behaviour-sequence tokens ride along (riskops.features.sequences)
        out.update(zip(SEQUENCE_COLUMNS, tokens.T, strict=True))
    return out


def _model_frame_columns(src: _FrameColumns | _RecordColumns) -> dict[str, np.ndarray]:
    """The numeric model inputs, computed in numpy (by name; NUMERIC_FEATURES and helpers)."""
    amount = src.num("amount")
    quantity = np.clip(src.num("quantity"), 1, None)
    ts_ns = src.ts_ns()
    seconds_in_day = (ts_ns // 1_000_000_000) % 86_400
    hour = seconds_in_day // 3600 + ((seconds_in_day % 3600) // 60) / 60.0
    day_of_week = (ts_ns // (86_400 * 1_000_000_000) + 3) % 7  # 1970-01-01 was a Thursday (3)

    cols: dict[str, np.ndarray] = {}
    with np.errstate(all="ignore"):
        cols["amount_log"] = np.log1p(amount)
        cols["unit_price_log"] = np.log1p(amount / quantity)
        cols["quantity"] = quantity
        cols["account_age_days_log"] = np.log1p(np.clip(src.num("account_age_days"), 0, None))
        cols["is_refund"] = src.flag("is_refund")
        cols["country_mismatch"] = (src.strings("billing_country") != src.strings("shipping_country")).astype(
            "float64"
        )
        cols["hour_sin"] = np.sin(2 * math.pi * hour / 24.0)
        cols["hour_cos"] = np.cos(2 * math.pi * hour / 24.0)
        cols["is_weekend"] = (day_of_week >= 5).astype("float64")

        for prefix in ("user", "merchant"):
            mean = src.num(f"{prefix}_amount_mean_30d")
            std = src.num(f"{prefix}_amount_std_30d")
            z = (amount - mean) / (_nan_to_zero(std) + 0.1 * np.abs(mean) + 1.0)
            cols[f"amount_zscore_{prefix}"] = np.clip(_nan_to_zero(z), -20, 50)

        last = src.num("user_last_event_epoch")
        since = np.clip(ts_ns / 1e9 - last, 0, None)
        cols["user_seconds_since_last_log"] = np.log1p(np.where(np.isnan(since), _NEVER_SEEN_SECONDS, since))
        cols["user_is_new"] = np.isnan(last).astype("float64")
        cols["device_is_new"] = (
            (_nan_to_zero(src.num("device_txn_count_24h")) == 0)
            & (_nan_to_zero(src.num("device_distinct_users_7d")) == 0)
        ).astype("float64")
        cols["ip_is_new"] = (_nan_to_zero(src.num("ip_txn_count_24h")) == 0).astype("float64")

        for f in ALL_ENTITY_FEATURES:
            if f == "user_last_event_epoch":
                continue
            col = src.num(f)
            if f.endswith(("_mean_30d", "_std_30d")):
                col = np.log1p(np.clip(col, 0, None))  # heavy-tailed money: compare on a log scale
            cols[f] = _nan_to_zero(col)
    return cols


_TEXT_INPUTS = ("product_title", "product_category", "merchant_category")
