"""Windowed per-entity aggregates: ONE implementation for offline backfill and online updates.

`EntityWindowState` holds the recent events of one entity instance (one user, merchant, device or
IP) and produces exactly the features listed in `riskops.features.contract.ENTITY_FEATURES[entity]`.
`compute_entity_features` feeds a whole transaction history through the same class, event by
event, so the Feast offline sources and anything serving pushes online are computed by the same
code and agree to the last bit (which is why the window state and the backfill stay in one
module, ~500 lines).

Semantics (the contract the tests pin down):

* **State after the event.** A snapshot describes the entity *after* including its event, with
  every window anchored at the event time ``t``. A window of span ``w`` holds the events with
  ``t - w < event_time <= t`` (half-open: an event exactly ``w`` old has left the window).
  Feast stores the snapshot with the event's timestamp; training reads the state just *before*
  a transaction (see riskops.features.store.training_frame), serving reads the latest state.
* **Time resolution.** Event times are handled as integer microseconds since the epoch (floored),
  so window boundaries are exact. Naive timestamps are taken as UTC.
* **Money is exact.** Amounts are aggregated as integer micro-units (``round(amount * 1e6)``), so
  running sums, means and standard deviations do not drift as events leave a window, and the
  result does not depend on the order of events that share a timestamp. ``*_std_*`` is the
  population standard deviation (0.0 after one event). ``*_mean_*``/``*_std_*`` are NaN when the
  window is empty; rates are 0.0 when the window is empty.
* **Distinct counts** ignore missing keys (None, NaN or ''): a transaction without an IP does
  not make "no IP" a shared value. Likewise an event whose *own* entity key is missing belongs
  to no entity and produces no row in `compute_entity_features`.
* **Ties.** Events are processed in the order (event time, transaction_id); rows without a
  transaction_id column keep their input order among equal times. Counts, sums and distinct
  counts after all events of one timestamp do not depend on this order anyway.
* **Order.** `EntityWindowState.update` needs non-decreasing event times per entity instance
  and raises ValueError on an event older than the state's clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from riskops.features.contract import ENTITY_FEATURES, ENTITY_KEYS

ENTITIES: tuple[str, ...] = tuple(ENTITY_FEATURES)

US_PER_SECOND = 1_000_000
MONEY_SCALE = 1_000_000  # amounts are summed as integer micro-units
WINDOW_SECONDS: dict[str, int] = {"1h": 3600, "24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400}

# The event fields the aggregates read (an event is a mapping with these keys; others are ignored).
EVENT_FIELDS: tuple[str, ...] = (
    "event_timestamp",
    "amount",
    "is_refund",
    "user_id",
    "merchant_id",
    "device_id",
    "ip_hash",
    "shipping_country",
)

# Internal event tuple: (t_us, amount_micro, refund 0/1, user, device, ip, shipping_country, merchant)
_T, _AMOUNT, _REFUND = 0, 1, 2
_DIM_INDEX: dict[str, int] = {
    "user_id": 3,
    "device_id": 4,
    "ip_hash": 5,
    "shipping_country": 6,
    "merchant_id": 7,
}
# The plural used in feature names -> the event column counted.
_DISTINCT_DIMS: dict[str, str] = {
    "users": "user_id",
    "devices": "device_id",
    "ips": "ip_hash",
    "shipping_countries": "shipping_country",
}


def feature_dtype(name: str) -> str:
    """'int64' for counts (transactions, distinct values), 'float64' for everything else."""
    return "int64" if ("_txn_count_" in name or "_distinct_" in name) else "float64"


# ---------------------------------------------------------------------------------------------
# One time window of one entity instance
# ---------------------------------------------------------------------------------------------


class _Window:
    __slots__ = ("span", "events", "count", "amount", "amount_sq", "refunds", "dims", "distinct")

    def __init__(self, span_us: int, dims: tuple[int, ...]):
        self.span = span_us
        self.events: deque[tuple] = deque()
        self.count = 0
        self.amount = 0  # integer micro-units
        self.amount_sq = 0  # integer micro-units squared
        self.refunds = 0
        # a window that counts no distinct values shares the empty tuple: every container a new
        # entity allocates is walked by the garbage collector while the tracker keeps it
        self.dims = dims
        self.distinct: tuple[dict[str, int], ...] = tuple([{} for _ in dims]) if dims else ()

    def add(self, ev: tuple) -> None:
        """Include `ev` and drop what left the window at its time (one call per window and event)."""
        self.events.append(ev)
        self.count += 1
        a = ev[_AMOUNT]
        self.amount += a
        self.amount_sq += a * a
        self.refunds += ev[_REFUND]
        if self.dims:
            for d, counter in zip(self.dims, self.distinct, strict=True):
                v = ev[d]
                if v:
                    counter[v] = counter.get(v, 0) + 1
        if self.events[0][_T] <= ev[_T] - self.span:
            self.advance(ev[_T])

    def advance(self, now_us: int) -> None:
        """Drop events with time <= now - span."""
        events = self.events
        cutoff = now_us - self.span
        while events and events[0][_T] <= cutoff:
            ev = events.popleft()
            self.count -= 1
            a = ev[_AMOUNT]
            self.amount -= a
            self.amount_sq -= a * a
            self.refunds -= ev[_REFUND]
            for d, counter in zip(self.dims, self.distinct, strict=True):
                v = ev[d]
                if v:
                    c = counter[v] - 1
                    if c:
                        counter[v] = c
                    else:
                        del counter[v]

    def mean(self) -> float:
        if not self.count:
            return math.nan
        return self.amount / (self.count * MONEY_SCALE)  # int / int: correctly rounded

    def std(self) -> float:
        n = self.count
        if not n:
            return math.nan
        num = n * self.amount_sq - self.amount * self.amount  # exact, >= 0
        return math.sqrt(num / (n * n)) / MONEY_SCALE


# ---------------------------------------------------------------------------------------------
# The feature names of the contract, compiled into code
# ---------------------------------------------------------------------------------------------

Getter = Callable[["EntityWindowState"], float]
# The names the feature expressions may use besides the state: what `_compiled` evaluates them with.
EXPRESSION_NAMES: dict[str, Any] = {"nan": math.nan, "MONEY_SCALE": MONEY_SCALE, "US_PER_SECOND": US_PER_SECOND}


def _compile(entity: str) -> tuple[dict[str, tuple[str, ...]], list[tuple[str | None, str]]]:
    """Parse ENTITY_FEATURES[entity] into the windows needed and, per feature, its live value as a
    Python expression: (window or None, template) where ``{w}`` stands for that window's `_Window`
    and ``{s}`` for the `EntityWindowState`. The one definition of every feature's arithmetic:
    the getters, the snapshot values and serving's combine (serving.entity_state) are compiled
    from these templates."""
    prefix = entity + "_"
    windows: dict[str, list[str]] = {}
    exprs: list[tuple[str | None, str]] = []

    def need(w: str, dim: str | None = None) -> None:
        if w not in WINDOW_SECONDS:
            raise ValueError(f"unknown window {w!r} in {entity} features")
        dims = windows.setdefault(w, [])
        if dim is not None and dim not in dims:
            dims.append(dim)

    for name in ENTITY_FEATURES[entity]:
        if not name.startswith(prefix):
            raise ValueError(f"feature {name!r} does not start with {prefix!r}")
        rest = name[len(prefix) :]
        if rest == "last_event_epoch":
            exprs.append((None, "({s}.last_event_us / US_PER_SECOND if {s}.last_event_us is not None else nan)"))
            continue
        stem, _, w = rest.rpartition("_")
        need(w)
        if stem == "txn_count":
            exprs.append((w, "float({w}.count)"))
        elif stem == "amount_sum":
            exprs.append((w, "{w}.amount / MONEY_SCALE"))  # int / int: correctly rounded
        elif stem == "amount_mean":
            exprs.append((w, "{w}.mean()"))
        elif stem == "amount_std":
            exprs.append((w, "{w}.std()"))
        elif stem == "refund_rate":
            exprs.append((w, "({w}.refunds / {w}.count if {w}.count else 0.0)"))
        elif stem.startswith("distinct_") and stem[len("distinct_") :] in _DISTINCT_DIMS:
            dim = _DISTINCT_DIMS[stem[len("distinct_") :]]
            need(w, dim)
            exprs.append((w, f"float(len({{w}}.distinct[{windows[w].index(dim)}]))"))
        else:
            raise ValueError(f"feature {name!r}: no aggregate known for {stem!r}")
    return {w: tuple(d) for w, d in windows.items()}, exprs


def window_local(w: str) -> str:
    """The local variable name compiled code binds window `w`'s `_Window` to ("1h" -> ``w_1h``)."""
    return f"w_{w}"


