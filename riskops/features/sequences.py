"""Behaviour sequences: each transaction's recent history as model inputs, point-in-time.

For a transaction, its history is the union of the last events of its user, its device and its
IP (`HISTORY_PER_ENTITY`), only events *strictly before* it, de-duplicated, newest first, cut to
`SEQUENCE_LENGTH`. Each history event becomes one token of fields that describe it *and* how it
relates to the transaction being scored (same device? same shipping country? how long ago? how
much larger?). Relations are what fraud lives in: an account takeover is a new device after a
long same-device history; a ring is other users' events on this device; card testing is a run of
tiny orders minutes apart. Trees only see such things through hand-made aggregates.

Labels are never inputs: a token holds what was known when the event happened (the refund flag,
as the windowed aggregates use it), not whether it turned out to be fraud.

The same `encode_history` turns (transaction, history events) into the flat token columns offline
(`add_sequence_columns`, vectorised over a whole frame) and online (the serving entity state calls
it with one row and the events it keeps), so both paths give the same numbers.

Columns: ``seq_{i:02d}_{field}`` for token i (0 = newest) and each field of `TOKEN_CATEGORICAL` /
`TOKEN_NUMERIC`; a padded token has relation 0 and zeros elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from riskops.schema import CHANNELS, COUNTRIES, PAYMENT_METHODS, PRODUCT_CATEGORIES

# How many of each entity's latest events a transaction looks back on, and the merged length.
HISTORY_PER_ENTITY: dict[str, int] = {"user": 16, "device": 8, "ip": 8}
SEQUENCE_LENGTH = 16
ENTITY_COLUMN: dict[str, str] = {"user": "user_id", "device": "device_id", "ip": "ip_hash"}

# What an event record keeps (the entity state stores these tuples; offline they are frame columns).
EVENT_FIELDS: tuple[str, ...] = (
    "transaction_id",
    "t_us",
    "user_id",
    "device_id",
    "ip_hash",
    "merchant_id",
    "card_hash",
    "amount",
    "payment_method",
    "channel",
    "shipping_country",
    "product_category",
    "is_refund",
)
_STRING_FIELDS = ("transaction_id", "user_id", "device_id", "ip_hash", "merchant_id", "card_hash",
                  "payment_method", "channel", "shipping_country", "product_category")  # fmt: skip

# Token fields. Categorical ones hold vocabulary indices (0 = unknown / padding) stored as floats.
TOKEN_VOCABS: dict[str, tuple[str, ...]] = {
    "payment_method": tuple(PAYMENT_METHODS),
    "channel": tuple(CHANNELS),
    "shipping_country": tuple(COUNTRIES),
    "product_category": tuple(PRODUCT_CATEGORIES),
}
# relation = 1 + same_user + 2 * same_device + 4 * same_ip: which of the transaction's entities the
# event shares (1..8); 0 marks padding. relation - 1 is a bit mask of these bits.
SAME_USER_BIT, SAME_DEVICE_BIT, SAME_IP_BIT = 1, 2, 4
RELATIONS = 8
TOKEN_CATEGORICAL: tuple[str, ...] = (*TOKEN_VOCABS, "relation")
TOKEN_NUMERIC: tuple[str, ...] = (
    "amount_log",  # log1p(amount) of the event
    "gap_log",  # log1p(seconds between the event and the transaction)
    "amount_ratio_log",  # log1p(event amount) - log1p(transaction amount)
    "same_shipping_country",
    "same_payment_method",
    "same_merchant",
    "same_card",  # both have a card and it is the same one
    "same_category",
    "is_refund",
)
TOKEN_FIELDS: tuple[str, ...] = (*TOKEN_CATEGORICAL, *TOKEN_NUMERIC)


def column_name(position: int, field: str) -> str:
    return f"seq_{position:02d}_{field}"


SEQUENCE_COLUMNS: tuple[str, ...] = tuple(
    column_name(i, f) for i in range(SEQUENCE_LENGTH) for f in TOKEN_FIELDS
)


# Serving hands a transaction's tokens to the model frame as one vector under this record key
# (riskops.features.contract.build_model_frame_records spreads it into SEQUENCE_COLUMNS).
SEQUENCE_KEY = "history_tokens"
RECENT_EVENTS_FILE = "recent_events.parquet"  # in the Feast repo's data/ folder (see recent_events)


def has_sequence_columns(columns: Iterable[str]) -> bool:
    return column_name(0, "relation") in set(columns)


# --------------------------------------------------------------------------- encoding (shared)
def _index(values: np.ndarray, vocab: tuple[str, ...]) -> np.ndarray:
    positions = {v: i + 1 for i, v in enumerate(vocab)}
    flat = values.reshape(-1)
    return np.fromiter((positions.get(v, 0) for v in flat), np.float64, len(flat)).reshape(values.shape)


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise equality of string keys where both are set (an empty key matches nothing)."""
    return ((a == b) & (a != "") & (b != "")).astype(np.float64)


