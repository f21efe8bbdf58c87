"""Baselines the fine-tuned transformer is compared against.

All of them read the same model frames as the transformer (riskops.features.contract.build_model_frame)
and are trained on the same time-based split, but they see only NUMERIC_FEATURES and
CATEGORICAL_FEATURES: none of them can read the transaction text. That is the point of the
comparison — what does reading the text add on top of the structured signals?

* :class:`RulesEngine` — the "traditional" method: hand-written rules with points, no training.
* :func:`fit_logistic_regression` — standardised numerics + one-hot categoricals, balanced classes.
* :func:`fit_lightgbm` — gradient-boosted trees, native categoricals, early stopping.
* :func:`fit_isolation_forest` — unsupervised anomaly detection fitted on legitimate rows only.

Every fitted baseline has ``name`` and ``predict_scores(frame) -> np.ndarray`` (higher = riskier).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from riskops.features.contract import CATEGORICAL_FEATURES, CATEGORICAL_VOCABS, NUMERIC_FEATURES

# LightGBM's OpenMP threads busy-wait between parallel regions by default. When the cores are shared
# (other pipeline steps, CI neighbours) that makes training 10-100x slower (measured on 2 busy cores:
# 10 boosting rounds 9.7 s busy-waiting vs 0.09 s passive). Set before lightgbm is first imported;
# an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SEED = 0
# 2 threads (the evaluate pod's CPU request), fewer if this process may use fewer cores. LightGBM's
# OpenMP threads spin while waiting: more threads than free cores makes it many times slower.
NUM_THREADS = max(1, min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2))


def _check_frame(frame: pd.DataFrame) -> None:
    missing = [c for c in (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES) if c not in frame.columns]
    if missing:
        raise ValueError(f"model frame is missing columns {missing[:5]}{'...' if len(missing) > 5 else ''}")


def _labels(y, frame: pd.DataFrame) -> np.ndarray:
    arr = np.asarray(y).astype("int64").ravel()
    if arr.size != len(frame):
        raise ValueError(f"{arr.size} labels for {len(frame)} rows")
    return arr


# --------------------------------------------------------------------------------------------
# Rules engine
# --------------------------------------------------------------------------------------------

# Thresholds are the kind a fraud team writes by hand; they were sanity-checked on the generator's
# TRAINING period (each rule fires on a few % of legitimate traffic at most), never on test data.
HIGH_AMOUNT_USD = 500.0  # "high" for a brand-new account
TINY_AMOUNT_USD = 5.0  # card testing: tiny authorisations to see whether a stolen card works
NEW_ACCOUNT_DAYS = 7
USER_ZSCORE = 10.0  # amount vs the user's 30-day history (z as in riskops.features.contract)
MERCHANT_ZSCORE = 10.0
HIGH_RISK_PAYMENT_METHODS = ("gift_card", "crypto")
HIGH_RISK_CATEGORIES = ("gift_cards", "electronics", "jewelry")


def _f(frame: pd.DataFrame, name: str) -> np.ndarray:
    return frame[name].to_numpy(dtype="float64")


def amount_usd(frame: pd.DataFrame) -> np.ndarray:
    """Order amount in USD (amounts are in the order currency) with the reference rates of
    riskops.data.generator.FX_PER_USD; an unknown currency is taken as USD."""
    from riskops.data.generator import FX_PER_USD

    rate = frame["currency"].astype(str).map(FX_PER_USD).fillna(1.0).to_numpy(dtype="float64")
    return np.expm1(_f(frame, "amount_log")) / rate


def _amount_far_above_user_norm(fr: pd.DataFrame) -> np.ndarray:
    return (_f(fr, "amount_zscore_user") >= USER_ZSCORE) & (_f(fr, "user_is_new") == 0)


def _returning_user_new_device_and_ip(fr: pd.DataFrame) -> np.ndarray:
    return (_f(fr, "user_is_new") == 0) & (_f(fr, "device_is_new") == 1) & (_f(fr, "ip_is_new") == 1)


def _country_mismatch(fr: pd.DataFrame) -> np.ndarray:
    return _f(fr, "country_mismatch") == 1


def _user_velocity(fr: pd.DataFrame) -> np.ndarray:
    return (_f(fr, "user_txn_count_1h") >= 3) | (_f(fr, "user_txn_count_24h") >= 10)


def _device_or_ip_velocity(fr: pd.DataFrame) -> np.ndarray:
    return (_f(fr, "device_txn_count_1h") >= 3) | (_f(fr, "ip_txn_count_1h") >= 5)


def _new_account_high_amount(fr: pd.DataFrame) -> np.ndarray:
    return (_f(fr, "account_age_days_log") <= math.log1p(NEW_ACCOUNT_DAYS)) & (
        amount_usd(fr) >= HIGH_AMOUNT_USD
    )


def _tiny_amount(fr: pd.DataFrame) -> np.ndarray:
    return amount_usd(fr) <= TINY_AMOUNT_USD


def _many_users_per_device_or_ip(fr: pd.DataFrame) -> np.ndarray:
    return (_f(fr, "device_distinct_users_24h") >= 3) | (_f(fr, "ip_distinct_users_24h") >= 5)


def _refund_abuse(fr: pd.DataFrame) -> np.ndarray:
    return (_f(fr, "is_refund") == 1) & (_f(fr, "user_refund_rate_30d") >= 0.3)


def _price_far_above_merchant_norm(fr: pd.DataFrame) -> np.ndarray:
    return _f(fr, "amount_zscore_merchant") >= MERCHANT_ZSCORE


def _high_risk_payment_method(fr: pd.DataFrame) -> np.ndarray:
    return fr["payment_method"].astype(str).isin(HIGH_RISK_PAYMENT_METHODS).to_numpy()


def _high_risk_category(fr: pd.DataFrame) -> np.ndarray:
    return fr["product_category"].astype(str).isin(HIGH_RISK_CATEGORIES).to_numpy()


@dataclass(frozen=True)
class Rule:
    name: str
    weight: float
    description: str
    predicate: Callable[[pd.DataFrame], np.ndarray]  # model frame -> bool array, True = fired


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("amount_far_above_user_norm", 1.0,
         f"returning user, amount z-score vs the user's 30-day history >= {USER_ZSCORE:g}", _amount_far_above_user_norm),
    Rule("returning_user_new_device_and_ip", 3.0,
         "known user on a device and an IP never seen before (account takeover)", _returning_user_new_device_and_ip),
    Rule("country_mismatch", 3.0, "billing country != shipping country", _country_mismatch),
    Rule("user_velocity", 2.0, "user placed >= 3 orders in the last hour or >= 10 in 24h", _user_velocity),
    Rule("device_or_ip_velocity", 2.0,
         ">= 3 orders from the device or >= 5 from the IP in the last hour", _device_or_ip_velocity),
    Rule("new_account_high_amount", 3.0,
         f"account younger than {NEW_ACCOUNT_DAYS} days ordering >= {HIGH_AMOUNT_USD:.0f} USD", _new_account_high_amount),
    Rule("tiny_amount", 2.0, f"amount <= {TINY_AMOUNT_USD:g} USD (card testing)", _tiny_amount),
    Rule("many_users_per_device_or_ip", 3.0,
         ">= 3 accounts on the device or >= 5 accounts on the IP in 24h", _many_users_per_device_or_ip),
    Rule("refund_abuse", 3.0, "refund request from a user whose 30-day refund rate >= 30%", _refund_abuse),
    Rule("price_far_above_merchant_norm", 1.0,
         f"amount z-score vs the merchant's 30-day history >= {MERCHANT_ZSCORE:g}", _price_far_above_merchant_norm),
    Rule("high_risk_payment_method", 1.0,
         f"payment method in {', '.join(HIGH_RISK_PAYMENT_METHODS)}", _high_risk_payment_method),
    Rule("high_risk_category", 1.0,
         f"product category in {', '.join(HIGH_RISK_CATEGORIES)}", _high_risk_category),
)  # fmt: skip


@dataclass
class RulesEngine:
    """The traditional approach: hand-written rules, each worth points.

    score = (sum of the weights of the rules that fire) / (sum of all weights), in [0, 1].
    Nothing is learned; ``fit`` exists only so every baseline has the same shape.
    """

    rules: tuple[Rule, ...] = DEFAULT_RULES
    name: str = "rules"

    def fit(self, frame: pd.DataFrame | None = None, y=None) -> RulesEngine:
        return self

    def fired(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One boolean column per rule: did it fire on this row?"""
        _check_frame(frame)
        return pd.DataFrame(
            {r.name: np.asarray(r.predicate(frame), dtype=bool) for r in self.rules}, index=frame.index
        )

    def predict_scores(self, frame: pd.DataFrame) -> np.ndarray:
        weights = np.array([r.weight for r in self.rules], dtype="float64")
        fired = self.fired(frame).to_numpy(dtype="float64")
        return fired @ weights / weights.sum()

    def describe(self) -> str:
        """The rule book as a Markdown table (for the report)."""
        rows = ["| rule | points | fires when |", "|---|---|---|"]
        rows += [f"| {r.name} | {r.weight:g} | {r.description} |" for r in self.rules]
        return "\n".join(rows)


