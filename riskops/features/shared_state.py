"""Entity state shared by every serving replica, in Redis: exact windows, last events, idempotent.

One Lua script call per request reads each entity's windowed totals and last events *before* the
request's transactions and applies them, atomically (Redis runs a script alone), so the next
transaction of an entity sees the previous one whichever replica scored it. The arithmetic is the
offline backfill's (`riskops.features.aggregates`): the script keeps integer totals per window —
count, amount and squared amount in micro-units, refunds, and **exact** distinct counts (a counter
per value; no HyperLogLog, so no approximation error) — and evicts the events that left a window
as time moves on, exactly as `_Window.advance` does. Python turns the totals into features with
the same compiled expressions (`features_from_totals`), so both backends agree to the last bit.

Redis keys (prefix ``riskops:``; one Redis primary — the script names keys it builds, which
Redis Cluster would not route):

* ``s:<entity>:<key>`` hash — per window ``w``: ``c:w`` count, ``a:w`` amount, ``qh:w``/``ql:w`` the
  squared amounts as two limbs (``qh * 10**12 + ql``: squares of micro-units overflow the script's
  doubles), ``r:w`` refunds, ``n:w:<dim>`` distinct values, ``d:w:<dim>:<value>`` a value's events,
  ``x:w`` the window's last cutoff; ``last`` and ``clock`` (µs).
* ``e:<entity>:<key>`` sorted set — the events inside the longest window (score = time in µs).
* ``h:<entity>:<key>`` list — the user's / device's / IP's last events (`HISTORY_PER_ENTITY`), newest
  first, as ``arrival<TAB>json`` (arrival: a global counter, which orders events of equal time).
* ``tx:<transaction_id>`` — the answer given for it, kept `answer_ttl_s` (10 minutes): a transaction
  retried within it is answered the same and not counted twice. ``loaded`` — the offline history the state was started from (`load_history`).

Every key of an entity expires `ttl_s` after its last event (default 35 days > the 30-day window);
an entity silent that long starts again as never seen (its ``last_event_epoch`` is then missing).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from riskops.features.aggregates import _DIM_INDEX, _VALUES, _WINDOW_ARGS, ENTITIES, _Window, event_tuple
from riskops.features.contract import ENTITY_FEATURES, ENTITY_KEYS
from riskops.features.sequences import HISTORY_PER_ENTITY, encode_one, event_columns, event_record

PREFIX = "riskops:"
# What the feature build leaves next to the online store for a fresh Redis state to replay
# (`bootstrap_events`): the transactions of the longest window, and each entity's last events.
HISTORY_FILE = "state_history.parquet"
DEFAULT_TTL_S = 35 * 86_400
# How long a transaction's answer is kept for retries: a client retries within seconds to minutes;
# an answer holds the entity's last events, so keeping it for days would fill Redis.
DEFAULT_ANSWER_TTL_S = 600
_KEY_FIELDS = tuple((entity, ENTITY_KEYS[entity]) for entity in ENTITIES)
_FIRST_DIM = min(_DIM_INDEX.values())  # event tuple position of the first dimension (user_id)


def _fields(entity: str) -> list[str]:
    """The hash fields read before an event: per window its totals, then last and clock."""
    out: list[str] = []
    for w, _, dims in _WINDOW_ARGS[entity]:
        out += [
            f"c:{w}",
            f"a:{w}",
            f"qh:{w}",
            f"ql:{w}",
            f"r:{w}",
            *(f"n:{w}:{d - _FIRST_DIM + 1}" for d in dims),
        ]
    return [*out, "last", "clock"]


def _lua_spec() -> str:
    """The entities' windows as a Lua table literal (baked into the script)."""
    parts = []
    for entity in ENTITIES:
        windows = ", ".join(
            f"{{name='{w}', span={span}, dims={{{', '.join(str(d - _FIRST_DIM + 1) for d in dims)}}}}}"
            for w, span, dims in _WINDOW_ARGS[entity]
        )
        longest = max(span for _, span, _ in _WINDOW_ARGS[entity])
        fields = ", ".join(f"'{f}'" for f in _fields(entity))
        k = HISTORY_PER_ENTITY.get(entity, 0)
        parts.append(f"{entity} = {{windows={{{windows}}}, longest={longest}, k={k}, fields={{{fields}}}}}")
    return "{" + ", ".join(parts) + "}"


