"""Evaluate a user's model against LightGBM and logistic regression on the config's test period."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd

from riskops.byod.baselines import fit_lightgbm, fit_logistic_regression
from riskops.byod.config import aggregate_feature_names
from riskops.byod.train import DatasetScorer, labels, split_frame
from riskops.data.datasets import (
    DatasetConfig,
)


def evaluate_dataset(
    df: pd.DataFrame,
    config: DatasetConfig,
    model_dir: Path,
    out_dir: Path,
    review_budget: float = 0.01,
    target_review_rate: float = 0.02,
    target_block_precision: float = 0.9,
):
    """The model vs LightGBM and logistic regression on the config's test period.

    Same split as training; baselines fit on the fit part (LightGBM early-stopped on validation,
    C chosen on validation); the decision policy is set on validation. Returns the
    riskops.training.evaluate.EvaluationResult (evaluation.json, metrics table, PR curve, histogram).

    Most of its length (over 80 lines) is the evaluation document, written out field by field.
    """
    from riskops.training.evaluate import LIGHTGBM, RATIO_KEY, TRANSFORMER, evaluate_models, metrics_table
    from riskops.training.metrics import policy_report, thresholds_for_policy

    fit, val, test = split_frame(df, config)
    y_fit, y_val, y_test = labels(fit, config), labels(val, config), labels(test, config)
    scorer = DatasetScorer(model_dir)
    numeric, categorical = scorer.numeric, scorer.categorical
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    val_scores, test_scores = scorer.predict_proba(val), scorer.predict_proba(test)
    timings[f"{TRANSFORMER}_scoring"] = round(time.perf_counter() - t0, 2)
    scores = {TRANSFORMER: test_scores}
    tuning: dict[str, list] = {}
    for name, fitter in ((LIGHTGBM, fit_lightgbm), ("logistic_regression", fit_logistic_regression)):
        t0 = time.perf_counter()
        score_fn, tuning[name] = fitter(fit, y_fit, val, y_val, numeric, categorical)
        scores[name] = score_fn(test)
        timings[name] = round(time.perf_counter() - t0, 2)

    result = evaluate_models(None, y_test, scores, Path(out_dir), review_budget)
    models = result.document["models"]
    kind = scorer.kind
    models[TRANSFORMER]["note"] = (
        "FT-Transformer (riskops/training/tabular.py, no text columns mapped), Platt/temperature-calibrated on validation"
        if kind == "ft_transformer"
        else f"{'behaviour-sequence + ' if scorer.meta.get('sequences') else ''}text + tabular transformer "
        f"({scorer.meta.get('encoder')} encoder on {', '.join(scorer.text) or 'no text column'}), calibrated on validation"
    )
    lgb_best = max(tuning[LIGHTGBM], key=lambda r: -1 if math.isnan(r["val_pr_auc"]) else r["val_pr_auc"])
    models[LIGHTGBM]["note"] = f"grid of {len(tuning[LIGHTGBM])}, chosen on validation: {lgb_best}"
    result.table = metrics_table(models, review_budget, result.document.get(RATIO_KEY))
    result.files["table"].write_text(result.table)
    thresholds = thresholds_for_policy(y_val, val_scores, target_review_rate, target_block_precision)
    ts = pd.to_datetime(df[config.event_time.column], utc=True)
    result.document.update(
        {
            "dataset": config.name,
            "model_kind": kind,
            "policy_thresholds": thresholds,
            "policy_targets": {
                "review_rate": target_review_rate,
                "block_precision": target_block_precision,
                "set_on": "validation",
            },  # fmt: skip
            "policy_validation": policy_report(y_val, val_scores, thresholds),
            "policy_test": policy_report(y_test, test_scores, thresholds),
            "data": {
                "start": str(ts.min()),
                "end": str(ts.max()),
                "rows": len(df),
                "train_rows": len(fit),
                "val_rows": len(val),
                "test_rows": len(test),
                "train_frauds": int(y_fit.sum()),
                "val_frauds": int(y_val.sum()),
                "test_frauds": int(y_test.sum()),
                "fraud_rate": float(df[config.label].mean()),
                "test_start": str(pd.to_datetime(test[config.event_time.column], utc=True).min()),
            },  # fmt: skip
            "split": {
                "time_fraction": config.split.time_fraction,
                "val_fraction": config.split.val_fraction,
                "protocol": "sorted by event time; first time_fraction train (last val_fraction of it "
                "validation), the rest test",
            },  # fmt: skip
            "features": {
                "numeric": numeric,
                "categorical": categorical,
                "text": scorer.text,
                "aggregates": [f for f in aggregate_feature_names(config) if f in numeric],
            },  # fmt: skip
            "baseline_tuning": tuning,
            "timings_seconds": timings,
        }
    )
    result.write_json()
    return result