def encode_history(current: Mapping[str, np.ndarray], history: Mapping[str, np.ndarray],
                   valid: np.ndarray) -> np.ndarray:
    """The [n, len(SEQUENCE_COLUMNS)] token matrix of n transactions and their [n, L] history events.

    current: EVENT_FIELDS -> [n] arrays (strings as object arrays, t_us int64, amount/is_refund float);
    history: EVENT_FIELDS -> [n, L] arrays; valid: [n, L] bool, False where a slot is padding.
    """
    n, length = valid.shape
    if length != SEQUENCE_LENGTH:
        raise ValueError(f"history of length {length}, expected {SEQUENCE_LENGTH}")

    def cur(name: str) -> np.ndarray:
        return np.asarray(current[name]).reshape(n, 1)

    tokens: dict[str, np.ndarray] = {}
    for field, vocab in TOKEN_VOCABS.items():
        tokens[field] = _index(np.asarray(history[field], dtype=object), vocab)
    tokens["relation"] = (1.0 + SAME_USER_BIT * _same(history["user_id"], cur("user_id"))
                          + SAME_DEVICE_BIT * _same(history["device_id"], cur("device_id"))
                          + SAME_IP_BIT * _same(history["ip_hash"], cur("ip_hash")))  # fmt: skip
    amount = np.clip(np.asarray(history["amount"], dtype=np.float64), 0, None)
    cur_amount = np.clip(cur("amount").astype(np.float64), 0, None)
    gap_s = np.clip((cur("t_us").astype(np.int64) - np.asarray(history["t_us"], dtype=np.int64)) / 1e6, 0, None)
    tokens["amount_log"] = np.log1p(amount)
    tokens["gap_log"] = np.log1p(gap_s)
    tokens["amount_ratio_log"] = np.log1p(amount) - np.log1p(cur_amount)
    tokens["same_shipping_country"] = _same(history["shipping_country"], cur("shipping_country"))
    tokens["same_payment_method"] = _same(history["payment_method"], cur("payment_method"))
    tokens["same_merchant"] = _same(history["merchant_id"], cur("merchant_id"))
    tokens["same_card"] = _same(history["card_hash"], cur("card_hash"))
    tokens["same_category"] = _same(history["product_category"], cur("product_category"))
    tokens["is_refund"] = np.asarray(history["is_refund"], dtype=np.float64)

    mat = np.stack([tokens[field] for field in TOKEN_FIELDS], axis=-1).astype(np.float64)  # [n, L, F]
    mat = np.where(valid[:, :, None], np.nan_to_num(mat, nan=0.0), 0.0)
    return mat.reshape(n, length * len(TOKEN_FIELDS))  # column order = SEQUENCE_COLUMNS


def logged_tokens(vector: np.ndarray, n_events: int) -> list[list[float]]:
    """The token vector of one transaction as the prediction log keeps it: one list of TOKEN_FIELDS
    values per history event, newest first, padding left out."""
    return np.asarray(vector, dtype=np.float64).reshape(SEQUENCE_LENGTH, len(TOKEN_FIELDS))[:n_events].tolist()


def tokens_from_log(rows: Iterable) -> np.ndarray:
    """[n, len(SEQUENCE_COLUMNS)] token matrix from logged tokens (`logged_tokens`; None / NaN = no history)."""
    rows = list(rows)
    out = np.zeros((len(rows), SEQUENCE_LENGTH, len(TOKEN_FIELDS)), dtype=np.float64)
    for i, events in enumerate(rows):
        if isinstance(events, list | tuple | np.ndarray) and len(events):
            block = np.asarray([np.asarray(e, dtype=np.float64) for e in events])
            out[i, : len(block)] = block
    return out.reshape(len(rows), -1)


# --------------------------------------------------------------------------- event records
def _strings(values: Iterable) -> np.ndarray:
    """Keys as python strings; missing (None / NA / NaN) -> ''."""
    return np.array(["" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else str(v)
                     for v in values], dtype=object)  # fmt: skip


