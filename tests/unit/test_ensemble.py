"""Rank ensembles: weights on the simplex, percentiles against validation, weight choice."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from riskops.training.ensemble import RankEnsemble, choose_ensemble_weights, fit_rank_ensemble, simplex_grid


def test_simplex_grid_covers_every_weight_vector_once():
    grid = simplex_grid(3, 0.1)
    assert len(grid) == 66  # C(10 + 2, 2)
    assert len(set(grid)) == len(grid)
    assert all(np.isclose(sum(w), 1.0) and min(w) >= 0 for w in grid)
    assert (1.0, 0.0, 0.0) in grid and (0.0, 0.0, 1.0) in grid
    with pytest.raises(ValueError, match="divide 1"):
        simplex_grid(2, 0.3)


def _three_models(n: int = 4000, seed: int = 0):
    """y plus three noisy views of a latent risk, on wildly different scales."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.05).astype(int)
    latent = y * 1.5
    return y, {
        "a": latent + rng.normal(size=n),  # raw
        "b": np.exp(latent + rng.normal(size=n)) * 1000,  # monotone transform, other scale
        "noise": rng.normal(size=n),  # no signal at all
    }


def test_equal_rank_average_beats_each_informative_member_and_is_scale_free():
    y, val = _three_models(seed=1)
    _, test = _three_models(seed=2)
    y_test = _three_models(seed=2)[0]
    pair = {k: val[k] for k in ("a", "b")}
    ens = fit_rank_ensemble(pair)
    assert ens.weights == {"a": 0.5, "b": 0.5}
    s = ens({k: test[k] for k in pair})
    assert s.min() >= 0 and s.max() <= 1
    ap = average_precision_score(y_test, s)
    # the two views carry independent noise, so averaging their ranks helps
    assert ap > max(average_precision_score(y_test, test["a"]), average_precision_score(y_test, test["b"]))
    # ranks, not raw scores: rescaling one member does not change the ensemble
    rescaled = fit_rank_ensemble({"a": val["a"], "b": val["b"] / 1000})(
        {"a": test["a"], "b": test["b"] / 1000}
    )
    np.testing.assert_allclose(rescaled, s)


def test_chosen_weights_drop_the_uninformative_model():
    y, val = _three_models(seed=3)
    ens = choose_ensemble_weights(val, y, step=0.1)
    assert ens.weights["noise"] <= 0.1
    assert ens.weights["a"] > 0 and ens.weights["b"] > 0
    assert len(ens.table) == 66
    best = max(row["pr_auc"] for row in ens.table)
    pcts = ens(val)
    assert average_precision_score(y, pcts) == pytest.approx(best)


def test_bad_inputs_name_the_problem():
    y, val = _three_models()
    with pytest.raises(ValueError, match="both classes"):
        choose_ensemble_weights(val, np.zeros_like(y))
    with pytest.raises(ValueError, match="sum to 1"):
        RankEnsemble({"a": 0.7, "b": 0.7}, {"a": val["a"], "b": val["b"]})
    with pytest.raises(ValueError, match="no reference"):
        RankEnsemble({"a": 1.0}, {})
    ens = fit_rank_ensemble({"a": val["a"], "b": val["b"]})
    with pytest.raises(ValueError, match=r"missing for \['b'\]"):
        ens({"a": val["a"]})
