"""Where the prediction log is stored: local JSONL segments, and their shipped copy as hourly Parquet.

Serving writes each record to a local, fsync'd segment ``<folder>/predictions-<UTC start>-<pid>-<seq>.jsonl``
(one JSON record per line) before it answers (`serving.predlog`). A closed segment is then shipped to
object storage, so the monitor and the promotion gate read one shared log instead of a pod's disk:

    <uri>/hour=2026-12-05T14/predictions-20261205T140000123456Z-17-000001.parquet

``uri`` is any fsspec URI: ``file:///srv/riskops/prediction_log`` locally, ``s3://bucket/prefix`` on
a cluster (s3fs takes the endpoint and credentials from the standard environment: AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION). The hour is the record's
``logged_at`` (UTC; ``hour=unknown`` without one); a segment spanning two hours gives two files. Object
names depend only on the segment and the hour, so shipping a segment again overwrites the same objects:
shipping is idempotent, and a segment is shipped at least once.

Each file holds one row per record: ``record``, the JSON line exactly as the segment holds it, plus
``segment`` and ``line`` (the order in the log) and a few typed columns for queries by hand
(``logged_at``, ``transaction_id``, ``model_version``, ``decision``, ``risk_score``) under one fixed
schema. Readers use ``record`` only: `riskops.monitoring.prediction_log` parses and flattens it with
the code that reads local JSONL, so the shipped log reads back with the same rows, columns and dtypes
(nested transaction / entity_features / features flattened, history_tokens as lists). Flattened
Parquet columns would differ per segment (a column null in one segment, a feature added later) and
their types would drift from the JSONL reader's.

A shipped segment is marked by ``<segment>.shipped`` next to it (JSON: bytes shipped, the URI), written
after the upload succeeded. A segment is pending while it has no marker, or its size or the URI
differs from the marker's (a segment shipped while another process was still writing it ships again).
"""

from __future__ import annotations

import io
import json
import logging
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import fsspec
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

log = logging.getLogger(__name__)

SEGMENT_GLOB = "predictions-*.jsonl"

HOUR_PARTITION = "hour"
SHIPPED_SUFFIX = ".shipped"
SCHEMA = pa.schema(
    [
        ("segment", pa.string()),
        ("line", pa.int64()),
        ("logged_at", pa.timestamp("us", tz="UTC")),
        ("transaction_id", pa.string()),
        ("model_version", pa.string()),
        ("decision", pa.string()),
        ("risk_score", pa.float64()),
        ("record", pa.string()),
    ]
)


def is_uri(source: object) -> bool:
    """A shipped log's URI (``scheme://...``) rather than a local folder."""
    return isinstance(source, str) and "://" in source


