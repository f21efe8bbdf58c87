"""Pipeline step 1 as a KFP component: the Great Expectations data gate over raw transactions.

The logic lives in `riskops.data.validation`; this module only declares the component.
"""

from kfp.dsl import HTML, Dataset, Input, Metrics, Output

from components.common import step_component


@step_component()
def validate_transactions_op(
    transactions: Input[Dataset],
    report: Output[HTML],
    metrics: Output[Metrics],
    fraud_rate_min: float = 0.001,
    fraud_rate_max: float = 0.10,
    start: str = "",
    end: str = "",
    max_future_skew_hours: float = 1.0,
    reports_dir: str = "",
) -> None:
    """Run the GX gate on the ingested transactions; a failed gate fails the task."""
    import shutil
    import tempfile
    from pathlib import Path

    import pandas as pd

    from riskops.data.validation import DataValidationError, ValidationConfig, validate_transactions

    df = pd.read_parquet(transactions.path)
    config = ValidationConfig(
        fraud_rate_min=fraud_rate_min,
        fraud_rate_max=fraud_rate_max,
        start=start or None,
        end=end or None,
        max_future_skew_hours=max_future_skew_hours,
    )
    # written straight into reports_dir when given, so the report survives a failed run
    out_dir = Path(reports_dir) if reports_dir else Path(tempfile.mkdtemp(prefix="riskops-validate-"))
    result = validate_transactions(df, config, out_dir)
    shutil.copyfile(result.report_html, report.path)
    for key in ("evaluated_expectations", "successful_expectations", "unsuccessful_expectations", "rows"):
        metrics.log_metric(key, float(result.statistics.get(key, 0)))
    metrics.log_metric("success_percent", float(result.statistics.get("success_percent") or 0.0))
    metrics.log_metric("passed", 1.0 if result.success else 0.0)
    print(result.summary())
    if not result.success:
        raise DataValidationError(result)
