"""Evaluation metrics for fraud scores and the decision-policy thresholds serving uses.

Conventions shared by every function here:

* a *score* is "higher = riskier"; a transaction is flagged at threshold ``t`` when ``score >= t``;
* metrics are computed exactly at achievable operating points (no interpolation between them);
* degenerate inputs (one class only, no rows) never raise: metrics that need both classes are NaN
  and the result carries a ``note`` saying why. Mismatched lengths or non-finite scores do raise,
  because they are bugs upstream, not properties of the data.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

MAX_FPR = 0.01  # the operating point reported as recall_at_1pct_fpr
ECE_BINS = 10


def _as_arrays(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).ravel()
    s = np.asarray(scores, dtype="float64").ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values but scores has {s.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"scores contain {int((~np.isfinite(s)).sum())} non-finite value(s)")
    if y.size and not np.isin(y, (0, 1, True, False)).all():
        raise ValueError("y_true must be binary (0/1)")
    return y.astype("int64"), s


def _top_k_count(n: int, share: float) -> int:
    """ceil(share * n) without float noise (0.07 * 100 is 7.000000000000001), at least 1."""
    return max(1, math.ceil(round(share * n, 9)))


def recall_at_fpr(y: np.ndarray, s: np.ndarray, max_fpr: float = MAX_FPR) -> tuple[float, float]:
    """(recall, threshold) at the best achievable operating point whose FPR <= max_fpr.

    Exact and interpolation-free: the ROC curve (all distinct thresholds kept) lists every operating
    point the score can realise with a "score >= t" rule; tied scores move together, so no point
    needs a fraction of a tie. Among the points with FPR <= max_fpr we take the highest TPR (and
    its threshold). The point "flag nothing" (FPR 0, recall 0, threshold +inf) always qualifies, so
    a model that cannot flag anything at this FPR gets recall 0, not NaN. Needs both classes.
    """
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    ok = fpr <= max_fpr + 1e-12
    best = int(np.flatnonzero(ok)[np.argmax(tpr[ok])])
    return float(tpr[best]), float(thr[best])


def precision_at_top(y: np.ndarray, s: np.ndarray, share: float) -> float:
    """Precision among the top ``share`` of rows by score (k = ceil(share * n), at least 1 row).

    Ties straddling the cut are counted fractionally (each tied row gets the same share of the
    remaining slots), so the result does not depend on row order.
    """
    n = y.size
    k = _top_k_count(n, share)
    if k >= n:
        return float(y.mean())
    cut = np.sort(s)[::-1][k - 1]  # the k-th highest score
    above = s > cut
    tied = s == cut
    slots = k - int(above.sum())
    tp = y[above].sum() + slots * y[tied].mean()
    return float(tp / k)


def expected_calibration_error(y: np.ndarray, s: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE with ``bins`` equal-width bins on [0, 1]: sum_b (n_b / n) * |fraud rate_b - mean score_b|.

    Bins are [0, .1), [.1, .2), ..., [.9, 1.0] (the last one closed). Scores must be probabilities;
    scores outside [0, 1] give NaN (a rank score has no calibration to measure).
    """
    if y.size == 0 or s.min() < 0.0 or s.max() > 1.0:
        return float("nan")
    idx = np.minimum((s * bins).astype("int64"), bins - 1)
    counts = np.bincount(idx, minlength=bins)
    frac_pos = np.bincount(idx, weights=y, minlength=bins)
    mean_score = np.bincount(idx, weights=s, minlength=bins)
    used = counts > 0
    gap = np.abs(frac_pos[used] - mean_score[used]) / counts[used]
    return float(np.sum(counts[used] / y.size * gap))


