"""The reference a model version is compared against, and the current window from the prediction log.

Reference
---------
Each model version carries the data it is compared against in production: ``reference.parquet``
in the model folder (so it travels into the registry with the weights), written by
:func:`save_reference` from the train/evaluate step. It holds, per row of the model's held-out
(validation/test) period: the model inputs (NUMERIC_FEATURES + CATEGORICAL_FEATURES, exactly what
`riskops.features.contract.build_model_frame` produced), the model's ``risk_score``, the label ``is_fraud``
when known, and the hour-of-day / weekend stratum of the row. :func:`load_reference` reads it back
together with the version's decision thresholds (``policy.json``) and its headline metrics
(``evaluation.json``), the baseline for the performance check. After a promotion the monitor
compares against the first day of traffic the new champion served instead
(`riskops.monitoring.rebaseline`): a retrained model's held-out period predates the shift it learned.

Current window
--------------
The most recent rows of the prediction log (`riskops.monitoring.prediction_log.read_prediction_log`): the numeric
inputs as served (``model.<name>``), the categoricals, ``risk_score``. Degraded rows (scored with
default features because the online store was unavailable) are counted but excluded: they are an
availability problem, not a change in the world. Rows scored by another model version (a canary
challenger) are excluded from the score/decision comparison.

Seasonality: a window of 1–2k transactions covers hours, not days, while the reference covers days.
Hour-of-day features (and the 1h counters that follow the daily cycle) would "drift" every night.
The reference is therefore resampled per run to the current window's hour-of-day (and weekend) mix
(:func:`matched_reference`), so the comparison is like for like. ``is_weekend`` is a stratum, not
a monitored feature (a Saturday window against a weekday reference is the calendar, not drift).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from riskops.features.contract import CATEGORICAL_FEATURES, NUMERIC_FEATURES, TEXT_COLUMN, transaction_text
from riskops.features.sequences import SEQUENCE_COLUMNS, tokens_from_log
from riskops.monitoring.prediction_log import MODEL_PREFIX

log = logging.getLogger(__name__)

REFERENCE_FILE = "reference.parquet"
SCORE = "risk_score"
DECISION = "decision"
LABEL = "is_fraud"
HOUR = "_hour"
WEEKEND = "_weekend"
DECISIONS = ("approve", "review", "block")
TIMESTAMP = "event_timestamp"


class ReferenceError(LookupError):
    """No usable reference for a model version."""


# --------------------------------------------------------------------------------------------
# Reference: capture and load
# --------------------------------------------------------------------------------------------


def _hour_from_frame(frame: pd.DataFrame, timestamps: Any = None) -> np.ndarray:
    if timestamps is not None:
        ts = pd.to_datetime(pd.Series(np.asarray(timestamps)), utc=True)
        return ts.dt.hour.to_numpy(dtype="int64")
    if "event_timestamp" in frame.columns:
        return pd.to_datetime(frame["event_timestamp"], utc=True).dt.hour.to_numpy(dtype="int64")
    if {"hour_sin", "hour_cos"} <= set(frame.columns):
        ang = np.arctan2(frame["hour_sin"].to_numpy(float), frame["hour_cos"].to_numpy(float))
        hour = np.nan_to_num(np.mod(ang * 24.0 / (2 * math.pi), 24.0), nan=0.0)
        return np.floor(hour + 1e-9).astype("int64") % 24
    return np.zeros(len(frame), dtype="int64")


def _weekend_from_frame(frame: pd.DataFrame, timestamps: Any = None) -> np.ndarray:
    if timestamps is not None:
        ts = pd.to_datetime(pd.Series(np.asarray(timestamps)), utc=True)
        return (ts.dt.dayofweek >= 5).to_numpy(dtype="int64")
    if "is_weekend" in frame.columns:
        return (pd.to_numeric(frame["is_weekend"], errors="coerce").fillna(0) > 0.5).to_numpy(dtype="int64")
    if "event_timestamp" in frame.columns:
        return (pd.to_datetime(frame["event_timestamp"], utc=True).dt.dayofweek >= 5).to_numpy(dtype="int64")
    return np.zeros(len(frame), dtype="int64")


def decide(scores: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    """approve / review / block exactly as serving.policy decides (block >= block, review >= review)."""
    s = np.asarray(scores, dtype="float64")
    out = np.full(s.shape, "approve", dtype=object)
    out[s >= float(thresholds["review"])] = "review"
    out[s >= float(thresholds["block"])] = "block"
    return out


def save_reference(
    model_dir: Path | str,
    model_frame: pd.DataFrame,
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray | None = None,
    event_timestamps: Sequence[Any] | None = None,
    max_rows: int = 20_000,
    seed: int = 0,
) -> Path:
    """Write ``<model_dir>/reference.parquet``: what production traffic is compared against.

    Call it from the train/evaluate step with the model frame of a period the model did NOT train
    on (validation + test: several days, so that the natural day-to-day drift can be measured), the
    model's scores on it, the labels when known and the rows' event times (for the hour-of-day
    matching and the calibration; without them the hour is recovered from hour_sin/hour_cos and
    the frame's order is taken as time order). Rows beyond ``max_rows`` are subsampled uniformly
    (seeded, time order kept). Returns the file's path.
    """
    model_dir = Path(model_dir)
    missing = [c for c in (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES) if c not in model_frame.columns]
    if missing:
        raise ValueError(f"save_reference: model_frame lacks model inputs {missing[:8]}")
    s = np.asarray(scores, dtype="float64").ravel()
    if s.size != len(model_frame):
        raise ValueError(f"save_reference: {s.size} scores for {len(model_frame)} rows")
    if not np.all(np.isfinite(s)):
        raise ValueError("save_reference: scores contain non-finite values")
    out = model_frame[list(NUMERIC_FEATURES)].astype("float64").reset_index(drop=True)
    for c in CATEGORICAL_FEATURES:
        out[c] = model_frame[c].astype(str).to_numpy()
    out[SCORE] = s
    if labels is not None:
        y = np.asarray(labels).ravel()
        if y.size != len(out):
            raise ValueError(f"save_reference: {y.size} labels for {len(out)} rows")
        out[LABEL] = y.astype("int64")
    out[HOUR] = _hour_from_frame(model_frame, event_timestamps)
    out[WEEKEND] = _weekend_from_frame(model_frame, event_timestamps)
    ts = event_timestamps if event_timestamps is not None else model_frame.get(TIMESTAMP)
    if ts is not None:
        out[TIMESTAMP] = pd.to_datetime(pd.Series(np.asarray(ts)), utc=True).to_numpy()
        out = out.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)  # calibration needs time order
    if len(out) > max_rows:
        idx = np.sort(np.random.default_rng(seed).choice(len(out), size=max_rows, replace=False))
        out = out.iloc[idx].reset_index(drop=True)
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / REFERENCE_FILE
    tmp = path.with_suffix(".parquet.tmp")
    out.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


@dataclass
class Reference:
    """A model version's reference rows plus what the checks need from its folder."""

    frame: pd.DataFrame
    thresholds: dict[str, float]
    baseline: dict[str, float]  # headline metrics of the version (evaluation.json or the reference labels)
    model_version: str | None = None
    path: Path | None = None
    categories: dict[str, set] = field(default_factory=dict)
    calibration: dict | None = None  # calibrate_reference(...) result, filled lazily by compute_drift
    _clipped: dict = field(default_factory=dict, repr=False)  # clip quantile -> (bounds, clipped frame)

    def __post_init__(self) -> None:
        if not self.categories:
            self.categories = {
                c: set(self.frame[c].astype(str).unique()) for c in CATEGORICAL_FEATURES if c in self.frame
            }
        if DECISION not in self.frame.columns:
            self.frame[DECISION] = decide(self.frame[SCORE].to_numpy(), self.thresholds)


def _read_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text()) if p.exists() else {}
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", p, exc)
        return {}


