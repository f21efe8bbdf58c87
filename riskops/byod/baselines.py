"""Baselines for a user's dataset: LightGBM and logistic regression on the model's numeric + categorical inputs."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from riskops.byod.train import MIN_CATEGORY_COUNT, vocabularies

LGB_GRID: tuple[dict, ...] = (
    {"num_leaves": 15, "learning_rate": 0.1, "min_data_in_leaf": 20},
    {"num_leaves": 63, "learning_rate": 0.05, "min_data_in_leaf": 200},
)


def _lgb_frame(X: pd.DataFrame, numeric: list[str], categorical: list[str], vocabs: dict) -> pd.DataFrame:
    out = X[numeric].astype("float64").copy()
    for c in categorical:
        out[c] = pd.Categorical(X[c].astype(str), categories=list(vocabs[c]))
    return out


def _ap(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def fit_lightgbm(fit, y_fit, val, y_val, numeric, categorical, grid=LGB_GRID, rounds=1000, patience=50):
    """A small grid, each point early-stopped on validation PR-AUC; the best point by validation PR-AUC."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see riskops.training.baselines
    import lightgbm as lgb

    from riskops.training.baselines import NUM_THREADS

    vocabs = vocabularies(fit, categorical)
    xf, xv = _lgb_frame(fit, numeric, categorical, vocabs), _lgb_frame(val, numeric, categorical, vocabs)
    base = {"objective": "binary", "metric": "average_precision", "feature_fraction": 0.8, "bagging_fraction": 0.8,
            "bagging_freq": 1, "lambda_l2": 1.0, "num_threads": NUM_THREADS, "seed": 0, "deterministic": True,
            "force_row_wise": True, "verbosity": -1}  # fmt: skip
    best = (-1.0, None, None)
    tried = []
    for params in grid:
        dtrain = lgb.Dataset(xf, label=y_fit, categorical_feature=categorical or "auto", free_raw_data=False)
        dval = lgb.Dataset(xv, label=y_val, reference=dtrain)
        booster = lgb.train({**base, **params}, dtrain, rounds, valid_sets=[dval], valid_names=["val"],
                            callbacks=[lgb.early_stopping(patience, first_metric_only=True, verbose=False)])  # fmt: skip
        it = booster.best_iteration or booster.current_iteration()
        ap = _ap(y_val, booster.predict(xv, num_iteration=it))
        tried.append({**params, "rounds": int(it), "val_pr_auc": ap})
        if ap > best[0] or best[1] is None:
            best = (ap, booster, it)

    def score(X: pd.DataFrame) -> np.ndarray:
        return np.asarray(best[1].predict(_lgb_frame(X, numeric, categorical, vocabs), num_iteration=best[2]),
                          "float64")  # fmt: skip

    return score, tried


def fit_logistic_regression(fit, y_fit, val, y_val, numeric, categorical, Cs=(0.01, 0.1, 1.0)):
    """Median-imputed standardised numerics + one-hot categoricals, balanced classes, C by validation PR-AUC."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    best, tried = (-1.0, None), []
    for C in Cs:
        parts = [("num", Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                                   ("scale", StandardScaler())]), numeric)] if numeric else []  # fmt: skip
        if categorical:
            parts.append(("cat", OneHotEncoder(handle_unknown="ignore", min_frequency=MIN_CATEGORY_COUNT),
                          categorical))  # fmt: skip
        model = Pipeline([("prep", ColumnTransformer(parts)),
                          ("clf", LogisticRegression(C=C, class_weight="balanced", max_iter=2000))])  # fmt: skip
        model.fit(_lr_frame(fit, numeric, categorical), y_fit)
        ap = _ap(y_val, model.predict_proba(_lr_frame(val, numeric, categorical))[:, 1])
        tried.append({"C": C, "val_pr_auc": ap})
        if ap > best[0] or best[1] is None:
            best = (ap, model)
    model = best[1]
    return (lambda X: model.predict_proba(_lr_frame(X, numeric, categorical))[:, 1]), tried


def _lr_frame(X: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    out = X[numeric].astype("float64").replace([np.inf, -np.inf], np.nan)
    for c in categorical:
        out[c] = X[c].astype(str)
    return out
