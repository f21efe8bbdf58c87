"""Keep CPython's cyclic garbage collector from stalling requests.

Why: a full (generation-2) collection walks every container object the process holds, with the
GIL held, so every request waits for it. After start the server holds ~0.5 million of them (torch,
transformers, Feast, KServe, the model), and the entity tracker adds ~15 per tracked entity (up to
`entity_cache_size`, 200,000 entities). Measured on the benchmark's server: full collections of
200-400 ms every few seconds, which were the p99 of every low-load phase (25 req/s: p99 411 ms
against a p50 of 13 ms).

What (the approach of Instagram's `gc.freeze()` and of other Python servers):

* at start, once the model is loaded and warmed: one full collection, then `gc.freeze()` moves
  every surviving object to the permanent generation, which collections never walk;
* afterwards, each time a full collection has run, its survivors (long-lived by definition:
  entity tracks, cached text embeddings, a hot-swapped model) are frozen as well, by a small
  thread within `interval_s` (the collector's callback only sets a flag), so the next full
  collection walks only what was promoted since the last one.

Frozen objects are still freed by reference counting when they are dropped (an evicted entity
track, a replaced model: both acyclic; `tests/unit/test_gc_control.py` checks that a dropped model
leaves no cyclic garbage). Only a *cycle* made of frozen objects that later becomes garbage would
stay; the survivors of a full collection are live when frozen.

`riskops_gc_pause_seconds{generation}` (every collection's duration) and
`riskops_gc_frozen_objects` show the effect on `/metrics`.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from typing import Any

from serving import prometheus_metrics

log = logging.getLogger(__name__)


class HeapFreezer:
    """The freezing policy alone (module doc), for a process with no metrics and no threads to
    spare (the Feast push child): `start()` freezes what is alive now; the collector's callback
    only notes that a full collection ran, and the owner calls `freeze_survivors()` at a safe
    point of its own loop to freeze that collection's survivors."""

    def __init__(self) -> None:
        self._full_pending = False
        self.freezes = 0

    def start(self) -> int:
        """One full collection, freeze the survivors, follow later full collections; the frozen count."""
        gc.collect()
        gc.freeze()
        self.freezes += 1
        gc.callbacks.append(self._on_gc)
        return gc.get_freeze_count()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # inside the collector: no locks, no calls (see GcController)
        if phase == "stop" and info.get("generation") == 2:
            self._full_pending = True

    def freeze_survivors(self) -> bool:
        """Freeze the survivors of the full collection(s) since the last call; whether there were any."""
        if not self._full_pending:
            return False
        self._full_pending = False
        gc.freeze()
        self.freezes += 1
        return True

    def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)


class GcController:
    """Measures every collection and freezes the survivors of full ones (`freeze=False`: measure only).

    The collector's callback runs inside whatever allocation triggered the collection, possibly
    while that thread holds a lock (prometheus_client's multiprocess values have one, and the
    pusher thread was inside it when a collection started: a deadlock, found by the benchmark).
    So the callback takes no lock and calls nothing: it appends the pause to a deque and sets a
    flag; a small thread publishes the pauses and does the freezing every `interval_s`.
    """

    def __init__(self, freeze: bool = True, interval_s: float = 0.25) -> None:
        self.freeze_enabled = freeze
        self.interval_s = interval_s
        self._started: float | None = None
        self._pauses: deque[tuple[int, float]] = deque(maxlen=10_000)
        self._freezer = HeapFreezer()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def freezes(self) -> int:
        return self._freezer.freezes

    def start(self) -> GcController:
        """Freeze what the process holds now (call once the model is loaded) and start following."""
        if self.freeze_enabled:
            started = time.perf_counter()
            frozen = self._freezer.start()
            log.info(
                "gc: %d objects frozen after start (full collection %.0f ms)",
                frozen,
                (time.perf_counter() - started) * 1e3,
            )
        # counted when /metrics is read: get_freeze_count() walks the whole permanent generation
        prometheus_metrics.GC_FROZEN.set_function(gc.get_freeze_count)
        gc.callbacks.append(self._on_gc)
        self._thread = threading.Thread(target=self._loop, name="riskops-gc", daemon=True)
        self._thread.start()
        return self

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # inside the collector: no locks, no calls (see the class docstring)
        if phase == "start":
            self._started = time.perf_counter()
            return
        started, self._started = self._started, None
        if started is None:
            return
        self._pauses.append((info.get("generation", 0), time.perf_counter() - started))

    def _loop(self) -> None:
        while not self._closed.wait(self.interval_s):
            self.publish()

    def publish(self) -> None:
        """Record the pauses seen so far; freeze the survivors if a full collection ran."""
        while self._pauses:
            generation, seconds = self._pauses.popleft()
            prometheus_metrics.GC_PAUSE.labels(str(generation)).observe(seconds)
        if self.freeze_enabled:
            self._freezer.freeze_survivors()

    def close(self) -> None:
        """Stop following (the frozen objects stay frozen: unfreezing would cost one long pause)."""
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        self._freezer.stop()
        self._closed.set()
        if self._thread is not None:
            self._thread.join(5)
        self.publish()