def storage(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The file system and root path of a URI (s3fs reads its endpoint and keys from the environment)."""
    fs, root = fsspec.core.url_to_fs(uri)
    return fs, root.rstrip("/")


# -- local segments -----------------------------------------------------------------------------
def local_segments(directory: Path | str) -> list[Path]:
    """A folder's segments, oldest first (none for a missing folder)."""
    d = Path(directory)
    return sorted(d.glob(SEGMENT_GLOB)) if d.exists() else []


def segment_lines(data: bytes, name: str) -> Iterator[tuple[int, bytes, dict]]:
    """(line number from 1, the line as written, the record) for each complete record of a segment.

    A last line without its newline (a torn write) is skipped; so is any line that does not
    parse (logged), so one damaged record never hides the rest of the log.
    """
    lines = data.split(b"\n")
    if lines and lines[-1]:
        log.warning("%s: skipping a torn last line (%d bytes)", name, len(lines[-1]))
    for i, line in enumerate(lines[:-1]):
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("%s:%d: skipping an unparsable line", name, i + 1)
            continue
        if isinstance(rec, dict):
            yield i + 1, line, rec


# -- shipping -----------------------------------------------------------------------------------
def segment_tables(data: bytes, name: str) -> dict[str, pa.Table]:
    """One segment's complete records as Parquet-ready tables, keyed by hour (``2026-12-05T14``)."""
    rows = list(segment_lines(data, name))
    if not rows:
        return {}
    recs = [rec for _, _, rec in rows]
    logged = _times([r.get("logged_at") for r in recs])
    when = logged.fillna(_times([r.get("event_timestamp") for r in recs]))  # the partition's clock
    hours = [t.strftime("%Y-%m-%dT%H") if not pd.isna(t) else "unknown" for t in when]
    columns = {
        "segment": [name] * len(rows),
        "line": [n for n, _, _ in rows],
        "logged_at": [None if pd.isna(t) else t.to_pydatetime() for t in logged],
        "transaction_id": [_text(r.get("transaction_id")) for r in recs],
        "model_version": [_text(r.get("model_version")) for r in recs],
        "decision": [_text(r.get("decision")) for r in recs],
        "risk_score": [_number(r.get("risk_score")) for r in recs],
        "record": [line.decode() for _, line, _ in rows],
    }
    table = pa.table(columns, schema=SCHEMA)
    rows_of: dict[str, list[int]] = {}
    for i, hour in enumerate(hours):
        rows_of.setdefault(hour, []).append(i)
    return {hour: table.take(pa.array(idx)) for hour, idx in sorted(rows_of.items())}


def ship_segment(path: Path, uri: str) -> list[str]:
    """Ship one segment to ``uri`` (one Parquet file per hour) and mark it shipped; the object paths.

    Raises whatever the storage raises (nothing is marked then): the caller logs it and retries later.
    """
    data = path.read_bytes()  # one read: the marker records exactly the bytes shipped
    fs, root = storage(uri)
    stem = path.name.removesuffix(".jsonl")
    parts = []
    for hour, table in segment_tables(data, path.name).items():
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        target = f"{root}/{HOUR_PARTITION}={hour}/{stem}.parquet"
        _put(fs, target, buf.getvalue())
        parts.append(target)
    marker = {"bytes": len(data), "uri": uri, "parts": parts, "at": datetime.now(UTC).isoformat()}
    _write_marker(_marker(path), orjson.dumps(marker))
    return parts


def pending_segments(directory: Path | str, uri: str) -> list[Path]:
    """The local segments not shipped to ``uri`` as they are now, oldest first."""
    out = []
    for path in local_segments(directory):
        try:
            marker = json.loads(_marker(path).read_bytes())
            if marker.get("uri") == uri and marker.get("bytes") == path.stat().st_size:
                continue
        except (OSError, ValueError, AttributeError):
            pass  # no marker (or a damaged one): pending
        out.append(path)
    return out


def ship_segments(paths: Iterable[Path], uri: str) -> list[Path]:
    """Ship each segment; a failure is logged and leaves that segment pending. The ones shipped."""
    shipped = []
    for path in paths:
        try:
            parts = ship_segment(path, uri)
        except Exception as exc:  # any storage error: keep the local segment, retry on a later pass
            log.warning("prediction log: shipping %s to %s failed (retried later): %s", path.name, uri, exc)
            continue
        log.info("prediction log: shipped %s to %s (%d file(s))", path.name, uri, len(parts))
        shipped.append(path)
    return shipped


def put_file(local: Path | str, target: str) -> None:
    """Copy a local file to an fsspec path or URI, whole or not at all (e.g. a retraining input)."""
    fs, path = storage(target)
    _put(fs, path, Path(local).read_bytes())


def _put(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    if isinstance(fs, LocalFileSystem):  # a reader must never see a half-written file: write, then rename
        parent = os.path.dirname(path)
        fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp"  # '.': hidden from readers
        fs.pipe_file(tmp, data)
        os.replace(tmp, path)
    else:  # an object store's PUT is atomic; no bucket is created here
        fs.pipe_file(path, data)


def _marker(path: Path) -> Path:
    return path.with_name(path.name + SHIPPED_SUFFIX)


def _write_marker(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.tmp")  # two shippers may mark one segment
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)  # the rename is durable too: a restart does not ship the segment again
    finally:
        os.close(dfd)


def _times(values: list) -> pd.Series:
    return pd.to_datetime(pd.Series(values, dtype=object), utc=True, errors="coerce", format="ISO8601")


def _text(v: object) -> str | None:
    return None if v is None else str(v)


def _number(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


# -- reading ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShippedSegment:
    """One shipped segment: its name as written (``predictions-....jsonl``) and its Parquet files."""

    uri: str
    name: str
    parts: tuple[str, ...]
    size: int  # bytes stored, all parts together (changes when the segment is shipped again)

    @property
    def stem(self) -> str:
        return self.name.removesuffix(".jsonl")

    def records(self) -> Iterator[dict]:
        """The segment's records in line order, parsed from the JSON lines as written."""
        fs, _ = storage(self.uri)
        tables = []
        for part in self.parts:
            with fs.open(part, "rb") as fh:
                tables.append(pq.read_table(fh, columns=["line", "record"]))
        if not tables:
            return
        table = pa.concat_tables(tables).sort_by("line")
        for text in table.column("record").to_pylist():
            yield orjson.loads(text)


def shipped_segments(uri: str) -> list[ShippedSegment]:
    """The segments shipped to ``uri``, oldest first (names sort in time order; none when empty)."""
    fs, root = storage(uri)
    try:
        found = fs.glob(f"{root}/{HOUR_PARTITION}=*/predictions-*.parquet", detail=True)
    except FileNotFoundError:
        return []
    by_name: dict[str, list[tuple[str, int]]] = {}
    for path, info in found.items():
        name = os.path.basename(path).removesuffix(".parquet") + ".jsonl"
        by_name.setdefault(name, []).append((path, int(info.get("size") or 0)))
    return [
        ShippedSegment(uri, name, tuple(sorted(p for p, _ in parts)), sum(s for _, s in parts))
        for name, parts in sorted(by_name.items())
    ]
