"""Features of a user's dataset: windowed aggregates of the mapped entities, through Feast, and
behaviour sequences when a user is mapped.

The same riskops.features.aggregates code and Feast repo as the built-in schema, for the MAPPED
entities only and only the aggregates the mapping supports (riskops.byod.config.aggregate_feature_names).
The sequences are riskops.features.sequences over the mapped user / device / IP / merchant and the
amount column; fields the mapping has no role for stay empty.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from riskops.byod.config import SINCE_LAST, aggregate_feature_names, amount_column
from riskops.data.datasets import (
    ENTITY_ROLES,
    DatasetConfig,
)
from riskops.features.contract import ENTITY_KEYS
from riskops.features.sequences import sequence_columns

_NEVER_SEEN_SECONDS = 30 * 24 * 3600.0


def entity_events(df: pd.DataFrame, config: DatasetConfig) -> pd.DataFrame:
    """The frame riskops.features.aggregates reads: canonical key names, an amount (0 without one), row ids."""
    amount = amount_column(config)
    events = pd.DataFrame(
        {
            "transaction_id": [f"{i:012d}" for i in range(len(df))],  # string order = row order
            "event_timestamp": pd.to_datetime(df[config.event_time.column], utc=True).to_numpy(),
            "amount": df[amount].astype("float64").fillna(0.0).to_numpy() if amount else 0.0,
        },
        index=df.index,
    )
    for role, col in config.entities.items():
        events[ENTITY_KEYS[role]] = df[col].astype("string").fillna("").to_numpy()
    return events


def _signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def build_dataset_features(
    df: pd.DataFrame, config: DatasetConfig, repo_dir: Path | None
) -> tuple[pd.DataFrame, dict]:
    """``df`` + the supported aggregates (state just BEFORE each row, point in time, via Feast).

    No mapped entity: ``df`` unchanged and Feast is not touched. Otherwise the entity states are
    written as the Feast repo's offline sources, applied, joined back point in time
    (riskops.features.store.training_frame) and the mapped views are materialized online.
    """
    names = aggregate_feature_names(config)
    if not config.entities:
        return df.copy(), {"aggregates": [], "entities": [], "feast": False,
                           "note": "no entities mapped: no windowed aggregates"}  # fmt: skip
    from riskops.features import store as fs

    if repo_dir is None:
        raise ValueError("entities are mapped: a Feast repo folder is needed")
    t0 = time.perf_counter()
    events = entity_events(df, config)
    repo = fs.prepare_repo(Path(repo_dir))
    fs.write_feature_sources(repo, events)
    store = fs.apply(repo)
    joined = fs.training_frame(store, events)
    end = events["event_timestamp"].max()
    views = [fs.view_name(role) for role in ENTITY_ROLES if role in config.entities]
    store.materialize(start_date=fs._utc(end - fs.FEATURE_TTL), end_date=fs._utc(end), feature_views=views)
    out = df.copy()
    if "user" in config.entities:  # each row's recent events of its user (and device / IP when mapped)
        out = pd.concat([out, sequence_columns(events)], axis=1)
    with np.errstate(all="ignore"):
        for f in names:
            if f == SINCE_LAST:
                last = joined["user_last_event_epoch"].to_numpy("float64")
                now = events["event_timestamp"].astype("int64").to_numpy() / 1e9
                since = np.clip(now - last, 0, None)
                out[f] = np.log1p(np.where(np.isnan(since), _NEVER_SEEN_SECONDS, since))
            elif "_amount_" in f:
                out[f] = _signed_log(joined[f].to_numpy("float64"))  # NaN (no history) stays NaN
            else:
                out[f] = joined[f].to_numpy("float64")
    info = {"aggregates": names, "entities": sorted(config.entities), "feast": True, "feature_views": views,
            "repo": str(repo), "sequences": "user" in config.entities,
            "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
    return out, info
