"""Performance of the served scores on the labelled window (feedback joined on transaction_id).

`riskops.training.metrics.score_metrics` against the version's evaluation, with a bootstrap
standard error of the PR-AUC; an Evidently `ClassificationPreset` report when enough labels exist.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

from riskops.monitoring.drift_settings import DriftSettings
from riskops.monitoring.reference import LABEL, SCORE, Reference

log = logging.getLogger(__name__)


def _bootstrap_se(y: np.ndarray, s: np.ndarray, n_boot: int, seed: int) -> float:
    from sklearn.metrics import average_precision_score

    if n_boot <= 0 or y.sum() < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    vals = []
    n = y.size
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        yb = y[idx]
        if 0 < yb.sum() < n:
            vals.append(average_precision_score(yb, s[idx]))
    return float(np.std(vals, ddof=1)) if len(vals) > 2 else float("nan")


def performance_metrics(
    labelled: pd.DataFrame | None, reference: Reference, settings: DriftSettings
) -> tuple[dict[str, float], Any]:
    """Metrics of the served scores on the labelled window vs the version's baseline."""
    from riskops.training.metrics import score_metrics

    out: dict[str, float] = {"performance.rows": 0.0, "performance.frauds": 0.0}
    if labelled is None or labelled.empty or SCORE not in labelled or LABEL not in labelled:
        return out, None
    y = pd.to_numeric(labelled[LABEL], errors="coerce")
    s = pd.to_numeric(labelled[SCORE], errors="coerce")
    ok = y.notna() & s.notna() & np.isfinite(s)
    y, s = y[ok].astype("int64").to_numpy(), s[ok].to_numpy(dtype="float64")
    out["performance.rows"] = float(y.size)
    out["performance.frauds"] = float(y.sum())
    if y.size == 0:
        return out, None
    m = score_metrics(y, s)
    for k in ("pr_auc", "roc_auc", "recall_at_1pct_fpr", "precision_at_review_budget", "ece"):
        out[f"performance.{k}"] = float(m[k])
    flagged = s >= reference.thresholds["review"]
    out["performance.precision_at_review"] = float(y[flagged].mean()) if flagged.any() else float("nan")
    out["performance.recall_at_review"] = float(flagged[y == 1].mean()) if y.sum() else float("nan")
    out["performance.pr_auc_se"] = _bootstrap_se(y, s, settings.bootstrap, settings.seed)
    for k in ("pr_auc", "roc_auc", "recall_at_1pct_fpr"):
        base = reference.baseline.get(k)
        if base is not None and math.isfinite(base):
            out[f"performance.baseline_{k}"] = float(base)
            out[f"performance.{k}_drop"] = float(base - out[f"performance.{k}"])
    se = out.get("performance.pr_auc_se", float("nan"))
    drop = out.get("performance.pr_auc_drop", float("nan"))
    if se == se and drop == drop:
        out["performance.pr_auc_drop_z"] = float(drop / max(se, 1e-6))
    snap = None
    if settings.engine == "evidently" and y.size >= settings.performance_min_rows and 0 < y.sum() < y.size:
        try:
            snap = _evidently_performance(y, s, reference.thresholds["review"])
        except Exception as exc:  # the report is a nicety; the numbers above are what rules read
            log.warning("Evidently classification report failed: %s", exc)
    return out, snap


def _evidently_performance(y: np.ndarray, s: np.ndarray, threshold: float) -> Any:
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    frame = pd.DataFrame({"target": y.astype(int), "prediction": s})
    definition = DataDefinition(
        numerical_columns=["prediction"],
        categorical_columns=["target"],
        classification=[BinaryClassification(target="target", prediction_probas="prediction", pos_label=1)],
    )
    report = Report([ClassificationPreset(probas_threshold=float(threshold))])
    return report.run(current_data=Dataset.from_pandas(frame, data_definition=definition), reference_data=None)
