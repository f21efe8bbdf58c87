"""Autoencoder anomaly detector and the rank blend with a supervised score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from riskops.training.anomaly import (
    AnomalyDetector,
    AutoencoderConfig,
    blend,
    choose_blend_weight,
    fit_autoencoder,
)


def _normal(n: int, seed: int) -> pd.DataFrame:
    """Correlated normal traffic: x2 ~ x0 + x1, amount ~ lognormal tied to x0, two channels."""
    rng = np.random.default_rng(seed)
    x0, x1 = rng.normal(size=n), rng.normal(size=n)
    return pd.DataFrame(
        {
            "x0": x0,
            "x1": x1,
            "x2": x0 + x1 + 0.05 * rng.normal(size=n),
            "amount": np.exp(3 + 0.5 * x0 + 0.1 * rng.normal(size=n)),
            "channel": rng.choice(["web", "app"], n),
        }
    )


CFG = AutoencoderConfig(hidden=(16, 3), max_epochs=25, batch_size=128, lr=3e-3, max_rows=None)


@pytest.fixture(scope="module")
def detector():
    return fit_autoencoder(_normal(3000, 0), CFG)


def _outliers(n: int, seed: int) -> pd.DataFrame:
    out = _normal(n, seed)
    out["x2"] = -(out["x0"] + out["x1"])  # breaks the learned correlation, marginals look normal
    return out


def test_planted_outliers_score_above_normal(detector):
    normal, odd = _normal(500, 1), _outliers(50, 2)
    s_norm, s_odd = detector.score(normal), detector.score(odd)
    y = np.r_[np.zeros(500), np.ones(50)]
    assert roc_auc_score(y, np.r_[s_norm, s_odd]) > 0.95
    assert np.median(s_odd) > 5 * np.median(s_norm)
    assert np.all(s_norm >= 0)


def test_save_load_round_trip(detector, tmp_path):
    X = _outliers(20, 3)
    loaded = AnomalyDetector.load(detector.save(tmp_path / "ae"))
    np.testing.assert_allclose(loaded.score(X), detector.score(X), rtol=1e-5)


def test_arrays_are_accepted():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    det = fit_autoencoder(X, AutoencoderConfig(hidden=(8, 2), max_epochs=3, max_rows=None))
    assert det.score(X[:5]).shape == (5,)


def test_blend_is_rank_based():
    sup = np.array([0.1, 0.2, 0.3, 0.4])
    ano = np.array([400.0, 300.0, 200.0, 100.0])  # any scale: only ranks matter
    assert np.allclose(blend(sup, ano, 0.0), [0.125, 0.375, 0.625, 0.875])
    assert np.allclose(blend(sup, ano, 1.0), [0.875, 0.625, 0.375, 0.125])
    assert np.allclose(blend(sup, ano, 0.5), 0.5)
    # against a reference, one row scores the same alone as in a batch
    ref = (sup, ano)
    assert blend(sup[:1], ano[:1], 0.3, ref)[0] == pytest.approx(blend(sup, ano, 0.3, ref)[0])
    with pytest.raises(ValueError):
        blend(sup, ano, 1.5)


def test_reference_percentiles_stay_strictly_increasing_beyond_the_reference():
    ref = np.linspace(0.0, 1.0, 11)
    x = np.array([-5.0, -0.1, 0.05, 0.5, 0.95, 1.2, 3.0])
    pct = blend(x, x, 0.0, (ref, ref))
    assert np.all(np.diff(pct) > 0) and pct.min() > 0 and pct.max() < 1
    assert pct[3] == pytest.approx(0.5)


def test_blend_weight_chosen_on_validation():
    rng = np.random.default_rng(0)
    n = 4000
    y = (rng.random(n) < 0.05).astype(int)
    # two independent noisy views of the same fraud signal: the blend beats either one alone
    sup = rng.normal(size=n) + 2.0 * y
    ano = rng.normal(size=n) + 2.0 * y
    chosen = choose_blend_weight(sup, ano, y)
    assert 0.25 <= chosen.weight <= 0.75
    assert chosen.table[chosen.weight] > max(chosen.table[0.0], chosen.table[1.0])
    # a useless anomaly score gets (almost) no weight
    useless = choose_blend_weight(sup, rng.normal(size=n), y)
    assert useless.weight <= 0.15
    out = chosen(sup[:10], ano[:10])
    assert out.shape == (10,) and np.all((out >= 0) & (out <= 1))
