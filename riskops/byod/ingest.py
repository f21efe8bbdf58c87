"""Ingest a user's dataset: the mapped columns, PII hashed, in event-time order."""

from __future__ import annotations

import numpy as np
import pandas as pd

from riskops.byod.config import check_reserved, mapped_columns
from riskops.data.datasets import (
    DatasetConfig,
    load_dataset,
)


def load_canonical(config: DatasetConfig, max_rows: int = 0) -> pd.DataFrame:
    """The mapped columns, PII hashed, sorted by event time (stable), newest ``max_rows`` kept."""
    check_reserved(config)
    df = load_dataset(config)  # MappingError first, naming every bad column
    df = df[mapped_columns(config)]
    order = np.argsort(pd.to_datetime(df[config.event_time.column], utc=True).to_numpy(), kind="stable")
    df = df.iloc[order].reset_index(drop=True)
    if max_rows and len(df) > max_rows:
        df = df.iloc[len(df) - int(max_rows) :].reset_index(drop=True)
    for c in config.text:
        df[c] = df[c].astype("string").fillna("").astype(str)
    for c in config.entities.values():
        if not pd.api.types.is_integer_dtype(df[c]):
            df[c] = df[c].astype("string").fillna("").astype(str)
    return df
