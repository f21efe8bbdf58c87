"""What the offline backfill says an entity's state was before each transaction (the parity oracle
of the entity-state tests, unit and integration)."""

from __future__ import annotations

import pandas as pd

from riskops.features.aggregates import compute_entity_features
from riskops.features.contract import ENTITY_FEATURES, ENTITY_KEYS


def offline_state_before(transactions: pd.DataFrame) -> list[dict[str, float]]:
    """Per row of hashed `transactions` (in processing order: time, transaction id), each entity's
    backfilled state after that entity's previous event; NaN where the entity had none."""
    per_entity = compute_entity_features(transactions)
    out: list[dict[str, float]] = [{} for _ in range(len(transactions))]
    for entity, frame in per_entity.items():
        key = ENTITY_KEYS[entity]
        previous = frame.groupby(key, sort=False)[list(ENTITY_FEATURES[entity])].shift(1)
        for label, row in zip(frame.index, previous.to_dict("records"), strict=True):
            out[transactions.index.get_loc(label)].update(row)
    return out
