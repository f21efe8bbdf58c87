"""Behaviour sequences through the real server: the history the server reads, and the score it gives,
equal what the offline path (riskops.features.sequences over the whole history) gives.

A stream of new orders by customers, devices and IPs of the served history (so the server starts
their histories from the feature build's recent events) and bursts within the stream itself is
replayed one request at a time; the prediction log says which earlier transactions each answer read.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from support.servers import T_BASE, logged, predict

from riskops.data.generator import GeneratorConfig, generate
from riskops.features.contract import ALL_ENTITY_FEATURES, build_model_frame
from riskops.features.sequences import ENTITY_COLUMN, add_sequence_columns, event_columns, prior_positions
from riskops.monitoring.reference import model_frame_from_log
from riskops.pii import hash_pii
from riskops.schema import COLUMNS, LABEL_COLUMN, coerce
from riskops.training.scorer import RiskScorer


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    """The served home's history (tests/support/servers.build_home generates exactly this)."""
    return generate(GeneratorConfig(rows=1200, seed=5, days=7))


@pytest.fixture(scope="module")
def stream(history) -> pd.DataFrame:
    """60 new orders: copies of history rows (known users/devices/IPs), some users several times."""
    rng = np.random.default_rng(3)
    picks = rng.choice(len(history), 40, replace=False)
    picks = np.concatenate([picks, np.repeat(picks[:5], 4)])  # bursts: 5 users, 4 more orders each
    rows = history.iloc[picks].copy()
    rows["transaction_id"] = [f"s-{i:03d}" for i in range(len(rows))]
    rows["event_timestamp"] = [T_BASE + timedelta(minutes=3 * i) for i in range(len(rows))]
    rows["amount"] = (rows["amount"] * rng.uniform(0.5, 3.0, len(rows))).round(2)
    return rows.reset_index(drop=True)


def _request(row: pd.Series) -> dict:
    rec = {c: row[c] for c in COLUMNS if c in row.index and c not in (LABEL_COLUMN, "fraud_type", "order_status")}
    rec["event_timestamp"] = row["event_timestamp"].isoformat()
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in rec.items()}


def test_online_history_and_score_equal_offline(served, history, stream):
    for _, row in stream.iterrows():  # one at a time: each order is in the next one's history
        assert predict(served, [_request(row)]).status_code == 200

    log = logged(served).set_index("transaction_id").loc[stream["transaction_id"]]
    both = hash_pii(coerce(pd.concat([history, stream], ignore_index=True)))
    ev = event_columns(both)
    positions = prior_positions(ev["t_us"], {e: ev[c] for e, c in ENTITY_COLUMN.items()})
    ids = both["transaction_id"].to_numpy()
    offset = len(history)
    read_any_history = 0
    for i, tid in enumerate(stream["transaction_id"]):
        offline = [ids[j] for j in positions[offset + i] if j >= 0]
        assert list(log.loc[tid, "history"]) == offline, tid
        read_any_history += bool(offline)
    assert read_any_history == len(stream)  # every order had a known customer, device or IP

    # the score: the server's own entity features (logged) + the offline history tokens
    offline_rows = add_sequence_columns(both).iloc[offset:].reset_index(drop=True)
    entity = log[list(ALL_ENTITY_FEATURES)].reset_index(drop=True)
    frame = build_model_frame(pd.concat([offline_rows.drop(columns=list(ALL_ENTITY_FEATURES), errors="ignore"),
                                         entity], axis=1))  # fmt: skip
    scorer = RiskScorer.load(served.model_dir, device="cpu")
    assert scorer.config.sequence
    np.testing.assert_allclose(scorer.predict_proba(frame), log["risk_score"].to_numpy(), rtol=0, atol=1e-5)
    # the promotion gate scores a challenger on the logged inputs: the logged tokens are the served ones
    from_log = model_frame_from_log(log.reset_index())
    np.testing.assert_allclose(scorer.predict_proba(from_log), log["risk_score"].to_numpy(), rtol=0, atol=1e-5)
