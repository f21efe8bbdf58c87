"""Drift and performance of the serving model: the reference, the current window, Evidently reports.

Reference
---------
Each model version carries the data it is compared against in production: ``reference.parquet``
in the model folder (so it travels into the registry with the weights), written by
:func:`save_reference` from the train/evaluate step. It holds, per row of the model's held-out
(validation/test) period: the model inputs (NUMERIC_FEATURES + CATEGORICAL_FEATURES, exactly what
`riskops.features.contract.build_model_frame` produced), the model's ``risk_score``, the label ``is_fraud``
when known, and the hour-of-day / weekend stratum of the row. :func:`load_reference` reads it back
together with the version's decision thresholds (``policy.json``) and its headline metrics
(``evaluation.json``), the baseline for the performance check.

Current window
--------------
The most recent rows of the prediction log (`riskops.monitoring.prediction_log.read_prediction_log`): the numeric
inputs as served (``model.<name>``), the categoricals, ``risk_score``. Degraded rows (scored with
default features because the online store was unavailable) are counted but excluded: they are an
availability problem, not a change in the world. Rows scored by another model version (a canary
challenger) are excluded from the score/decision comparison.

Comparisons (one Evidently report per run, HTML + JSON)
------------------------------------------------------
* input drift — `DataDriftPreset` over the monitored features: Wasserstein distance (normed by the
  reference's std) for numerics, Jensen–Shannon distance for categoricals. Both are effect sizes,
  not p-values, so the verdict does not flip just because a window is large;
* score drift — `ValueDrift` of ``risk_score`` (two-sample KS p-value, plus the normed Wasserstein
  distance as its effect size);
* decision-rate shift — ``decision`` recomputed from the score with the version's thresholds on BOTH
  sides (operator overrides and fail-mode do not masquerade as drift): `ValueDrift` chi-square
  p-value in the report, plus flag/block rate ratios;
* performance — on the labelled part of the log (feedback joined on transaction_id):
  `riskops.training.metrics.score_metrics` vs the version's evaluation, with a bootstrap standard error of
  the PR-AUC; an Evidently `ClassificationPreset` report when enough labels exist.

Seasonality: a window of 1–2k transactions covers hours, not days, while the reference covers days.
Hour-of-day features (and the 1h counters that follow the daily cycle) would "drift" every night.
The reference is therefore resampled per run to the current window's hour-of-day (and weekend) mix
(:func:`matched_reference`), so the comparison is like for like. ``is_weekend`` is a stratum, not
a monitored feature (a Saturday window against a weekday reference is the calendar, not drift).

Self-calibrated thresholds: features differ in how much they wander from one day to the next
with nothing changed (account ages, 24h counters, merchant volumes follow the calendar; amounts
barely move). :func:`calibrate_reference` slides a window of the monitor's size through the
reference in time order and measures each comparison's drift score against the rest of the
reference — the *natural* drift of that feature at that window size. A feature's threshold is
``max(floor, margin x natural)`` (defaults 0.12 and 1.5), and the same is done for the score's
Wasserstein distance and the flag rate's log-ratio. Computed once per reference and cached.
Inputs whose natural drift alone reaches the floor are *volatile* (velocity counters, account age,
"is new" flags): they still drift and are reported, but count ``volatile_weight`` (0.5) in
``feature_drift.weighted_count``, the number the default rule reads.

Bursts: numerics are winsorised at the reference's 0.5% / 99.5% quantiles on both sides before any
distance is taken, so a few dozen extreme rows (a card-testing run) cannot dominate a window.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from riskops.features.contract import CATEGORICAL_FEATURES, NUMERIC_FEATURES, TEXT_COLUMN, transaction_text
from riskops.monitoring.prediction_log import MODEL_PREFIX

log = logging.getLogger(__name__)

REFERENCE_FILE = "reference.parquet"
SCORE = "risk_score"
DECISION = "decision"
LABEL = "is_fraud"
HOUR = "_hour"
WEEKEND = "_weekend"
DECISIONS = ("approve", "review", "block")

# the calendar is a stratum of the comparison, not a monitored input (see module doc)
DEFAULT_EXCLUDE: tuple[str, ...] = ("is_weekend",)
TIMESTAMP = "event_timestamp"


class ReferenceError(LookupError):
    """No usable reference for a model version."""


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass
class DriftSettings:
    """The `drift:` section of configs/monitor.yaml."""

    features: list[str] | None = None  # None = NUMERIC_FEATURES + CATEGORICAL_FEATURES
    exclude: list[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    num_method: str = "wasserstein"  # normed Wasserstein distance (Evidently); floor threshold below
    num_threshold: float = 0.12
    cat_method: str = "jensenshannon"
    cat_threshold: float = 0.12
    score_method: str = "ks"  # p-value of the score distribution shift (reported, used with the effect size)
    score_threshold: float = 0.01
    score_effect_threshold: float = 0.1  # floor of the score's normed Wasserstein threshold
    flag_log2_threshold: float = 1.0  # floor of the |log2 ratio| threshold of the review+block rate
    calibrate: bool = True  # per-feature thresholds from the reference's own natural drift
    calibration_margin: float = 1.5
    volatile_weight: float = 0.5  # weight of a drifted "volatile" input in feature_drift.weighted_count
    calibration_stride: float = 0.5  # step between calibration windows, as a fraction of the window
    window_size: int = 1500  # the monitor's window: the calibration measures natural drift at this size
    match_hours: bool = True
    clip_quantile: float = 0.005  # numerics winsorised at the reference's q / 1-q quantiles (0 = off)
    reference_ratio: float = 3.0  # reference rows per current row after matching
    max_reference_rows: int = 6000
    seed: int = 0
    # "evidently": the numbers come from the Evidently report (also saved as HTML/JSON);
    # "fast": the same formulas in numpy/scipy, no report (sweeps, tests, calibration)
    engine: str = "evidently"
    performance_min_rows: int = 300  # below this no performance report is rendered
    bootstrap: int = 200
    html: bool = True

    @classmethod
    def from_dict(cls, d: dict | None) -> DriftSettings:
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"drift: unknown keys {unknown} (known: {', '.join(sorted(known))})")
        return cls(**d)

    def __post_init__(self) -> None:
        if self.engine not in ("evidently", "fast"):
            raise ValueError(f"drift.engine must be 'evidently' or 'fast', got {self.engine!r}")

    def monitored(self) -> list[str]:
        cols = list(self.features) if self.features else [*NUMERIC_FEATURES, *CATEGORICAL_FEATURES]
        bad = [c for c in cols if c not in NUMERIC_FEATURES and c not in CATEGORICAL_FEATURES]
        if bad:
            raise ValueError(f"drift.features: {bad} are not model inputs (riskops.features.contract)")
        return [c for c in cols if c not in set(self.exclude)]


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
    primary = doc.get("primary_model") or ("transformer" if "transformer" in models else next(iter(models), None))
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
            f"{p} not found: the train/evaluate step must call riskops.monitoring.drift.save_reference"
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
    out[SCORE] = pd.to_numeric(log_df[SCORE], errors="coerce").astype("float64") if SCORE in log_df else np.nan
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
        cols = ("product_title", "product_category", "merchant_category", "payment_method", "channel",
                "billing_country", "shipping_country")
        rows = log_df.reindex(columns=list(cols)).fillna("").astype(str).to_dict("records")
        frame[TEXT_COLUMN] = [transaction_text(r) for r in rows]
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


# --------------------------------------------------------------------------------------------
# Robustness to bursts: winsorising numerics at the reference's extreme quantiles
# --------------------------------------------------------------------------------------------


def clip_bounds(frame: pd.DataFrame, q: float) -> dict[str, tuple[float, float]]:
    cols = [f for f in NUMERIC_FEATURES if f in frame.columns]
    if q <= 0 or not cols:
        return {}
    lo = frame[cols].quantile(q)
    hi = frame[cols].quantile(1 - q)
    return {c: (float(lo[c]), float(hi[c])) for c in cols}


def apply_clip(frame: pd.DataFrame, bounds: dict[str, tuple[float, float]]) -> pd.DataFrame:
    if not bounds:
        return frame
    out = frame.copy()
    for c, (lo, hi) in bounds.items():
        if c in out.columns:
            out[c] = out[c].clip(lower=lo, upper=hi)
    return out


def _clipped_reference(reference: Reference, q: float) -> tuple[dict, pd.DataFrame]:
    """The reference winsorised at its own q / 1-q quantiles, and the bounds (cached per q).

    A window holds 1-2k rows; a burst of a few dozen extreme ones (a card-testing run, a bot) moves
    a distance on a heavy-tailed counter more than a real shift of the bulk does. Clipping both
    sides at the reference's extreme quantiles bounds what such a burst can add, while a shift that
    touches more than ~q of the rows (a fraud ring, a price change) still shows."""
    got = reference._clipped.get(q)
    if got is None:
        bounds = clip_bounds(reference.frame, q)
        got = reference._clipped[q] = (bounds, apply_clip(reference.frame, bounds))
    return got


# --------------------------------------------------------------------------------------------
# Self-calibration on the reference
# --------------------------------------------------------------------------------------------


def wasserstein_normed(ref: np.ndarray, cur: np.ndarray) -> float:
    """Evidently's "wasserstein" drift score: W1(ref, cur) / max(std(ref), 0.001)."""
    from scipy.stats import wasserstein_distance

    ref = ref[np.isfinite(ref)]
    cur = cur[np.isfinite(cur)]
    if ref.size == 0 or cur.size == 0:
        return float("nan")
    return float(wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001))


