"""The Great Expectations data gate over raw transactions.

`validate_transactions` runs a GX 1.x suite (built from `riskops.schema`) over a pandas frame of RAW
transactions (before PII hashing) and writes a self-contained HTML report plus a JSON report. A failed
gate raises `DataValidationError` in the pipeline step, so the run stops before features/training.

The gate's parts are public for other suites (riskops.byod.validate): :func:`run_suite`,
:func:`collect_outcomes`, :func:`window_context`, :func:`time_window` and the GX type lists; the
reports are written by riskops.data.validation_report.write_reports.

GX is imported lazily (~4 s) so `import riskops.data.validation` stays cheap.
"""

import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from riskops import schema
from riskops.data.validation_report import short_value, write_reports

if TYPE_CHECKING:  # pragma: no cover
    from great_expectations.core.expectation_suite import ExpectationSuite

SUITE_NAME = "raw_transactions"

COLUMNS_EXPECTATION = "expect_table_columns_to_match_set"


MAX_EXAMPLES = 5

NUMERIC_TYPES = ["float64", "float32", "int64", "int32", "Float64Dtype", "Int64Dtype", "float", "int"]

INTEGER_TYPES = ["int64", "int32", "int16", "int8", "Int64Dtype", "Int32Dtype", "int"]

BOOLEAN_TYPES = ["bool", "BooleanDtype"]


@dataclass
class ValidationConfig:
    fraud_rate_min: float = 0.001
    fraud_rate_max: float = 0.10
    start: str | None = None  # ISO; timestamps must be inside [start, end] when given
    end: str | None = None
    max_future_skew_hours: float = 1.0  # without `end`: no timestamps later than now + skew
    amount_max: float = schema.AMOUNT_MAX  # sane upper bound for one order, in the order currency
    gx_data_docs: bool = False  # also build GX's own Data Docs site under report_dir/gx_data_docs


@dataclass
class ValidationResult:
    success: bool
    statistics: dict  # evaluated/successful/unsuccessful expectations, rows, success_percent
    failures: list[dict]  # expectation, column, unexpected_count, unexpected_percent, examples, details
    report_html: Path | None = None
    report_json: Path | None = None
    expectations: list[dict] = field(default_factory=list)  # every expectation with its outcome

    def summary(self) -> str:
        s = self.statistics
        if self.success:
            return (
                f"Data validation passed: {s.get('successful_expectations')} of "
                f"{s.get('evaluated_expectations')} expectations met on {s.get('rows')} rows."
            )
        lines = [
            f"Data validation FAILED: {s.get('unsuccessful_expectations')} of {s.get('evaluated_expectations')} "
            f"expectations unsuccessful on {s.get('rows')} rows; problems found:"
        ]
        for f in self.failures:
            where = f" on column '{f['column']}'" if f.get("column") else ""
            line = f"  - {f['expectation']}{where}: {f['details']}"
            if f.get("unexpected_count"):
                line += f" [{f['unexpected_count']} of {s.get('rows')} rows ({f['unexpected_percent']:.2f}%)"
                if f.get("examples"):
                    line += f", e.g. {', '.join(short_value(v) for v in f['examples'])}"
                line += "]"
            lines.append(line)
        return "\n".join(lines)

    def metrics(self) -> dict[str, float]:
        """The figures a pipeline run logs: expectation counts, rows, success percent, passed (1/0)."""
        s = self.statistics
        keys = ("evaluated_expectations", "successful_expectations", "unsuccessful_expectations", "rows")
        out = {key: float(s.get(key, 0)) for key in keys}
        out["success_percent"] = float(s.get("success_percent") or 0.0)
        out["passed"] = 1.0 if self.success else 0.0
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["report_html"] = str(self.report_html) if self.report_html else None
        d["report_json"] = str(self.report_json) if self.report_json else None
        return d


class DataValidationError(RuntimeError):
    """The data gate failed; carries the ValidationResult."""

    def __init__(self, result: ValidationResult):
        self.result = result
        super().__init__(result.summary())

    def __str__(self) -> str:
        report = self.result.report_html or self.result.report_json
        return self.result.summary() + (f"\nReport: {report}" if report else "")


