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
  entity tracks, cached text embeddings, a hot-swapped model) are frozen as well, from a small
  thread (the collector's callback only signals it), so the next full collection walks only what
  was promoted since the last one.

Frozen objects are still freed by reference counting when they are dropped (an evicted entity
track, a replaced model: both acyclic; `tests/test_gc_control.py` checks that a dropped model
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
from typing import Any

from serving import metrics

log = logging.getLogger(__name__)


class GcController:
    """Measures every collection and freezes the survivors of full ones (`freeze=False`: measure only)."""

    def __init__(self, freeze: bool = True) -> None:
        self.freeze_enabled = freeze
        self._started: float | None = None
        self._full_done = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.freezes = 0

    def start(self) -> GcController:
        """Freeze what the process holds now (call once the model is loaded) and start following."""
        if self.freeze_enabled:
            started = time.perf_counter()
            gc.collect()
            gc.freeze()
            self.freezes += 1
            log.info(
                "gc: %d objects frozen after start (full collection %.0f ms)",
                gc.get_freeze_count(),
                (time.perf_counter() - started) * 1e3,
            )
            self._thread = threading.Thread(target=self._freeze_loop, name="riskops-gc-freeze", daemon=True)
            self._thread.start()
        # counted when /metrics is read: get_freeze_count() walks the whole permanent generation
        metrics.GC_FROZEN.set_function(gc.get_freeze_count)
        gc.callbacks.append(self._on_gc)
        return self

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # runs inside the collector: record and signal only, no allocation-heavy work
        if phase == "start":
            self._started = time.perf_counter()
            return
        if self._started is None:
            return
        generation = info.get("generation", 0)
        metrics.GC_PAUSE.labels(str(generation)).observe(time.perf_counter() - self._started)
        self._started = None
        if generation == 2 and self.freeze_enabled:
            self._full_done.set()

    def _freeze_loop(self) -> None:
        while True:
            self._full_done.wait()
            if self._closed:
                return
            self._full_done.clear()
            gc.freeze()
            self.freezes += 1

    def close(self) -> None:
        """Stop following (the frozen objects stay frozen: unfreezing would cost one long pause)."""
        self._closed = True
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        self._full_done.set()
        if self._thread is not None:
            self._thread.join(5)
