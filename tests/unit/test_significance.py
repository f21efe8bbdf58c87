"""riskops.training.significance: paired bootstrap, per-type figures, t-intervals."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from riskops.training.significance import average_precision, mean_ci, metric_by_group, paired_bootstrap


def scored(n: int = 1500, seed: int = 0, signal_a: float = 1.0, signal_b: float = 1.0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.08).astype(int)
    noise = rng.normal(size=(2, n))
    return y, signal_a * y + noise[0], signal_b * y + noise[1]


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_is_sklearns(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(300) < 0.2).astype(int)
    s = rng.integers(0, 12, 300) / 4.0  # many tied scores
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert np.isnan(average_precision(np.zeros(5), np.arange(5)))


def test_interval_contains_the_point_estimate():
    y, a, b = scored(signal_a=1.2, signal_b=1.0)
    r = paired_bootstrap(y, a, b, n_boot=300)
    assert r["metric_a"] == pytest.approx(average_precision_score(y, a))
    assert r["diff"] == pytest.approx(r["metric_a"] - r["metric_b"])
    assert r["diff_ci"][0] <= r["diff"] <= r["diff_ci"][1]
    assert r["ratio_ci"][0] <= r["ratio"] <= r["ratio_ci"][1]
    assert r["diff_ci"][0] < r["diff_ci"][1]
    assert r["n_units"] == len(y) and r["n_positives"] == y.sum()


def test_identical_scores_differ_by_exactly_zero():
    y, a, _ = scored()
    r = paired_bootstrap(y, a, a.copy(), n_boot=200)
    assert r["diff"] == 0 and r["diff_ci"] == (0.0, 0.0)
    assert r["ratio"] == 1 and r["ratio_ci"] == (1.0, 1.0)
    assert r["p_a_better"] == 0.0


def test_a_clearly_better_scorer_has_an_interval_above_zero():
    y, a, b = scored(signal_a=3.0, signal_b=0.5)
    r = paired_bootstrap(y, a, b, n_boot=300)
    assert r["diff_ci"][0] > 0 and r["ratio_ci"][0] > 1
    assert r["p_a_better"] == 1.0
    # and the other way round
    assert paired_bootstrap(y, b, a, n_boot=300)["diff_ci"][1] < 0


def test_same_seed_same_intervals():
    y, a, b = scored(signal_a=1.2)
    assert paired_bootstrap(y, a, b, n_boot=100, seed=4) == paired_bootstrap(y, a, b, n_boot=100, seed=4)
    assert paired_bootstrap(y, a, b, n_boot=100, seed=4) != paired_bootstrap(y, a, b, n_boot=100, seed=5)


def test_block_bootstrap_keeps_groups_whole():
    sizes = np.array([3, 5, 8, 2, 7, 4, 6, 1, 9, 5])
    group = np.repeat(np.arange(len(sizes)), sizes)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(group))  # groups need not be contiguous rows
    group = group[perm]
    y = (rng.random(len(group)) < 0.3).astype(int)

    def whole_groups(_y, s):  # s carries the group id: 1.0 when every drawn group came with all its rows
        counts = np.bincount(s.astype(int), minlength=len(sizes))
        return float(np.all(counts % sizes == 0))

    def n_groups(_y, s):
        return float(len(np.unique(s)))

    gid = group.astype(float)
    for kwargs, expect_whole in (({"groups": group}, True), ({}, False)):
        r = paired_bootstrap(y, gid, gid, metric=whole_groups, n_boot=200, keep_samples=True, **kwargs)
        assert bool(np.all(r["samples_a"] == 1.0)) is expect_whole
    r = paired_bootstrap(y, gid, gid, metric=n_groups, n_boot=200, keep_samples=True, groups=group)
    assert r["n_units"] == len(sizes)
    assert r["samples_a"].max() <= len(sizes) and r["samples_a"].min() >= 1
    assert r["samples_a"].mean() < len(sizes) * 0.8  # drawing with replacement repeats groups (~63% distinct)


def test_every_resample_holds_a_positive():
    y = np.zeros(60, dtype=int)
    y[17] = 1  # one fraud: ~36% of row resamples miss it and must be redrawn
    s = np.arange(60.0)
    r = paired_bootstrap(y, s, -s, metric=lambda yy, _s: float(yy.sum()), n_boot=300, keep_samples=True)
    assert r["samples_a"].min() >= 1
    with pytest.raises(ValueError, match="no positive"):
        paired_bootstrap(np.zeros(10), s[:10], s[:10])


def test_metric_by_group_scores_each_type_against_all_legit_rows():
    labels = np.array(["none"] * 6 + ["card_testing"] * 3 + ["account_takeover"] * 2)
    y = (labels != "none").astype(int)
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.9, 0.8, 0.7, 0.35, 0.05])
    out = metric_by_group(y, scores, labels)
    assert list(out.index) == ["card_testing", "account_takeover"]
    assert out["n_positives"].tolist() == [3, 2]
    assert out.loc["card_testing", "metric"] == 1.0  # ranked above every legit row
    ato = np.r_[y[:6], y[9:]], np.r_[scores[:6], scores[9:]]
    assert out.loc["account_takeover", "metric"] == pytest.approx(average_precision_score(*ato))
    rows_seen = metric_by_group(y, scores, labels, metric=lambda yy, _s: float(len(yy)))
    assert rows_seen["metric"].tolist() == [9.0, 8.0]  # 6 legit + the type's own frauds


def test_mean_ci_is_the_student_t_interval():
    r = mean_ci([1.0, 2.0, 3.0])
    half = 4.302652729911275 / np.sqrt(3)  # t(0.975, df=2) * sd 1 / sqrt(3)
    assert (r["mean"], r["std"], r["n"]) == (2.0, 1.0, 3)
    assert r["lo"] == pytest.approx(2 - half) and r["hi"] == pytest.approx(2 + half)
    one = mean_ci([0.7])
    assert one["mean"] == 0.7 and np.isnan(one["lo"]) and np.isnan(one["hi"])
    with pytest.raises(ValueError):
        mean_ci([0.1, float("nan")])