def import_gx():
    """Import GX (slow, ~4 s) only when needed: no analytics, no INFO chatter in task logs."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    gx_logger = logging.getLogger("great_expectations")
    quiet = gx_logger.level == logging.NOTSET  # keep a level the user set themselves
    if quiet:
        gx_logger.setLevel(logging.WARNING)
    import great_expectations as gx

    if quiet:  # this module pins itself to INFO ("Created temporary directory ... docs site" per run)
        logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    return gx


def _utc(ts: str | datetime) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def time_window(config: ValidationConfig) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """[start, end]; without an explicit end, nothing may lie later than now + max_future_skew_hours."""
    start = _utc(config.start) if config.start else None
    if config.end:
        end = _utc(config.end)
    else:
        end = _utc(datetime.now(UTC) + timedelta(hours=config.max_future_skew_hours))
    if start is not None and end is not None and start > end:
        raise ValueError(f"validation window start {start} is after end {end}")
    return start, end


def build_suite(config: ValidationConfig, columns: Iterable[str] | None = None) -> "ExpectationSuite":
    """The GX suite over raw transactions.

    `columns` (the frame's columns) only decides whether expectations on OPTIONAL schema columns
    (order_status, is_fraud, fraud_type) are added; required columns are always checked and a missing
    one fails `expect_table_columns_to_match_set` with a per-column "is missing" failure.

    Long on purpose (over 80 lines): one flat list of expectations, read top to bottom like the schema.
    """
    gx = import_gx()
    import great_expectations.expectations as gxe

    present = set(columns) if columns is not None else set(schema.COLUMNS)
    expectations: list = []

    def add(exp_cls, rule: str, **kwargs: Any) -> None:
        expectations.append(exp_cls(meta={"rule": rule}, **kwargs))

    add(gxe.ExpectTableRowCountToBeBetween, "at least one row", min_value=1)

    add(
        gxe.ExpectTableColumnsToMatchSet,
        "all required columns present (extra columns allowed)",
        column_set=list(schema.REQUIRED_COLUMNS),
        exact_match=False,
    )
    # the type each schema kind must have: (expectation, rule, its arguments)
    type_checks: dict[str, tuple[Any, str, dict[str, Any]]] = {
        "string": (gxe.ExpectColumnValuesToBeOfType, "values must be strings", {"type_": "str"}),
        "float": (gxe.ExpectColumnValuesToBeInTypeList, "must be numeric", {"type_list": NUMERIC_TYPES}),
        "int": (gxe.ExpectColumnValuesToBeInTypeList, "must be integers", {"type_list": INTEGER_TYPES}),
        "bool": (gxe.ExpectColumnValuesToBeInTypeList, "must be booleans", {"type_list": BOOLEAN_TYPES}),
        "timestamp": (gxe.ExpectColumnValuesToBeOfType, "must be timezone-aware timestamps (UTC)",
                      {"type_": "Timestamp"}),
    }
    fields = [f for f in schema.TRANSACTION_FIELDS if f.required or f.name in present]
    for f in fields:
        if f.required:
            add(gxe.ExpectColumnValuesToNotBeNull, "required: no nulls", column=f.name)
        if f.kind in type_checks:
            exp_cls, rule, kwargs = type_checks[f.kind]
            add(exp_cls, rule, column=f.name, **kwargs)

    add(gxe.ExpectColumnValuesToBeUnique, "transaction ids must be unique", column="transaction_id")
    add(
        gxe.ExpectColumnValuesToBeBetween,
        f"amount must be > 0 and <= {config.amount_max:g}",
        column="amount",
        min_value=0,
        strict_min=True,
        max_value=config.amount_max,
    )
    add(
        gxe.ExpectColumnValuesToBeBetween,
        "account_age_days must be >= 0",
        column="account_age_days",
        min_value=0,
    )
    add(gxe.ExpectColumnValuesToBeBetween, "quantity must be >= 1", column="quantity", min_value=1)

    allowed = {
        "currency": schema.CURRENCIES,
        "payment_method": schema.PAYMENT_METHODS,
        "channel": schema.CHANNELS,
        "billing_country": schema.COUNTRIES,
        "shipping_country": schema.COUNTRIES,
        "product_category": schema.PRODUCT_CATEGORIES,
        "order_status": schema.ORDER_STATUSES,
        "fraud_type": schema.FRAUD_TYPES,
    }
    for col, values in allowed.items():
        if schema.FIELDS_BY_NAME[col].required or col in present:
            add(
                gxe.ExpectColumnValuesToBeInSet,
                f"must be one of {list(values)}",
                column=col,
                value_set=list(values),
            )

    start, end = time_window(config)
    if config.end:
        window = f"timestamps must lie inside [{start.isoformat() if start else '-inf'}, {end.isoformat()}]"
    else:
        window = (
            f"timestamps must lie inside [{start.isoformat() if start else '-inf'}, now + "
            f"{config.max_future_skew_hours:g} h = {end.isoformat(timespec='seconds')}] (nothing in the future)"
        )
    add(
        gxe.ExpectColumnValuesToBeBetween,
        window,
        column=schema.TIMESTAMP_COLUMN,
        min_value=start,
        max_value=end,
    )

    label = schema.LABEL_COLUMN
    if label in present:
        add(gxe.ExpectColumnValuesToBeInSet, "label must be 0 or 1", column=label, value_set=[0, 1])
        add(
            gxe.ExpectColumnMeanToBeBetween,
            f"fraud rate (mean of {label}) must be within [{config.fraud_rate_min:g}, {config.fraud_rate_max:g}]",
            column=label,
            min_value=config.fraud_rate_min,
            max_value=config.fraud_rate_max,
        )
    return gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations)


def _jsonable(v: Any) -> Any:
    if v is None or v is pd.NaT or v is pd.NA:
        return None
    if isinstance(v, (str, bool, int)):
        return v
    if isinstance(v, float):
        return None if math.isnan(v) else v
    if isinstance(v, (pd.Timestamp, datetime)):
        return v.isoformat()
    if hasattr(v, "item"):  # numpy scalars
        try:
            return _jsonable(v.item())
        except (ValueError, TypeError):
            pass
    return str(v)


def _exception_message(exception_info: Any) -> str | None:
    """GX reports exceptions either flat or keyed by metric id; return the first message."""
    if not isinstance(exception_info, dict):
        return None
    if exception_info.get("raised_exception"):
        return str(exception_info.get("exception_message") or "exception")
    for v in exception_info.values():
        if isinstance(v, dict) and v.get("raised_exception"):
            return str(v.get("exception_message") or "exception")
    return None


def _examples(df: pd.DataFrame, exp_type: str, result: dict) -> list:
    if exp_type == "expect_column_values_to_not_be_null":
        # the unexpected values are all null: point at the rows instead
        idx = list(result.get("partial_unexpected_index_list") or [])[:MAX_EXAMPLES]
        if "transaction_id" in df.columns:
            return [f"row {i} (transaction_id={df.at[i, 'transaction_id']})" for i in idx if i in df.index]
        return [f"row {i}" for i in idx]
    seen: list = []
    for v in result.get("partial_unexpected_list") or []:
        jv = _jsonable(v)
        if jv not in seen:
            seen.append(jv)
        if len(seen) >= MAX_EXAMPLES:
            break
    if not seen and "observed_value" in result:
        seen = [_jsonable(result["observed_value"])]
    return seen


def _describe(
    exp_type: str, column: str | None, rule: str, result: dict, error: str | None, missing: set
) -> str:
    if column is not None and column in missing:
        return f"not evaluated: column '{column}' is missing"
    if error:
        return f"could not be evaluated ({rule}): {error}"
    if "observed_value" in result and "unexpected_count" not in result:
        obs = _jsonable(result["observed_value"])
        if isinstance(obs, float):
            obs = f"{obs:.4g}"
        return f"{rule}; observed {obs}"
    return rule


def run_suite(df: pd.DataFrame, suite: "ExpectationSuite", docs_dir: Path | None):
    gx = import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch_def = (
        context.data_sources.add_pandas("riskops")
        .add_dataframe_asset("transactions")
        .add_batch_definition_whole_dataframe("all_rows")
    )
    suite = context.suites.add(suite)
    vd = context.validation_definitions.add(
        gx.ValidationDefinition(name="raw_gate", data=batch_def, suite=suite)
    )
    actions = []
    if docs_dir is not None:
        context.add_data_docs_site(
            "riskops",
            {
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["riskops"]))
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="raw_gate_checkpoint",
            validation_definitions=[vd],
            actions=actions,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20},
        )
    )
    run = checkpoint.run(batch_parameters={"dataframe": df})
    return next(iter(run.run_results.values()))


_FAILURE_KEYS = ("expectation", "column", "unexpected_count", "unexpected_percent", "examples", "details")


def _failure(
    expectation: str,
    column: str | None,
    unexpected_count: int = 0,
    unexpected_percent: float = 0.0,
    examples: list | None = None,
    details: str = "",
) -> dict:
    return {
        "expectation": expectation,
        "column": column,
        "unexpected_count": unexpected_count,
        "unexpected_percent": unexpected_percent,
        "examples": list(examples or []),
        "details": details,
    }


def collect_outcomes(df: pd.DataFrame, gx_result, missing: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """Every expectation's outcome and the failures to report, from a GX validation result.

    Expectations on a missing column are folded into one "column is missing" failure.

    Args:
        df: the validated frame (index = row numbers), for example rows.
        gx_result: what :func:`run_suite` returned.
        missing: the required columns absent from ``df``.

    Returns:
        (expectations, failures): dicts with expectation, column, success, unexpected_count,
        unexpected_percent, examples, details (and observed_value for expectations).
    """
    expectations: list[dict] = []
    failures: list[dict] = []
    for r in gx_result.results:
        cfg = r.expectation_config
        exp_type = cfg.type
        column = cfg.kwargs.get("column")
        rule = (cfg.meta or {}).get("rule", exp_type)
        res = dict(r.result or {})
        error = _exception_message(r.exception_info)
        entry = {
            "expectation": exp_type,
            "column": column,
            "success": bool(r.success),
            "unexpected_count": int(res.get("unexpected_count") or 0),
            "unexpected_percent": float(res.get("unexpected_percent") or 0.0),
            "examples": [] if r.success else _examples(df, exp_type, res),
            "details": _describe(exp_type, column, rule, res, error, set(missing)),
            "observed_value": None
            if exp_type == COLUMNS_EXPECTATION
            else _jsonable(res.get("observed_value")),
        }
        expectations.append(entry)
        if r.success or column in missing:
            continue  # expectations on a missing column are folded into its "is missing" failure
        if exp_type == COLUMNS_EXPECTATION and missing:
            for col in missing:
                n = sum(1 for e in gx_result.results if e.expectation_config.kwargs.get("column") == col)
                details = f"column '{col}' is missing"
                if n:
                    details += f" ({n} expectations on it could not be evaluated)"
                failures.append(_failure(exp_type, col, details=details))
            continue
        failures.append(_failure(**{k: entry[k] for k in _FAILURE_KEYS}))
    return expectations, failures


def window_context(config: ValidationConfig) -> dict:
    """The report's time window and validation time (ISO strings)."""
    window = time_window(config)
    return {
        "window": [w.isoformat() if w is not None else None for w in window],
        "validated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def validate_transactions(df: pd.DataFrame, config: ValidationConfig, report_dir: Path) -> ValidationResult:
    """Validate raw transactions; always writes the HTML + JSON reports into report_dir."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    suite = build_suite(config, df.columns)
    df = df.reset_index(drop=True)  # index labels in GX results are then row numbers
    docs_dir = report_dir / "gx_data_docs" if config.gx_data_docs else None
    gx_result = run_suite(df, suite, docs_dir)

    missing = [c for c in schema.REQUIRED_COLUMNS if c not in df.columns]
    expectations, failures = collect_outcomes(df, gx_result, missing)
    order = {c: i for i, c in enumerate(schema.COLUMNS)}
    expectations.sort(key=lambda e: order.get(e["column"] or "", -1))
    failures.sort(key=lambda f: (f["expectation"] != COLUMNS_EXPECTATION, order.get(f["column"] or "", -1)))

    stats = dict(gx_result.statistics)
    stats["evaluated_expectations"] = int(stats.get("evaluated_expectations", len(expectations)))
    stats["rows"] = len(df)
    stats["columns"] = len(df.columns)
    result = ValidationResult(
        success=bool(gx_result.success),
        statistics=stats,
        failures=failures,
        expectations=expectations,
    )
    context = {
        "config": asdict(config),
        **window_context(config),
        "gx_data_docs": str(docs_dir / "index.html") if docs_dir else None,
    }
    write_reports(result, report_dir, context, SUITE_NAME)
    return result


__all__ = [
    "DataValidationError",
    "ValidationConfig",
    "ValidationResult",
    "build_suite",
    "collect_outcomes",
    "run_suite",
    "validate_transactions",
]
