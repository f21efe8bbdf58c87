"""riskops.data.ingest.read_raw: local files and fsspec URIs (where a cluster's monitor ships the
retraining set), read as they are."""

from __future__ import annotations

import pandas as pd
import pytest

from riskops.data.ingest import read_raw


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"transaction_id": ["a", "b"], "event_timestamp": ["2026-01-01T00:00:00Z", "oops"]})


@pytest.mark.parametrize("as_uri", [False, True])
def test_parquet_and_jsonl_from_a_path_or_a_uri(tmp_path, as_uri):
    _frame().to_parquet(tmp_path / "t.parquet")
    _frame().iloc[:1].to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    name = (lambda f: (tmp_path / f).as_uri()) if as_uri else (lambda f: str(tmp_path / f))
    assert read_raw(name("t.parquet"))["event_timestamp"].tolist() == ["2026-01-01T00:00:00Z", "oops"]
    jsonl = read_raw(name("t.jsonl"))
    assert str(jsonl["event_timestamp"].dtype).startswith("datetime64") and len(jsonl) == 1


def test_a_missing_input_and_an_unknown_type_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        read_raw((tmp_path / "nope.parquet").as_uri())
    (tmp_path / "t.csv").write_text("a\n1\n")
    with pytest.raises(ValueError, match="'.csv'"):
        read_raw((tmp_path / "t.csv").as_uri())
