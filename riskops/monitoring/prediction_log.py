"""Reading the prediction log that the serving path writes (`serving.predlog.PredictionLog`).

The log is a folder of ``predictions-<UTC start>-<pid>-<seq>.jsonl`` segments, one JSON record per
line; segment names sort in time order. Closed segments are also shipped to object storage as hourly
Parquet when serving is given a URI (`riskops.monitoring.log_store`, which owns how the log is stored:
the segment format and both places). Every reader here takes either source: a local folder, or the
shipped log's URI (``file://...``, ``s3://...``: any string with a scheme). Both give the same
segments of the same records, so one code path builds the frame from either. This module owns the
reader's names (`MODEL_PREFIX`, `CORE_COLUMNS`) and the one reader the monitor, the promotion gate,
the retraining data assembly and the tests use.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from riskops.monitoring.log_store import (
    ShippedSegment,
    is_uri,
    local_segments,
    segment_lines,
    shipped_segments,
)

log = logging.getLogger(__name__)

MODEL_PREFIX = "model."  # the numeric model inputs, flattened as ``model.<name>``
CORE_COLUMNS: tuple[str, ...] = (
    "request_id",
    "logged_at",
    "event_timestamp",
    "transaction_id",
    "model_version",
    "risk_score",
    "decision",
    "degraded",
    "reasons",
)
# numeric transaction fields that JSON may carry as null
_NUMERIC_FIELDS = ("amount", "quantity", "account_age_days")


def segment_records(segment: Path | ShippedSegment) -> Iterator[dict]:
    """The complete records of one segment (a local file or a shipped one), in line order."""
    if isinstance(segment, str | Path):
        path = Path(segment)
        for _, _, rec in segment_lines(path.read_bytes(), path.name):
            yield rec
    else:
        yield from segment.records()


def segments(source: Path | str) -> list[Path] | list[ShippedSegment]:
    """The log's segments, oldest first (none for a missing folder or an empty URI)."""
    return shipped_segments(source) if is_uri(source) else local_segments(source)


def segment_size(segment: Path | ShippedSegment) -> int:
    """Bytes the segment holds now (a shipped one: its Parquet files); a changed size is new content."""
    return segment.stat().st_size if isinstance(segment, Path) else segment.size


def iter_records(source: Path | str) -> Iterable[dict]:
    """Every complete record of every segment, in segment then line order."""
    for segment in segments(source):
        yield from segment_records(segment)


def flatten_record(rec: dict) -> dict:
    """One record as one flat row: transaction fields, entity features and ``model.<name>`` inputs."""
    out = {k: v for k, v in rec.items() if k not in ("transaction", "entity_features", "features")}
    for k, v in (rec.get("transaction") or {}).items():
        out.setdefault(k, v)
    for k, v in (rec.get("entity_features") or {}).items():
        out.setdefault(k, v)
    for k, v in (rec.get("features") or {}).items():
        out[MODEL_PREFIX + k] = v
    return out


def read_prediction_log(source: Path | str, newest_rows: int | None = None) -> pd.DataFrame:
    """The prediction log as a DataFrame, one row per scored instance.

    Args:
        source: the log folder, or the URI of the shipped log (``s3://bucket/prefix``, ``file:///...``).
        newest_rows: read only the newest segments, whole, until at least this many rows are in
            (the monitor's window), and sort the rows by event time. None: every record, in log order.

    Returns:
        Columns request_id, logged_at (UTC datetime), event_timestamp (UTC datetime),
        transaction_id, model_version, arm, risk_score, decision, degraded, reasons (list), the hashed
        transaction fields (amount, currency, user_id, ip_hash, ...), the entity features under their
        training-frame names (user_txn_count_1h, ...) and the numeric model inputs as
        ``model.<name>``. An empty or missing log gives an empty frame with the core columns.
    """
    if newest_rows is None:
        rows = [flatten_record(r) for r in iter_records(source)]
    else:
        rows = _newest_rows(source, newest_rows)
    if not rows:
        return pd.DataFrame(columns=list(CORE_COLUMNS))
    df = pd.DataFrame.from_records(rows)
    for col in ("logged_at", "event_timestamp"):
        if col in df.columns:
            df[col] = pd.to_datetime(df[col], utc=True, errors="coerce", format="ISO8601")
    for col in df.columns:
        if col.startswith(MODEL_PREFIX) or col in _NUMERIC_FIELDS:
            df[col] = pd.to_numeric(df[col], errors="coerce")
        elif df[col].dtype == object and col != "reasons" and _all_numbers_or_null(df[col]):
            df[col] = df[col].astype("float64")  # JSON null in a numeric column came back as None
    if "risk_score" in df.columns:
        df["risk_score"] = pd.to_numeric(df["risk_score"], errors="coerce").astype(np.float64)
    if newest_rows is not None and "event_timestamp" in df.columns:
        df = df.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    return df


def _newest_rows(source: Path | str, min_rows: int) -> list[dict]:
    chunks: list[list[dict]] = []
    n = 0
    for segment in reversed(segments(source)):
        rows = [flatten_record(r) for r in segment_records(segment)]
        chunks.append(rows)
        n += len(rows)
        if n >= min_rows:
            break
    return [r for rows in reversed(chunks) for r in rows]


def _all_numbers_or_null(values: pd.Series) -> bool:
    return all(v is None or isinstance(v, int | float) and not isinstance(v, bool) for v in values)
