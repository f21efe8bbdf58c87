"""Monitoring inputs for tests: model frames with the entity state before each event, a prediction log."""

from __future__ import annotations

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
