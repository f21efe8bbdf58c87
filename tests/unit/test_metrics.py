"""riskops.training.metrics against hand-computed examples and sklearn."""

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from riskops.training.metrics import (
    _top_k_count,
    expected_calibration_error,
    policy_report,
    precision_at_top,
    recall_at_fpr,
    score_metrics,
    thresholds_for_policy,
)


def _hand_example():
    """200 legit rows (198 low scores + 2 high ones) and 7 frauds (one hidden among the low scores).

    Scores, highest first: .99 F, .97 F, .95 L, .90 F, .85 L, .80 F, .70 F, .60 F, .197 L, .196 L, ...
    """
    legit = [i / 1000 for i in range(198)] + [0.95, 0.85]
    fraud = [0.99, 0.97, 0.90, 0.80, 0.70, 0.60, 0.10]
    y = np.array([0] * len(legit) + [1] * len(fraud))
    s = np.array(legit + fraud)
    return y, s


def test_recall_at_1pct_fpr_hand_computed():
    y, s = _hand_example()
    # FPR <= 1% allows 2 of 200 legit rows: flag down to .60 -> 6 of 7 frauds, both high legit rows
    recall, threshold = recall_at_fpr(y, s, 0.01)
    assert recall == pytest.approx(6 / 7)
    assert threshold == pytest.approx(0.60)
    # FPR <= 0.5% allows 1 legit row: flag down to .90 -> 3 of 7 (no interpolation towards .85)
    recall, threshold = recall_at_fpr(y, s, 0.005)
    assert recall == pytest.approx(3 / 7)
    assert threshold == pytest.approx(0.90)
    # FPR 0 allowed: only the two frauds above the first legit row
    assert recall_at_fpr(y, s, 0.0)[0] == pytest.approx(2 / 7)
    m = score_metrics(y, s)
    assert m["recall_at_1pct_fpr"] == pytest.approx(6 / 7)
    assert m["threshold_at_1pct_fpr"] == pytest.approx(0.60)


def test_recall_at_fpr_when_nothing_can_be_flagged():
    # the highest score is legit, and there are only 10 legit rows: any flag costs 10% FPR
    y = np.array([0] * 10 + [1])
    s = np.array([0.9] + [0.1] * 9 + [0.5])
    assert recall_at_fpr(y, s, 0.01)[0] == 0.0


def test_precision_at_review_budget_hand_computed():
    y, s = _hand_example()  # n = 207
    # 1% of 207 -> ceil(2.07) = 3 rows: .99 F, .97 F, .95 L
    assert score_metrics(y, s, review_budget=0.01)["precision_at_review_budget"] == pytest.approx(2 / 3)
    # 5% -> ceil(10.35) = 11 rows: 6 frauds above .197, then .197/.196/.195 legit
    assert score_metrics(y, s, review_budget=0.05)["precision_at_review_budget"] == pytest.approx(6 / 11)


def test_precision_at_top_counts_ties_fractionally_and_ignores_row_order():
    y = np.array([1, 1, 0, 0, 0])
    s = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    # top 2 = the .9 fraud + one of three rows tied at .5 (one of which is fraud): (1 + 1/3) / 2
    assert precision_at_top(y, s, 0.4) == pytest.approx(2 / 3)
    perm = np.array([4, 2, 0, 3, 1])
    assert precision_at_top(y[perm], s[perm], 0.4) == pytest.approx(2 / 3)


def test_top_k_count_has_no_float_noise():
    assert 0.07 * 100 > 7  # the trap: 7.000000000000001
    assert _top_k_count(100, 0.07) == 7
    assert _top_k_count(300, 0.01) == 3
    assert _top_k_count(207, 0.01) == 3
    assert _top_k_count(10, 0.01) == 1


def test_ece_hand_computed():
    s = np.array([0.05, 0.05, 0.15, 0.95, 0.95, 1.0])
    y = np.array([0, 1, 0, 1, 1, 1])
    # bin [0, .1): 2 rows, rate .5 vs mean .05 -> .45; bin [.1, .2): 1 row, 0 vs .15 -> .15;
    # bin [.9, 1.0]: 3 rows, 1 vs .9667 -> .0333.  ECE = (2*.45 + .15 + 3*.0333) / 6
    expected = (2 * 0.45 + 0.15 + 3 * (1 - (0.95 + 0.95 + 1.0) / 3)) / 6
    assert expected_calibration_error(y, s) == pytest.approx(expected)
    assert score_metrics(y, s)["ece"] == pytest.approx(expected)
    # perfectly calibrated bins -> 0
    assert expected_calibration_error(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.0)


def test_ece_is_nan_for_scores_that_are_not_probabilities():
    y = np.array([0, 1, 0, 1])
    m = score_metrics(y, np.array([-2.0, 3.0, -1.0, 5.0]))
    assert math.isnan(m["ece"]) and math.isnan(m["brier"])
    assert m["roc_auc"] == 1.0
    assert "not in [0, 1]" in m["note"]