def expression(template: tuple[str | None, str], state: str = "s", window: str | None = None) -> str:
    """A feature's expression over the state named `state` (its window read as `window`, default
    ``state.windows["<w>"]``)."""
    w, text = template
    if w is not None and window is None:
        window = f"{state}.windows[{w!r}]"
    return text.format(s=state, w=window)


def compile_function(source: str, name: str, namespace: dict[str, Any]) -> Callable:
    """Define the function `name` from generated `source` (kept as ``__source__`` for reading)."""
    scope = dict(namespace)
    exec(compile(source, f"<riskops generated {name}>", "exec"), scope)  # noqa: S102 - our own templates
    fn = scope[name]
    fn.__source__ = source
    return fn


def _values_function(entity: str, exprs: list[tuple[str | None, str]]) -> Callable[[Any], list[float]]:
    """One straight-line function returning every feature's live value, in ENTITY_FEATURES order."""
    used = list(dict.fromkeys(w for w, _ in exprs if w is not None))
    lines = [f"def values_{entity}(s):", "    W = s.windows"]
    lines += [f"    {window_local(w)} = W[{w!r}]" for w in used]
    lines.append("    return [")
    lines += [f"        {expression(t, 's', window_local(t[0]) if t[0] else None)}," for t in exprs]
    lines.append("    ]")
    return compile_function("\n".join(lines) + "\n", f"values_{entity}", EXPRESSION_NAMES)


