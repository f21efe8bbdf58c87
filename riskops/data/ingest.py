"""Ingest: bring transactions in (the built-in generator or the user's own file)."""

from pathlib import Path, PurePosixPath

import pandas as pd


def load_transactions(
    source: str, rows: int = 20_000, seed: int = 7, fraud_rate: float = 0.015, input_path: str = ""
) -> pd.DataFrame:
    """'synthetic' -> the generator; 'file' -> a Parquet/JSONL file with the schema's columns."""
    from riskops.data.generator import GeneratorConfig, generate

    if source == "synthetic":
        return generate(GeneratorConfig(rows=rows, seed=seed, fraud_rate=fraud_rate))
    if source == "file":
        return read_raw(input_path)
    raise ValueError(f"unknown source {source!r}: use 'synthetic' or 'file'")


def read_raw(path: str | Path) -> pd.DataFrame:
    """Read a file as it is: no type coercion, so the GX gate (not a parser) reports what is wrong.

    `path`: a local path or an fsspec URI (``s3://...``, ``file://...``: where a cluster's monitor
    ships the retraining set)."""
    if not path:
        raise ValueError("source 'file' needs input_path (a .parquet or .jsonl file)")
    if "://" in str(path):
        import fsspec

        fs, inner = fsspec.core.url_to_fs(str(path))
        if not fs.exists(inner):
            raise FileNotFoundError(f"input file not found: {path}")
        suffix = PurePosixPath(inner).suffix

        def source():
            return fs.open(inner, "rb")
    else:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"input file not found: {p}")
        suffix = p.suffix

        def source():
            return open(p, "rb")  # noqa: SIM115 - closed by the with below
    if suffix == ".parquet":
        with source() as fh:
            return pd.read_parquet(fh)
    if suffix in (".jsonl", ".json"):
        with source() as fh:
            df = pd.read_json(fh, lines=True, dtype=False, convert_dates=False)
        if "event_timestamp" in df.columns:
            try:  # JSON has no timestamp type; ISO strings become UTC times, anything else stays for GX to report
                df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], utc=True, format="ISO8601")
            except (ValueError, TypeError):
                pass
        return df
    raise ValueError(f"unsupported input file type {suffix!r}: use .parquet or .jsonl")