# ARGV: prefix, ttl seconds, update (1/0), the records as JSON (below), the answers' ttl seconds.
# The records: [tid, t_us, amount_micro,
# refund, [user, device, ip, country, merchant], [[entity, key], ...], history event json or ""].
# Returns one JSON answer per record: per entity [hash fields before, last events before].
_SCRIPT = """
local SPEC = %(spec)s
local P, ttl, update = ARGV[1], ARGV[2], ARGV[3] == '1'
local recs = cjson.decode(ARGV[4])
local answer_ttl = ARGV[5]
local function I(x) return string.format('%%.0f', x + 0) end  -- x + 0: no '-0', which HINCRBY refuses
local function split(s)
  local out = {}
  for part in string.gmatch(s, '([^\\31]*)\\31?') do out[#out + 1] = part end
  return out
end
local function squares(amount)
  local a = math.abs(amount)
  local ah = math.floor(a / 1e6)
  local al = a - ah * 1e6
  local cross = 2 * ah * al
  local cq = math.floor(cross / 1e6)
  return ah * ah + cq, (cross - cq * 1e6) * 1e6 + al * al
end
local function count(sk, w, amount, refund, dims, values, sign)
  local qh, ql = squares(amount)
  redis.call('HINCRBY', sk, 'c:' .. w, sign)
  redis.call('HINCRBY', sk, 'a:' .. w, I(sign * amount))
  redis.call('HINCRBY', sk, 'qh:' .. w, I(sign * qh))
  redis.call('HINCRBY', sk, 'ql:' .. w, I(sign * ql))
  if refund ~= 0 then redis.call('HINCRBY', sk, 'r:' .. w, sign) end
  for _, d in ipairs(dims) do
    local v = values[d]
    if v ~= '' then
      local field = 'd:' .. w .. ':' .. d .. ':' .. v
      local n = redis.call('HINCRBY', sk, field, sign)
      if sign > 0 and n == 1 then redis.call('HINCRBY', sk, 'n:' .. w .. ':' .. d, 1) end
      if sign < 0 and n <= 0 then
        redis.call('HDEL', sk, field)
        redis.call('HINCRBY', sk, 'n:' .. w .. ':' .. d, -1)
      end
    end
  end
end
local function apply(entity, key, r, arrival)
  local spec = SPEC[entity]
  local sk, ek = P .. 's:' .. entity .. ':' .. key, P .. 'e:' .. entity .. ':' .. key
  local clock = redis.call('HGET', sk, 'clock')
  local t = r[2]
  if clock and tonumber(clock) > t then t = tonumber(clock) end
  local member = r[1] .. '\\31' .. I(r[3]) .. '\\31' .. r[4] .. '\\31' .. table.concat(r[5], '\\31')
  redis.call('ZADD', ek, I(t), member)
  for _, win in ipairs(spec.windows) do
    count(sk, win.name, r[3], r[4], win.dims, r[5], 1)
    local cut = t - win.span
    local prev = redis.call('HGET', sk, 'x:' .. win.name)
    local gone = redis.call('ZRANGEBYSCORE', ek, prev and ('(' .. prev) or '-inf', I(cut))
    for _, m in ipairs(gone) do
      local f = split(m)
      count(sk, win.name, tonumber(f[2]), tonumber(f[3]), win.dims, {f[4], f[5], f[6], f[7], f[8]}, -1)
    end
    redis.call('HSET', sk, 'x:' .. win.name, I(cut))
  end
  redis.call('ZREMRANGEBYSCORE', ek, '-inf', I(t - spec.longest))
  redis.call('HSET', sk, 'last', I(t), 'clock', I(t))
  redis.call('EXPIRE', sk, ttl)
  redis.call('EXPIRE', ek, ttl)
  if spec.k > 0 and r[7] ~= '' then
    local hk = P .. 'h:' .. entity .. ':' .. key
    redis.call('LPUSH', hk, arrival .. '\\t' .. r[7])
    redis.call('LTRIM', hk, 0, spec.k - 1)
    redis.call('EXPIRE', hk, ttl)
  end
end
local out = {}
for i, r in ipairs(recs) do
  local txk = P .. 'tx:' .. r[1]
  local done = update and redis.call('GET', txk)
  if done then
    out[i] = done
  else
    local res = {}
    local arrival = nil
    if update and r[7] ~= '' then arrival = I(redis.call('INCR', P .. 'arrival')) end
    for j, ek in ipairs(r[6]) do
      local entity, key = ek[1], ek[2]
      local spec = SPEC[entity]
      local before = redis.call('HMGET', P .. 's:' .. entity .. ':' .. key, unpack(spec.fields))
      for f = 1, #before do if not before[f] then before[f] = '' end end
      local hist = {}
      if spec.k > 0 then hist = redis.call('LRANGE', P .. 'h:' .. entity .. ':' .. key, 0, spec.k - 1) end
      res[j] = {before, hist}
    end
    if update then
      for _, ek in ipairs(r[6]) do apply(ek[1], ek[2], r, arrival) end
    end
    out[i] = cjson.encode(res)
    if update then redis.call('SET', txk, out[i], 'EX', answer_ttl) end
  end
end
return out
""" % {"spec": _lua_spec()}  # noqa: UP031 - the script's own braces make f-strings unreadable


