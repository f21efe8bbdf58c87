"""The prediction log: every scored instance, durably, before its response is returned.

Layout: ``<dir>/predictions-<UTC start>-<pid>-<seq>.jsonl`` segments, one JSON object per line.
A segment is closed and a new one opened when it exceeds `segment_bytes` or is older than
`segment_seconds`; names sort in time order, and the pid keeps several processes (replicas sharing
a volume) from writing to one file.

Durability ("acknowledged => durable"): records go to one writer thread (group commit). It takes
every record waiting, writes them with a single ``os.write`` on an ``O_APPEND`` descriptor (every
record is one complete line inside that write), calls ``fsync``, and only then resolves the
futures the request handlers await. Concurrent requests share one fsync instead of paying one
each. Request handlers await `append_async`: its futures belong to their event loop and a commit
settles all of a loop's waiters with one ``call_soon_threadsafe`` (no `concurrent.futures.Future`
per request, chained to an asyncio one, each waking the loop on its own). A crash can leave at most a torn last line; the reader
(`riskops.monitoring.prediction_log`) skips it, and any unparsable line, instead of failing.

Record fields (see `record_columns`): request_id, logged_at, event_timestamp, transaction_id,
model_version, arm (champion / challenger while a canary runs, else null), risk_score, decision,
degraded, reasons, the hashed transaction (PII only as
keyed hashes), ``entity_features`` (the looked-up entity state, names as in the training frame)
``features`` (the numeric model inputs, flattened by the reader as ``model.<name>``), ``history``
(the ids of the earlier transactions read as the behaviour sequence) and ``history_tokens`` (their
tokens as the model read them, riskops.features.sequences.logged_tokens).

Shipping (``ship_uri``, e.g. ``s3://bucket/prediction-log``): a background thread ships closed
segments as hourly Parquet partitions (`riskops.monitoring.log_store`) to where the monitor reads
them. Never on the request path: acknowledging still waits only for the local fsync. It ships every
segment of the folder still pending at start (what a killed or restarted process had not shipped,
its last open segment included: a restart closes it), each segment this log closes (a segment past
``segment_seconds`` is closed even without traffic, so a quiet replica's records still reach the
store), everything on `close`, and retries failures every ``ship_retry_seconds``. A segment is marked shipped only after
its upload succeeded and is never deleted here, so a failed upload loses nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from riskops.monitoring.log_store import is_uri, pending_segments, ship_segments
from serving import prometheus_metrics
from serving.handoff import settle, settle_on_loop

log = logging.getLogger(__name__)

_STOP = object()
_ROTATE = object()  # from the shipper: close the open segment if it is older than segment_seconds


class PredictionLogError(RuntimeError):
    """The log could not be written: the request must not be acknowledged."""


def _default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat()
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def encode_record(record: dict) -> bytes:
    """One record as one JSON line (NaN/inf -> null)."""
    return orjson.dumps(record, default=_default, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


class PredictionLog:
    def __init__(
        self,
        directory: Path | str,
        segment_bytes: int = 64 << 20,
        segment_seconds: float = 3600.0,
        fsync: bool = True,
        ship_uri: str | None = None,
        ship_retry_seconds: float = 60.0,
    ) -> None:
        """Open the log (a segment is created by the first write); start shipping when given a URI.

        Args:
            directory: the local folder of segments.
            segment_bytes / segment_seconds: a segment is closed past this size or age (by age also
                without traffic when shipping, so a quiet replica's records still reach the store).
            fsync: fsync every commit before acknowledging it.
            ship_uri: ship closed segments there (``file://...``, ``s3://...``); None: local only.
            ship_retry_seconds: how often the shipper looks again (failed uploads, idle segments).
        """
        if ship_uri is not None and not is_uri(ship_uri):
            raise ValueError(f"ship_uri must be a URI (file:///path, s3://bucket/prefix), got {ship_uri!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = int(segment_bytes)
        self.segment_seconds = float(segment_seconds)
        self.fsync = fsync
        self._fd: int | None = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self._size = 0
        self._seq = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self.ship_uri = ship_uri
        self.ship_retry_seconds = float(ship_retry_seconds)
        self._own: set[str] = set()  # segments this log opened: shipped once closed
        # pending at start (another process's or an earlier run's): closed by definition, shipped first
        self._inherited = {p.name for p in pending_segments(self.directory, ship_uri)} if ship_uri else set()
        self._ship_wake = threading.Event()
        self._ship_stop = False
        self._thread = threading.Thread(target=self._run, name="riskops-prediction-log", daemon=True)
        self._thread.start()
        self._shipper: threading.Thread | None = None
        if ship_uri:
            self._ship_wake.set()  # the first pass runs now
            self._shipper = threading.Thread(
                target=self._ship_loop, name="riskops-prediction-log-ship", daemon=True
            )
            self._shipper.start()

    # -- public ------------------------------------------------------------------------------
    @property
    def current_segment(self) -> Path | None:
        return self._path

    def append(self, records: Iterable[dict]) -> cf.Future:
        """Queue records; the future resolves (to the record count) once they are on disk."""
        fut: cf.Future = cf.Future()
        self._enqueue(records, fut)
        return fut

    def append_async(self, records: Iterable[dict]) -> asyncio.Future:
        """`append` for a coroutine on the running loop: await it; resolves once on disk."""
        fut = asyncio.get_running_loop().create_future()
        self._enqueue(records, fut)
        return fut

    def _enqueue(self, records: Iterable[dict], waiter: cf.Future | asyncio.Future) -> None:
        if self._closed:
            settle(waiter, exc=PredictionLogError("prediction log is closed"))
            return
        try:
            data = b"".join(encode_record(r) for r in records)
        except (TypeError, orjson.JSONEncodeError) as exc:
            settle(waiter, exc=PredictionLogError(f"record not serialisable: {exc}"))
            return
        self._queue.put((data, data.count(b"\n"), waiter))

    def write(self, records: Iterable[dict], timeout: float | None = 30.0) -> int:
        """Blocking append."""
        return self.append(records).result(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Stop writing (pending appends are committed first), then ship what is left (``timeout`` each)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._shipper is not None:
            self._ship_stop = True
            self._ship_wake.set()
            self._shipper.join(timeout)
            if self._shipper.is_alive():
                log.warning("prediction log: shipping still running at close; the next start ships the rest")

    # -- shipper thread ----------------------------------------------------------------------
    def _ship_loop(self) -> None:
        while True:
            self._ship_wake.wait(self.ship_retry_seconds)
            self._ship_wake.clear()
            stop = self._ship_stop
            try:
                self._ship_pass()
            except Exception:  # never let the shipper die: the next pass tries again
                log.exception("prediction log: shipping pass failed")
            if stop:
                return

    def _ship_pass(self) -> None:
        if self._fd is not None and time.monotonic() - self._opened_at >= self.segment_seconds:
            self._queue.put(_ROTATE)  # no traffic has rotated it: the writer closes it, then wakes us
        pending = pending_segments(self.directory, self.ship_uri)
        # read after listing: a listed segment other than the one open now has been closed
        current = self._path if self._thread.is_alive() else None
        mine = [p for p in pending if p != current and (p.name in self._own or p.name in self._inherited)]
        for path in ship_segments(mine, self.ship_uri):
            self._own.discard(path.name)
            self._inherited.discard(path.name)

    # -- writer thread -----------------------------------------------------------------------
    def _segment_due(self, incoming: int) -> bool:
        if self._fd is None:
            return True
        if self._size and self._size + incoming > self.segment_bytes:
            return True
        return time.monotonic() - self._opened_at >= self.segment_seconds

    def _close_if_old(self) -> None:
        """Close the open segment once it is older than segment_seconds (the next write opens one)."""
        if self._fd is None or time.monotonic() - self._opened_at < self.segment_seconds:
            return
        os.close(self._fd)
        self._fd, self._path = None, None
        self._ship_wake.set()

    def _open_segment(self) -> None:
        rotated = self._fd is not None
        if rotated:
            os.close(self._fd)
            self._fd = None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self._seq += 1
        self._path = self.directory / f"predictions-{stamp}-{os.getpid()}-{self._seq:06d}.jsonl"
        if self.ship_uri:
            self._own.add(self._path.name)
            if rotated:
                self._ship_wake.set()  # the segment just closed can go
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(self._fd).st_size
        self._opened_at = time.monotonic()
        if self.fsync:  # make the new directory entry durable too
            dfd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            stop, rotate = item is _STOP, item is _ROTATE
            batch = [] if stop or rotate else [item]
            while True:  # group commit: everything already waiting goes into this write
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP or nxt is _ROTATE:
                    stop, rotate = stop or nxt is _STOP, rotate or nxt is _ROTATE
                    continue
                batch.append(nxt)
            if batch:
                self._commit(batch)
            if rotate and not stop:
                self._close_if_old()
            if stop:
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                return

    def _commit(self, batch: list) -> None:
        data = b"".join(b[0] for b in batch)
        n = sum(b[1] for b in batch)
        started = time.perf_counter()
        try:
            if self._segment_due(len(data)):
                self._open_segment()
            view = memoryview(data)
            while view:  # a regular file takes the whole buffer in one write; loop only on a short write
                written = os.write(self._fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(self._fd)
            self._size += len(data)
        except OSError as exc:
            log.error("prediction log write failed: %s", exc)
            _settle_batch(batch, PredictionLogError(f"prediction log write failed: {exc}"))
            return
        prometheus_metrics.PREDICTION_LOG_FSYNC.observe(time.perf_counter() - started)
        prometheus_metrics.PREDICTION_LOG_RECORDS.inc(n)
        _settle_batch(batch, None)


def _settle_batch(batch: list, exc: BaseException | None) -> None:
    """From the writer thread: settle a commit's waiters, one hand-off per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, int]]] = {}
    for _, count, waiter in batch:
        if isinstance(waiter, cf.Future):
            settle(waiter, count, exc)
        else:
            by_loop.setdefault(waiter.get_loop(), []).append((waiter, count))
    for loop, waiting in by_loop.items():
        settle_on_loop(loop, waiting, exc)
