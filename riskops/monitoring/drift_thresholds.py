"""Self-calibrated drift thresholds: distances, winsorising, the reference's natural drift.

Features differ in how much they wander from one day to the next
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

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from riskops.features.contract import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from riskops.monitoring.drift_settings import DriftSettings
from riskops.monitoring.reference import SCORE, Reference, decide, matched_reference

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


def clipped_reference(reference: Reference, q: float) -> tuple[dict, pd.DataFrame]:
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


def flag_log2_ratio(ref_scores: np.ndarray, cur_scores: np.ndarray, thresholds: dict[str, float]) -> float:
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
    _bounds, ref = clipped_reference(reference, settings.clip_quantile)
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
        flag_nat = max(flag_nat, abs(flag_log2_ratio(rs, bs, reference.thresholds)))
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
