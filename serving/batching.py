"""Dynamic (micro-)batching: concurrent requests share one model call.

Requests queue their jobs; one worker coroutine takes every job waiting (up to `max_rows` rows),
optionally waits `wait_s` for more, and runs `process(jobs) -> results` on a single-thread
executor (the model is not thread-safe, and one batch at a time keeps latency predictable).
While a batch runs, the next one fills up, so batches grow with load and a lone request never
waits for company when `wait_s` is 0.

If a batch fails as a whole, its jobs are retried one by one, so a single bad job fails alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from serving.handoff import run_on

log = logging.getLogger(__name__)


class MicroBatcher:
    def __init__(
        self,
        process: Callable[[list[Any]], list[Any]],
        executor: cf.Executor,
        max_rows: int = 256,
        wait_s: float = 0.0,
    ) -> None:
        self.process = process
        self.executor = executor
        self.max_rows = max(1, int(max_rows))
        self.wait_s = max(0.0, float(wait_s))
        self._pending: deque[tuple[Any, int, asyncio.Future]] = deque()
        self._task: asyncio.Task | None = None
        self.batches = 0
        self.jobs = 0

    async def submit(self, job: Any, rows: int = 1) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self._pending.append((job, max(1, rows), fut))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        return await fut

    def _take(self) -> list[tuple[Any, int, asyncio.Future]]:
        batch: list[tuple[Any, int, asyncio.Future]] = []
        total = 0
        while self._pending:
            _, n, fut = self._pending[0]
            if fut.done():  # cancelled by its client
                self._pending.popleft()
                continue
            if batch and total + n > self.max_rows:
                break
            batch.append(self._pending.popleft())
            total += n
        return batch

    async def _run(self) -> None:
        while self._pending:
            if self.wait_s > 0 and sum(n for _, n, _ in self._pending) < self.max_rows:
                await asyncio.sleep(self.wait_s)
            batch = self._take()
            if not batch:
                continue
            jobs = [j for j, _, _ in batch]
            self.batches += 1
            self.jobs += len(jobs)
            try:
                results = await run_on(self.executor, self.process, jobs)
                if len(results) != len(jobs):
                    raise RuntimeError(f"batch returned {len(results)} results for {len(jobs)} jobs")
            except Exception as exc:  # noqa: BLE001
                if len(jobs) == 1:
                    _set(batch[0][2], exc=exc)
                    continue
                log.warning("batch of %d jobs failed (%s); retrying them one by one", len(jobs), exc)
                for job, _, fut in batch:
                    try:
                        (res,) = await run_on(self.executor, self.process, [job])
                    except Exception as one_exc:  # noqa: BLE001
                        _set(fut, exc=one_exc)
                    else:
                        _set(fut, res)
                continue
            for (_, _, fut), res in zip(batch, results, strict=True):
                _set(fut, res)


def _set(fut: asyncio.Future, result: Any = None, exc: BaseException | None = None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
