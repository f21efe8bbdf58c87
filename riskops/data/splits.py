"""Time-based train / validation / test split, shared by the train and evaluate steps.

Fraud models are used on the future, so they are validated on the future: rows are ordered by
event time and cut into three consecutive blocks (train = oldest, val = next, test = newest).
Ties in time are broken by transaction_id so that two steps splitting the same frame get exactly
the same rows (the evaluate step re-splits the training set with this function).

Retraining (riskops.lifecycle.retrain) trains on history + a recent window whose labelled rows are the only
evidence of a shift, and the promotion gate judges on a separate, newer holdout. There the
newest-rows-validate rule would hand the whole recent window to validation and test, and the
challenger would learn nothing new; ``recent_from`` keeps rows at or after that time in training
and cuts validation and test from the rows before it.
"""

from __future__ import annotations

import logging

import pandas as pd

from riskops.schema import LABEL_COLUMN, TIMESTAMP_COLUMN

log = logging.getLogger(__name__)

TIEBREAK_COLUMN = "transaction_id"
# Validation picks the epoch and fits the calibration: with no fraud in it, it can do neither.
MIN_VAL_POSITIVES = 10


def time_split(
    df: pd.DataFrame,
    test_fraction: float = 0.2,
    val_fraction: float = 0.15,
    timestamp_column: str = TIMESTAMP_COLUMN,
    min_val_positives: int = MIN_VAL_POSITIVES,
    recent_from: str | pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split `df` by time into (train, val, test); each part keeps its original index.

    Sizes: test = round(n * test_fraction) newest rows, val = round(n * val_fraction) rows before
    those, train = the rest (oldest). Every row of `df` lands in exactly one part.

    When `df` has labels and that validation block holds fewer than `min_val_positives` frauds
    (a quiet stretch, e.g. a retraining window whose newest rows are mostly unlabelled), the block
    grows back in time until it does, taking at most half of the training rows. The rule depends
    only on the data, so the train and evaluate steps still cut identically.

    `recent_from` (a time; None or "" = off): rows at or after it all go to train, and the sizes
    above apply to the rows before it (see the module doc).
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
    recent = ordered.iloc[:0]
    if recent_from is not None and str(recent_from) != "":
        since = pd.Timestamp(recent_from)
        since = since.tz_localize("UTC") if since.tzinfo is None else since.tz_convert("UTC")
        n_old = int((pd.to_datetime(ordered[timestamp_column], utc=True) < since).sum())
        if n_old == 0:
            raise ValueError(f"recent_from {since.isoformat()} leaves no older rows to validate and test on")
        ordered, recent = ordered.iloc[:n_old], ordered.iloc[n_old:]

    n = len(ordered)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    n_train = n - n_test - n_val
    if n_val > 0 and min_val_positives > 0 and LABEL_COLUMN in df.columns:
        labels = pd.to_numeric(ordered[LABEL_COLUMN], errors="coerce").fillna(0).to_numpy()
        have = int(labels[n_train : n_train + n_val].sum())
        if have < min_val_positives:
            # walk back from the block's start until it holds enough frauds (or half the train rows)
            floor = n_train - n_train // 2
            cum = labels[floor:n_train][::-1].cumsum()
            need = min_val_positives - have
            reached = (cum >= need).nonzero()[0]
            grow = int(reached[0]) + 1 if len(reached) else n_train - floor
            log.warning(
                "validation block of %d rows holds %d fraud(s) (< %d): extended back by %d rows",
                n_val, have, min_val_positives, grow,
            )
            n_train -= grow
            n_val += grow
    train = pd.concat([ordered.iloc[:n_train], recent]) if len(recent) else ordered.iloc[:n_train].copy()
    val = ordered.iloc[n_train : n_train + n_val].copy()
    test = ordered.iloc[n_train + n_val :].copy()
    return train, val, test
