"""KFP adapters of the data gate: Great Expectations over the ingested rows; a failed gate fails the task.

``validate_transactions_op`` runs riskops.data.validation (the built-in schema's suite);
``validate_dataset_op`` runs riskops.byod.validate (a suite generated from the dataset's mapping).
The reports are written straight into ``reports_dir`` when given, so they survive a failed run.
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

    config = ValidationConfig(
        fraud_rate_min=fraud_rate_min,
        fraud_rate_max=fraud_rate_max,
        start=start or None,
        end=end or None,
        max_future_skew_hours=max_future_skew_hours,
    )
    out_dir = Path(reports_dir) if reports_dir else Path(tempfile.mkdtemp(prefix="riskops-validate-"))
    result = validate_transactions(pd.read_parquet(transactions.path), config, out_dir)
    shutil.copyfile(result.report_html, report.path)
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    print(result.summary())
    if not result.success:
        raise DataValidationError(result)


@step_component()
def validate_dataset_op(
    dataset: Input[Dataset],
    report: Output[HTML],
    metrics: Output[Metrics],
    dataset_config: str,
    fraud_rate_min: float = 0.0001,
    fraud_rate_max: float = 0.5,
    max_future_skew_hours: float = 1.0,
    reports_dir: str = "",
) -> None:
    """The GX gate generated from the mapping; a failed gate fails the task (nothing later runs)."""
    import shutil
    import tempfile
    from pathlib import Path

    import pandas as pd

    from riskops.byod.config import parse_config
    from riskops.byod.validate import validate_dataset
    from riskops.data.validation import DataValidationError, ValidationConfig

    config = ValidationConfig(
        fraud_rate_min=fraud_rate_min,
        fraud_rate_max=fraud_rate_max,
        max_future_skew_hours=max_future_skew_hours,
    )
    out_dir = Path(reports_dir) if reports_dir else Path(tempfile.mkdtemp(prefix="riskops-validate-"))
    result = validate_dataset(pd.read_parquet(dataset.path), parse_config(dataset_config), config, out_dir)
    shutil.copyfile(result.report_html, report.path)
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    print(result.summary())
    if not result.success:
        raise DataValidationError(result)
