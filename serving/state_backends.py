"""Serving's entity-state interface and its two backends.

    await state.lookup(records, update) -> StateAnswer(features, degraded, tokens)

For each hashed record, in order: its entities' windowed features and behaviour-sequence tokens
as they were *before* it, then (``update``) the record joins its entities' state, so the 2nd
transaction of a request already counts the 1st. An explanation looks up without updating.

* `EmbeddedState` (the default; ``make demo``): per-process tracks (serving/entity_state.py) over
  the Feast online store (SQLite locally). Nothing to install; each replica sees its own events.
  It remembers its last answers, so a retried transaction is not counted twice here either.
* `RedisState` (``state_backend: redis``): riskops.features.shared_state — one Redis shared by
  every replica, one atomic script call per request, exact windows and last events, idempotent on
  ``transaction_id``. When Redis cannot be reached the request is answered *degraded* (default
  features, flagged, the ``fail_mode`` floor: the same path as a Feast outage), Redis is skipped for
  ``retry_after_s``, and the transactions scored meanwhile are kept (up to ``backlog``) and applied
  before the next live one once Redis answers again — a transaction applied twice counts once.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from riskops.features.contract import ENTITY_FEATURE_DEFAULTS
from riskops.features.sequences import RECENT_EVENTS_FILE, encode_one, event_record
from serving import prometheus_metrics
from serving.config import ServingConfig
from serving.entity_state import EntityTracker, load_recent_events
from serving.online import OnlineFeatureStore

log = logging.getLogger(__name__)

Tokens = tuple[np.ndarray, list[str]]  # history token vector, the ids of the events it holds


@dataclass
class StateAnswer:
    features: list[dict[str, float]]
    degraded: list[bool]
    tokens: list[Tokens]


class EntityState(Protocol):
    async def lookup(self, records: list[dict], update: bool = True) -> StateAnswer: ...

    def close(self) -> None: ...


class _Throttled:
    """One warning per `every_s` about degraded answers, not one per request."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s, self._at, self._count = every_s, float("-inf"), 0

    def warn(self, what: str, error: Any) -> None:
        now = time.monotonic()
        self._count += 1
        if now - self._at >= self.every_s:
            log.warning(
                "%s unavailable (%s): %d request(s) answered degraded in the last %.0fs",
                what, error, self._count, min(now - self._at, self.every_s),
            )  # fmt: skip
            self._at, self._count = now, 0


class EmbeddedState:
    """In-process entity tracks + the Feast online store (baselines of entities met first here)."""

    def __init__(
        self, online: OnlineFeatureStore | None, tracker: EntityTracker, remember: int = 100_000
    ) -> None:
        self.online, self.tracker = online, tracker
        self._warn = _Throttled()
        # the answers to recent transactions: a retried one is answered the same, not counted twice
        self._answered: OrderedDict[str, tuple[dict[str, float], bool, Tokens]] = OrderedDict()
        self._remember = remember

    async def lookup(self, records: list[dict], update: bool = True) -> StateAnswer:
        if update and any(r["transaction_id"] in self._answered for r in records):
            return await self._with_retries(records)
        tracker = self.tracker
        missing = tracker.untracked(records)
        baselines: dict = {}
        if missing:
            got = None
            if self.online is not None:
                got = await self.online.baselines(missing, max(r["event_timestamp"] for r in records))
            if got is None:
                reason = self.online.last_error if self.online is not None else "no feature store configured"
                self._warn.warn("online features", reason)
            else:
                baselines = got
        # no await below: lookups and updates of one request are atomic w.r.t. other requests
        answer = StateAnswer([], [], [])
        pushes = []
        for r in records:
            answer.tokens.append(tracker.history_tokens(r))  # before the record joins its history
            if update:
                f, p, d = tracker.observe(r, baselines)
                pushes.extend(p)
            else:
                f, d = tracker.peek(r, baselines)
            answer.features.append(f)
            answer.degraded.append(d)
        if pushes and self.online is not None:
            self.online.enqueue(pushes)
        if update:
            for r, f, d, t in zip(records, answer.features, answer.degraded, answer.tokens, strict=True):
                if not d:  # a degraded answer was not applied in full: a retry may apply it
                    self._answered[r["transaction_id"]] = (f, d, t)
            while len(self._answered) > self._remember:
                self._answered.popitem(last=False)
        return answer

    async def _with_retries(self, records: list[dict]) -> StateAnswer:
        """A request holding transactions answered before: those get their first answer again."""
        answer = StateAnswer([], [], [])
        for r in records:
            known = self._answered.get(r["transaction_id"])
            one = StateAnswer([known[0]], [known[1]], [known[2]]) if known else await self.lookup([r])
            answer.features += one.features
            answer.degraded += one.degraded
            answer.tokens += one.tokens
        return answer

    def close(self) -> None:
        pass  # the online store belongs to whoever opened it (serving.service closes it)