_SPECS: dict[str, tuple[dict[str, tuple[str, ...]], list[tuple[str | None, str]]]] = {
    e: _compile(e) for e in ENTITIES
}
_GETTERS: dict[str, tuple[Getter, ...]] = {
    e: tuple(eval(f"lambda s: {expression(t)}", dict(EXPRESSION_NAMES)) for t in exprs)  # noqa: S307
    for e, (_, exprs) in _SPECS.items()
}
_VALUES: dict[str, Callable[[Any], list[float]]] = {e: _values_function(e, exprs) for e, (_, exprs) in _SPECS.items()}


def feature_getters(entity: str) -> tuple[Getter, ...]:
    """The live value of each feature of ``ENTITY_FEATURES[entity]`` (in that order) from a state."""
    return _GETTERS[entity]


def feature_expressions(entity: str) -> tuple[tuple[str | None, str], ...]:
    """Each feature's (window, expression template), in ENTITY_FEATURES order (see `_compile`)."""
    return tuple(_SPECS[entity][1])


# (window, span in us, event columns counted distinct) per entity: what each new state's windows get
_WINDOW_ARGS: dict[str, tuple[tuple[str, int, tuple[int, ...]], ...]] = {
    e: tuple(
        (w, WINDOW_SECONDS[w] * US_PER_SECOND, tuple(_DIM_INDEX[d] for d in dims)) for w, dims in spec.items()
    )
    for e, (spec, _) in _SPECS.items()
}


# ---------------------------------------------------------------------------------------------
# Per entity instance state
# ---------------------------------------------------------------------------------------------


