"""Pipeline step 4 as a KFP component: evaluate the fine-tuned transformer against baselines on the test period.

The logic lives in `riskops.training.evaluate`; this module only declares the component.
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
    test_fraction: float = 0.2,
    val_fraction: float = 0.15,
    review_budget: float = 0.01,
    target_review_rate: float = 0.02,
    target_block_precision: float = 0.9,
    reports_dir: str = "",
    recent_from: str = "",
) -> None:
    """KFP adapter: training set parquet + trained model -> evaluation JSON, HTML report, metrics.

    ``evaluation`` is a JSON document (models, policy_thresholds, data, ...) that the register step
    stores with the model; ``reference`` is the monitoring reference (parquet: validation + test
    model inputs, scores, labels, event times) that the register step stores as
    ``reference.parquet`` next to the weights; ``roc`` is the transformer's test ROC curve for the KFP UI.
    """
    import math
    import shutil
    import tempfile
    from pathlib import Path

    import pandas as pd
    import pyarrow.parquet as pq

    from riskops.training.evaluate import (
        HTML_NAME,
        RATIO_KEY,
        TRANSFORMER,
        _roc_points,
        render_html,
        run_evaluation,
    )
    from riskops.training.model import RiskScorer

    df = pd.read_parquet(training_set.path)
    scorer = RiskScorer.load(model.path)
    with (
        tempfile.TemporaryDirectory(prefix="riskops-eval-") as tmp,
        tempfile.TemporaryDirectory(prefix="riskops-ref-") as ref_tmp,
    ):
        result = run_evaluation(
            df,
            scorer,
            Path(tmp),
            test_fraction=test_fraction,
            val_fraction=val_fraction,
            review_budget=review_budget,
            target_review_rate=target_review_rate,
            target_block_precision=target_block_precision,
            reference_dir=Path(ref_tmp),
            recent_from=recent_from,
        )
        shutil.copyfile(result.files["reference"], reference.path)
        reference.metadata.update({"rows": int(pq.read_metadata(reference.path).num_rows)})
        page = render_html(result)
        (Path(tmp) / HTML_NAME).write_text(page)
        Path(report.path).write_text(page)
        shutil.copyfile(result.files["json"], evaluation.path)
        if reports_dir:
            out = Path(reports_dir)
            out.mkdir(parents=True, exist_ok=True)
            for f in Path(tmp).iterdir():
                shutil.copyfile(f, out / f.name)

        doc = result.document
        evaluation.metadata.update(
            {"policy_thresholds": doc["policy_thresholds"], RATIO_KEY: doc.get(RATIO_KEY), "n_test": doc["n"]}
        )
        headline = {
            f"{TRANSFORMER}_{k}": v
            for k, v in doc["models"][TRANSFORMER].items()
            if k in ("roc_auc", "pr_auc", "recall_at_1pct_fpr", "precision_at_review_budget", "ece")
        }
        for name, m in doc["models"].items():
            if name != TRANSFORMER:
                headline[f"{name}_pr_auc"] = m["pr_auc"]
        headline[RATIO_KEY] = doc.get(RATIO_KEY)
        headline["review_threshold"] = doc["policy_thresholds"]["review"]
        headline["block_threshold"] = doc["policy_thresholds"]["block"]
        for key, value in headline.items():
            if value is not None and math.isfinite(value):  # KFP metadata cannot hold NaN/None
                metrics.log_metric(key, float(value))

        y_test, s_test = result.test_labels, result.test_scores.get(TRANSFORMER)
        if s_test is not None and 0 < y_test.sum() < y_test.size:
            roc.log_roc_curve(*_roc_points(y_test, s_test))
    print(result.table)