class RedisState:
    """The shared Redis state (riskops.features.shared_state) with serving's degraded mode."""

    def __init__(self, shared: Any, retry_after_s: float = 5.0, backlog: int = 100_000) -> None:
        self.shared = shared
        self.retry_after_s = retry_after_s
        self.pending: deque[dict] = deque(maxlen=backlog)
        self.last_error: str | None = None
        self._skip_until = 0.0
        self._warn = _Throttled()

    async def lookup(self, records: list[dict], update: bool = True) -> StateAnswer:
        if time.monotonic() >= self._skip_until:
            try:
                if self.pending:
                    await self._apply_pending()
                got = await self.shared.observe_async(records, update)
            except Exception as exc:  # noqa: BLE001 - any failure of the store answers degraded
                self._failed("lookup", exc)
            else:
                if update:
                    prometheus_metrics.FEATURES_LAST_UPDATE.set(time.time())
                return StateAnswer(
                    [f for f, _, _ in got], [False] * len(got), [(t, ids) for _, t, ids in got]
                )
        if update:
            self.pending.extend(records)
            prometheus_metrics.STATE_BACKLOG.set(len(self.pending))
        self._warn.warn("Redis entity state", self.last_error)
        return StateAnswer(
            [dict(ENTITY_FEATURE_DEFAULTS) for _ in records],
            [True] * len(records),
            [encode_one(event_record(r, 0), ()) for r in records],  # an unknown history reads as empty
        )

    async def _apply_pending(self, batch: int = 256) -> None:
        """The transactions scored while Redis was away, in order, before any new one."""
        while self.pending:
            chunk = [self.pending[i] for i in range(min(batch, len(self.pending)))]
            await self.shared.observe_async(chunk, True)
            for _ in chunk:
                self.pending.popleft()
            prometheus_metrics.STATE_BACKLOG.set(len(self.pending))
        log.info("Redis entity state is back: the transactions scored meanwhile are applied")

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._skip_until = time.monotonic() + self.retry_after_s
        prometheus_metrics.STATE_ERRORS.labels(operation).inc()

    def close(self) -> None:
        self.shared.close()


def open_entity_state(config: ServingConfig, online: OnlineFeatureStore | None) -> EntityState:
    """The backend `config.state_backend` names (after `ServingConfig.with_home`)."""
    if config.state_backend == "redis":
        from riskops.features.shared_state import SharedEntityState

        shared = SharedEntityState(config.redis_url, config.state_ttl_s, config.redis_timeout_s)
        if config.feature_repo is not None:
            load_offline_history(shared, Path(config.feature_repo))
        return RedisState(shared, retry_after_s=config.feast_retry_after_s)
    seed = {}
    if config.feature_repo is not None:  # the offline history's last events per entity
        seed = load_recent_events(Path(config.feature_repo) / "data" / RECENT_EVENTS_FILE)
    return EmbeddedState(online, EntityTracker(config.entity_cache_size, history_seed=seed))


def load_offline_history(shared: Any, feature_repo: Path) -> None:
    """Start an empty Redis state from the feature build's history (once per build, one replica)."""
    from riskops.features.shared_state import HISTORY_FILE, load_history_file

    if shared.loaded() is not None:  # started before (by another replica or the feature step)
        return
    path = feature_repo / "data" / HISTORY_FILE
    if not path.exists():
        log.warning("no %s in %s and Redis holds no state yet: entities start as never seen", HISTORY_FILE, feature_repo)
        return
    t = time.perf_counter()
    rows = load_history_file(shared, path)
    if rows:
        log.info("Redis entity state started from %d offline events in %.1fs", rows, time.perf_counter() - t)
