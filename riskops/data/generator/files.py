"""Transactions on disk: Parquet or JSON Lines (chosen by the file extension), schema dtypes on the way back."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from riskops.schema import COLUMNS, coerce


def write_transactions(df: pd.DataFrame, path: str | Path) -> Path:
    """Write transactions to .parquet or .jsonl (chosen by the file extension)."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in (".parquet", ".jsonl"):
        raise ValueError(f"unsupported transactions file extension {ext or '(none)'!r} for {p}; use .parquet or .jsonl")
    p.parent.mkdir(parents=True, exist_ok=True)
    out = coerce(df)
    if ext == ".parquet":
        out.to_parquet(p, index=False)
    else:
        out = out.copy()
        ts = out["event_timestamp"] if "event_timestamp" in out.columns else None
        if ts is not None:
            out["event_timestamp"] = ts.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        out.to_json(p, orient="records", lines=True, force_ascii=False, double_precision=15)
    return p


def read_transactions(path: str | Path) -> pd.DataFrame:
    """Read a file written by `write_transactions`; columns get their schema dtypes."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext == ".parquet":
        df = pd.read_parquet(p)
    elif ext == ".jsonl":
        df = pd.read_json(p, orient="records", lines=True, dtype=False, convert_dates=False)
        for c in ("card_bin", "card_number_masked"):  # keep '' (json reads empty strings back as they are)
            if c in df.columns:
                df[c] = df[c].fillna("").astype(str)
    else:
        raise ValueError(f"unsupported transactions file extension {ext or '(none)'!r} for {p}; use .parquet or .jsonl")
    ordered = [c for c in COLUMNS if c in df.columns] + [c for c in df.columns if c not in COLUMNS]
    return coerce(df[ordered])
