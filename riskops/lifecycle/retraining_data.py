"""The data a retraining run trains on: recent raw transactions + feedback labels (+ history).

`build_retraining_data` joins the feedback labels (riskops.monitoring.feedback) onto the recent
transactions by transaction_id, optionally prepends older training history, holds out the newest
``holdout_fraction`` for the promotion gate (neither model trains on it) and writes
``train.parquet`` for the pipeline. With history, the run gets ``--recent-from``
(``train_on_recent``): the recent window's rows all train and the pipeline's validation/test come
from history, because the window's few labelled rows of the shift are the one thing the
challenger must learn (the gate's holdout judges it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from riskops.lifecycle.retrain_settings import RetrainError, RetrainSettings


@dataclass
class RetrainingData:
    """What `build_retraining_data` wrote, as recorded with the trigger."""

    train_file: Path
    holdout_file: Path | None
    rows: int
    frauds: int
    feedback_labels: int
    holdout_rows: int
    cutoff: str | None  # rows at/after this event time are held out
    recent_from: str | None = None  # rows at/after this event time are the recent window (all train)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train_file"] = str(self.train_file)
        d["holdout_file"] = str(self.holdout_file) if self.holdout_file else None
        return d


def labelled_recent(
    transactions: pd.DataFrame, feedback: pd.DataFrame | None, settings: RetrainSettings
) -> tuple[pd.DataFrame, int]:
    """The recent transactions with their labels, in event-time order, and the number of feedback labels used.

    Feedback (by transaction_id) wins; rows without feedback follow ``settings.unlabelled``.
    """
    if transactions is None or transactions.empty:
        raise RetrainError("no recent transactions to retrain on")
    for col in ("transaction_id", "event_timestamp"):
        if col not in transactions.columns:
            raise RetrainError(f"recent transactions lack the {col!r} column")
    recent = transactions.copy()
    recent["transaction_id"] = recent["transaction_id"].astype(str)
    recent = recent.drop_duplicates("transaction_id", keep="last")
    n_fb = 0
    if feedback is not None and not feedback.empty:
        fb = feedback.assign(transaction_id=feedback["transaction_id"].astype(str))
        fb = fb.drop_duplicates("transaction_id", keep="last").set_index("transaction_id")
        has = recent["transaction_id"].isin(fb.index)
        n_fb = int(has.sum())
    else:
        fb, has = None, pd.Series(False, index=recent.index)
    own = pd.to_numeric(recent["is_fraud"], errors="coerce") if "is_fraud" in recent.columns else None
    if settings.unlabelled == "drop":
        recent = recent[has]
        has = has[has]
        label = pd.Series(0, index=recent.index)
    elif settings.unlabelled == "keep" and own is not None:
        label = own.fillna(0).astype("int64")
    else:
        label = pd.Series(0, index=recent.index)
    if fb is not None and has.any():
        label = label.copy()
        label[has] = fb.loc[recent.loc[has, "transaction_id"], "is_fraud"].to_numpy()
    recent["is_fraud"] = label.astype("int64").to_numpy()
    if "fraud_type" in recent.columns:
        recent["fraud_type"] = recent["fraud_type"].where(recent["is_fraud"] == 1, "none")
    if fb is not None and "fraud_type" in fb.columns and has.any():
        ft = fb.loc[recent.loc[has, "transaction_id"], "fraud_type"]
        recent.loc[has, "fraud_type"] = ft.fillna("none").where(recent.loc[has, "is_fraud"] == 1, "none").to_numpy()
    ts = pd.to_datetime(recent["event_timestamp"], utc=True)
    return recent.assign(event_timestamp=ts).sort_values("event_timestamp", kind="stable"), n_fb


def build_retraining_data(
    transactions: pd.DataFrame,
    feedback: pd.DataFrame | None,
    out_dir: Path | str,
    settings: RetrainSettings | None = None,
    history: pd.DataFrame | None = None,
) -> RetrainingData:
    """Recent raw transactions + feedback labels (+ history) -> ``train.parquet`` / ``holdout.parquet``.

    Labels: see `labelled_recent`. The newest ``holdout_fraction`` of the recent rows (by event time)
    is held out. Raises RetrainError when the training part has fewer than ``min_rows`` rows or
    ``min_frauds`` frauds.
    """
    from riskops.data.generator import write_transactions  # the generator is big: loaded when data is written

    settings = settings or RetrainSettings()
    recent, n_fb = labelled_recent(transactions, feedback, settings)
    n_hold = int(round(len(recent) * settings.holdout_fraction))
    cutoff = None
    if n_hold > 0:
        holdout = recent.iloc[len(recent) - n_hold:]
        train_recent = recent.iloc[: len(recent) - n_hold]
        cutoff = holdout["event_timestamp"].min().isoformat()
    else:
        holdout, train_recent = recent.iloc[:0], recent
    parts = [train_recent]
    recent_from = None
    if history is not None and not history.empty:
        hist = history.copy()
        hist["transaction_id"] = hist["transaction_id"].astype(str)
        hist = hist[~hist["transaction_id"].isin(recent["transaction_id"])]
        hist["event_timestamp"] = pd.to_datetime(hist["event_timestamp"], utc=True)
        parts.insert(0, hist[hist.columns.intersection(train_recent.columns)])
        if settings.train_on_recent and len(train_recent):
            start = train_recent["event_timestamp"].min()
            if (hist["event_timestamp"] < start).any():
                recent_from = start.isoformat()
    train = pd.concat(parts, ignore_index=True).sort_values("event_timestamp", kind="stable")
    n_fraud = int(pd.to_numeric(train["is_fraud"], errors="coerce").fillna(0).sum())
    if len(train) < settings.min_rows or n_fraud < settings.min_frauds:
        raise RetrainError(
            f"not enough training data: {len(train)} rows ({n_fraud} frauds); need >= {settings.min_rows} rows"
            f" and >= {settings.min_frauds} frauds (retrain.min_rows / retrain.min_frauds)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_file = write_transactions(train.reset_index(drop=True), out / "train.parquet")
    holdout_file = None
    if len(holdout):
        holdout_file = write_transactions(holdout.reset_index(drop=True), out / "holdout.parquet")
    return RetrainingData(
        train_file=train_file,
        holdout_file=holdout_file,
        rows=len(train),
        frauds=n_fraud,
        feedback_labels=n_fb,
        holdout_rows=len(holdout),
        cutoff=cutoff,
        recent_from=recent_from,
    )