def jensen_shannon(ref: np.ndarray, cur: np.ndarray) -> float:
    """Evidently's "jensenshannon" drift score for a categorical: JS distance of the category shares."""
    from scipy.spatial import distance

    r = pd.Series(ref).astype(str).value_counts(normalize=True)
    c = pd.Series(cur).astype(str).value_counts(normalize=True)
    keys = r.index.union(c.index)
    return float(distance.jensenshannon(r.reindex(keys, fill_value=0).to_numpy(),
                                        c.reindex(keys, fill_value=0).to_numpy()))


def drift_scores(ref: pd.DataFrame, cur: pd.DataFrame, features: Sequence[str]) -> dict[str, float]:
    """The per-feature drift scores Evidently computes with the default methods, in numpy (fast)."""
    out = {}
    for f in features:
        if f in CATEGORICAL_FEATURES:
            out[f] = jensen_shannon(ref[f].to_numpy(), cur[f].to_numpy())
        else:
            out[f] = wasserstein_normed(ref[f].to_numpy(dtype="float64"), cur[f].to_numpy(dtype="float64"))
    return out


def _flag_log2_ratio(ref_scores: np.ndarray, cur_scores: np.ndarray, thresholds: dict[str, float]) -> float:
    fr = ((decide(ref_scores, thresholds) != "approve").sum() + 1) / (ref_scores.size + 2)
    fc = ((decide(cur_scores, thresholds) != "approve").sum() + 1) / (cur_scores.size + 2)
    return float(math.log2(fc / fr))


