"""One worker thread that event-loop code hands calls to, without a chained future per call.

`loop.run_in_executor` on a `ThreadPoolExecutor` makes a `concurrent.futures.Future` (with its
own lock and condition) per call, chains it to an asyncio future with callbacks that run on the
worker thread while it holds the GIL, and goes through the pool's locks and its idle semaphore.
The server hands work to its model thread once per batch and to its Feast reader once per read
round, on the event loop's critical path; `WorkerThread.call` gives the worker the loop's own
future instead, settled with a single ``call_soon_threadsafe``. It is also a plain
`concurrent.futures.Executor` (``submit``, ``shutdown``, usable with ``run_in_executor``), so
blocking callers and tests use it as before. Calls run one at a time, in submission order (the
model is not thread-safe; one read at a time is what the online store expects).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = object()


class WorkerThread(cf.Executor):
    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._shutdown = False
        self._lock = threading.Lock()  # orders `shutdown` against late submissions
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        fut: cf.Future = cf.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new calls after shutdown")
            self._queue.put((fn, args, kwargs, fut))
        return fut

    def call(self, fn: Callable[..., Any], /, *args: Any) -> asyncio.Future:
        """Run ``fn(*args)`` on the worker; await the result on the running loop."""
        fut = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new calls after shutdown")
            self._queue.put((fn, args, None, fut))
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if not self._shutdown:
                self._shutdown = True
                if cancel_futures:
                    self._cancel_queued()
                self._queue.put(_STOP)
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def _cancel_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            waiter = item[3]
            if isinstance(waiter, cf.Future):
                waiter.cancel()
            else:
                _to_loop(waiter.get_loop(), waiter.cancel)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fn, args, kwargs, waiter = item
            if isinstance(waiter, cf.Future):
                if not waiter.set_running_or_notify_cancel():
                    continue
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # noqa: BLE001 - handed to the waiter, as an executor does
                    waiter.set_exception(exc)
                else:
                    waiter.set_result(result)
                continue
            if waiter.cancelled():  # its awaiter gave up (a timeout): skip work nobody will read
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001
                settle_on_loop(waiter.get_loop(), [(waiter, None)], exc)
            else:
                settle_on_loop(waiter.get_loop(), [(waiter, result)])


def _to_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: nobody awaits this any more
        pass


def settle_on_loop(
    loop: asyncio.AbstractEventLoop,
    results: list[tuple[asyncio.Future, Any]],
    exc: BaseException | None = None,
) -> None:
    """From another thread: settle `loop`'s futures, each with its result (or all with `exc`),
    waking the loop once."""
    _to_loop(loop, _settle_each, results, exc)


def _settle_each(results: list[tuple[asyncio.Future, Any]], exc: BaseException | None) -> None:
    for fut, result in results:
        settle(fut, result, exc)


def settle(fut: asyncio.Future | cf.Future, result: Any = None, exc: BaseException | None = None) -> None:
    """Resolve `fut` on its own thread (the loop's, for an asyncio future), unless it is done
    already (cancelled by a client that went away)."""
    if fut.done():
        return
    if isinstance(exc, StopIteration):  # an asyncio future refuses it (it would end the awaiting coroutine)
        exc = RuntimeError(f"the call raised StopIteration: {exc!r}")
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


async def run_on(executor: cf.Executor, fn: Callable[..., Any], /, *args: Any) -> Any:
    """Await ``fn(*args)`` on `executor`: the lean hand-off for a `WorkerThread`, else `run_in_executor`."""
    if isinstance(executor, WorkerThread):
        return await executor.call(fn, *args)
    return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
