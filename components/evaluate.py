"""KFP adapters of the evaluation step: the model against baselines on the test period.

``evaluate_model_op`` runs riskops.training.evaluate (the transformer vs four baselines, the
decision policy set on validation, the monitoring reference); ``evaluate_dataset_op`` runs
riskops.byod.evaluate (vs LightGBM and logistic regression on the dataset's time split). Both
publish the report with riskops.training.evaluation_report. The split fractions have no defaults
here: the pipeline passes them (riskops.training.params).
"""

from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.common import step_component


@step_component()
def evaluate_model_op(
    training_set: Input[Dataset],
    model: Input[Model],
    metrics: Output[Metrics],
    roc: Output[ClassificationMetrics],
    report: Output[HTML],
    evaluation: Output[Artifact],
    reference: Output[Dataset],
    test_fraction: float,
    val_fraction: float,
    review_budget: float = 0.01,
    target_review_rate: float = 0.02,
    target_block_precision: float = 0.9,
    reports_dir: str = "",
    recent_from: str = "",
) -> None:
    """Training set + model -> evaluation JSON (``evaluation``), HTML report, metrics, ROC curve, and
    the monitoring reference (``reference``: validation + test model inputs, scores, labels, times)."""
    import shutil
    import tempfile
    from pathlib import Path

    import pandas as pd
    import pyarrow.parquet as pq

    from riskops.monitoring.reference import save_reference
    from riskops.training.evaluate import RATIO_KEY, TRANSFORMER, headline_metrics, roc_points, run_evaluation
    from riskops.training.evaluation_report import publish_report
    from riskops.training.scorer import RiskScorer

    with tempfile.TemporaryDirectory(prefix="riskops-eval-") as tmp, \
            tempfile.TemporaryDirectory(prefix="riskops-ref-") as ref_tmp:  # fmt: skip
        result = run_evaluation(
            pd.read_parquet(training_set.path), RiskScorer.load(model.path), Path(tmp),
            test_fraction=test_fraction, val_fraction=val_fraction, review_budget=review_budget,
            target_review_rate=target_review_rate, target_block_precision=target_block_precision,
            recent_from=recent_from,
        )  # fmt: skip
        held = result.held_out
        ref_file = save_reference(Path(ref_tmp), held.frame, held.scores, held.labels, held.timestamps)
        shutil.copyfile(ref_file, reference.path)
        shutil.copyfile(publish_report(result, reports_dir), report.path)
        shutil.copyfile(result.files["json"], evaluation.path)
    doc = result.document
    reference.metadata.update({"rows": int(pq.read_metadata(reference.path).num_rows)})
    evaluation.metadata.update(
        {"policy_thresholds": doc["policy_thresholds"], RATIO_KEY: doc.get(RATIO_KEY), "n_test": doc["n"]}
    )
    for name, value in headline_metrics(doc).items():
        metrics.log_metric(name, value)
    y_test, s_test = result.test_labels, result.test_scores.get(TRANSFORMER)
    if s_test is not None and 0 < y_test.sum() < y_test.size:
        roc.log_roc_curve(*roc_points(y_test, s_test))
    print(result.table)


@step_component()
def evaluate_dataset_op(
    training_set: Input[Dataset],
    model: Input[Model],
    metrics: Output[Metrics],
    report: Output[HTML],
    evaluation: Output[Artifact],
    dataset_config: str,
    review_budget: float = 0.01,
    reports_dir: str = "",
) -> None:
    """The model vs LightGBM / logistic regression on the test period; policy set on validation."""
    import shutil
    import tempfile
    from pathlib import Path

    import pandas as pd

    from riskops.byod.config import parse_config
    from riskops.byod.evaluate import evaluate_dataset
    from riskops.training.evaluate import ranking_metrics
    from riskops.training.evaluation_report import publish_report

    with tempfile.TemporaryDirectory(prefix="riskops-eval-") as tmp:
        result = evaluate_dataset(pd.read_parquet(training_set.path), parse_config(dataset_config),
                                  Path(model.path), Path(tmp), review_budget=review_budget)  # fmt: skip
        shutil.copyfile(publish_report(result, reports_dir), report.path)
        shutil.copyfile(result.files["json"], evaluation.path)
    for name, value in ranking_metrics(result.document).items():
        metrics.log_metric(name, value)
    evaluation.metadata.update({"model_kind": result.document["model_kind"], "n_test": result.document["n"]})