def calibrate_reference(reference: Reference, settings: DriftSettings | None = None) -> dict:
    """Natural drift of every monitored quantity at the monitor's window size, measured inside the
    reference: a window of ``settings.window_size`` rows slides through it in time order (stride
    half a window) and each position is compared with the rest of the reference (hour-matched,
    as production windows are). Returns the maximum over positions per feature, plus for the
    score's Wasserstein distance and the flag rate's |log2 ratio|; ``blocks`` = positions used
    (0 when the reference holds fewer than two windows: thresholds then stay at their floors)."""
    settings = settings or DriftSettings()
    features = settings.monitored()
    _bounds, ref = _clipped_reference(reference, settings.clip_quantile)
    w = int(settings.window_size)
    result: dict[str, Any] = {"window_size": w, "clip_quantile": settings.clip_quantile,
                              "stride": settings.calibration_stride, "blocks": 0,
                              "features": {}, "score_wasserstein": 0.0, "flag_log2_ratio": 0.0}
    if len(ref) < 2 * w or w <= 0:
        return result
    stride = max(1, int(round(w * settings.calibration_stride)))
    nat = dict.fromkeys(features, 0.0)
    score_nat, flag_nat, blocks = 0.0, 0.0, 0
    for start in range(0, len(ref) - w + 1, stride):
        block = ref.iloc[start : start + w]
        rest = ref.drop(index=block.index)
        rest = matched_reference(rest, block, settings.reference_ratio, settings.max_reference_rows, settings.seed)
        for f, v in drift_scores(rest, block, features).items():
            if v == v:
                nat[f] = max(nat[f], v)
        rs, bs = rest[SCORE].to_numpy(dtype="float64"), block[SCORE].to_numpy(dtype="float64")
        score_nat = max(score_nat, wasserstein_normed(rs, bs))
        flag_nat = max(flag_nat, abs(_flag_log2_ratio(rs, bs, reference.thresholds)))
        blocks += 1
    result.update(blocks=blocks, features=nat, score_wasserstein=score_nat, flag_log2_ratio=flag_nat)
    return result


