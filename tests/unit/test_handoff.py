"""serving.handoff.WorkerThread: the model thread's and the Feast reader's hand-off from the event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading

import pytest

from serving.handoff import WorkerThread, run_on


def test_calls_run_in_order_on_the_one_thread_and_wake_the_loop_once_each(count_wakeups):
    worker = WorkerThread("test-worker")
    seen: list[tuple[int, str]] = []

    def work(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        if i == 3:
            raise ValueError("job 3 is bad")
        return i * 10

    async def scenario() -> tuple[list, int]:
        loop = asyncio.get_running_loop()
        wakeups = count_wakeups(loop)
        out = await asyncio.gather(*(run_on(worker, work, i) for i in range(6)), return_exceptions=True)
        direct = worker.call(work, 6)
        assert isinstance(direct, asyncio.Future) and direct.get_loop() is loop  # the loop's own future
        assert await direct == 60
        return out, wakeups()

    out, wakeups = asyncio.run(scenario())
    assert out[:3] == [0, 10, 20] and out[4:] == [40, 50]
    assert isinstance(out[3], ValueError) and "job 3" in str(out[3])  # a failure reaches its own awaiter only
    assert [i for i, _ in seen] == list(range(7)) and {name for _, name in seen} == {"test-worker"}
    assert wakeups == 7  # each call settles with exactly one hand-off back to the loop
    worker.shutdown()


def test_it_is_a_plain_executor_for_blocking_callers_and_run_in_executor():
    worker = WorkerThread("test-worker")
    assert worker.submit(lambda a, b=1: a + b, 2, b=5).result(5) == 7

    async def via_loop() -> int:
        return await asyncio.get_running_loop().run_in_executor(worker, sum, [1, 2, 3])

    assert asyncio.run(via_loop()) == 6
    with pytest.raises(ZeroDivisionError):
        worker.submit(lambda: 1 / 0).result(5)
    worker.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        worker.submit(sum, [1])


def test_a_call_given_up_before_it_runs_is_skipped_and_shutdown_can_cancel_the_queue():
    worker = WorkerThread("test-worker")
    gate, ran = threading.Event(), []
    blocker = worker.submit(gate.wait, 5)

    async def give_up() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(worker.call(ran.append, "late"), 0.05)

    asyncio.run(give_up())  # the worker is still blocked: the call is queued, then abandoned
    queued = worker.submit(ran.append, "queued")
    cancelled = worker.submit(ran.append, "cancelled")
    cancelled.cancel()
    gate.set()
    assert blocker.result(5) is True
    queued.result(5)
    assert ran == ["queued"]  # neither the abandoned nor the cancelled call ran

    gate.clear()
    worker.submit(gate.wait, 5)
    pending = worker.submit(ran.append, "never")
    worker.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert pending.cancelled() and "never" not in ran


def test_stop_iteration_reaches_the_awaiter_as_an_error():
    worker = WorkerThread("test-worker")

    async def scenario() -> None:
        with pytest.raises(RuntimeError, match="StopIteration"):
            await asyncio.wait_for(worker.call(next, iter(())), 5)

    asyncio.run(scenario())
    worker.shutdown()


def test_run_on_uses_run_in_executor_for_other_executors():
    with cf.ThreadPoolExecutor(1, thread_name_prefix="pool") as pool:

        async def scenario() -> str:
            return await run_on(pool, lambda: threading.current_thread().name)

        assert asyncio.run(scenario()).startswith("pool")
