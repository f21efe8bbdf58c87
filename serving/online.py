"""Feast online store access for serving: batched reads with a deadline, and coalesced pushes.

* Reads: concurrent requests' lookups are merged into one `riskops.features.store.online_features`
  call on a dedicated reader thread (the SDK call is blocking). A read slower than `timeout_s`, or
  one that raises, makes the waiting requests *degraded* (they are scored with default features
  and the fail-mode decision floor); after a failure Feast is skipped for `retry_after_s` so an
  outage does not cost every request a timeout, then the next read probes it again.
* Pushes: entity states to write are coalesced per (entity, key), latest wins, and flushed every
  `push_interval_s` by a pusher thread with its own FeatureStore (its own SQLite connection), one
  `push_entity_state` call per entity type. A failed push is logged and retried on the next
  flush unless a newer state of that entity superseded it.
* The store is opened lazily and re-opened after a failure, so the server starts (and answers,
  degraded) even when the online store is unreachable at start.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from riskops.features.contract import ENTITY_FEATURES, ENTITY_KEYS, snapshot_time_key
from riskops.features.store import online_features, open_store, push_entity_state
from serving import prometheus_metrics
from serving.entity_state import Push
from serving.feast_process import FeastProcess, push_with
from serving.handoff import WorkerThread

log = logging.getLogger(__name__)

Pair = tuple[str, str]  # (entity, key)


class FeastUnavailable(RuntimeError):
    pass


def _default_opener(repo: Path):
    return open_store(repo)


def read_baselines(store: Any, pairs: list[Pair], now: datetime | None) -> dict[Pair, dict[str, float]]:
    """The online snapshot of each (entity, key): its features and snapshot time, one read for all.

    Runs on the reader thread, so the event loop only receives the answer.
    """
    rows, slots = pack_rows(pairs)
    got = online_features(store, rows, now=now)
    out = {}
    for entity, key in pairs:
        row = got[slots[(entity, key)]]
        out[(entity, key)] = {
            f: row[f] for f in (*ENTITY_FEATURES[entity], snapshot_time_key(entity)) if f in row
        }
    return out


def _default_pusher(store: Any, entity: str, rows: list[dict]) -> None:
    push_entity_state(store, entity, rows)


def pack_rows(pairs: list[Pair]) -> tuple[list[dict], dict[Pair, int]]:
    """Entity rows for one online read: the i-th key of every entity type shares row i.

    One row reads all four feature views, so packing a transaction's user, merchant, device and
    IP into one row costs 4 view lookups instead of 16 (a row per key would read every view).
    """
    rows: list[dict] = []
    used: dict[str, int] = {}
    slots: dict[Pair, int] = {}
    for entity, key in pairs:
        i = used.get(entity, 0)
        used[entity] = i + 1
        if i == len(rows):
            rows.append({})
        rows[i][ENTITY_KEYS[entity]] = key
        slots[(entity, key)] = i
    return rows, slots


class OnlineFeatureStore:
    def __init__(
        self,
        repo: Path | str,
        timeout_s: float = 0.25,
        retry_after_s: float = 5.0,
        push_interval_s: float = 0.2,
        opener: Callable[[Path], Any] = _default_opener,
        reader: Callable[[Any, list[Pair], datetime | None], dict[Pair, dict]] = read_baselines,
        pusher: Callable[[Any, str, list[dict]], None] = _default_pusher,
        push_process: bool = False,
    ) -> None:
        self.repo = Path(repo)
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.push_interval_s = push_interval_s
        self._opener, self._reader, self._pusher = opener, reader, pusher
        self._push_opener = opener
        self._open_push_early = push_process
        if push_process:  # the pushes' Feast work in a child process (serving/feast_process.py)
            self._push_opener, self._pusher = FeastProcess, push_with
        self._read_pool = WorkerThread("riskops-feast-read")
        self._read_store: Any = None
        self._down_until = 0.0
        self.last_error: str | None = None
        self._pending: list[tuple[list[Pair], datetime | None, asyncio.Future]] = []
        self._reader_task: asyncio.Task | None = None
        # pushes
        self._push_lock = threading.Lock()
        self._push_pending: dict[Pair, tuple[Push, float]] = {}
        self._push_wakeup = threading.Event()
        self._push_done = threading.Condition()
        self._push_generation = 0
        self._push_store: Any = None
        self._push_down_until = 0.0  # after a failed push, wait retry_after_s before the next try
        self._closed = False
        self._push_thread = threading.Thread(target=self._push_loop, name="riskops-feast-push", daemon=True)
        self._push_thread.start()

    # -- opening -----------------------------------------------------------------------------
    def open(self) -> bool:
        """Open the read store now (blocking); False (and degraded serving) if it fails."""
        try:
            self._read_pool.submit(self._ensure_read_store).result()
            return True
        except Exception as exc:  # noqa: BLE001 - any failure means "online store unavailable"
            self._mark_down(exc, "open")
            return False

    def _ensure_read_store(self) -> Any:
        if self._read_store is None:
            self._read_store = self._opener(self.repo)
        return self._read_store

    def _mark_down(self, exc: BaseException | str, operation: str) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(exc)
        self._down_until = time.monotonic() + self.retry_after_s
        prometheus_metrics.FEAST_ERRORS.labels(operation).inc()
        log.warning(
            "Feast online store unavailable (%s): %s; answering degraded for %.1fs",
            operation,
            self.last_error,
            self.retry_after_s,
        )

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    # -- reads -------------------------------------------------------------------------------
    async def baselines(self, pairs: Sequence[Pair], now: datetime | None = None) -> dict[Pair, dict] | None:
        """The online snapshot of each (entity, key); None when the store cannot be read in time."""
        if not pairs:
            return {}
        if not self.available:
            return None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self._pending.append((list(pairs), now, fut))
        if self._reader_task is None or self._reader_task.done():
            self._reader_task = loop.create_task(self._read_rounds())
        return await fut

    async def _read_rounds(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            if not self.available:
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)
                continue
            wanted: dict[Pair, None] = {}
            for pairs, _, _ in batch:
                for p in pairs:
                    wanted.setdefault(p, None)
            times = [t for _, t, _ in batch if t is not None]
            now = max(times) if times else None
            started = time.perf_counter()
            try:
                result = await asyncio.wait_for(
                    self._read_pool.call(self._read, list(wanted), now), self.timeout_s
                )
            except TimeoutError:
                self._mark_down(f"lookup exceeded {self.timeout_s:.3f}s", "read")
                result = None
            except Exception as exc:  # noqa: BLE001
                self._read_pool.submit(self._drop_read_store)  # reopen on the next probe
                self._mark_down(exc, "read")
                result = None
            else:
                prometheus_metrics.FEATURE_LOOKUP.observe(time.perf_counter() - started)
            for pairs, _, fut in batch:
                if fut.done():
                    continue
                fut.set_result(None if result is None else {p: result[p] for p in pairs})

    def _read(self, pairs: list[Pair], now: datetime | None) -> dict[Pair, dict]:
        store = self._ensure_read_store()
        return self._reader(store, pairs, now)

    def read_now(self, pairs: Sequence[Pair], now: datetime | None = None) -> dict[Pair, dict]:
        """Blocking read on the reader thread (tests, tools)."""
        got = self._read_pool.submit(self._read, list(pairs), now).result()
        return {(e, k): {f: got[(e, k)][f] for f in ENTITY_FEATURES[e]} for e, k in pairs}

    # -- pushes ------------------------------------------------------------------------------
    def enqueue(self, pushes: Sequence[Push]) -> None:
        if not pushes:
            return
        now = time.monotonic()
        with self._push_lock:
            for p in pushes:
                self._push_pending[(p.entity, p.key)] = (p, now)
        if self.push_interval_s <= 0:
            self._push_wakeup.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Push everything queued now and wait for it (tests, shutdown)."""
        if self._closed or not self._push_thread.is_alive():
            return not self._push_pending
        with self._push_done:
            target = self._push_generation + 2  # a round may be in progress: wait for the next full one
            self._push_wakeup.set()
            return self._push_done.wait_for(lambda: self._push_generation >= target, timeout)

    def _push_loop(self) -> None:
        if self._open_push_early:
            # the child takes seconds to start (it imports Feast): start it before traffic, not on
            # the first flush, so the first pushes are not late (or cut off by a quick shutdown)
            try:
                self._push_store = self._push_opener(self.repo)
            except Exception as exc:  # noqa: BLE001 - retried by the first flush
                log.warning("Feast push process could not start yet (retried on the first push): %s", exc)
        while True:
            self._push_wakeup.wait(self.push_interval_s if self.push_interval_s > 0 else None)
            self._push_wakeup.clear()
            batch = {}
            if time.monotonic() >= self._push_down_until or self._closed:
                with self._push_lock:
                    batch, self._push_pending = self._push_pending, {}
            if batch:
                self._push_batch(batch)
            with self._push_done:
                self._push_generation += 1
                self._push_done.notify_all()
            if self._closed:
                return

    def _push_batch(self, batch: dict[Pair, tuple[Push, float]]) -> None:
        by_entity: dict[str, list[tuple[Pair, Push, float]]] = {}
        for pair, (p, t) in batch.items():
            by_entity.setdefault(p.entity, []).append((pair, p, t))
        try:
            if self._push_store is None:
                self._push_store = self._push_opener(self.repo)
        except Exception as exc:  # noqa: BLE001
            prometheus_metrics.FEAST_ERRORS.labels("push").inc()
            log.warning("Feast push skipped, store cannot be opened: %s", exc)
            self._push_down_until = time.monotonic() + self.retry_after_s
            self._requeue(batch)
            return
        entities = list(by_entity)
        for n, entity in enumerate(entities):
            items = by_entity[entity]
            key_col = ENTITY_KEYS[entity]
            rows = [{key_col: p.key, "event_timestamp": p.event_timestamp, **p.features} for _, p, _ in items]
            try:
                self._pusher(self._push_store, entity, rows)
            except Exception as exc:  # noqa: BLE001
                prometheus_metrics.FEAST_ERRORS.labels("push").inc()
                log.warning(
                    "Feast push of %d %s states failed (retried next flush): %s", len(rows), entity, exc
                )
                self._drop_push_store()  # reopen next time
                self._push_down_until = time.monotonic() + self.retry_after_s
                for rest in entities[n:]:
                    self._requeue({pair: (p, t) for pair, p, t in by_entity[rest]})
                return
            done = time.monotonic()
            prometheus_metrics.FEATURES_LAST_UPDATE.set(time.time())
            prometheus_metrics.PUSHES.labels(entity).inc(len(rows))
            for _, _, t in items:
                prometheus_metrics.PUSH_LAG.observe(done - t)

    def _drop_push_store(self) -> None:
        store, self._push_store = self._push_store, None
        _close_child(store)

    def _drop_read_store(self) -> None:
        """Forget the read store so the next read reopens it."""
        self._read_store = None

    def _requeue(self, batch: dict[Pair, tuple[Push, float]]) -> None:
        with self._push_lock:
            for pair, item in batch.items():
                self._push_pending.setdefault(pair, item)  # a newer state wins

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._push_wakeup.set()
        self._push_thread.join(10)
        self._drop_push_store()
        self._read_pool.shutdown(wait=False, cancel_futures=True)
        self._drop_read_store()


def _close_child(store: Any) -> None:
    """End a `FeastProcess` store's child; an in-process FeatureStore needs nothing."""
    if isinstance(store, FeastProcess):
        store.close()
