"""Feast pushes from a child process: their CPU work stays off the server's GIL.

Why: a Feast push (frame -> Arrow -> protos -> one SQLite upsert per feature row) is Python work
that holds the GIL for milliseconds. Run on a thread of the server, every request that arrived
during a flush waited for it: measured at concurrency 1, p99 31 ms with a flush every 0.5 s
against 19 ms with pushes held back. In its own process the work competes for a CPU, which the OS
schedules finely, instead of for the GIL. (Online reads stay on a thread of the server: in a
child they cost the server less CPU but moved no benchmark figure, and added 0.3-0.7 ms at
concurrency 1.)

`FeastProcess` is what `serving.online.OnlineFeatureStore` gets as its push "store" when
`push_process` is on (the default). The pusher thread still coalesces, retries and counts; it
hands each call to the child and waits (blocked on a pipe, GIL released) for the answer. The
child, ``python -m serving.feast_process REPO``, opens its own FeatureStore and runs
`riskops.features.store.push_entity_state`: the same call as in-process. A child that dies or
does not answer within `timeout_s` makes the call fail (and is replaced); the push is retried by
the pusher on its next flush.

The child runs with ``python -O``: Feast decorates its registry classes with typeguard's
``@typechecked``, and every push re-reads the feature views from the registry, so most of a small
push's CPU went to run-time type checks of Feast's own objects (a flush of four one-row pushes:
45 ms of CPU, 16 ms with ``-O``; four 100-row pushes: 77 ms, 50 ms). Under ``-O`` typeguard does
not instrument, and ``assert`` statements are skipped; the push path's own checks
(`riskops.features.store.push_entity_state`) raise errors rather than assert.

The child's heap is frozen (`gc.freeze()`) once Feast is loaded, and again after each full
collection, by the same policy the server follows (`serving.gc_control.HeapFreezer`): otherwise
every few seconds a full collection walked the ~320,000 objects of Feast, pandas and pyarrow, a
burst of ~160 ms of CPU (`benchmarks/micro_push.py --flushes 20`: one flush in 20 took 203 ms
against a median of 44; frozen, the slowest of 20 took 51 ms) on the core the server's threads
and its clients share.

Protocol: `multiprocessing.connection` messages over the child's stdin/stdout (the child moves
its own stdout to stderr first, so nothing else can write into the reply stream): a request
``("push", entity, rows)`` gets ``("ok", None)`` or ``("error", message)``; ``None`` ends the child.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from serving.cpus import helper_env, pin_helper

log = logging.getLogger(__name__)


class FeastProcessError(RuntimeError):
    pass


class FeastProcess:
    """A child process that owns a Feast FeatureStore and writes entity states to it."""

    def __init__(self, repo: Path | str, start_timeout_s: float = 120.0, timeout_s: float = 30.0) -> None:
        self.repo = Path(repo)
        self.timeout_s = timeout_s
        # helper_env: the CPUs a pinned server leaves to its helpers (serving/cpus.py)
        env = {**os.environ, **helper_env(), "PYTHONUNBUFFERED": "1"}
        self._proc = subprocess.Popen(
            # -O: no typeguard instrumentation of Feast's classes in the child (see the module doc)
            [sys.executable, "-O", "-m", "serving.feast_process", str(self.repo.resolve())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._send = Connection(os.dup(self._proc.stdin.fileno()), readable=False)
        self._recv = Connection(os.dup(self._proc.stdout.fileno()), writable=False)
        self._proc.stdin.close()
        self._proc.stdout.close()
        try:
            started = self._answer(start_timeout_s, "start")
        except FeastProcessError:
            self.close()
            raise
        self.optimized = bool((started or {}).get("optimized"))  # the child's sys.flags.optimize
        self.frozen_objects = int((started or {}).get("frozen_objects", 0))  # the child's gc.freeze()
        log.info("Feast calls go through child process %d", self._proc.pid)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.poll() is None

    def _answer(self, timeout_s: float, what: str) -> Any:
        try:
            if not self._recv.poll(timeout_s):
                # a late answer would be read as the answer to the next call: end the child, so
                # the next call fails at once and its owner starts a new one
                self._proc.kill()
                raise FeastProcessError(
                    f"Feast process {self._proc.pid}: no answer to {what} in {timeout_s:.0f}s"
                )
            status, detail = self._recv.recv()
        except (EOFError, OSError) as exc:
            code = self._proc.poll()
            raise FeastProcessError(
                f"Feast process {self._proc.pid} exited (code {code}) during {what}: {exc}"
            ) from None
        if status != "ok":
            raise FeastProcessError(f"Feast process: {detail}")
        return detail

    def _call(self, request: tuple, what: str) -> Any:
        try:
            self._send.send(request)
        except (BrokenPipeError, OSError) as exc:
            raise FeastProcessError(f"Feast process {self._proc.pid} is gone: {exc}") from None
        return self._answer(self.timeout_s, what)

    def push(self, entity: str, rows: list[dict[str, Any]]) -> None:
        """Write `rows` (push_entity_state's records) through the child; raises when it fails."""
        self._call(("push", entity, rows), f"a push of {len(rows)} {entity} states")

    def close(self, timeout_s: float = 5.0) -> None:
        if self._proc.poll() is None:
            try:
                self._send.send(None)
            except OSError:
                pass
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout_s)
        for conn in (self._send, self._recv):
            try:
                conn.close()
            except OSError:
                pass


def push_with(store: FeastProcess, entity: str, rows: list[dict]) -> None:
    """`OnlineFeatureStore` pusher for a FeastProcess store."""
    store.push(entity, rows)


def _child(repo: str) -> int:
    # replies go to the real stdout; anything printed by libraries goes to stderr instead
    reply = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)
    requests = Connection(os.dup(0), writable=False)
    pin_helper()  # off the server's CPU when the server is pinned (serving/cpus.py)
    try:
        # in the child only, inside the try: a failing import is reported to the parent
        from riskops.features.store import open_store, push_entity_state
        from serving.gc_control import HeapFreezer

        store = open_store(Path(repo))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which logs it
        reply.send(("error", f"cannot open the Feast repo {repo}: {type(exc).__name__}: {exc}"))
        return 1
    # freeze what is loaded now, and the survivors of each later full collection (module doc)
    freezer = HeapFreezer()
    frozen = freezer.start()
    reply.send(("ok", {"optimized": sys.flags.optimize > 0, "frozen_objects": frozen}))
    while True:
        freezer.freeze_survivors()  # between calls
        try:
            msg = requests.recv()
        except EOFError:  # the server went away
            return 0
        if msg is None:
            return 0
        try:
            push_entity_state(store, msg[1], msg[2])
        except Exception as exc:  # noqa: BLE001 - one bad call must not end the process
            reply.send(("error", f"{type(exc).__name__}: {exc}"))
        else:
            reply.send(("ok", None))


if __name__ == "__main__":
    os.environ.setdefault("FEAST_USAGE", "False")
    sys.exit(_child(sys.argv[1]))