def event_columns(frame: pd.DataFrame, columns: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """A hashed transaction frame's EVENT_FIELDS as arrays (the offline event records).

    columns: event field -> the frame's column, for data with its own names (bring your own data:
    riskops.byod maps user, device, IP, amount and time); a field with no column is empty ('' / 0),
    so its comparisons never match and its embedding is the unknown one.
    """
    names = {f: f for f in EVENT_FIELDS if f != "t_us"} | {"t_us": "event_timestamp"}
    names.update(columns or {})

    def col(field: str) -> pd.Series | None:
        name = names.get(field)
        return frame[name] if name is not None and name in frame.columns else None

    out: dict[str, np.ndarray] = {}
    for name in _STRING_FIELDS:
        values = col(name)
        out[name] = _strings(values) if values is not None else np.full(len(frame), "", dtype=object)
    ts = pd.to_datetime(col("t_us"), utc=True)
    out["t_us"] = ts.to_numpy(dtype="datetime64[ns]").astype(np.int64) // 1000
    amount = col("amount")
    out["amount"] = (np.zeros(len(frame)) if amount is None
                     else pd.to_numeric(amount, errors="coerce").fillna(0.0).to_numpy(np.float64))  # fmt: skip
    refund = col("is_refund")
    out["is_refund"] = (np.zeros(len(frame)) if refund is None
                        else refund.fillna(False).astype(bool).to_numpy(np.float64))  # fmt: skip
    return out


def event_record(record: Mapping[str, object], t_us: int) -> tuple:
    """One hashed request record as an event tuple (EVENT_FIELDS order) — what the entity state keeps."""
    values = []
    for name in EVENT_FIELDS:
        if name == "t_us":
            values.append(int(t_us))
        elif name == "amount":
            v = record.get("amount")
            values.append(float(v) if v is not None else 0.0)
        elif name == "is_refund":
            values.append(1.0 if record.get("is_refund") in (True, 1, "true", "True", "1") else 0.0)
        else:
            v = record.get(name)
            values.append("" if v is None or (isinstance(v, float) and v != v) else str(v))
    return tuple(values)


# --------------------------------------------------------------------------- offline (whole frames)
def prior_positions(t_us: np.ndarray, keys: Mapping[str, np.ndarray],
                    per_entity: Mapping[str, int] = HISTORY_PER_ENTITY,
                    length: int = SEQUENCE_LENGTH) -> np.ndarray:
    """[n, length] row positions of each row's history (newest first), -1 = padding.

    For each entity, the last k events with the same key and a strictly earlier time; merged over
    entities, de-duplicated, ordered by (time, row position) descending — the row position breaks
    ties of equal times as arrival order does online.
    """
    n = len(t_us)
    t_us = np.asarray(t_us, dtype=np.int64)
    ar = np.arange(n)
    blocks = []
    for entity, k in per_entity.items():
        key = np.asarray(keys[entity], dtype=object)
        codes, _ = pd.factorize(key)
        codes = np.where(key == "", -1, codes)
        order = np.lexsort((ar, t_us, codes))  # by key, then time, then position
        sc, st = codes[order], t_us[order]
        new_group = np.r_[True, sc[1:] != sc[:-1]]
        group_start = np.maximum.accumulate(np.where(new_group, ar, 0))
        new_time = new_group | np.r_[True, st[1:] != st[:-1]]
        first_same_time = np.maximum.accumulate(np.where(new_time, ar, 0))
        j = first_same_time[:, None] - 1 - np.arange(k)[None, :]
        cand_sorted = np.where(j >= group_start[:, None], order[np.clip(j, 0, None)], -1)
        cand = np.empty_like(cand_sorted)
        cand[order] = cand_sorted
        cand[codes == -1] = -1
        blocks.append(cand)
    cand = np.concatenate(blocks, axis=1) if blocks else np.full((n, 0), -1)
    return _newest_distinct(cand, t_us, length)


def _newest_distinct(cand: np.ndarray, t_us: np.ndarray, length: int) -> np.ndarray:
    valid = cand >= 0
    big = np.iinfo(np.int64).max
    neg_t = np.where(valid, -t_us[np.clip(cand, 0, None)], big)
    neg_pos = np.where(valid, -cand, big)
    order = np.lexsort((neg_pos, neg_t), axis=1)
    cand = np.take_along_axis(cand, order, axis=1)
    dup = np.zeros_like(cand, dtype=bool)
    dup[:, 1:] = (cand[:, 1:] == cand[:, :-1]) & (cand[:, 1:] >= 0)
    cand = np.where(dup, -1, cand)
    # push the removed duplicates behind the kept events (a stable sort on "is padding")
    order = np.argsort(cand < 0, axis=1, kind="stable")
    cand = np.take_along_axis(cand, order, axis=1)[:, :length]
    if cand.shape[1] < length:
        cand = np.pad(cand, ((0, 0), (0, length - cand.shape[1])), constant_values=-1)
    return cand


def sequence_columns(frame: pd.DataFrame, columns: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The token columns of every row of a hashed transaction frame, its history taken from the frame
    (`columns`: see `event_columns`)."""
    ev = event_columns(frame, columns)
    pos = prior_positions(ev["t_us"], {e: ev[c] for e, c in ENTITY_COLUMN.items()})
    valid = pos >= 0
    safe = np.clip(pos, 0, None)
    history = {name: values[safe] for name, values in ev.items()}
    return pd.DataFrame(encode_history(ev, history, valid), index=frame.index, columns=list(SEQUENCE_COLUMNS))


def add_sequence_columns(frame: pd.DataFrame, columns: Mapping[str, str] | None = None) -> pd.DataFrame:
    """`frame` with SEQUENCE_COLUMNS added (replaced if present); history = the frame's own rows."""
    base = frame.drop(columns=[c for c in SEQUENCE_COLUMNS if c in frame.columns])
    return pd.concat([base, sequence_columns(base, columns)], axis=1)


def recent_events(frame: pd.DataFrame, per_entity: Mapping[str, int] = HISTORY_PER_ENTITY) -> pd.DataFrame:
    """The last k events of every user / device / IP in `frame`, oldest first within an entity.

    Written next to the online store by the feature build (`RECENT_EVENTS_FILE` in the repo's
    data folder), so a serving process that meets an entity for the first time starts from the
    events the offline history holds. Columns: entity, key, arrival (row order, negative), then
    EVENT_FIELDS.
    """
    ev = pd.DataFrame(event_columns(frame))
    ev["arrival"] = np.arange(len(ev)) - len(ev)  # negative: before anything a server sees live
    parts = []
    for entity, k in per_entity.items():
        col = ENTITY_COLUMN[entity]
        part = ev[ev[col] != ""].sort_values([col, "t_us", "arrival"]).groupby(col, sort=False).tail(k)
        parts.append(part.assign(entity=entity, key=part[col]))
    columns = ["entity", "key", "arrival", *EVENT_FIELDS]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    return out[columns]


# --------------------------------------------------------------------------- online (one transaction)
def encode_one(record_event: tuple, prior: Iterable[tuple[int, tuple]]) -> tuple[np.ndarray, list[str]]:
    """The token vector (SEQUENCE_COLUMNS order) of one transaction from the events its entities keep,
    and the transaction ids of the history events it holds (newest first).

    prior: (arrival number, event tuple) pairs in any order, duplicates allowed (an event is kept
    by its user, device and IP). Strictly earlier events only, distinct by transaction id, newest
    first; equal times are ordered by arrival, as row order orders them offline.
    """
    t_idx, id_idx = EVENT_FIELDS.index("t_us"), EVENT_FIELDS.index("transaction_id")
    t_now = record_event[t_idx]
    seen: set[str] = set()
    kept: list[tuple[int, int, tuple]] = []
    for arrival, ev in prior:
        if ev[t_idx] >= t_now or ev[id_idx] in seen:
            continue
        seen.add(ev[id_idx])
        kept.append((ev[t_idx], arrival, ev))
    kept.sort(key=lambda x: (x[0], x[1]), reverse=True)
    events = [ev for _, _, ev in kept[:SEQUENCE_LENGTH]]
    valid = np.zeros((1, SEQUENCE_LENGTH), dtype=bool)
    valid[0, : len(events)] = True
    history: dict[str, np.ndarray] = {}
    for j, name in enumerate(EVENT_FIELDS):
        fill = "" if name in _STRING_FIELDS else 0
        row = [ev[j] for ev in events] + [fill] * (SEQUENCE_LENGTH - len(events))
        history[name] = np.array([row], dtype=object if name in _STRING_FIELDS else np.float64)
    history["t_us"] = history["t_us"].astype(np.int64)
    current = {}
    for j, name in enumerate(EVENT_FIELDS):
        current[name] = np.array([record_event[j]], dtype=object if name in _STRING_FIELDS else np.float64)
    current["t_us"] = current["t_us"].astype(np.int64)
    return encode_history(current, history, valid)[0], [str(ev[id_idx]) for ev in events]
