"""A real hyper-parameter search for LightGBM, so the transformer is compared with a tuned tree.

`tune_lightgbm` runs an optuna study (seeded TPE sampler) over the usual LightGBM knobs. Each
trial trains with early stopping on the validation set and is scored by the validation average
precision (PR-AUC, sklearn's definition) at its best iteration; the booster of the best trial is
kept. The validation set therefore chooses both the trial and its number of rounds: report test
figures on a later period that neither saw.

Determinism: trials run one after another, LightGBM runs with ``deterministic``/``force_row_wise``
and seeds derived from ``seed``, so the same data, seed and ``n_jobs`` give the same trials and the
same booster (a ``timeout_s`` can stop the study after a different number of trials).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

# LightGBM's OpenMP threads busy-wait between parallel regions by default, which is many times
# slower on shared cores (see riskops.training.baselines). Set before lightgbm is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

FIXED_PARAMS: dict = {
    "objective": "binary",
    "metric": "average_precision",  # early stopping reads LightGBM's AP; the trial score is sklearn's
    "deterministic": True,
    "force_row_wise": True,
    "verbosity": -1,
}


@dataclass
class TunedLightGBM:
    """The booster of the best trial and what the study found.

    Attributes:
        booster: the fitted ``lightgbm.Booster`` of the best trial.
        best_iteration: its early-stopped number of rounds (used by `predict_scores`).
        best_params: the searched parameters of the best trial (optuna's names).
        params: every LightGBM parameter the best booster was trained with.
        best_val_pr_auc: validation average precision of the best booster.
        n_trials: trials completed.
        columns: feature columns, in training order.
        categories: per categorical column, the categories seen in training.
        trial_values: validation PR-AUC of every completed trial, in trial order.
    """

    booster: object
    best_iteration: int
    best_params: dict
    params: dict
    best_val_pr_auc: float
    n_trials: int
    columns: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)
    trial_values: list[float] = field(default_factory=list)

    def predict_scores(self, X: pd.DataFrame) -> np.ndarray:
        """Fraud scores (probabilities, higher = riskier) for the rows of ``X``."""
        raw = self.booster.predict(
            _prepare(X, self.columns, self.categories), num_iteration=self.best_iteration
        )
        return np.asarray(raw, dtype="float64")


def _prepare(X: pd.DataFrame, columns: list[str], categories: dict[str, list[str]]) -> pd.DataFrame:
    """The model's columns; categoricals with the training categories (an unseen value becomes NaN)."""
    missing = [c for c in columns if c not in X.columns]
    if missing:
        raise ValueError(f"X is missing columns {missing[:5]}")
    out = X[columns].copy()
    for name, cats in categories.items():
        out[name] = pd.Categorical(out[name].astype("string"), categories=cats)
    return out


def _labels(y, n: int, what: str) -> np.ndarray:
    arr = np.asarray(y).astype("int64").ravel()
    if arr.size != n:
        raise ValueError(f"{what} has {arr.size} labels for {n} rows")
    if arr.min(initial=0) == arr.max(initial=0):
        raise ValueError(f"{what} needs both classes (average precision is undefined otherwise)")
    return arr


def _search_space(trial, neg_per_pos: float) -> dict:
    """One trial's LightGBM parameters (the ranges cover small and large fraud data sets)."""
    p = {
        "num_leaves": trial.suggest_int("num_leaves", 8, 256, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.005, 0.3, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 5, 500, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.4, 1.0),
        "bagging_freq": trial.suggest_int("bagging_freq", 0, 7),  # 0: no bagging
        "lambda_l1": trial.suggest_float("lambda_l1", 1e-8, 10.0, log=True),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-8, 10.0, log=True),
        # -1: no limit; shallow trees regularise when frauds are few
        "max_depth": trial.suggest_categorical("max_depth", [-1, 4, 6, 8, 12]),
        # from no reweighting up to balancing the classes
        "scale_pos_weight": trial.suggest_float("scale_pos_weight", 1.0, max(2.0, neg_per_pos), log=True),
    }
    if p["bagging_freq"] > 0:
        p["bagging_fraction"] = trial.suggest_float("bagging_fraction", 0.4, 1.0)
    return p


