"""Time-based train / validation / test split, shared by the train and evaluate steps.

Fraud models are used on the future, so they are validated on the future: rows are ordered by
event time and cut into three consecutive blocks (train = oldest, val = next, test = newest).
Ties in time are broken by transaction_id so that two steps splitting the same frame get exactly
the same rows (the evaluate step re-splits the training set with this function).
"""

from __future__ import annotations

import pandas as pd

from riskops.schema import TIMESTAMP_COLUMN

TIEBREAK_COLUMN = "transaction_id"


def time_split(
    df: pd.DataFrame,
    test_fraction: float = 0.2,
    val_fraction: float = 0.15,
    timestamp_column: str = TIMESTAMP_COLUMN,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split `df` by time into (train, val, test); each part keeps its original index.

    Sizes: test = round(n * test_fraction) newest rows, val = round(n * val_fraction) rows before
    those, train = the rest (oldest). Every row of `df` lands in exactly one part.
    """
    if timestamp_column not in df.columns:
        raise KeyError(f"time_split needs a {timestamp_column!r} column")
    for name, frac in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {frac}")
    if test_fraction + val_fraction >= 1.0:
        raise ValueError(
            f"test_fraction + val_fraction must leave rows to train on, got {test_fraction} + {val_fraction}"
        )
    order = pd.DataFrame({"ts": pd.to_datetime(df[timestamp_column], utc=True).to_numpy()})
    keys = ["ts"]
    if TIEBREAK_COLUMN in df.columns:
        order["tb"] = df[TIEBREAK_COLUMN].astype(str).to_numpy()
        keys.append("tb")
    positions = order.sort_values(keys, kind="mergesort").index.to_numpy()
    ordered = df.iloc[positions]

    n = len(df)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    n_train = n - n_test - n_val
    train = ordered.iloc[:n_train].copy()
    val = ordered.iloc[n_train : n_train + n_val].copy()
    test = ordered.iloc[n_train + n_val :].copy()
    return train, val, test