def score_metrics(y_true, scores, review_budget: float = 0.01) -> dict:
    """The metrics every model is compared on.

    Returns a dict with:

    * ``roc_auc`` — area under the ROC curve;
    * ``pr_auc`` — average precision (sklearn's step-wise PR-AUC, no trapezoid optimism);
    * ``recall_at_1pct_fpr`` and ``threshold_at_1pct_fpr`` — see :func:`recall_at_fpr`;
    * ``precision_at_review_budget`` — precision among the top ``review_budget`` share of rows
      (what a review team with that capacity would see), see :func:`precision_at_top`;
    * ``ece`` — expected calibration error, 10 equal-width bins (NaN for non-probability scores);
    * ``brier`` — mean squared error of the score as a probability (NaN outside [0, 1]);
    * ``n``, ``positives``, ``review_budget``;
    * ``note`` — only when something could not be computed, saying why.

    Single-class input gives NaN for the metrics that need both classes, never an exception.
    """
    if not 0.0 < review_budget <= 1.0:
        raise ValueError(f"review_budget must be in (0, 1], got {review_budget}")
    y, s = _as_arrays(y_true, scores)
    n, pos = int(y.size), int(y.sum())
    nan = float("nan")
    out: dict = {
        "roc_auc": nan,
        "pr_auc": nan,
        "recall_at_1pct_fpr": nan,
        "threshold_at_1pct_fpr": nan,
        "precision_at_review_budget": nan,
        "ece": nan,
        "brier": nan,
        "n": n,
        "positives": pos,
        "review_budget": float(review_budget),
    }
    notes = []
    if n == 0:
        out["note"] = "no rows: every metric is NaN"
        return out

    out["precision_at_review_budget"] = precision_at_top(y, s, review_budget)
    out["ece"] = expected_calibration_error(y, s)
    if not math.isnan(out["ece"]):
        out["brier"] = float(np.mean((s - y) ** 2))
    else:
        notes.append("scores are not in [0, 1]: ece and brier are NaN (ranking metrics still valid)")

    if 0 < pos < n:
        out["roc_auc"] = float(roc_auc_score(y, s))
        out["pr_auc"] = float(average_precision_score(y, s))
        out["recall_at_1pct_fpr"], out["threshold_at_1pct_fpr"] = recall_at_fpr(y, s, MAX_FPR)
    else:
        only = "positive (fraud)" if pos == n else "negative (legitimate)"
        notes.append(
            f"single class: all {n} rows are {only}; roc_auc, pr_auc and recall_at_1pct_fpr "
            "need both classes and are NaN"
        )
    if notes:
        out["note"] = "; ".join(notes)
    return out


def thresholds_for_policy(
    y_true, scores, target_review_rate: float = 0.02, target_block_precision: float = 0.9
) -> dict[str, float]:
    """Decision thresholds for serving, set on a labelled validation set (never on test).

    * ``review`` — the score of the k-th highest row, k = ceil(target_review_rate * n): flagging
      ``score >= review`` sends the top ``target_review_rate`` share of traffic to review (more only
      when scores tie at the cut).
    * ``block`` — the lowest distinct score t >= ``review`` at which the rows with ``score >= t``
      have precision >= ``target_block_precision`` on this data. Because precision is computed on
      the whole flagged set, the target is met at ``block`` by construction. If no such t exists
      (too few frauds, a weak model, a single class), ``block`` is set just above the highest score
      seen, i.e. "block nothing that looked like this data", and a warning is issued.

    ``block >= review`` always: serving blocks at ``score >= block``, reviews at
    ``review <= score < block`` and approves the rest.
    """
    if not 0.0 < target_review_rate <= 1.0:
        raise ValueError(f"target_review_rate must be in (0, 1], got {target_review_rate}")
    if not 0.0 < target_block_precision <= 1.0:
        raise ValueError(f"target_block_precision must be in (0, 1], got {target_block_precision}")
    y, s = _as_arrays(y_true, scores)
    if y.size == 0:
        raise ValueError("cannot set policy thresholds on an empty validation set")

    order = np.argsort(-s, kind="stable")
    s_desc, y_desc = s[order], y[order]
    k = _top_k_count(y.size, target_review_rate)
    review = float(s_desc[min(k, y.size) - 1])

    # precision of {score >= t} for every distinct t: cumulative counts at the last row of each tie group
    last_of_group = np.r_[s_desc[1:] != s_desc[:-1], True]
    tp = np.cumsum(y_desc)[last_of_group]
    flagged = np.arange(1, y.size + 1)[last_of_group]
    thr = s_desc[last_of_group]
    ok = (tp / flagged >= target_block_precision - 1e-12) & (thr >= review)
    if ok.any():
        block = float(thr[ok].min())
    else:
        block = float(np.nextafter(s_desc[0], np.inf))
        warnings.warn(
            f"no threshold reaches block precision {target_block_precision} on {y.size} rows "
            f"({int(y.sum())} positive); block set above the highest score ({block:.6g})",
            stacklevel=2,
        )
    return {"review": review, "block": max(block, review)}


def policy_report(y_true, scores, thresholds: dict[str, float]) -> dict:
    """What a policy does on labelled data: rates and precisions of the review and block bands."""
    y, s = _as_arrays(y_true, scores)
    n, pos = max(int(y.size), 1), max(int(y.sum()), 1)
    review_t, block_t = float(thresholds["review"]), float(thresholds["block"])
    blocked = s >= block_t
    reviewed = (s >= review_t) & ~blocked
    flagged = blocked | reviewed

    def _prec(mask: np.ndarray) -> float:
        return float(y[mask].mean()) if mask.any() else float("nan")

    return {
        "review_threshold": review_t,
        "block_threshold": block_t,
        "block_rate": float(blocked.sum() / n),
        "review_rate": float(reviewed.sum() / n),
        "flag_rate": float(flagged.sum() / n),
        "block_precision": _prec(blocked),
        "review_precision": _prec(reviewed),
        "fraud_caught_by_block": float(y[blocked].sum() / pos),
        "fraud_caught_by_review_or_block": float(y[flagged].sum() / pos),
        "n": int(y.size),
        "positives": int(y.sum()),
    }
