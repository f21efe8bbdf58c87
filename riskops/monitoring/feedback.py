"""Confirmed outcomes (chargebacks, manual-review results) keyed by transaction_id.

Store: append-only JSONL under ``<home>/feedback/feedback-YYYYMMDD.jsonl`` (UTC day of receipt).
Writers take an exclusive lock, write whole lines in one ``write`` and ``fsync`` before returning,
so an acknowledged ``POST /v1/feedback`` survives a crash; a torn last line (a crash mid-write) is
skipped by the reader. The store is never rewritten: a later record for the same transaction
supersedes an earlier one when read (a review says legit, a chargeback arrives later: fraud).

Record fields:

* ``transaction_id`` (required, non-empty string)
* ``is_fraud`` (required, 0/1; also accepts true/false, "yes"/"no", "fraud"/"legit")
* ``fraud_type`` (optional string), ``source`` (optional: chargeback, manual_review, ...; default
  "api" / "file:<name>"), ``reported_at`` (optional ISO time of the outcome; default now)
* ``received_at`` (set by the store)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from riskops.settings import Paths

FEEDBACK_GLOB = "feedback-*.jsonl"
REQUIRED = ("transaction_id", "is_fraud")
OPTIONAL = ("fraud_type", "source", "reported_at")
COLUMNS = (*REQUIRED, *OPTIONAL, "received_at")
_TRUE = {"1", "true", "t", "yes", "y", "fraud"}
_FALSE = {"0", "false", "f", "no", "n", "legit", "legitimate"}
MAX_ERRORS_SHOWN = 10


class FeedbackError(ValueError):
    """Invalid feedback; the message names every bad row/column (up to MAX_ERRORS_SHOWN)."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


def feedback_dir(paths: Paths) -> Path:
    return paths.root / "feedback"


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _parse_label(v: Any) -> int | None:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int | float) and not (isinstance(v, float) and math.isnan(v)):
        return int(v) if v in (0, 1) else None
    if isinstance(v, str):
        s = v.strip().lower()
        if s in _TRUE:
            return 1
        if s in _FALSE:
            return 0
        with contextlib.suppress(ValueError):
            f = float(s)
            return int(f) if f in (0.0, 1.0) else None
    return None


def is_blank(v: Any) -> bool:
    """A missing value in a feedback row: None, NaN, NaT or an empty string."""
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()) or (
        v is pd.NaT)


def _parse_time(v: Any) -> str | None:
    ts = pd.Timestamp(v)
    if ts is pd.NaT:
        return None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.isoformat()


def normalise_record(rec: Any, where: str, default_source: str, now: str) -> tuple[dict | None, list[str]]:
    """One record -> its stored form, or (None, errors naming `where` and the field)."""
    if not isinstance(rec, dict):
        return None, [f"{where}: expected an object with transaction_id and is_fraud, got {type(rec).__name__}"]
    errors = []
    tid = rec.get("transaction_id")
    if is_blank(tid):
        errors.append(f"{where}: transaction_id is missing or empty")
    elif not isinstance(tid, str | int) or isinstance(tid, bool):
        errors.append(f"{where}: transaction_id must be a string, got {type(tid).__name__}")
    label = _parse_label(rec.get("is_fraud"))
    if "is_fraud" not in rec or is_blank(rec.get("is_fraud")):
        errors.append(f"{where}: is_fraud is missing")
    elif label is None:
        errors.append(f"{where}: is_fraud {rec.get('is_fraud')!r} is not 0/1 (or true/false)")
    reported = rec.get("reported_at")
    reported_iso = now
    if not is_blank(reported):
        try:
            reported_iso = _parse_time(reported) or now
        except (ValueError, TypeError):
            errors.append(f"{where}: reported_at {reported!r} is not a timestamp")
    unknown = sorted(set(rec) - set(COLUMNS))
    if unknown:
        errors.append(f"{where}: unknown field(s) {unknown} (known: {', '.join(COLUMNS[:-1])})")
    if errors:
        return None, errors
    out = {
        "transaction_id": str(tid).strip(),
        "is_fraud": int(label),
        "fraud_type": None if is_blank(rec.get("fraud_type")) else str(rec["fraud_type"]),
        "source": default_source if is_blank(rec.get("source")) else str(rec["source"]),
        "reported_at": reported_iso,
        "received_at": now,
    }
    return out, []


def validate_records(records: Iterable[Any], default_source: str = "api", row_offset: int = 1,
                     row_label: str = "record") -> list[dict]:
    """Normalise every record or raise FeedbackError listing the bad ones (all or nothing)."""
    now = datetime.now(UTC).isoformat()
    good, errors = [], []
    n = 0
    for i, rec in enumerate(records):
        n += 1
        out, errs = normalise_record(rec, f"{row_label} {i + row_offset}", default_source, now)
        if errs:
            errors.extend(errs)
        else:
            good.append(out)
    if errors:
        shown = errors[:MAX_ERRORS_SHOWN]
        more = f"\n... and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
        raise FeedbackError(
            f"{len(errors)} problem(s) in {n} feedback record(s); nothing was stored:\n" + "\n".join(shown) + more,
            errors,
        )
    return good


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def append_feedback(paths: Paths, records: Iterable[dict], source: str = "api") -> int:
    """Validate and durably append feedback records; returns how many were stored.

    All or nothing: one bad record raises FeedbackError (naming it) and stores none.
    """
    good = validate_records(records, default_source=source)
    if not good:
        return 0
    directory = feedback_dir(paths)
    data = b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in good)
    day = datetime.now(UTC).strftime("%Y%m%d")
    with _locked(directory):
        path = directory / f"feedback-{day}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    return len(good)