def drift_thresholds(reference: Reference, settings: DriftSettings) -> dict[str, Any]:
    """Per-feature drift-score thresholds (and the score / flag-rate effect thresholds) in force:
    ``max(floor, margin x natural drift)`` when calibrating, the floors otherwise."""
    features = settings.monitored()
    cal = reference.calibration if settings.calibrate else None
    if settings.calibrate and (cal is None or cal.get("window_size") != settings.window_size
                               or cal.get("clip_quantile") != settings.clip_quantile
                               or cal.get("stride") != settings.calibration_stride):
        cal = reference.calibration = calibrate_reference(reference, settings)
    nat = (cal or {}).get("features", {})
    m = settings.calibration_margin
    per_col = {
        f: max(settings.cat_threshold if f in CATEGORICAL_FEATURES else settings.num_threshold,
               m * float(nat.get(f, 0.0)))
        for f in features
    }
    return {
        "features": per_col,
        "score_wasserstein": max(settings.score_effect_threshold, m * float((cal or {}).get("score_wasserstein", 0))),
        "flag_log2_ratio": max(settings.flag_log2_threshold, m * float((cal or {}).get("flag_log2_ratio", 0))),
        "calibration_blocks": int((cal or {}).get("blocks", 0)),
        # inputs that drift by the floor amount on their own, with nothing changed, are weaker evidence
        "volatile": sorted(f for f in features if float(nat.get(f, 0.0)) >= (
            settings.cat_threshold if f in CATEGORICAL_FEATURES else settings.num_threshold)),
    }


# --------------------------------------------------------------------------------------------
# The drift computation
# --------------------------------------------------------------------------------------------