def baseline_metrics(model_dir: Path | str, frame: pd.DataFrame | None = None) -> dict[str, float]:
    """The version's headline metrics: evaluation.json's primary model, else computed on the
    reference's own labels (when it has them), else {}."""
    doc = _read_json(Path(model_dir) / "evaluation.json")
    models = doc.get("models") or {}
    primary = doc.get("primary_model") or (
        "transformer" if "transformer" in models else next(iter(models), None)
    )
    if primary and primary in models:
        return {k: float(v) for k, v in models[primary].items() if isinstance(v, int | float)}
    if frame is not None and LABEL in frame.columns and frame[LABEL].nunique() == 2:
        from riskops.training.metrics import score_metrics

        m = score_metrics(frame[LABEL].to_numpy(), frame[SCORE].to_numpy())
        return {k: float(v) for k, v in m.items() if isinstance(v, int | float)}
    return {}


def load_reference(
    model_dir: Path | str,
    default_thresholds: dict[str, float] | None = None,
    model_version: str | None = None,
) -> Reference:
    """Read ``reference.parquet`` + ``policy.json`` + ``evaluation.json`` of a model folder.

    Thresholds: policy.json, else ``default_thresholds``, else serving's defaults (0.5 / 0.9).
    Raises ReferenceError when the folder has no reference.
    """
    model_dir = Path(model_dir)
    p = model_dir / REFERENCE_FILE
    if not p.exists():
        raise ReferenceError(
            f"{p} not found: the train/evaluate step must call riskops.monitoring.reference.save_reference"
        )
    frame = pd.read_parquet(p)
    missing = [c for c in (SCORE,) if c not in frame.columns]
    if missing:
        raise ReferenceError(f"{p}: missing columns {missing}")
    if HOUR not in frame.columns:
        frame[HOUR] = _hour_from_frame(frame)
    if WEEKEND not in frame.columns:
        frame[WEEKEND] = _weekend_from_frame(frame)
    thresholds = dict(default_thresholds or {"review": 0.5, "block": 0.9})
    policy = _read_json(model_dir / "policy.json")
    thresholds.update({k: float(policy[k]) for k in ("review", "block") if k in policy})
    return Reference(
        frame=frame,
        thresholds=thresholds,
        baseline=baseline_metrics(model_dir, frame),
        model_version=model_version,
        path=p,
    )


