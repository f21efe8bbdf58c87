"""Calibration: ECE on hand examples, temperature scaling, isotonic, choice by validation NLL."""

from __future__ import annotations

import numpy as np
import pytest

from riskops.training.calibration import (
    IsotonicCalibrator,
    choose_calibrator,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability_curve,
    reliability_plot,
)


def test_ece_hand_examples():
    # perfectly calibrated: 10 rows at 0.2 with 2 frauds; 10 rows at 0.8 with 8 frauds
    y = [1, 1] + [0] * 8 + [1] * 8 + [0] * 2
    p = [0.2] * 10 + [0.8] * 10
    assert expected_calibration_error(y, p) == pytest.approx(0.0)
    # all 0.9, half fraud: one bin, gap 0.4
    assert expected_calibration_error([1, 0, 1, 0], [0.9] * 4) == pytest.approx(0.4)
    # two bins: {0.05, 0.05} both legit -> gap 0.05; {0.95, 0.95} one fraud -> gap 0.45; weights 1/2
    assert expected_calibration_error([0, 0, 1, 0], [0.05, 0.05, 0.95, 0.95]) == pytest.approx(0.25)
    # 1.0 lands in the last bin, not an 11th
    assert expected_calibration_error([1], [1.0]) == pytest.approx(0.0)


def test_reliability_curve_and_plot(tmp_path):
    y = np.array([0, 1, 0, 1])
    p = np.array([0.1, 0.15, 0.9, 0.95])
    c = reliability_curve(y, p)
    assert c["count"][1] == 2 and c["count"][9] == 2
    assert c["fraud_rate"][1] == pytest.approx(0.5) and c["mean_predicted"][9] == pytest.approx(0.925)
    out = reliability_plot({"toy": (y, p)}, tmp_path / "rel.png")
    assert out.exists() and out.read_bytes()[:4] == b"\x89PNG"


def _miscalibrated(n: int, seed: int, scale: float = 4.0):
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(-2.0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-true_logit))).astype(int)
    return true_logit * scale, y  # over-confident logits: temperature should be ~scale


def test_temperature_lowers_nll_on_overconfident_toy():
    z, y = _miscalibrated(5000, 0)
    cal = fit_temperature(z, y)
    assert 3.0 < cal.temperature < 5.0
    before = nll(y, 1 / (1 + np.exp(-z)))
    after = nll(y, cal.transform_logits(z))
    assert after < before - 0.05
    z_t, y_t = _miscalibrated(5000, 1)  # and on fresh data
    assert nll(y_t, cal.transform_logits(z_t)) < nll(y_t, 1 / (1 + np.exp(-z_t)))
    # ranking is unchanged
    assert np.array_equal(np.argsort(cal.transform_logits(z)), np.argsort(z))


def test_platt_fixes_a_prior_shift():
    z, y = _miscalibrated(5000, 0, scale=1.0)
    shifted = z + 3.0  # what class weights / subsampling do to the logits
    assert fit_temperature(shifted, y, with_bias=True).bias == pytest.approx(-3.0, abs=0.4)


def test_isotonic_is_monotone_and_bounded():
    rng = np.random.default_rng(0)
    s = rng.normal(size=2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-2 * s))).astype(int)
    iso = IsotonicCalibrator().fit(s, y)
    grid = np.linspace(-6, 6, 500)
    out = iso.transform(grid)
    assert np.all(np.diff(out) >= 0) and out.min() >= 0 and out.max() <= 1


def test_choose_calibrator_by_cross_fitted_nll():
    z, y = _miscalibrated(4000, 0)
    probs = 1 / (1 + np.exp(-z))
    choice = choose_calibrator(probs, y, scale="prob")
    assert set(choice.cv_nll) == {"none", "temperature", "platt", "isotonic"}
    assert choice.name == min(choice.cv_nll, key=choice.cv_nll.get) != "none"
    z_t, y_t = _miscalibrated(4000, 1)
    p_t = 1 / (1 + np.exp(-z_t))
    assert nll(y_t, choice.transform(p_t)) < nll(y_t, p_t)
    assert expected_calibration_error(y_t, choice.transform(p_t)) < expected_calibration_error(y_t, p_t)
    # unbounded scores (e.g. anomaly scores) work on the "score" scale
    assert choose_calibrator(z, y, scale="score").transform(z).max() <= 1.0
    with pytest.raises(ValueError, match="both classes"):
        choose_calibrator(probs, np.zeros_like(y))
