"""Reading the prediction log that the serving path writes (`serving.predlog.PredictionLog`).

The log is a folder of ``predictions-<UTC start>-<pid>-<seq>.jsonl`` segments, one JSON record per
line; segment names sort in time order. This module owns the format's names (`SEGMENT_GLOB`,
`MODEL_PREFIX`, `CORE_COLUMNS`) and the one reader the monitor, the promotion gate, the retraining
data assembly and the tests use.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

log = logging.getLogger(__name__)

SEGMENT_GLOB = "predictions-*.jsonl"
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


def segment_records(path: Path) -> Iterator[dict]:
    """The complete records of one segment, in line order.

    A last line without its newline (a torn write) is skipped; so is any line that does not
    parse (logged), so one damaged record never hides the rest of the log.
    """
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1]:
        log.warning("%s: skipping a torn last line (%d bytes)", path.name, len(lines[-1]))
    for i, line in enumerate(lines[:-1]):
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("%s:%d: skipping an unparsable line", path.name, i + 1)
            continue
        if isinstance(rec, dict):
            yield rec


def segments(directory: Path | str) -> list[Path]:
    """The log's segments, oldest first (none for a missing folder)."""
    d = Path(directory)
    return sorted(d.glob(SEGMENT_GLOB)) if d.exists() else []


def iter_records(directory: Path | str) -> Iterable[dict]:
    """Every complete record of every segment, in segment then line order."""
    for path in segments(directory):
        yield from segment_records(path)


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


def read_prediction_log(directory: Path | str, newest_rows: int | None = None) -> pd.DataFrame:
    """The prediction log as a DataFrame, one row per scored instance.

    Args:
        directory: the log folder.
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
        rows = [flatten_record(r) for r in iter_records(directory)]
    else:
        rows = _newest_rows(directory, newest_rows)
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


def _newest_rows(directory: Path | str, min_rows: int) -> list[dict]:
    chunks: list[list[dict]] = []
    n = 0
    for path in reversed(segments(directory)):
        rows = [flatten_record(r) for r in segment_records(path)]
        chunks.append(rows)
        n += len(rows)
        if n >= min_rows:
            break
    return [r for rows in reversed(chunks) for r in rows]


def _all_numbers_or_null(values: pd.Series) -> bool:
    return all(v is None or isinstance(v, int | float) and not isinstance(v, bool) for v in values)