# --------------------------------------------------------------------------------------------
# Current window from the prediction log
# --------------------------------------------------------------------------------------------


def current_frame(log_df: pd.DataFrame) -> pd.DataFrame:
    """Prediction-log rows -> the reference's columns (features as served, score, strata).

    Numeric inputs come from ``model.<name>`` (the vector the model actually saw), falling back to
    a plain ``<name>`` column (frames that are already model frames, e.g. in tests).
    """
    n = len(log_df)
    out = pd.DataFrame(index=log_df.index)
    for f in NUMERIC_FEATURES:
        col = MODEL_PREFIX + f if MODEL_PREFIX + f in log_df.columns else f
        out[f] = pd.to_numeric(log_df[col], errors="coerce").astype("float64") if col in log_df else np.nan
    for c in CATEGORICAL_FEATURES:
        out[c] = log_df[c].astype(str) if c in log_df.columns else "missing"
    out[SCORE] = (
        pd.to_numeric(log_df[SCORE], errors="coerce").astype("float64") if SCORE in log_df else np.nan
    )
    for c in ("transaction_id", "model_version", "event_timestamp", "degraded", LABEL):
        if c in log_df.columns:
            out[c] = log_df[c].to_numpy()
    ts = log_df["event_timestamp"] if "event_timestamp" in log_df.columns else None
    out[HOUR] = _hour_from_frame(out, ts) if ts is not None else _hour_from_frame(out)
    out[WEEKEND] = _weekend_from_frame(out, ts) if ts is not None else _weekend_from_frame(out)
    if n and "degraded" in out.columns:
        out["degraded"] = out["degraded"].fillna(False).astype(bool)
    return out


def model_frame_from_log(log_df: pd.DataFrame) -> pd.DataFrame:
    """A model frame (NUMERIC + CATEGORICAL + text) rebuilt from prediction-log rows, so a challenger
    can be scored on exactly the inputs the champion saw (the log keeps the transaction fields)."""
    cur = current_frame(log_df)
    frame = cur[[*NUMERIC_FEATURES, *CATEGORICAL_FEATURES]].copy()
    frame[list(NUMERIC_FEATURES)] = frame[list(NUMERIC_FEATURES)].fillna(0.0)
    if TEXT_COLUMN in log_df.columns:
        frame[TEXT_COLUMN] = log_df[TEXT_COLUMN].astype(str)
    else:
        cols = (
            "product_title",
            "product_category",
            "merchant_category",
            "payment_method",
            "channel",
            "billing_country",
            "shipping_country",
        )
        rows = log_df.reindex(columns=list(cols)).fillna("").astype(str).to_dict("records")
        frame[TEXT_COLUMN] = [transaction_text(r) for r in rows]
    if "history_tokens" in log_df.columns:  # the behaviour-sequence inputs as served
        tokens = pd.DataFrame(tokens_from_log(log_df["history_tokens"]), columns=list(SEQUENCE_COLUMNS),
                              index=frame.index)  # fmt: skip
        frame = pd.concat([frame, tokens], axis=1)
    return frame


# --------------------------------------------------------------------------------------------
# Seasonality-matched reference
# --------------------------------------------------------------------------------------------


def matched_reference(
    ref: pd.DataFrame, cur: pd.DataFrame, ratio: float = 3.0, max_rows: int = 6000, seed: int = 0
) -> pd.DataFrame:
    """Resample the reference to the current window's (weekend, hour-of-day) mix.

    ``k = min(ratio, max_rows / len(cur))`` reference rows per current row are drawn from the same
    stratum (without replacement while the stratum has rows enough, with replacement otherwise);
    a stratum missing from the reference falls back to the same hour on any day, then to the
    whole reference.
    """
    if cur.empty or ref.empty:
        return ref
    k = max(1.0, min(float(ratio), float(max_rows) / max(len(cur), 1)))
    rng = np.random.default_rng(seed)
    by_both = ref.groupby([WEEKEND, HOUR], sort=False).indices
    by_hour = ref.groupby(HOUR, sort=False).indices
    all_pos = np.arange(len(ref))
    picks = []
    for (wk, hr), n_cur in cur.groupby([WEEKEND, HOUR], sort=False).size().items():
        pool = by_both.get((wk, hr))
        if pool is None or len(pool) == 0:
            pool = by_hour.get(hr, all_pos)
        need = int(round(k * n_cur))
        if need <= 0:
            continue
        replace = len(pool) < need
        picks.append(rng.choice(pool, size=need, replace=replace))
    if not picks:
        return ref
    pos = np.sort(np.concatenate(picks))
    return ref.iloc[pos].reset_index(drop=True)
