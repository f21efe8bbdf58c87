"""Statistics for model comparisons: paired bootstrap, per-fraud-type figures, intervals over seeds.

A benchmark claim such as "the transformer beats tuned LightGBM" needs an interval, not a single
test-set number: `paired_bootstrap` resamples the test rows (or whole time blocks) once and scores
both models on the same resample, so the difference's interval reflects the test set's noise
only; `mean_ci` summarises runs over seeds or time windows; `metric_by_group` gives the usual
per-fraud-type figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

Metric = Callable[[np.ndarray, np.ndarray], float]
MAX_REDRAWS = 100  # per kept resample: a test set where almost no resample holds a fraud is an input error


def average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    """Average precision (PR-AUC) exactly as sklearn's `average_precision_score`, without its input
    checks (the bootstrap calls it thousands of times). NaN when there is no positive."""
    y = np.asarray(y)
    s = np.asarray(scores, dtype="float64")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # last row of each distinct score
    tps = np.cumsum(y, dtype="float64")[ends]
    if len(tps) == 0 or tps[-1] == 0:
        return float("nan")
    precision = tps / (ends + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def _draw(rng, n_units: int, positives_per_unit: np.ndarray) -> np.ndarray:
    """Unit indices drawn with replacement, redrawn until the draw holds at least one positive."""
    for _ in range(MAX_REDRAWS):
        draw = rng.integers(0, n_units, n_units)
        if positives_per_unit[draw].sum() > 0:
            return draw
    raise ValueError(f"{MAX_REDRAWS} resamples in a row held no positive: too few positives to bootstrap")


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return float(lo), float(hi)


def _ratio(a, b):
    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b != 0, a / np.where(b != 0, b, 1.0), np.nan)


def paired_bootstrap(
    y,
    scores_a,
    scores_b,
    metric: Metric = average_precision,
    n_boot: int = 1000,
    seed: int = 0,
    groups: np.ndarray | None = None,
    keep_samples: bool = False,
) -> dict:
    """Compare two scorers on the same labelled rows with a paired (percentile) bootstrap.

    Each resample draws rows with replacement, scores *both* models on it and records
    ``metric(a) - metric(b)`` and ``metric(a) / metric(b)``. Frauds come in episodes (one ring,
    one tested card, one taken-over account produce many correlated rows), so rows are not
    independent and a row bootstrap gives intervals that are too narrow. Pass ``groups`` (a day or
    time-window id per row) to resample whole groups instead (block bootstrap): each resample
    draws as many groups as there are, with replacement, and keeps every row of a drawn group.
    A resample without any positive row is redrawn (the metric would be undefined).

    Args:
        y: 0/1 labels.
        scores_a, scores_b: the two models' scores for the same rows (higher = riskier).
        metric: ``metric(y, scores) -> float``; average precision by default.
        n_boot: resamples kept.
        seed: seeds the resampling.
        groups: optional block id per row (any hashable values).
        keep_samples: also return each resample's metric values (``samples_a``, ``samples_b``).

    Returns:
        ``metric_a``, ``metric_b`` (on all rows), ``diff`` (a - b) with ``diff_ci`` (2.5 and 97.5
        percentiles), ``ratio`` (a / b) with ``ratio_ci``, ``p_a_better`` (share of resamples
        where a > b), ``n_boot``, ``n_units`` (rows or groups resampled) and ``n_positives``.
    """
    y = np.asarray(y).astype("int64").ravel()
    a, b = np.asarray(scores_a, dtype="float64").ravel(), np.asarray(scores_b, dtype="float64").ravel()
    if not len(y) == len(a) == len(b):
        raise ValueError(f"lengths differ: y {len(y)}, scores_a {len(a)}, scores_b {len(b)}")
    if y.sum() == 0:
        raise ValueError("no positive row: nothing to compare")
    rng = np.random.default_rng(seed)
    if groups is None:
        unit_positives, rows_of = y, None
    else:
        codes, uniques = pd.factorize(pd.Series(np.asarray(groups)))
        if (codes < 0).any():
            raise ValueError("groups contain missing values")
        by_group = np.argsort(codes, kind="stable")  # row ids, group after group
        sizes = np.bincount(codes, minlength=len(uniques))
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        unit_positives = np.bincount(codes, weights=y, minlength=len(uniques))
        rows_of = (by_group, starts, sizes)
    samples_a, samples_b = np.empty(n_boot), np.empty(n_boot)
    for k in range(n_boot):
        draw = _draw(rng, len(unit_positives), unit_positives)
        if rows_of is None:
            idx = draw
        else:  # every row of each drawn group: offsets 0..size-1 from the group's start
            by_group, starts, sizes = rows_of
            n = sizes[draw]
            offsets = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
            idx = by_group[np.repeat(starts[draw], n) + offsets]
        samples_a[k], samples_b[k] = metric(y[idx], a[idx]), metric(y[idx], b[idx])
    metric_a, metric_b = float(metric(y, a)), float(metric(y, b))
    diffs, ratios = samples_a - samples_b, _ratio(samples_a, samples_b)
    out = {
        "metric_a": metric_a,
        "metric_b": metric_b,
        "diff": metric_a - metric_b,
        "diff_ci": _percentiles(diffs),
        "ratio": float(_ratio(metric_a, metric_b)),
        "ratio_ci": _percentiles(ratios),
        "p_a_better": float(np.mean(diffs > 0)),
        "n_boot": n_boot,
        "n_units": len(unit_positives),
        "n_positives": int(y.sum()),
    }
    if keep_samples:
        out["samples_a"], out["samples_b"] = samples_a, samples_b
    return out


def metric_by_group(y, scores, group_labels, metric: Metric = average_precision) -> pd.DataFrame:
    """Per-fraud-type figures: for each type T, ``metric`` over the legitimate rows plus the frauds
    of type T (frauds of other types are left out, so each type competes with all legit traffic).

    Args:
        y: 0/1 labels.
        scores: model scores.
        group_labels: per row, the fraud type (its value on legitimate rows is ignored).
        metric: ``metric(y, scores) -> float``.

    Returns:
        One row per fraud type found among the positives (index ``group``), with columns
        ``metric`` and ``n_positives``, most frequent type first.
    """
    y = np.asarray(y).astype("int64").ravel()
    s = np.asarray(scores, dtype="float64").ravel()
    labels = pd.Series(np.asarray(group_labels)).astype("string").fillna("<NA>").to_numpy(dtype=object)
    if not len(y) == len(s) == len(labels):
        raise ValueError(f"lengths differ: y {len(y)}, scores {len(s)}, group_labels {len(labels)}")
    legit = y == 0
    rows = []
    for group in pd.unique(labels[~legit]):
        mask = legit | (labels == group)
        rows.append(
            {
                "group": group,
                "metric": float(metric(y[mask], s[mask])),
                "n_positives": int((~legit & mask).sum()),
            }
        )
    out = pd.DataFrame(rows, columns=["group", "metric", "n_positives"]).set_index("group")
    return out.sort_values("n_positives", ascending=False, kind="stable")


def mean_ci(values, confidence: float = 0.95) -> dict:
    """Mean of per-seed or per-window results with a Student-t interval.

    Returns ``mean``, ``lo``, ``hi``, ``std`` (sample standard deviation) and ``n``; with a single
    value the interval and std are NaN (one run says nothing about the spread).
    """
    from scipy import stats

    v = np.asarray(values, dtype="float64").ravel()
    if len(v) == 0 or not np.isfinite(v).all():
        raise ValueError("mean_ci needs at least one value, all finite")
    mean = float(v.mean())
    if len(v) == 1:
        return {"mean": mean, "lo": float("nan"), "hi": float("nan"), "std": float("nan"), "n": 1}
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1)) * std / math.sqrt(len(v))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "std": std, "n": len(v)}