@dataclass
class DriftResult:
    metrics: dict[str, Any]  # flat "section.name" -> number (what the rules read)
    columns: dict[str, dict]  # per monitored column: method, score, threshold, drifted
    snapshots: dict[str, Any] = field(default_factory=dict)  # name -> Evidently snapshot
    seconds: float = 0.0

    def write(self, out_dir: Path | str, html: bool = True) -> dict[str, Path]:
        """Save each Evidently snapshot as <name>.html / <name>.json plus drift_metrics.json."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files: dict[str, Path] = {}
        for name, snap in self.snapshots.items():
            files[f"{name}.json"] = out / f"{name}.json"
            snap.save_json(str(files[f"{name}.json"]))
            if html:
                files[f"{name}.html"] = out / f"{name}.html"
                snap.save_html(str(files[f"{name}.html"]))
        files["drift_metrics.json"] = out / "drift_metrics.json"
        files["drift_metrics.json"].write_text(
            json.dumps({"metrics": self.metrics, "columns": self.columns}, indent=2, default=_json_default)
        )
        return files


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, pd.Timestamp):
        return o.isoformat()
    return str(o)


def _numeric_frame(frame: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    out = frame[cols].copy()
    for c in cols:
        if c in NUMERIC_FEATURES or c == SCORE:
            out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
        else:
            out[c] = out[c].astype(str)
    return out


def _evidently_drift(
    ref: pd.DataFrame, cur: pd.DataFrame, features: list[str], settings: DriftSettings, thresholds: dict
) -> tuple[Any, dict[str, dict], dict[str, float]]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    num = [c for c in features if c in NUMERIC_FEATURES]
    cat = [c for c in features if c in CATEGORICAL_FEATURES]
    cols = [*features, SCORE, DECISION]
    definition = DataDefinition(numerical_columns=[*num, SCORE], categorical_columns=[*cat, DECISION])
    metrics: list = [
        DataDriftPreset(
            columns=features,
            num_method=settings.num_method,
            cat_method=settings.cat_method,
            per_column_threshold={c: float(t) for c, t in thresholds["features"].items()},
            drift_share=0.3,
        ),
        ValueDrift(column=SCORE, method=settings.score_method, threshold=settings.score_threshold),
        ValueDrift(column=SCORE, method="wasserstein", threshold=float(thresholds["score_wasserstein"])),
        ValueDrift(column=DECISION, method="chisquare", threshold=0.001),
    ]
    report = Report(metrics, include_tests=True)
    snap = report.run(
        current_data=Dataset.from_pandas(_numeric_frame(cur, cols), data_definition=definition),
        reference_data=Dataset.from_pandas(_numeric_frame(ref, cols), data_definition=definition),
    )
    d = snap.dict()
    failed = {
        t.get("metric_config", {}).get("metric_id")
        for t in d.get("tests", [])
        if t.get("status") in ("FAIL", "ERROR")
    }
    columns: dict[str, dict] = {}
    extra: dict[str, float] = {}
    for m in d["metrics"]:
        cfg = m.get("config", {})
        mtype = str(cfg.get("type", ""))
        if mtype.endswith("DriftedColumnsCount"):
            extra["feature_drift.share"] = float(m["value"]["share"])
            extra["feature_drift.count"] = float(m["value"]["count"])
            continue
        if not mtype.endswith("ValueDrift"):
            continue
        col, method = cfg.get("column"), str(cfg.get("method"))
        value = float(m["value"]) if m.get("value") is not None else float("nan")
        if col == SCORE:
            key = "score_drift.wasserstein" if "wasserstein" in method.lower() else "score_drift.p_value"
            extra[key] = value
            continue
        if col == DECISION:
            extra["decision.chisquare_p_value"] = value
            continue
        thr = float(cfg["threshold"]) if cfg.get("threshold") is not None else float("nan")
        columns[col] = {
            "method": method,
            "score": value,
            "threshold": thr,
            "ratio": value / thr if thr and thr == thr and value == value else float("nan"),
            "drifted": m.get("id") in failed,
        }
    return snap, columns, extra


def _fast_drift(
    ref: pd.DataFrame, cur: pd.DataFrame, features: list[str], settings: DriftSettings, thresholds: dict
) -> tuple[dict[str, dict], dict[str, float]]:
    """What `_evidently_drift` returns, computed with the same formulas without building a report."""
    from scipy.stats import chisquare, ks_2samp

    if settings.num_method != "wasserstein" or settings.cat_method != "jensenshannon" or settings.score_method != "ks":
        raise ValueError("drift.engine 'fast' implements num_method wasserstein, cat_method jensenshannon and "
                         "score_method ks only; use engine 'evidently' for other methods")
    columns: dict[str, dict] = {}
    for f, v in drift_scores(ref, cur, features).items():
        thr = float(thresholds["features"][f])
        method = "Jensen-Shannon distance" if f in CATEGORICAL_FEATURES else "Wasserstein distance (normed)"
        columns[f] = {"method": method, "score": v, "threshold": thr, "ratio": v / thr if v == v else float("nan"),
                      "drifted": bool(v == v and v >= thr)}
    n_drift = sum(c["drifted"] for c in columns.values())
    extra = {"feature_drift.count": float(n_drift), "feature_drift.share": n_drift / max(len(columns), 1)}
    rs = ref[SCORE].to_numpy(dtype="float64")
    cs = cur[SCORE].to_numpy(dtype="float64")
    cs = cs[np.isfinite(cs)]
    if cs.size:
        extra["score_drift.p_value"] = float(ks_2samp(rs, cs)[1])
        extra["score_drift.wasserstein"] = wasserstein_normed(rs, cs)
        rd = ref[DECISION].dropna().astype(str)
        cd = cur[DECISION].dropna().astype(str)
        keys = sorted(set(rd) | set(cd))
        f_exp = rd.value_counts().reindex(keys, fill_value=0).to_numpy() * (len(cd) / max(len(rd), 1))
        f_obs = cd.value_counts().reindex(keys, fill_value=0).to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            extra["decision.chisquare_p_value"] = float(chisquare(f_obs, f_exp)[1]) if len(keys) > 1 else 1.0
    return columns, extra


def _bootstrap_se(y: np.ndarray, s: np.ndarray, n_boot: int, seed: int) -> float:
    from sklearn.metrics import average_precision_score

    if n_boot <= 0 or y.sum() < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    vals = []
    n = y.size
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        yb = y[idx]
        if 0 < yb.sum() < n:
            vals.append(average_precision_score(yb, s[idx]))
    return float(np.std(vals, ddof=1)) if len(vals) > 2 else float("nan")


def performance_metrics(
    labelled: pd.DataFrame | None, reference: Reference, settings: DriftSettings
) -> tuple[dict[str, float], Any]:
    """Metrics of the served scores on the labelled window vs the version's baseline."""
    from riskops.training.metrics import score_metrics

    out: dict[str, float] = {"performance.rows": 0.0, "performance.frauds": 0.0}
    if labelled is None or labelled.empty or SCORE not in labelled or LABEL not in labelled:
        return out, None
    y = pd.to_numeric(labelled[LABEL], errors="coerce")
    s = pd.to_numeric(labelled[SCORE], errors="coerce")
    ok = y.notna() & s.notna() & np.isfinite(s)
    y, s = y[ok].astype("int64").to_numpy(), s[ok].to_numpy(dtype="float64")
    out["performance.rows"] = float(y.size)
    out["performance.frauds"] = float(y.sum())
    if y.size == 0:
        return out, None
    m = score_metrics(y, s)
    for k in ("pr_auc", "roc_auc", "recall_at_1pct_fpr", "precision_at_review_budget", "ece"):
        out[f"performance.{k}"] = float(m[k])
    flagged = s >= reference.thresholds["review"]
    out["performance.precision_at_review"] = float(y[flagged].mean()) if flagged.any() else float("nan")
    out["performance.recall_at_review"] = float(flagged[y == 1].mean()) if y.sum() else float("nan")
    out["performance.pr_auc_se"] = _bootstrap_se(y, s, settings.bootstrap, settings.seed)
    for k in ("pr_auc", "roc_auc", "recall_at_1pct_fpr"):
        base = reference.baseline.get(k)
        if base is not None and math.isfinite(base):
            out[f"performance.baseline_{k}"] = float(base)
            out[f"performance.{k}_drop"] = float(base - out[f"performance.{k}"])
    se = out.get("performance.pr_auc_se", float("nan"))
    drop = out.get("performance.pr_auc_drop", float("nan"))
    if se == se and drop == drop:
        out["performance.pr_auc_drop_z"] = float(drop / max(se, 1e-6))
    snap = None
    if settings.engine == "evidently" and y.size >= settings.performance_min_rows and 0 < y.sum() < y.size:
        try:
            snap = _evidently_performance(y, s, reference.thresholds["review"])
        except Exception as exc:  # the report is a nicety; the numbers above are what rules read
            log.warning("Evidently classification report failed: %s", exc)
    return out, snap


