"""The Great Expectations data gate (riskops/data/validation.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kfp import dsl
from kfp.dsl import Dataset, Output

from components.validate import validate_transactions_op
from riskops import schema
from riskops.data.validation import (
    DataValidationError,
    ValidationConfig,
    ValidationResult,
    build_suite,
    validate_transactions,
)

ROOT = Path(__file__).resolve().parents[2]
WINDOW = ValidationConfig(start="2024-03-01T00:00:00Z", end="2024-03-31T00:00:00Z")


def valid_frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """A small frame that satisfies the schema (5% fraud, March 2024)."""
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp("2024-03-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 29 * 86400, n), unit="s")
    fraud = np.zeros(n, dtype="int64")
    fraud[: max(1, n // 20)] = 1

    def pick(values):
        return rng.choice(list(values), n)

    df = pd.DataFrame(
        {
            "transaction_id": [f"tx-{i:06d}" for i in range(n)],
            "event_timestamp": ts,
            "user_id": [f"u{i % 17}" for i in range(n)],
            "merchant_id": [f"m{i % 5}" for i in range(n)],
            "merchant_category": pick(["retail", "digital goods"]),
            "device_id": [f"d{i % 23}" for i in range(n)],
            "ip_address": [f"10.0.{i % 250}.{i % 7}" for i in range(n)],
            "email": [f"user{i % 17}@example.com" for i in range(n)],
            "amount": rng.uniform(1, 500, n).round(2),
            "currency": pick(schema.CURRENCIES),
            "payment_method": pick(schema.PAYMENT_METHODS),
            "card_bin": ["411111"] * n,
            "card_number_masked": ["411111******1234"] * n,
            "billing_country": pick(schema.COUNTRIES),
            "shipping_country": pick(schema.COUNTRIES),
            "product_title": ["Wireless earbuds, blue"] * n,
            "product_category": pick(schema.PRODUCT_CATEGORIES),
            "quantity": rng.integers(1, 4, n).astype("int64"),
            "channel": pick(schema.CHANNELS),
            "account_age_days": rng.integers(0, 2000, n).astype("int64"),
            "is_refund": rng.random(n) < 0.05,
            "order_status": pick(schema.ORDER_STATUSES),
            "is_fraud": fraud,
            "fraud_type": np.where(fraud == 1, "card_testing", "none"),
        }
    )
    return df[list(schema.COLUMNS)]


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return valid_frame()


def _failed(result: ValidationResult) -> set[tuple[str, str | None]]:
    return {(f["expectation"], f["column"]) for f in result.failures}


def test_clean_frame_passes_and_writes_reports(clean, tmp_path):
    result = validate_transactions(clean, WINDOW, tmp_path)
    assert result.success, result.summary()
    assert result.failures == []
    s = result.statistics
    assert s["evaluated_expectations"] == s["successful_expectations"] > 30
    assert s["rows"] == len(clean)
    assert "passed" in result.summary()
    html = result.report_html.read_text()
    assert result.report_html.parent == tmp_path and "PASSED" in html
    assert "http://" not in html and "https://" not in html and "<script" not in html  # self-contained
    assert json.loads(result.report_json.read_text())["success"] is True


def test_extra_columns_allowed_and_label_optional(clean, tmp_path):
    df = clean.drop(columns=["is_fraud", "fraud_type", "order_status"]).assign(note="extra")
    result = validate_transactions(df, WINDOW, tmp_path)
    assert result.success, result.summary()
    types = {e.expectation_type for e in build_suite(WINDOW, df.columns).expectations}
    assert "expect_column_mean_to_be_between" not in types


def _set(col, row, value):
    def mutate(df):
        df = df.copy()
        if value is None:
            df[col] = df[col].astype(object)
        df.loc[row, col] = value
        return df

    return mutate


# Independent corruptions (different rows/columns) validated together in ONE run (GX costs ~1 s a run):
# name -> (mutation, expected failed (expectation, column), text its summary line must contain)
COMBINED = {
    "negative amount": (_set("amount", 3, -5.0), ("expect_column_values_to_be_between", "amount"), "-5.0"),
    "huge amount": (_set("amount", 4, 5e8), ("expect_column_values_to_be_between", "amount"), "500000000.0"),
    "null user_id": (
        _set("user_id", 4, None),
        ("expect_column_values_to_not_be_null", "user_id"),
        "transaction_id=tx-000004",
    ),
    "unknown currency": (
        _set("currency", 5, "XYZ"),
        ("expect_column_values_to_be_in_set", "currency"),
        "'XYZ'",
    ),
    "unknown country": (
        _set("shipping_country", 5, "ZZ"),
        ("expect_column_values_to_be_in_set", "shipping_country"),
        "'ZZ'",
    ),
    "duplicate transaction_id": (
        _set("transaction_id", 6, "tx-000007"),
        ("expect_column_values_to_be_unique", "transaction_id"),
        "'tx-000007'",
    ),
    "quantity zero": (_set("quantity", 2, 0), ("expect_column_values_to_be_between", "quantity"), "e.g. 0"),
    "negative account age": (
        _set("account_age_days", 2, -3),
        ("expect_column_values_to_be_between", "account_age_days"),
        "e.g. -3",
    ),
    "timestamp before window": (
        _set("event_timestamp", 8, pd.Timestamp("2023-12-31T23:00:00Z")),
        ("expect_column_values_to_be_between", "event_timestamp"),
        "2023-12-31T23:00:00",
    ),
    "fraud rate too high": (
        lambda df: df.assign(is_fraud=np.arange(len(df)) % 2),
        ("expect_column_mean_to_be_between", "is_fraud"),
        "observed 0.5",
    ),
}

_FUTURE = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=2)
# Corruptions that need their own run: name -> (mutation, config, expected failures, text)
SEPARATE = {
    "timestamp in the future": (
        _set("event_timestamp", 9, _FUTURE),
        ValidationConfig(),  # no window given: only "not later than now + 1 h"
        {("expect_column_values_to_be_between", "event_timestamp")},
        str(_FUTURE.date()),
    ),
    "fraud rate too low": (
        lambda df: df.assign(is_fraud=0),
        WINDOW,
        {("expect_column_mean_to_be_between", "is_fraud")},
        "observed 0",
    ),
    "amount as text": (  # a wrong type also breaks the value check on that column
        lambda df: df.assign(amount=df["amount"].astype(str)),
        WINDOW,
        {
            ("expect_column_values_to_be_in_type_list", "amount"),
            ("expect_column_values_to_be_between", "amount"),
        },
        "must be numeric",
    ),
    "naive timestamps": (
        lambda df: df.assign(event_timestamp=df["event_timestamp"].dt.tz_localize(None)),
        WINDOW,
        {
            ("expect_column_values_to_be_of_type", "event_timestamp"),
            ("expect_column_values_to_be_between", "event_timestamp"),
        },
        "timezone-aware",
    ),
}


@pytest.fixture(scope="module")
def combined(clean, tmp_path_factory) -> ValidationResult:
    df = clean
    for mutate, _, _ in COMBINED.values():
        df = mutate(df)
    return validate_transactions(df, WINDOW, tmp_path_factory.mktemp("combined"))


def _check_failure(result: ValidationResult, expectation: str, column: str, text: str) -> None:
    assert not result.success
    assert (expectation, column) in _failed(result), result.summary()
    summary = result.summary()
    line = next(ln for ln in summary.splitlines() if expectation in ln and f"column '{column}'" in ln)
    assert text in line, summary
    failure = next(f for f in result.failures if (f["expectation"], f["column"]) == (expectation, column))
    assert set(failure) == {
        "expectation",
        "column",
        "unexpected_count",
        "unexpected_percent",
        "examples",
        "details",
    }
    assert len(failure["examples"]) <= 5


@pytest.mark.parametrize("name", list(COMBINED))
def test_corruption_is_reported(combined, name):
    _, (expectation, column), text = COMBINED[name]
    _check_failure(combined, expectation, column, text)


def test_combined_run_reports_exactly_the_corruptions(combined):
    assert _failed(combined) == {expected for _, expected, _ in COMBINED.values()}, combined.summary()
    amount = next(f for f in combined.failures if f["column"] == "amount")
    assert amount["unexpected_count"] == 2 and sorted(amount["examples"]) == [-5.0, 5e8]
    assert amount["unexpected_percent"] == pytest.approx(100 * 2 / combined.statistics["rows"])
    html = combined.report_html.read_text()
    assert "FAILED" in html and "XYZ" in html and "expect_column_values_to_be_in_set" in html
    report = json.loads(combined.report_json.read_text())
    assert report["success"] is False and len(report["failures"]) == len(combined.failures)


@pytest.mark.parametrize("name", list(SEPARATE))
def test_corruption_fails_on_its_own(clean, tmp_path, name):
    mutate, config, expected, text = SEPARATE[name]
    result = validate_transactions(mutate(clean), config, tmp_path)
    assert _failed(result) == expected, result.summary()
    # the first listed failure is the one the text belongs to (type problems also break value checks)
    _check_failure(result, *min(expected, key=lambda e: "between" in e[0] and len(expected) > 1), text)
    assert "FAILED" in result.report_html.read_text()


def test_missing_column_is_named(clean, tmp_path):
    result = validate_transactions(clean.drop(columns=["amount", "channel"]), WINDOW, tmp_path)
    assert not result.success
    assert _failed(result) == {
        ("expect_table_columns_to_match_set", "amount"),
        ("expect_table_columns_to_match_set", "channel"),
    }
    assert "column 'amount' is missing" in result.summary()
    assert "column 'channel' is missing" in result.summary()


def test_error_carries_result_and_report_path(combined):
    err = DataValidationError(combined)
    assert isinstance(err, RuntimeError) and err.result is combined
    assert "'XYZ'" in str(err) and str(combined.report_html) in str(err)


def test_generator_output_passes_the_gate(tmp_path):
    generator = pytest.importorskip("riskops.data.generator")
    df = generator.generate(generator.GeneratorConfig(rows=2_000, seed=3))
    result = validate_transactions(df, ValidationConfig(), tmp_path)
    assert result.success, result.summary()


def test_import_is_cheap():
    code = "import sys, riskops.data.validation; assert 'great_expectations' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


@dsl.component(base_image="python:3.11")
def _copy_parquet_op(src: str, out: Output[Dataset]) -> None:
    import shutil

    shutil.copyfile(src, out.path)


def test_kfp_component_fails_the_task_on_bad_data(clean, tmp_path, capfd, caplog, monkeypatch):
    import kfp.local

    bad = tmp_path / "bad.parquet"
    _set("currency", 5, "XYZ")(clean).to_parquet(bad)
    reports = tmp_path / "reports"
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))

    @dsl.pipeline
    def gate(src: str, reports_dir: str):
        data = _copy_parquet_op(src=src)
        validate_transactions_op(
            transactions=data.outputs["out"], start="2024-03-01", end="2024-03-31", reports_dir=reports_dir
        )

    # the task subprocess imports riskops.data.validation (the project's editable install covers it too)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with pytest.raises(RuntimeError, match="validate-transactions-op"):
        gate(src=str(bad), reports_dir=str(reports))
    out = capfd.readouterr()
    logs = out.out + out.err + caplog.text
    assert "DataValidationError" in logs
    assert "expect_column_values_to_be_in_set on column 'currency'" in logs and "'XYZ'" in logs
    assert (reports / "validation_report.html").exists()  # the report survives the failed task
    assert "FAILED" in (reports / "validation_report.html").read_text()
    task_report = next((tmp_path / "root").glob("gate-*/validate-transactions-op/report"))
    assert "XYZ" in task_report.read_text()