def load_feedback(paths: Paths, latest_only: bool = True) -> pd.DataFrame:
    """Every stored record as a frame (COLUMNS); with ``latest_only`` one row per transaction_id,
    the most recently received (ties: the later line)."""
    directory = feedback_dir(paths)
    rows = []
    for path in sorted(directory.glob(FEEDBACK_GLOB)) if directory.exists() else []:
        lines = path.read_bytes().split(b"\n")
        for line in lines[:-1]:  # the last element is '' or a torn line
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "transaction_id" in rec:
                rows.append(rec)
    df = pd.DataFrame.from_records(rows, columns=list(COLUMNS)) if rows else pd.DataFrame(columns=list(COLUMNS))
    df["transaction_id"] = df["transaction_id"].astype(str)
    df["is_fraud"] = pd.to_numeric(df["is_fraud"], errors="coerce").fillna(0).astype("int64")
    for c in ("reported_at", "received_at"):
        df[c] = pd.to_datetime(df[c], utc=True, errors="coerce", format="ISO8601")
    if latest_only and len(df):
        df = df.reset_index(drop=True)
        df["_line"] = df.index
        df = df.sort_values(["received_at", "_line"], kind="stable").drop_duplicates("transaction_id", keep="last")
        df = df.drop(columns="_line").sort_index().reset_index(drop=True)
    return df


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


@dataclass
class IngestResult:
    file: Path
    rows: int
    frauds: int
    stored: int


def read_feedback_file(file: Path | str) -> pd.DataFrame:
    p = Path(file)
    if not p.exists():
        raise FeedbackError(f"feedback file not found: {p}")
    ext = p.suffix.lower()
    try:
        if ext == ".csv":
            df = pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[""])
        elif ext in (".jsonl", ".ndjson"):
            df = pd.read_json(p, lines=True, dtype=False, convert_dates=False)
        elif ext == ".parquet":
            df = pd.read_parquet(p)
        else:
            raise FeedbackError(f"{p}: unsupported extension {ext or '(none)'!r}; use .csv, .jsonl or .parquet")
    except FeedbackError:
        raise
    except Exception as exc:  # pandas/pyarrow parse errors, each with its own type
        raise FeedbackError(f"{p}: cannot read as {ext[1:]}: {exc}") from exc
    return df


def ingest_feedback_file(paths: Paths, file: Path | str) -> IngestResult:
    """``riskops feedback FILE``: CSV / JSONL / Parquet with transaction_id + is_fraud
    [+ fraud_type, source, reported_at]. Errors name the file, the column or the row (1-based
    data rows; for CSV also the line number, counting the header)."""
    p = Path(file)
    df = read_feedback_file(p)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise FeedbackError(
            f"{p}: missing required column(s) {missing}; found {list(df.columns)}. "
            f"Required: {', '.join(REQUIRED)}; optional: {', '.join(OPTIONAL)}"
        )
    unknown = [c for c in df.columns if c not in COLUMNS]
    if unknown:
        raise FeedbackError(f"{p}: unknown column(s) {unknown}; allowed: {', '.join(COLUMNS[:-1])}")
    records = [{k: v for k, v in r.items() if not is_blank(v) or k in REQUIRED} for r in df.to_dict("records")]
    label = "row"
    try:
        good = validate_records(records, default_source=f"file:{p.name}", row_offset=1, row_label=label)
    except FeedbackError as exc:
        extra = " (CSV line = row + 1, the header is line 1)" if p.suffix.lower() == ".csv" else ""
        raise FeedbackError(f"{p}: {exc}{extra}", exc.errors) from None
    stored = append_feedback(paths, good, source=f"file:{p.name}") if good else 0
    return IngestResult(file=p, rows=len(good), frauds=sum(r["is_fraud"] for r in good), stored=stored)


# --------------------------------------------------------------------------------------------
# Joining labels to predictions
# --------------------------------------------------------------------------------------------


def labelled_window(prediction_log_df: pd.DataFrame, feedback_df: pd.DataFrame) -> pd.DataFrame:
    """Prediction-log rows that have a confirmed outcome, with ``is_fraud`` (and fraud_type, source,
    reported_at) from feedback. One row per transaction: the most recent scoring of it (a retried
    request is logged twice). Ordered by event time when the log has it."""
    if prediction_log_df is None or prediction_log_df.empty or feedback_df is None or feedback_df.empty:
        cols = list(prediction_log_df.columns) if prediction_log_df is not None else []
        return pd.DataFrame(columns=[*cols, "is_fraud", "fraud_type", "feedback_source", "reported_at"])
    log = prediction_log_df.drop(columns=[c for c in ("is_fraud", "fraud_type") if c in prediction_log_df])
    log = log.assign(transaction_id=log["transaction_id"].astype(str))
    if "logged_at" in log.columns:
        log = log.sort_values("logged_at", kind="stable")
    log = log.drop_duplicates("transaction_id", keep="last")
    fb = feedback_df.assign(transaction_id=feedback_df["transaction_id"].astype(str))
    if "received_at" in fb.columns:
        fb = fb.sort_values("received_at", kind="stable")
    fb = fb.drop_duplicates("transaction_id", keep="last")
    keep = [c for c in ("transaction_id", "is_fraud", "fraud_type", "source", "reported_at") if c in fb.columns]
    out = log.merge(fb[keep].rename(columns={"source": "feedback_source"}), on="transaction_id", how="inner")
    out["is_fraud"] = out["is_fraud"].astype("int64")
    if "event_timestamp" in out.columns:
        out = out.sort_values("event_timestamp", kind="stable")
    return out.reset_index(drop=True)