def test_aucs_match_sklearn():
    rng = np.random.default_rng(3)
    y = (rng.random(3000) < 0.05).astype(int)
    s = np.clip(rng.normal(0.3 + 0.3 * y, 0.15), 0, 1)
    s[:50] = 0.5  # some ties
    m = score_metrics(y, s)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, s))
    assert m["n"] == 3000 and m["positives"] == int(y.sum())
    assert m["brier"] == pytest.approx(np.mean((s - y) ** 2))
    assert "note" not in m


@pytest.mark.parametrize("label", [0, 1])
def test_single_class_gives_nan_with_a_note(label):
    y = np.full(50, label)
    s = np.linspace(0, 1, 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no sklearn UndefinedMetricWarning either
        m = score_metrics(y, s)
    for k in ("roc_auc", "pr_auc", "recall_at_1pct_fpr"):
        assert math.isnan(m[k]), k
    assert "single class" in m["note"]
    assert m["precision_at_review_budget"] == float(label)
    assert m["positives"] == 50 * label


def test_empty_and_malformed_inputs():
    m = score_metrics([], [])
    assert m["n"] == 0 and math.isnan(m["pr_auc"]) and "no rows" in m["note"]
    with pytest.raises(ValueError, match="scores has"):
        score_metrics([0, 1], [0.1])
    with pytest.raises(ValueError, match="non-finite"):
        score_metrics([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="binary"):
        score_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="review_budget"):
        score_metrics([0, 1], [0.1, 0.2], review_budget=0)


# ------------------------------------------------------------------------------ policy thresholds


def test_policy_thresholds_hand_computed_and_non_monotone_precision():
    # 20 rows, scores 1.0, .95, ..., labels top-down: F L F F F F F F F F, then 10 legit.
    s = np.linspace(1.0, 0.05, 20)
    y = np.array([1, 0] + [1] * 8 + [0] * 10)
    # cumulative precision top-down: 1, .5, .67, .75, .8, .83, .86, .875, .89, .9, .82, .75, ...
    th = thresholds_for_policy(y, s, target_review_rate=0.6, target_block_precision=0.85)
    assert th["review"] == pytest.approx(s[11])  # k = ceil(0.6 * 20) = 12 -> the 12th highest score
    # lowest score whose flagged set reaches .85 is row 9 (9/10), although row 1 (1/2) fails above it
    assert th["block"] == pytest.approx(s[9])
    assert th["block"] >= th["review"]


def test_block_never_below_review():
    s = np.linspace(1.0, 0.05, 20)
    y = np.array([1, 0] + [1] * 8 + [0] * 10)
    # review at the top 2 rows; precision >= .85 also holds lower, but block is kept >= review
    th = thresholds_for_policy(y, s, target_review_rate=0.1, target_block_precision=0.85)
    assert th["review"] == pytest.approx(s[1])
    assert th["block"] >= th["review"]
    assert policy_report(y, s, th)["block_precision"] >= 0.85 or th["block"] > s.max()


def test_policy_on_realistic_validation_scores_meets_the_block_target():
    rng = np.random.default_rng(11)
    n = 20_000
    y = (rng.random(n) < 0.02).astype(int)
    s = np.where(y == 1, rng.beta(5, 2, n), rng.beta(1, 12, n))
    th = thresholds_for_policy(y, s, target_review_rate=0.02, target_block_precision=0.9)
    assert th["block"] >= th["review"]
    rep = policy_report(y, s, th)
    assert rep["block_precision"] >= 0.9
    assert (s >= th["review"]).mean() == pytest.approx(0.02, abs=1e-4)
    assert rep["flag_rate"] == pytest.approx((s >= th["review"]).mean())
    # lowest such threshold: one distinct score lower, precision drops below the target (or review)
    lower = s[s < th["block"]].max()
    assert lower < th["review"] or y[s >= lower].mean() < 0.9


def test_policy_without_any_reachable_precision_blocks_nothing():
    y = np.zeros(100, dtype=int)
    s = np.linspace(0, 1, 100)
    with pytest.warns(UserWarning, match="no threshold reaches"):
        th = thresholds_for_policy(y, s)
    assert th["block"] > s.max() and th["block"] >= th["review"]
    assert math.isfinite(th["block"])  # serving and policy.json need a number
    assert policy_report(y, s, th)["block_rate"] == 0.0


def test_policy_rejects_bad_arguments():
    with pytest.raises(ValueError, match="empty"):
        thresholds_for_policy([], [])
    with pytest.raises(ValueError, match="target_review_rate"):
        thresholds_for_policy([0, 1], [0.1, 0.9], target_review_rate=0)
    with pytest.raises(ValueError, match="target_block_precision"):
        thresholds_for_policy([0, 1], [0.1, 0.9], target_block_precision=1.5)
