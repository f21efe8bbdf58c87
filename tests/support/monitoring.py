"""Monitoring inputs for tests: model frames with the entity state before each event, a prediction log,
and a small drifted world (a champion with its reference, traffic before and after a shift)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd

from riskops.features.contract import (
    CATEGORICAL_FEATURES,
    ENTITY_FEATURES,
    ENTITY_KEYS,
    NUMERIC_FEATURES,
    build_model_frame,
)


def model_frame_with_prior_state(raw: pd.DataFrame) -> pd.DataFrame:
    """Transactions -> model inputs with the entity state BEFORE each event (+ id, time, label)."""
    from riskops.features.aggregates import compute_entity_features
    from riskops.pii import hash_pii

    h = hash_pii(raw)
    for entity, frame in compute_entity_features(h).items():
        before = frame.groupby(ENTITY_KEYS[entity], sort=False)[list(ENTITY_FEATURES[entity])].shift(1)
        h = h.join(before, how="left")
    mf = build_model_frame(h)
    for c in ("event_timestamp", "is_fraud", "transaction_id", "is_refund"):
        mf[c] = h[c].to_numpy()
    return mf.sort_values("event_timestamp", kind="stable").reset_index(drop=True)


def write_prediction_log(directory, frame: pd.DataFrame, version: str, thresholds: dict) -> None:
    """Score-carrying model rows written as `serving.predlog.PredictionLog` records (what the monitor reads)."""
    from riskops.monitoring.drift import decide
    from serving.predlog import PredictionLog

    plog = PredictionLog(directory, fsync=False)
    decisions = decide(frame["risk_score"].to_numpy(), thresholds)
    recs = []
    for i, row in enumerate(frame.to_dict("records")):
        recs.append(
            {
                "request_id": f"r{i}",
                "logged_at": pd.Timestamp(row["event_timestamp"]).isoformat(),
                "event_timestamp": pd.Timestamp(row["event_timestamp"]).isoformat(),
                "transaction_id": str(row["transaction_id"]),
                "model_version": version,
                "risk_score": float(row["risk_score"]),
                "decision": decisions[i],
                "degraded": False,
                "reasons": [],
                "transaction": {
                    **{c: row[c] for c in CATEGORICAL_FEATURES},
                    "is_refund": bool(row["is_refund"]),
                    "product_title": "x",
                    "merchant_category": "y",
                },
                "entity_features": {},
                "features": {f: float(row[f]) for f in NUMERIC_FEATURES},
            }
        )
    plog.write(recs)
    plog.close()


_WORLD: dict = {}


def drifted_world(root: Path) -> dict:
    """Generated once per session (under `root`): 8,000 transactions that switch to the
    new_payment_method scenario 1,500 rows before the end, their model frames scored by a
    logistic-regression champion, its reference folder (``ref_dir``: reference, policy,
    evaluation), thresholds and the drift onset's row index. Keys: frame, raw, onset,
    thresholds, ref_dir."""
    if _WORLD:
        return _WORLD
    from riskops.data.generator import GeneratorConfig, generate_with_drift
    from riskops.monitoring.reference import save_reference
    from riskops.training.baselines import fit_logistic_regression
    from riskops.training.metrics import thresholds_for_policy

    raw = generate_with_drift(GeneratorConfig(rows=8000, seed=5), "new_payment_method", 1500)
    frame = model_frame_with_prior_state(raw)
    onset = int((frame["event_timestamp"] < pd.Timestamp(raw.attrs["drift_onset"])).sum())
    train, held = frame.iloc[: onset // 2], frame.iloc[onset // 2 : onset]
    model = fit_logistic_regression(train, train["is_fraud"])
    frame["risk_score"] = model.predict_scores(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        thresholds = thresholds_for_policy(held["is_fraud"], frame["risk_score"].iloc[onset // 2 : onset])
    ref_dir = root / "model"
    held = frame.iloc[onset // 2 : onset]
    save_reference(ref_dir, held, held["risk_score"], held["is_fraud"], held["event_timestamp"])
    (ref_dir / "policy.json").write_text(json.dumps(thresholds))
    (ref_dir / "evaluation.json").write_text(json.dumps({"models": {"transformer": {"pr_auc": 0.3}}}))
    raw = raw.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    _WORLD.update(frame=frame, raw=raw, onset=onset, thresholds=thresholds, ref_dir=ref_dir)
    return _WORLD