def _evidently_performance(y: np.ndarray, s: np.ndarray, threshold: float) -> Any:
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    frame = pd.DataFrame({"target": y.astype(int), "prediction": s})
    definition = DataDefinition(
        numerical_columns=["prediction"],
        categorical_columns=["target"],
        classification=[BinaryClassification(target="target", prediction_probas="prediction", pos_label=1)],
    )
    report = Report([ClassificationPreset(probas_threshold=float(threshold))])
    return report.run(current_data=Dataset.from_pandas(frame, data_definition=definition), reference_data=None)


def compute_drift(
    reference: Reference,
    current: pd.DataFrame,
    settings: DriftSettings | None = None,
    labelled: pd.DataFrame | None = None,
) -> DriftResult:
    """Compare a current window (`current_frame` of log rows) with the reference.

    ``labelled`` (optional): log rows with ``is_fraud`` from feedback and the served ``risk_score``
    (`riskops.monitoring.feedback.labelled_window`); adds the performance metrics and report. The metrics
    (flat keys, what `riskops.monitoring.rules` reads) are listed in docs/monitoring.md.
    """
    settings = settings or DriftSettings()
    started = time.perf_counter()
    features = settings.monitored()
    metrics: dict[str, Any] = {"window.rows_total": float(len(current))}
    cur = current
    if "degraded" in cur.columns and len(cur):
        deg = cur["degraded"].fillna(False).astype(bool)
        metrics["window.degraded_share"] = float(deg.mean())
        cur = cur[~deg]
    else:
        metrics["window.degraded_share"] = 0.0
    # score/decision are compared on the reference version's own rows (not a canary challenger's)
    champion_rows = pd.Series(True, index=cur.index)
    if reference.model_version and "model_version" in cur.columns and len(cur):
        mine = cur["model_version"].astype(str) == str(reference.model_version)
        metrics["window.champion_share"] = float(mine.mean())
        if mine.any():
            champion_rows = mine
    metrics["window.rows"] = float(len(cur))
    metrics["reference.rows"] = float(len(reference.frame))
    if TIMESTAMP in cur.columns and len(cur):
        ts = pd.to_datetime(cur[TIMESTAMP], utc=True)
        metrics["window.start"] = ts.min().isoformat()
        metrics["window.end"] = ts.max().isoformat()
    perf, perf_snap = performance_metrics(labelled, reference, settings)
    snapshots: dict[str, Any] = {}
    if perf_snap is not None:
        snapshots["performance"] = perf_snap
    if len(cur) == 0:
        metrics.update(perf)
        return DriftResult(metrics, {}, snapshots, time.perf_counter() - started)

    thresholds = drift_thresholds(reference, settings)
    metrics["calibration.blocks"] = float(thresholds["calibration_blocks"])
    bounds, ref = _clipped_reference(reference, settings.clip_quantile)
    cur = apply_clip(cur, bounds)
    if settings.match_hours:
        ref = matched_reference(ref, cur, settings.reference_ratio, settings.max_reference_rows, settings.seed)
    elif len(ref) > settings.max_reference_rows:
        ref = ref.sample(settings.max_reference_rows, random_state=settings.seed)
    metrics["reference.rows_used"] = float(len(ref))

    ref_eval = ref.copy()
    ref_eval[DECISION] = decide(ref_eval[SCORE].to_numpy(), reference.thresholds)
    cur_eval = cur.copy()
    cur_eval[DECISION] = decide(cur_eval[SCORE].fillna(0.0).to_numpy(), reference.thresholds)
    cur_eval.loc[~champion_rows, SCORE] = np.nan  # a challenger's scores are not this model's
    cur_eval.loc[~champion_rows, DECISION] = None

    if settings.engine == "evidently":
        snap, columns, extra = _evidently_drift(ref_eval, cur_eval, features, settings, thresholds)
        snapshots["drift"] = snap
    else:
        columns, extra = _fast_drift(ref_eval, cur_eval, features, settings, thresholds)
    metrics.update(extra)
    metrics["feature_drift.n_columns"] = float(len(features))
    ranked = sorted(((info["ratio"], c) for c, info in columns.items() if info["ratio"] == info["ratio"]),
                    reverse=True)
    metrics["feature_drift.max_ratio"] = float(ranked[0][0]) if ranked else 0.0
    metrics["feature_drift.max_column"] = ranked[0][1] if ranked else ""
    metrics["feature_drift.second_ratio"] = float(ranked[1][0]) if len(ranked) > 1 else 0.0
    metrics["feature_drift.drifted_columns"] = ",".join(c for r, c in ranked if r >= 1.0)
    volatile = set(thresholds["volatile"])
    for c, info in columns.items():
        info["volatile"] = c in volatile
    metrics["feature_drift.weighted_count"] = float(sum(
        (settings.volatile_weight if c in volatile else 1.0) for c, info in columns.items() if info["drifted"]))
    metrics["feature_drift.volatile_columns"] = float(len(volatile))

    # categories never seen in the reference (a new payment method, a new country)
    new_share, new_col, new_vals = 0.0, "", []
    for c in (f for f in features if f in CATEGORICAL_FEATURES):
        vals = cur[c].astype(str)
        unseen = ~vals.isin(reference.categories.get(c, set()))
        share = float(unseen.mean())
        if share > new_share:
            new_share, new_col = share, c
            new_vals = sorted(vals[unseen].value_counts().head(5).index.tolist())
    metrics["new_category.share"] = new_share
    metrics["new_category.column"] = new_col
    metrics["new_category.values"] = ",".join(new_vals)

    # the score distribution and the decision rates (this version's rows)
    s_ref = ref_eval[SCORE].to_numpy(dtype="float64")
    s_cur = cur.loc[champion_rows, SCORE].dropna().to_numpy(dtype="float64")
    metrics["score.rows"] = float(s_cur.size)
    metrics["score_drift.threshold"] = float(thresholds["score_wasserstein"])
    w = metrics.get("score_drift.wasserstein", float("nan"))
    metrics["score_drift.ratio"] = float(w / thresholds["score_wasserstein"]) if w == w else float("nan")
    if s_cur.size:
        metrics["score.mean_ref"] = float(s_ref.mean())
        metrics["score.mean_cur"] = float(s_cur.mean())
        metrics["score.p99_ref"] = float(np.quantile(s_ref, 0.99))
        metrics["score.p99_cur"] = float(np.quantile(s_cur, 0.99))
        d_ref = decide(s_ref, reference.thresholds)
        d_cur = decide(s_cur, reference.thresholds)
        for name, d in (("ref", d_ref), ("cur", d_cur)):
            metrics[f"decision.review_rate_{name}"] = float((d == "review").mean())
            metrics[f"decision.block_rate_{name}"] = float((d == "block").mean())
            metrics[f"decision.flag_rate_{name}"] = float((d != "approve").mean())
        metrics.update(_rate_tests(d_ref, d_cur))
        metrics["decision.flag_rate_threshold"] = float(thresholds["flag_log2_ratio"])
        metrics["decision.flag_rate_shift_ratio"] = float(
            abs(metrics["decision.flag_rate_log2_ratio"]) / thresholds["flag_log2_ratio"])

    metrics.update(perf)
    return DriftResult(metrics, columns, snapshots, time.perf_counter() - started)


def _rate_tests(d_ref: np.ndarray, d_cur: np.ndarray) -> dict[str, float]:
    """Flag-rate (review+block) and block-rate shifts: log2 ratio (with a +1 pseudo-count, so an
    empty reference band does not divide by zero) and a two-sided binomial p-value of the current
    count against the reference rate. Fraud comes in bursts, so the p-value alone over-alarms; the
    rules pair it with the calibrated effect size."""
    from scipy.stats import binomtest

    out: dict[str, float] = {}
    n_ref, n_cur = d_ref.size, d_cur.size
    for name, ref_hits, cur_hits in (
        ("flag", int((d_ref != "approve").sum()), int((d_cur != "approve").sum())),
        ("block", int((d_ref == "block").sum()), int((d_cur == "block").sum())),
    ):
        p_ref = (ref_hits + 1) / (n_ref + 2)
        p_cur = (cur_hits + 1) / (n_cur + 2)
        out[f"decision.{name}_rate_log2_ratio"] = float(math.log2(p_cur / p_ref))
        out[f"decision.{name}_rate_p_value"] = float(binomtest(cur_hits, n_cur, p_ref).pvalue) if n_cur else 1.0
    return out