def _key(value: Any) -> str:
    """An entity/dimension value as the string the aggregates use; missing -> ''."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float) and value != value:
        return ""
    return str(value)


_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def to_epoch_us(ts: Any) -> int:
    """Timestamp-like -> integer microseconds since the epoch (floored; naive = UTC)."""
    if type(ts) is datetime:  # serving's validated times: exact integer arithmetic, no pandas (~10x faster)
        return ((ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)) - _EPOCH_UTC) // _ONE_US
    t = pd.Timestamp(ts)
    if t.tzinfo is None:
        t = t.tz_localize("UTC")
    return int(t.value) // 1000


def from_epoch_us(t_us: int) -> datetime:
    """Integer microseconds since the epoch -> an aware UTC datetime (the inverse of `to_epoch_us`)."""
    return _EPOCH_UTC + timedelta(microseconds=t_us)


def _money(amount: Any) -> int:
    return int(round(float(amount) * MONEY_SCALE))


def event_tuple(event: Mapping[str, Any], t_us: int | None = None) -> tuple:
    """A transaction mapping (EVENT_FIELDS, PII hashed) as the internal event tuple.

    Built once per transaction, the tuple serves every entity it updates (`with_time` moves it).
    `t_us`: the event's time when already known (else read from ``event_timestamp``).
    """
    return (
        to_epoch_us(event["event_timestamp"]) if t_us is None else t_us,
        _money(event.get("amount", 0.0)),
        1 if _truthy(event.get("is_refund", False)) else 0,
        _key(event.get("user_id")),
        _key(event.get("device_id")),
        _key(event.get("ip_hash")),
        _key(event.get("shipping_country")),
        _key(event.get("merchant_id")),
    )


def with_time(ev: tuple, t_us: int) -> tuple:
    """The same event at another time (serving counts a late event at its entity's clock)."""
    return ev if ev[_T] == t_us else (t_us, *ev[1:])


class EntityWindowState:
    """Recent events of one entity instance and its windowed aggregates.

    >>> s = EntityWindowState("user")
    >>> s.update({"event_timestamp": "2024-01-01T00:00:00Z", "amount": 10.0, "is_refund": False,
    ...           "user_id": "u1", "device_id": "d1", "ip_hash": "h1", "shipping_country": "US"})
    >>> s.snapshot("2024-01-01T00:00:00Z")["user_txn_count_1h"]
    1.0
    """

    __slots__ = ("entity", "windows", "_values_of", "_names", "_wlist", "last_event_us", "clock_us")

    def __init__(self, entity: str):
        if entity not in _SPECS:
            raise ValueError(f"unknown entity {entity!r}; expected one of {ENTITIES}")
        self.entity = entity
        self.windows: dict[str, _Window] = {w: _Window(span, dims) for w, span, dims in _WINDOW_ARGS[entity]}
        self._wlist = tuple(self.windows.values())
        self._values_of = _VALUES[entity]
        self._names = ENTITY_FEATURES[entity]
        self.last_event_us: int | None = None
        self.clock_us: int | None = None  # the latest time the state was advanced to

    # -- the fast path shared by update(), compute_entity_features() and serving --

    def add_event(self, ev: tuple) -> None:
        """Include one event already in the internal tuple form (`event_tuple`)."""
        t = ev[_T]
        if self.clock_us is not None and t < self.clock_us:
            raise ValueError(
                f"{self.entity} event at {t} us is older than the state's clock {self.clock_us} us; "
                "events must arrive in time order"
            )
        self.clock_us = t
        for win in self._wlist:
            win.add(ev)
        self.last_event_us = t

    def _values(self) -> list[float]:
        return self._values_of(self)

    # -- public API --

    def update(self, event: Mapping[str, Any]) -> None:
        """Include one event (a transaction mapping with the EVENT_FIELDS; PII already hashed)."""
        self.add_event(event_tuple(event))

    def advance(self, now: Any) -> None:
        """Move the state's clock to `now` (events that left a window are dropped)."""
        now_us = to_epoch_us(now)
        if self.clock_us is not None and now_us < self.clock_us:
            raise ValueError(f"cannot move {self.entity} state back in time to {now}")
        self.clock_us = now_us
        for win in self._wlist:
            win.advance(now_us)

    def snapshot(self, now: Any = None) -> dict[str, float]:
        """The features, windows anchored at `now` (default: the latest event's time)."""
        if now is not None:
            self.advance(now)
        return dict(zip(self._names, self._values(), strict=True))


def _truthy(v: Any) -> bool:
    if v is None or v is pd.NA or (isinstance(v, float) and v != v):
        return False
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "t", "yes", "y")
    return bool(v)