# --------------------------------------------------------------------------------------------
# Logistic regression
# --------------------------------------------------------------------------------------------


def _blas_threads():
    """One BLAS thread: these problems are too small to gain from more, and idle BLAS threads spin,
    which slows everything down many times over when the cores are shared (measured: 16 s -> 2 s)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


@dataclass
class SklearnBaseline:
    """A fitted sklearn estimator plus the column selection it was trained on."""

    name: str
    estimator: object
    columns: list[str] = field(default_factory=list)

    def predict_scores(self, frame: pd.DataFrame) -> np.ndarray:
        _check_frame(frame)
        with _blas_threads():
            return np.asarray(self.estimator.predict_proba(frame[self.columns])[:, 1], dtype="float64")


def fit_logistic_regression(train_frame: pd.DataFrame, y_train, C: float = 1.0) -> SklearnBaseline:
    """Standardised numerics + one-hot categoricals (fixed vocabularies, unknown values ignored),
    L2 logistic regression with balanced class weights.

    Balanced weights help the ranking on rare fraud but inflate the probabilities: expect a poor
    ECE for this baseline; compare it on the ranking metrics.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    _check_frame(train_frame)
    y = _labels(y_train, train_frame)
    numeric, categorical = list(NUMERIC_FEATURES), list(CATEGORICAL_FEATURES)
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), numeric),
            (
                "cat",
                OneHotEncoder(
                    categories=[list(CATEGORICAL_VOCABS[c]) for c in categorical],
                    handle_unknown="ignore",
                    sparse_output=False,
                ),
                categorical,
            ),
        ]
    )
    model = Pipeline(
        [
            ("prep", prep),
            ("clf", LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=SEED)),
        ]
    )
    frame = train_frame[numeric + categorical].copy()
    frame[categorical] = frame[categorical].astype(str)
    with _blas_threads():
        model.fit(frame, y)
    return SklearnBaseline("logistic_regression", model, numeric + categorical)