def keys_of(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(entity, key) pairs of a hashed record; a missing key belongs to no entity."""
    out = []
    for entity, field in _KEY_FIELDS:
        v = record.get(field)
        if v is not None and v != "" and not (isinstance(v, float) and v != v):
            out.append((entity, v if type(v) is str else str(v)))
    return out


def script_record(record: Mapping[str, Any]) -> list:
    """One hashed request record as the script's input row."""
    ev = event_tuple(record)
    pairs = keys_of(record)
    history = ""
    if any(entity in HISTORY_PER_ENTITY for entity, _ in pairs):
        history = json.dumps(event_record(record, ev[0]), separators=(",", ":"))
    return [str(record["transaction_id"]), ev[0], ev[1], ev[2], list(ev[_FIRST_DIM:]), pairs, history]


def features_from_totals(entity: str, values: Sequence[str]) -> dict[str, float]:
    """An entity's features from the hash fields the script read (`_fields` order; '' = missing)."""
    it = iter(int(v) if v != "" else None for v in values)
    windows: dict[str, _Window] = {}
    for w, span, dims in _WINDOW_ARGS[entity]:
        win = _Window(span, ())
        count, amount, qh, ql, refunds = (next(it) or 0 for _ in range(5))
        win.count, win.amount, win.amount_sq, win.refunds = count, amount, qh * 10**12 + ql, refunds
        # the compiled expressions read a distinct count as len(window.distinct[i])
        win.distinct = tuple(range(next(it) or 0) for _ in dims)
        windows[w] = win
    last = next(it)
    state = _Totals(windows, last)
    return dict(zip(ENTITY_FEATURES[entity], _VALUES[entity](state), strict=True))


class _Totals:
    """What the compiled feature expressions read of a state: its windows and last event time."""

    __slots__ = ("windows", "last_event_us")

    def __init__(self, windows: dict[str, _Window], last_event_us: int | None) -> None:
        self.windows, self.last_event_us = windows, last_event_us


def decode_answer(
    record: Mapping[str, Any], answer: str | bytes, row: list | None = None
) -> tuple[dict[str, float], np.ndarray, list[str]]:
    """The script's answer for one record -> (entity features before it, history tokens, their ids).
    `row`: the record's `script_record`, when the caller has it."""
    row = row if row is not None else script_record(record)
    per_entity = json.loads(answer)
    features: dict[str, float] = {}
    prior: list[tuple[int, tuple]] = []
    for (entity, _), (values, history) in zip(row[5], per_entity, strict=True):
        features.update(features_from_totals(entity, values))
        for item in history or ():  # cjson writes an empty list as {}
            arrival, _, ev = item.partition("\t")
            prior.append((int(arrival), tuple(json.loads(ev))))
    tokens, ids = encode_one(event_record(record, row[1]), prior)
    return features, tokens, ids


class SharedEntityState:
    """The Redis entity state: `observe` per request (async for serving), `load_history` to start it.

    Args:
        url: ``redis://host:port/db``.
        ttl_s: seconds an entity's keys live after its last event.
        answer_ttl_s: seconds a transaction's answer is kept (a retry within it counts once).
        timeout_s: socket timeout of a round trip (serving answers degraded past it).
    """

    def __init__(
        self,
        url: str,
        ttl_s: float = DEFAULT_TTL_S,
        timeout_s: float = 0.25,
        prefix: str = PREFIX,
        answer_ttl_s: float = DEFAULT_ANSWER_TTL_S,
    ):
        import redis
        import redis.asyncio as aioredis

        self.url, self.ttl_s, self.prefix, self.answer_ttl_s = url, int(ttl_s), prefix, int(answer_ttl_s)
        self.sync = redis.Redis.from_url(url, socket_timeout=max(timeout_s, 5.0))
        self.client = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._script = self.sync.register_script(_SCRIPT)
        self._async_script = self.client.register_script(_SCRIPT)

    def _args(self, rows: list[list], update: bool) -> list:
        rows_json = json.dumps(rows, separators=(",", ":"))
        return [self.prefix, self.ttl_s, 1 if update else 0, rows_json, self.answer_ttl_s]

    def observe(self, records: Sequence[Mapping[str, Any]], update: bool = True) -> list[tuple]:
        """Per record (features before it, history tokens, history ids); `update` applies them."""
        rows = [script_record(r) for r in records]
        answers = self._script(args=self._args(rows, update))
        return [decode_answer(*x) for x in zip(records, answers, rows, strict=True)]

    async def observe_async(self, records: Sequence[Mapping[str, Any]], update: bool = True) -> list[tuple]:
        rows = [script_record(r) for r in records]
        answers = await self._async_script(args=self._args(rows, update))
        return [decode_answer(*x) for x in zip(records, answers, rows, strict=True)]

    # -- starting the state from the offline history -----------------------------------------
    def loaded(self) -> str | None:
        """The id of the offline history the state was started from (None: an empty state)."""
        v = self.sync.get(self.prefix + "loaded")
        return v.decode() if v is not None else None

    def load_history(self, transactions: pd.DataFrame, history_id: str, batch: int = 256) -> int:
        """Replay hashed transactions (time order) through the script, then mark the state loaded.

        Only an empty state is started: once a history is loaded, the live traffic since makes the
        state exact and authoritative, and replaying a later build's history on top would count its
        events twice (to start over, delete the ``riskops:`` keys). Only one process loads: the
        others see the lock and wait for the mark. Returns the rows replayed (0: already started)."""
        if self.loaded() is not None:
            return 0
        lock = self.sync.lock(self.prefix + "loading", timeout=3600, blocking_timeout=3600)
        with lock:
            if self.loaded() is not None:
                return 0
            rows = history_records(transactions)
            pipe = self.sync.pipeline(transaction=False)
            for start in range(0, len(rows), batch):
                chunk = [script_record(r) for r in rows[start : start + batch]]
                self._script(args=self._args(chunk, True), client=pipe)
                if len(pipe) >= 16:
                    pipe.execute()
            pipe.execute()
            self.sync.set(self.prefix + "loaded", history_id)
        return len(rows)

    def close(self) -> None:
        self.sync.close()


def history_records(transactions: pd.DataFrame) -> list[dict[str, Any]]:
    """Hashed transactions as request-like records, in time order (ties keep row order)."""
    ev = event_columns(transactions)
    order = np.argsort(ev["t_us"], kind="stable")
    frame = transactions.iloc[order]
    records = frame.to_dict("records")
    for r in records:
        for k, v in r.items():
            if isinstance(v, float) and math.isnan(v):
                r[k] = None
    return records


def bootstrap_events(transactions: pd.DataFrame, recent_ids: Iterable[str], window_s: int) -> pd.DataFrame:
    """What a fresh Redis state replays: the transactions inside the longest window before the
    history's end, plus the older ones still among an entity's last events (`recent_ids`)."""
    t = pd.to_datetime(transactions["event_timestamp"], utc=True)
    inside = t > t.max() - pd.Timedelta(seconds=window_s)
    keep = inside | transactions["transaction_id"].astype(str).isin(set(recent_ids))
    return transactions[keep]


def write_history_file(transactions: pd.DataFrame, recent_ids: Iterable[str], path) -> None:
    """The feature build's `HISTORY_FILE` (hashed transactions; see `bootstrap_events`)."""
    longest = max(span for args in _WINDOW_ARGS.values() for _, span, _ in args) // 1_000_000
    bootstrap_events(transactions, recent_ids, longest).to_parquet(path, index=False)


def load_history_file(state: SharedEntityState, path) -> int:
    """Replay `HISTORY_FILE` into an empty `state` (marked with the file's content hash)."""
    import hashlib
    from pathlib import Path

    if state.loaded() is not None:
        return 0
    history_id = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return state.load_history(pd.read_parquet(path), history_id)
