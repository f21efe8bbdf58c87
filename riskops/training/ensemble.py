"""Rank ensembles of several fraud models (e.g. the transformer + LightGBM + logistic regression).

Models disagree most on the hard frauds, and their errors are only partly shared, so averaging
their *ranks* (scores on different scales -> percentiles against each model's validation scores,
riskops.training.anomaly's continuous mid-rank ECDF) is a cheap, robust way to combine them:

    ensemble(x) = sum_k w_k * pct_k(score_k(x)),   w on the simplex

:func:`choose_ensemble_weights` searches a simplex grid for the weights with the best validation
metric; with few validation frauds that choice is noisy, so :func:`equal_weights` (no tuning at
all) is the default to compare against. Evidence from forward-chaining CV inside the ULB training
period (``benchmarks/cv_quality.py``): a LightGBM + logistic-regression rank average beat either
model alone in PR-AUC on every fold.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from riskops.training.anomaly import percentile_rank


def simplex_grid(k: int, step: float = 0.1) -> list[tuple[float, ...]]:
    """Every weight vector of length k with entries in {0, step, 2*step, ...} summing to 1."""
    if k < 1:
        raise ValueError("an ensemble needs at least one model")
    units = round(1.0 / step)
    if not np.isclose(units * step, 1.0):
        raise ValueError(f"step must divide 1, got {step}")
    out = []
    for combo in itertools.product(range(units + 1), repeat=k - 1):
        rest = units - sum(combo)
        if rest >= 0:
            out.append(tuple(round(c / units, 6) for c in (*combo, rest)))
    return out


def equal_weights(names: list[str]) -> dict[str, float]:
    return {n: 1.0 / len(names) for n in names}


@dataclass
class RankEnsemble:
    """Weights per model and the reference (validation) scores that map each model to percentiles."""

    weights: dict[str, float]
    references: dict[str, np.ndarray]
    table: list[dict] = field(default_factory=list)  # weights tried -> validation metric

    def __post_init__(self):
        missing = set(self.weights) - set(self.references)
        if missing:
            raise ValueError(f"no reference scores for {sorted(missing)}")
        total = sum(self.weights.values())
        if not np.isclose(total, 1.0) or min(self.weights.values()) < 0:
            raise ValueError(f"weights must be >= 0 and sum to 1, got {self.weights}")

    def __call__(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        """The ensemble score in [0, 1] for rows scored by every model in ``weights``."""
        missing = [n for n, w in self.weights.items() if w > 0 and n not in scores]
        if missing:
            raise ValueError(f"scores missing for {missing}")
        out = None
        for name, w in self.weights.items():
            if w == 0:
                continue
            part = w * percentile_rank(np.asarray(scores[name], dtype="float64"), self.references[name])
            if out is not None and part.shape != out.shape:
                raise ValueError(f"{name}: {part.size} scores, expected {out.size}")
            out = part if out is None else out + part
        return out

    def describe(self) -> str:
        return " + ".join(f"{w:.2f}·{n}" for n, w in self.weights.items() if w > 0)


def fit_rank_ensemble(
    val_scores: dict[str, np.ndarray], weights: dict[str, float] | None = None
) -> RankEnsemble:
    """A rank ensemble with fixed ``weights`` (default: equal), references = the validation scores."""
    weights = weights or equal_weights(list(val_scores))
    return RankEnsemble(
        dict(weights), {n: np.sort(np.asarray(v, "float64").ravel()) for n, v in val_scores.items()}
    )


def choose_ensemble_weights(
    val_scores: dict[str, np.ndarray], y_val, step: float = 0.1, metric: str = "pr_auc"
) -> RankEnsemble:
    """The simplex-grid weights with the best validation ``metric`` (``pr_auc`` or ``roc_auc``).

    Ties go to the weights closest to equal (the least tuned choice). The validation scores are
    both the references and the data the weights are chosen on, so report the result on rows the
    choice never saw.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y_val).astype("int64").ravel()
    if y.min() == y.max():
        raise ValueError("choosing ensemble weights needs both classes in the validation labels")
    fn = {"pr_auc": average_precision_score, "roc_auc": roc_auc_score}[metric]
    names = list(val_scores)
    base = fit_rank_ensemble(val_scores)
    pcts = {n: percentile_rank(np.asarray(val_scores[n], "float64"), base.references[n]) for n in names}
    table, best_key = [], None
    for w in simplex_grid(len(names), step):
        s = sum(wi * pcts[n] for wi, n in zip(w, names, strict=True) if wi > 0)
        value = float(fn(y, s))
        spread = float(np.abs(np.asarray(w) - 1.0 / len(names)).sum())
        table.append({"weights": dict(zip(names, w, strict=True)), metric: value})
        key = (round(value, 12), -spread)
        if best_key is None or key > best_key:
            best_key, best = key, dict(zip(names, w, strict=True))
    return RankEnsemble(best, base.references, table)
