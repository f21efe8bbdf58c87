"""riskops.training.tuning: optuna search over LightGBM, scored by validation PR-AUC."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.metrics import average_precision_score

from riskops.training.tuning import TunedLightGBM, tune_lightgbm

FAST = {"n_trials": 5, "num_boost_round": 150, "early_stopping_rounds": 15}


def data(seed: int = 0):
    """A small imbalanced problem; 'shop' is a categorical column that carries signal."""
    X, y = make_classification(
        n_samples=1600, n_features=6, n_informative=3, weights=[0.9], flip_y=0.03, random_state=seed
    )
    X = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    rng = np.random.default_rng(seed)
    X["shop"] = np.where(y == 1, rng.choice(["a", "b"], len(y)), rng.choice(["b", "c", "d"], len(y)))
    return X.iloc[:1100], y[:1100], X.iloc[1100:].reset_index(drop=True), y[1100:]


@pytest.fixture(scope="module")
def tuned() -> tuple[TunedLightGBM, tuple]:
    split = data()
    return tune_lightgbm(*split, categorical=["shop"], seed=0, **FAST), split


def test_runs_every_trial_and_reports_the_best(tuned):
    model, _ = tuned
    assert model.n_trials == 5 and len(model.trial_values) == 5
    assert model.best_val_pr_auc == max(model.trial_values)
    assert {"num_leaves", "learning_rate", "min_child_samples", "lambda_l1", "max_depth"} <= set(
        model.best_params
    )
    assert 1 <= model.best_iteration <= FAST["num_boost_round"]


def test_best_pr_auc_is_the_validation_ap_of_the_returned_model(tuned):
    model, (_, _, X_val, y_val) = tuned
    recomputed = average_precision_score(y_val, model.predict_scores(X_val))
    assert model.best_val_pr_auc == pytest.approx(recomputed, abs=1e-12)


def test_same_seed_same_model_other_seed_other_search(tuned):
    model, split = tuned
    again = tune_lightgbm(*split, categorical=["shop"], seed=0, **FAST)
    assert again.best_params == model.best_params
    assert again.trial_values == model.trial_values
    np.testing.assert_array_equal(again.predict_scores(split[2]), model.predict_scores(split[2]))
    other = tune_lightgbm(*split, categorical=["shop"], seed=1, **FAST)
    assert other.trial_values != model.trial_values


def test_categories_are_fixed_from_training(tuned):
    model, (_, _, X_val, _) = tuned
    assert model.categories == {"shop": ["a", "b", "c", "d"]}
    rows = X_val.iloc[:20].copy()
    unseen, missing = rows.copy(), rows.copy()
    unseen["shop"] = "never-seen-shop"
    missing["shop"] = None
    np.testing.assert_array_equal(model.predict_scores(unseen), model.predict_scores(missing))
    # a caller's own category dtype (other order, extra values) and column order change nothing
    recoded = rows.copy()
    recoded["shop"] = pd.Categorical(rows["shop"], categories=["zz", "d", "c", "b", "a"])
    np.testing.assert_array_equal(
        model.predict_scores(recoded[rows.columns[::-1]]), model.predict_scores(rows)
    )
    # and the category matters to the model (it carries signal), so the checks above are not vacuous
    flipped = rows.copy()
    flipped["shop"] = np.where(rows["shop"].isin(["a"]), "d", "a")
    assert not np.array_equal(model.predict_scores(flipped), model.predict_scores(rows))


def test_bad_inputs_are_refused():
    X_train, y_train, X_val, y_val = data()
    with pytest.raises(ValueError, match="both classes"):
        tune_lightgbm(X_train, y_train, X_val, np.zeros(len(X_val)), categorical=["shop"], n_trials=1)
    with pytest.raises(ValueError, match="not in X_train"):
        tune_lightgbm(X_train, y_train, X_val, y_val, categorical=["nope"], n_trials=1)
