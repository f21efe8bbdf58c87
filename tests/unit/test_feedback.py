"""Feedback store: durable append, latest-wins load, file ingestion with errors that name the problem."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from riskops.monitoring.feedback import (
    FeedbackError,
    append_feedback,
    feedback_dir,
    ingest_feedback_file,
    labelled_window,
    load_feedback,
)
from riskops.settings import paths as home_paths


@pytest.fixture
def paths(riskops_home):
    return home_paths(riskops_home)


def test_append_and_load_latest_wins(paths):
    n = append_feedback(paths, [
        {"transaction_id": "t1", "is_fraud": 0, "source": "manual_review"},
        {"transaction_id": "t2", "is_fraud": "true", "fraud_type": "account_takeover"},
    ])
    assert n == 2
    append_feedback(paths, [{"transaction_id": "t1", "is_fraud": 1, "source": "chargeback",
                             "reported_at": "2026-02-01T10:00:00Z"}])
    fb = load_feedback(paths)
    assert sorted(fb["transaction_id"]) == ["t1", "t2"]
    t1 = fb.set_index("transaction_id").loc["t1"]
    assert t1["is_fraud"] == 1 and t1["source"] == "chargeback"  # the later record supersedes
    assert str(t1["reported_at"]).startswith("2026-02-01 10:00:00")
    assert fb.set_index("transaction_id").loc["t2", "source"] == "api"
    everything = load_feedback(paths, latest_only=False)
    assert len(everything) == 3
    files = list(feedback_dir(paths).glob("feedback-*.jsonl"))
    assert files and all(line.strip() for line in files[0].read_text().splitlines())


def test_torn_last_line_is_skipped(paths):
    append_feedback(paths, [{"transaction_id": "t1", "is_fraud": 1}])
    f = next(feedback_dir(paths).glob("feedback-*.jsonl"))
    with open(f, "a") as fh:
        fh.write('{"transaction_id": "t9", "is_fr')  # a crash mid-write
    assert list(load_feedback(paths)["transaction_id"]) == ["t1"]


def test_bad_records_are_named_and_nothing_is_stored(paths):
    with pytest.raises(FeedbackError) as err:
        append_feedback(paths, [
            {"transaction_id": "ok", "is_fraud": 1},
            {"transaction_id": "", "is_fraud": 1},
            {"transaction_id": "t3", "is_fraud": "maybe"},
            {"transaction_id": "t4"},
            {"transaction_id": "t5", "is_fraud": 0, "colour": "red"},
        ])
    msg = str(err.value)
    assert "record 2: transaction_id is missing or empty" in msg
    assert "record 3: is_fraud 'maybe' is not 0/1" in msg
    assert "record 4: is_fraud is missing" in msg
    assert "record 5: unknown field(s) ['colour']" in msg
    assert len(err.value.errors) == 4
    assert load_feedback(paths).empty  # all or nothing


def test_ingest_csv_jsonl_parquet(paths, tmp_path):
    csv = tmp_path / "chargebacks.csv"
    csv.write_text("transaction_id,is_fraud,fraud_type\na1,1,card_testing\na2,0,\n")
    res = ingest_feedback_file(paths, csv)
    assert (res.rows, res.frauds, res.stored) == (2, 1, 2)
    jl = tmp_path / "reviews.jsonl"
    jl.write_text(json.dumps({"transaction_id": "a3", "is_fraud": False, "source": "manual_review"}) + "\n")
    assert ingest_feedback_file(paths, jl).rows == 1
    pq = tmp_path / "more.parquet"
    pd.DataFrame({"transaction_id": ["a4", "a1"], "is_fraud": [1, 0]}).to_parquet(pq)
    assert ingest_feedback_file(paths, pq).rows == 2
    fb = load_feedback(paths).set_index("transaction_id")
    assert set(fb.index) == {"a1", "a2", "a3", "a4"}
    assert fb.loc["a1", "is_fraud"] == 0 and fb.loc["a1", "source"] == "file:more.parquet"
    assert fb.loc["a3", "source"] == "manual_review"


def test_ingest_errors_name_column_and_row(paths, tmp_path):
    missing = tmp_path / "missing.csv"
    missing.write_text("txn,is_fraud\na1,1\n")
    with pytest.raises(FeedbackError, match=r"missing required column\(s\) \['transaction_id'\]"):
        ingest_feedback_file(paths, missing)
    extra = tmp_path / "extra.csv"
    extra.write_text("transaction_id,is_fraud,amount\na1,1,3\n")
    with pytest.raises(FeedbackError, match=r"unknown column\(s\) \['amount'\]"):
        ingest_feedback_file(paths, extra)
    bad = tmp_path / "bad.csv"
    bad.write_text("transaction_id,is_fraud\na1,1\na2,yes\na3,7\n,0\na5,1\na6,x\n")
    with pytest.raises(FeedbackError) as err:
        ingest_feedback_file(paths, bad)
    msg = str(err.value)
    assert "row 3: is_fraud '7' is not 0/1" in msg
    assert "row 4: transaction_id is missing or empty" in msg
    assert "row 6: is_fraud 'x' is not 0/1" in msg
    assert "bad.csv" in msg and "CSV line = row + 1" in msg
    assert load_feedback(paths).empty
    xlsx = tmp_path / "x.xlsx"
    xlsx.write_bytes(b"PK")
    with pytest.raises(FeedbackError, match="unsupported extension"):
        ingest_feedback_file(paths, xlsx)
    with pytest.raises(FeedbackError, match="not found"):
        ingest_feedback_file(paths, tmp_path / "nope.csv")


def test_labelled_window_joins_and_dedupes():
    log = pd.DataFrame({
        "transaction_id": ["t1", "t2", "t3", "t1"],
        "logged_at": pd.to_datetime(["2026-01-01T00:00", "2026-01-01T00:01", "2026-01-01T00:02",
                                     "2026-01-01T00:05"], utc=True),
        "event_timestamp": pd.to_datetime(["2026-01-01T00:00", "2026-01-01T00:01", "2026-01-01T00:02",
                                           "2026-01-01T00:00"], utc=True),
        "risk_score": [0.1, 0.9, 0.2, 0.15],
    })
    fb = pd.DataFrame({"transaction_id": ["t1", "t2", "zz"], "is_fraud": [0, 1, 1],
                       "received_at": pd.to_datetime(["2026-01-02"] * 3, utc=True)})
    out = labelled_window(log, fb)
    assert list(out["transaction_id"]) == ["t1", "t2"]
    assert list(out["is_fraud"]) == [0, 1]
    assert out.set_index("transaction_id").loc["t1", "risk_score"] == 0.15  # the latest scoring of t1
    assert labelled_window(log, fb.iloc[:0]).empty