# --------------------------------------------------------------------------------------------
# LightGBM
# --------------------------------------------------------------------------------------------

LIGHTGBM_PARAMS: dict = {
    "objective": "binary",
    "metric": "average_precision",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "cat_smooth": 10.0,
    "min_data_per_group": 50,
    "num_threads": NUM_THREADS,
    "seed": SEED,
    "deterministic": True,
    "force_row_wise": True,
    "verbosity": -1,
}


def _lgb_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Numerics as float, categoricals as pandas categories over the fixed vocabularies
    (so train and test agree on the codes; an unknown value becomes missing)."""
    out = frame[list(NUMERIC_FEATURES)].astype("float64").copy()
    for c in CATEGORICAL_FEATURES:
        out[c] = pd.Categorical(frame[c].astype(str), categories=list(CATEGORICAL_VOCABS[c]))
    return out


@dataclass
class LightGBMBaseline:
    booster: object
    best_iteration: int
    name: str = "lightgbm"

    def predict_scores(self, frame: pd.DataFrame) -> np.ndarray:
        _check_frame(frame)
        raw = self.booster.predict(_lgb_frame(frame), num_iteration=self.best_iteration)
        return np.asarray(raw, dtype="float64")


def fit_lightgbm(
    train_frame: pd.DataFrame,
    y_train,
    val_frame: pd.DataFrame | None = None,
    y_val=None,
    val_fraction: float = 0.15,
    num_boost_round: int = 1000,
    early_stopping_rounds: int = 50,
    params: dict | None = None,
) -> LightGBMBaseline:
    """Gradient-boosted trees with early stopping on validation average precision.

    The early-stopping set never comes from the test period: pass the split's validation set, or
    leave it out and the last ``val_fraction`` of the training rows (frames are in time order) is
    held out for it. Deterministic (fixed seed, ``deterministic``, row-wise histograms, 2 threads).
    """
    import lightgbm as lgb

    _check_frame(train_frame)
    y = _labels(y_train, train_frame)
    if val_frame is None:
        cut = int(round(len(train_frame) * (1.0 - val_fraction)))
        if not 0 < cut < len(train_frame):
            raise ValueError(f"cannot carve a validation set from {len(train_frame)} training rows")
        val_frame, y_val_arr = train_frame.iloc[cut:], y[cut:]
        train_frame, y = train_frame.iloc[:cut], y[:cut]
    else:
        _check_frame(val_frame)
        if y_val is None:
            raise ValueError("val_frame given without y_val")
        y_val_arr = _labels(y_val, val_frame)

    p = {**LIGHTGBM_PARAMS, **(params or {})}
    dtrain = lgb.Dataset(_lgb_frame(train_frame), label=y, categorical_feature=list(CATEGORICAL_FEATURES))
    dval = lgb.Dataset(_lgb_frame(val_frame), label=y_val_arr, reference=dtrain)
    if y_val_arr.min() == y_val_arr.max():
        # one class in validation: average precision is meaningless, train a fixed, modest number of rounds
        booster = lgb.train(p, dtrain, num_boost_round=min(num_boost_round, 200))
        return LightGBMBaseline(booster, booster.current_iteration())
    booster = lgb.train(
        p,
        dtrain,
        num_boost_round=num_boost_round,
        valid_sets=[dval],
        valid_names=["val"],
        callbacks=[lgb.early_stopping(early_stopping_rounds, first_metric_only=True, verbose=False)],
    )
    return LightGBMBaseline(booster, booster.best_iteration or booster.current_iteration())


# --------------------------------------------------------------------------------------------
# Isolation forest
# --------------------------------------------------------------------------------------------


@dataclass
class IsolationForestBaseline:
    estimator: object
    columns: list[str]
    name: str = "isolation_forest"

    def predict_scores(self, frame: pd.DataFrame) -> np.ndarray:
        _check_frame(frame)
        x = frame[self.columns].to_numpy(dtype="float64")
        return -np.asarray(self.estimator.score_samples(x), dtype="float64")


def fit_isolation_forest(
    train_frame: pd.DataFrame, y_train=None, n_estimators: int = 200
) -> IsolationForestBaseline:
    """Unsupervised: learns what legitimate traffic looks like (fitted on rows with label 0, or on
    every row when no labels are given) from the numeric features; score = -score_samples, so
    higher = more anomalous (in (0, 1], but not a probability). Categoricals are left out: one-hot
    columns make poor isolation-tree splits and mostly add noise.
    """
    from sklearn.ensemble import IsolationForest

    _check_frame(train_frame)
    columns = list(NUMERIC_FEATURES)
    x = train_frame[columns].to_numpy(dtype="float64")
    if y_train is not None:
        x = x[_labels(y_train, train_frame) == 0]
    if len(x) == 0:
        raise ValueError("no legitimate rows to fit the isolation forest on")
    model = IsolationForest(n_estimators=n_estimators, random_state=SEED, n_jobs=NUM_THREADS)
    model.fit(x)
    return IsolationForestBaseline(model, columns)


BASELINE_NAMES: tuple[str, ...] = ("rules", "logistic_regression", "lightgbm", "isolation_forest")