# ---------------------------------------------------------------------------------------------
# Offline: a whole history at once
# ---------------------------------------------------------------------------------------------


def _string_list(df: pd.DataFrame, col: str) -> list[str]:
    if col not in df.columns:
        return [""] * len(df)
    return df[col].astype("string").fillna("").tolist()


def event_order(transactions: pd.DataFrame) -> np.ndarray:
    """Positions of `transactions` in processing order: (event time in us, transaction_id), stable."""
    t_us = _epoch_us_array(transactions["event_timestamp"])
    if "transaction_id" not in transactions.columns:
        return np.argsort(t_us, kind="stable")
    keys = pd.DataFrame(
        {"t": t_us, "tid": transactions["transaction_id"].astype("string").fillna("").to_numpy(dtype=object)}
    )
    return keys.sort_values(["t", "tid"], kind="stable").index.to_numpy()


def _epoch_us_array(ts: pd.Series) -> np.ndarray:
    t = pd.to_datetime(ts, utc=True)
    return t.to_numpy(dtype="datetime64[ns]").astype(np.int64) // 1000


def compute_entity_features(transactions: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per entity, one row per event of that entity: the state after the event.

    `transactions` must already be PII-hashed (riskops.pii.hash_pii: the IP key is `ip_hash`).
    Each frame has the join key (ENTITY_KEYS), `event_timestamp` (UTC, microseconds) and the
    ENTITY_FEATURES columns, rows in processing order, indexed by the input's index labels.
    Identical, value for value, to feeding EntityWindowState.update event by event in that order.
    """
    missing = [c for c in ("event_timestamp", "amount") if c not in transactions.columns]
    if "ip_hash" not in transactions.columns and "ip_address" in transactions.columns:
        raise ValueError("transactions carry raw ip_address: hash PII first (riskops.pii.hash_pii)")
    if missing:
        raise ValueError(f"transactions lack columns {missing}")

    order = event_order(transactions)
    df = transactions.iloc[order]
    n = len(df)
    t_us = _epoch_us_array(df["event_timestamp"]).tolist()
    amount = np.rint(df["amount"].astype("float64").to_numpy() * MONEY_SCALE).astype(np.int64).tolist()
    if "is_refund" in df.columns:
        refund = [1 if _truthy(v) else 0 for v in df["is_refund"].tolist()]
    else:
        refund = [0] * n
    cols = {c: _string_list(df, c) for c in _DIM_INDEX}
    events = list(
        zip(
            t_us,
            amount,
            refund,
            cols["user_id"],
            cols["device_id"],
            cols["ip_hash"],
            cols["shipping_country"],
            cols["merchant_id"],
            strict=True,
        )
    )
    index = df.index

    out: dict[str, pd.DataFrame] = {}
    for entity in ENTITIES:
        key_col = ENTITY_KEYS[entity]
        key_pos = _DIM_INDEX[key_col]
        states: dict[str, EntityWindowState] = {}
        rows: list[list[float]] = []
        keys: list[str] = []
        pos: list[int] = []
        for i, ev in enumerate(events):
            k = ev[key_pos]
            if not k:
                continue
            st = states.get(k)
            if st is None:
                st = states[k] = EntityWindowState(entity)
            st.add_event(ev)
            rows.append(st._values())
            keys.append(k)
            pos.append(i)
        names = list(ENTITY_FEATURES[entity])
        values = np.array(rows, dtype="float64").reshape(len(rows), len(names))
        frame = pd.DataFrame(values, columns=names, index=index[pos])
        for f in names:
            if feature_dtype(f) == "int64":
                frame[f] = frame[f].astype("int64")
        frame.insert(
            0,
            "event_timestamp",
            pd.to_datetime(np.asarray([t_us[p] for p in pos], dtype=np.int64), unit="us", utc=True),
        )
        frame.insert(0, key_col, pd.array(keys, dtype="string"))
        out[entity] = frame
    return out
