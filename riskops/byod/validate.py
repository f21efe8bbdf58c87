"""Validate a user's dataset: a Great Expectations suite generated from its mapping.

Columns present, label not null and in {0, 1} with a plausible fraud rate, event time not null /
timezone-aware / not in the future, numeric columns numeric and finite, categorical and text
columns strings. A failure names the expectation, column, count and example rows/values, like the
built-in gate (riskops.data.validation, whose runner and reports this module uses).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from riskops.byod.config import amount_column, mapped_columns, slug
from riskops.data.datasets import DatasetConfig
from riskops.data.validation import (
    INTEGER_TYPES,
    NUMERIC_TYPES,
    ValidationConfig,
    ValidationResult,
    collect_outcomes,
    import_gx,
    run_suite,
    time_window,
    window_context,
)
from riskops.data.validation_report import write_reports


def build_dataset_suite(config: DatasetConfig, validation: ValidationConfig):
    """GX ExpectationSuite for a canonical dataset frame."""
    gx = import_gx()
    import great_expectations.expectations as gxe

    exps: list = []

    def add(cls, rule: str, **kwargs) -> None:
        exps.append(cls(meta={"rule": rule}, **kwargs))

    big = float(np.finfo("float64").max)
    add(gxe.ExpectTableRowCountToBeBetween, "at least one row", min_value=1)
    add(gxe.ExpectTableColumnsToMatchSet, "every mapped column present", column_set=mapped_columns(config),
        exact_match=False)  # fmt: skip
    t = config.event_time.column
    start, end = time_window(validation)
    add(gxe.ExpectColumnValuesToNotBeNull, "event time: no nulls", column=t)
    add(
        gxe.ExpectColumnValuesToBeOfType, "event time: timezone-aware timestamps", column=t, type_="Timestamp"
    )
    add(gxe.ExpectColumnValuesToBeBetween, f"event time: nothing later than {end.isoformat(timespec='seconds')}",
        column=t, min_value=start, max_value=end)  # fmt: skip
    y = config.label
    add(gxe.ExpectColumnValuesToNotBeNull, "label: no nulls", column=y)
    add(gxe.ExpectColumnValuesToBeInSet, "label must be 0 or 1", column=y, value_set=[0, 1])
    add(gxe.ExpectColumnMeanToBeBetween,
        f"fraud rate (mean of {y}) within [{validation.fraud_rate_min:g}, {validation.fraud_rate_max:g}]",
        column=y, min_value=validation.fraud_rate_min, max_value=validation.fraud_rate_max)  # fmt: skip
    amount = amount_column(config)
    for c in dict.fromkeys([*config.numeric, *([amount] if amount else [])]):
        add(
            gxe.ExpectColumnValuesToBeInTypeList,
            "numeric: must be numbers",
            column=c,
            type_list=NUMERIC_TYPES,
        )
        add(gxe.ExpectColumnValuesToBeBetween, "numeric: must be finite (nulls allowed)", column=c,
            min_value=-big, max_value=big)  # fmt: skip
    for c in config.categorical:
        add(gxe.ExpectColumnValuesToNotBeNull, "categorical: no nulls", column=c)
        add(gxe.ExpectColumnValuesToBeOfType, "categorical: strings", column=c, type_="str")
    for c in config.text:
        add(gxe.ExpectColumnValuesToBeOfType, "text: strings", column=c, type_="str")
    for role, c in config.entities.items():
        add(gxe.ExpectColumnValuesToBeInTypeList, f"entity {role}: string or integer ids", column=c,
            type_list=["str", "object", "string", "StringDtype", *INTEGER_TYPES])  # fmt: skip
    return gx.ExpectationSuite(name=f"dataset_{slug(config.name)}", expectations=exps)


def validate_dataset(
    df: pd.DataFrame, config: DatasetConfig, validation: ValidationConfig, report_dir: Path
) -> ValidationResult:
    """Run the generated suite; write validation_report.{json,html} into ``report_dir``."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    df = df.reset_index(drop=True)  # index labels in GX results are then row numbers
    suite = build_dataset_suite(config, validation)
    gx_result = run_suite(df, suite, None)
    missing = [c for c in mapped_columns(config) if c not in df.columns]
    expectations, failures = collect_outcomes(df, gx_result, sorted(missing))
    stats = dict(gx_result.statistics)
    stats.update(rows=len(df), columns=len(df.columns))
    result = ValidationResult(bool(gx_result.success), stats, failures, expectations=expectations)
    write_reports(result, report_dir, {"dataset": config.name, **window_context(validation)}, suite.name)
    return result