def tune_lightgbm(
    X_train: pd.DataFrame,
    y_train,
    X_val: pd.DataFrame,
    y_val,
    *,
    n_trials: int = 50,
    seed: int = 0,
    categorical: list[str] | None = None,
    n_jobs: int = 1,
    timeout_s: float | None = None,
    progress: bool = False,
    num_boost_round: int = 2000,
    early_stopping_rounds: int = 100,
) -> TunedLightGBM:
    """Search LightGBM's hyper-parameters with optuna, maximising validation PR-AUC.

    Args:
        X_train, y_train: training rows (numeric columns, plus the ``categorical`` ones) and 0/1 labels.
        X_val, y_val: validation rows for early stopping and for scoring the trials; both classes needed.
        n_trials: trials to run (fewer when ``timeout_s`` stops the study first).
        seed: seeds the TPE sampler and every LightGBM random choice.
        categorical: columns LightGBM treats as categories; their categories come from ``X_train``.
        n_jobs: LightGBM threads per trial (trials run one at a time, which keeps a seed reproducible).
        timeout_s: stop starting new trials after this many seconds.
        progress: show optuna's progress bar and per-trial log lines.
        num_boost_round, early_stopping_rounds: the rounds cap and early-stopping patience.

    Returns:
        The booster of the best trial with the study's summary (`TunedLightGBM`).
    """
    import lightgbm as lgb
    import optuna

    columns = list(X_train.columns)
    categorical = list(categorical or [])
    unknown = [c for c in categorical if c not in columns]
    if unknown:
        raise ValueError(f"categorical columns {unknown} are not in X_train")
    categories = {c: sorted(X_train[c].astype("string").dropna().unique().tolist()) for c in categorical}
    xt, xv = _prepare(X_train, columns, categories), _prepare(X_val, columns, categories)
    yt, yv = _labels(y_train, len(xt), "y_train"), _labels(y_val, len(xv), "y_val")
    neg_per_pos = float((yt == 0).sum() / (yt == 1).sum())
    best: dict = {"value": -np.inf}

    def objective(trial) -> float:
        params = {**FIXED_PARAMS, **_search_space(trial, neg_per_pos), "seed": seed, "num_threads": n_jobs}
        # Fresh datasets per trial: binning depends on parameters (min_child_samples pre-filters features).
        dtrain = lgb.Dataset(xt, label=yt, categorical_feature=categorical or "auto")
        dval = lgb.Dataset(xv, label=yv, reference=dtrain)
        booster = lgb.train(
            params,
            dtrain,
            num_boost_round=num_boost_round,
            valid_sets=[dval],
            valid_names=["val"],
            callbacks=[lgb.early_stopping(early_stopping_rounds, first_metric_only=True, verbose=False)],
        )
        iteration = booster.best_iteration or booster.current_iteration()
        value = float(average_precision_score(yv, booster.predict(xv, num_iteration=iteration)))
        trial.set_user_attr("best_iteration", iteration)
        if value > best["value"]:  # strict: ties keep the earlier trial, as study.best_trial does
            best.update(value=value, booster=booster, iteration=iteration, params=params, trial=trial.params)
        return value

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO if progress else optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        study.optimize(objective, n_trials=n_trials, timeout=timeout_s, show_progress_bar=progress)
    finally:
        optuna.logging.set_verbosity(verbosity)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise RuntimeError("no optuna trial completed (timeout too short?)")
    return TunedLightGBM(
        booster=best["booster"],
        best_iteration=best["iteration"],
        best_params=dict(best["trial"]),
        params=best["params"],
        best_val_pr_auc=best["value"],
        n_trials=len(done),
        columns=columns,
        categories=categories,
        trial_values=[float(t.value) for t in done],
    )
