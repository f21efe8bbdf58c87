"""Re-baselining: after a promotion, the drift reference becomes traffic the new champion has served.

Why: a retrained champion's own ``reference.parquet`` is its validation + test period, which the
retraining cuts from the history before the shift it was retrained for (`riskops.lifecycle.retrain`:
every recent labelled row trains). Compared with it, a shift the new champion has learned still
"drifts": it was flagged again and retrained again after the cooldown.

The rule (`reference_in_force`, called by every monitor pass):

* **Who** — a champion put in place by a promotion: the registry's ``previous_champion`` alias (set
  by `riskops.lifecycle.promotion.promote`, i.e. by the gate or the canary) names another version,
  and that version is the one the monitor compared against last (or the monitor has no record).
  A champion registered directly (``pipeline run --promotion always``, ``riskops models
  set-champion``) keeps its evaluation reference.
* **After how much** — once the prediction log holds ``rebaseline.rows`` rows (default: two of the
  monitor's windows, the least the threshold calibration needs) scored by the champion's version,
  not degraded (scored with default features: an outage, not the world), that span
  ``rebaseline.min_hours`` (24) of event time: a full daily cycle, so the hour-of-day matching finds
  every hour in the reference.
* **Which window** — the *first* such rows in serving order (``logged_at``): the shortest prefix
  that meets both conditions. It is frozen, never slides (a sliding reference would absorb a slow
  new shift), and written to ``<home>/monitoring/references/<version>-served.parquet``.
* **Until then** — the pass reports ``status: rebaselining`` with its progress; the distribution
  checks (inputs, score, decisions, new categories) are not run against the old reference, so no
  retraining is triggered; the performance check on labelled rows and the volume check still run.
* **Thresholds** — per-input thresholds come from natural drift (`riskops.monitoring.drift_thresholds`).
  The served reference measures its own (window against the rest: the learned shift's burstiness),
  but a day cannot show day-to-day drift; so per quantity it takes the largest natural drift of
  itself, the version's evaluation reference and the reference in force before the promotion
  (often several days; a retraining's own validation + test period can be too short to calibrate:
  928 rows in the drift demo's test). Decision thresholds and baseline metrics are the version's;
  categories are the union of the evaluation reference's and its own (a category the evaluation
  reference knew is not new).

Which reference is in force lives in the monitor's state (``<home>/monitoring/state.json``, key
``reference``): version, source (``evaluation`` | ``rebaselining`` | ``served``), progress, the natural
drift in force (``calibration``: what the next promotion carries over), and for a served one its
file and row window. A restarted monitor reads it back and keeps the same reference.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from riskops.features.contract import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from riskops.monitoring.drift_settings import DriftSettings
from riskops.monitoring.drift_thresholds import calibrate_reference, drift_thresholds
from riskops.monitoring.reference import HOUR, SCORE, TIMESTAMP, WEEKEND, Reference, current_frame
from riskops.registry.store import ModelRegistry, ModelVersion
from riskops.settings import Paths, from_dict

log = logging.getLogger(__name__)

STATE_KEY = "reference"  # the monitor state's entry
# = riskops.lifecycle.promotion.PREVIOUS_CHAMPION (the monitoring package cannot import the lifecycle)
PREVIOUS_CHAMPION = "previous_champion"
SERVED_DIR = "references"  # under <home>/monitoring
_KEEP = (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES, SCORE, HOUR, WEEKEND, TIMESTAMP)
_IDS = ("transaction_id", "model_version")  # which log rows a served reference holds
_CACHE: dict[
    tuple, tuple[Reference, dict | None]
] = {}  # (file, mtime, settings) -> (reference, own calibration)


@dataclass
class RebaselineSettings:
    """The `rebaseline:` section of configs/monitor.yaml."""

    enabled: bool = True  # false: every champion is compared with its evaluation reference
    rows: int = 0  # champion rows the served reference needs; 0 = two of the monitor's windows
    min_hours: float = 24.0  # event time those rows must span (a daily cycle, for the hour matching)

    @classmethod
    def from_dict(cls, d: dict | None) -> RebaselineSettings:
        s = from_dict(cls, d, "rebaseline")
        if s.rows < 0 or s.min_hours < 0:
            raise ValueError(f"rebaseline.rows and min_hours must be >= 0, got {s.rows}, {s.min_hours}")
        return s


@dataclass
class InForce:
    """The reference a pass compares against, and the state entry that says so."""

    reference: Reference
    entry: dict

    @property
    def pending(self) -> bool:
        """Re-baselining: the distribution checks wait for enough champion traffic."""
        return self.entry.get("source") == "rebaselining"


def was_promoted(champion: str, previous_champion: str | None, last: dict | None) -> bool:
    """Whether `champion` replaced another version through a promotion the monitor should follow.

    ``previous_champion``: the registry alias (promote() sets it); ``last``: the state's entry of the
    reference in force before. A stale alias from an older promotion (another version was compared
    against since) is not this champion's promotion.
    """
    if not previous_champion or previous_champion == champion:
        return False
    return not last or last.get("version") == previous_champion


def served_window(
    log_df: pd.DataFrame, version: str, rows: int, min_hours: float
) -> tuple[pd.DataFrame | None, dict]:
    """The first log rows `version` served (not degraded, with a score) once they are `rows` many and
    span `min_hours` of event time; None until then. Returns (rows or None, progress)."""
    progress: dict[str, Any] = dict(rows=0, hours=0.0, needed_rows=int(rows), needed_hours=float(min_hours))
    if log_df is None or not len(log_df) or "model_version" not in log_df.columns:
        return None, progress
    df = log_df
    if "logged_at" in df.columns:  # serving order, also when several replicas' segments are merged
        order = pd.to_datetime(df["logged_at"], utc=True, errors="coerce")
        df = df.iloc[np.argsort(order.to_numpy(dtype="int64"), kind="stable")]

    def column(name: str, default: Any) -> pd.Series:
        return df[name] if name in df.columns else pd.Series(default, index=df.index)

    mine = df["model_version"].astype(str) == str(version)
    degraded = column("degraded", False).fillna(False).astype(bool)
    score = pd.to_numeric(column("risk_score", np.nan), errors="coerce")
    time_col = TIMESTAMP if TIMESTAMP in df.columns else ("logged_at" if "logged_at" in df.columns else None)
    ts = pd.to_datetime(df[time_col], utc=True, errors="coerce") if time_col else None
    usable = mine & ~degraded & score.notna() & (ts.notna() if ts is not None else True)
    progress["degraded_excluded"] = int((mine & degraded).sum())
    cand = df[usable.to_numpy()]
    n = len(cand)
    progress["rows"] = n
    if n == 0:
        return None, progress
    count = np.arange(1, n + 1)
    if ts is not None:
        t = ts[usable.to_numpy()].to_numpy(dtype="int64")
        span_h = (np.maximum.accumulate(t) - np.minimum.accumulate(t)) / 3.6e12
    else:  # no event time to measure a span: the row count decides alone
        span_h = np.full(n, np.inf)
    progress["hours"] = round(float(span_h[-1]), 2) if np.isfinite(span_h[-1]) else None
    ok = (count >= max(int(rows), 1)) & (span_h >= float(min_hours))
    if not ok.any():
        return None, progress
    return cand.iloc[: int(np.argmax(ok)) + 1], progress


def window_of(rows: pd.DataFrame) -> dict:
    """Where a served reference came from: row count, first/last transaction, serving and event times."""

    def first_last(col: str) -> tuple[Any, Any]:
        if col not in rows.columns or not len(rows):
            return None, None
        return str(rows[col].iloc[0]), str(rows[col].iloc[-1])

    out = {"rows": len(rows)}
    for col, key in (("transaction_id", "transaction_id"), ("logged_at", "logged_at")):
        out[f"first_{key}"], out[f"last_{key}"] = first_last(col)
    if TIMESTAMP in rows.columns and len(rows):
        ts = pd.to_datetime(rows[TIMESTAMP], utc=True)
        out["start"], out["end"] = ts.min().isoformat(), ts.max().isoformat()
    return out


def served_reference(frame: pd.DataFrame, evaluation: Reference, path: Path | None = None) -> Reference:
    """A Reference over served rows (`current_frame` columns) with the evaluation reference's decision
    thresholds and baseline metrics, and the union of both sides' categories (no calibration yet)."""
    cats = {
        c: set(evaluation.categories.get(c, set())) | set(frame[c].astype(str).unique())
        for c in CATEGORICAL_FEATURES
        if c in frame.columns
    }
    return Reference(
        frame=frame.reset_index(drop=True),
        thresholds=dict(evaluation.thresholds),
        baseline=dict(evaluation.baseline),
        model_version=evaluation.model_version,
        path=path,
        categories=cats,
    )


def calibrated(evaluation: Reference, drift: DriftSettings | None, *others: dict | None) -> dict | None:
    """Per quantity, the largest natural drift of the evaluation reference (calibrated here if need
    be) and `others` (the served reference's own, the one in force before the promotion);
    calibrations made with other settings, or without a single block, are ignored."""
    if drift is None or not drift.calibrate:
        return None
    drift_thresholds(evaluation, drift)  # calibrates the evaluation reference (cached on it)
    same = ("window_size", "clip_quantile", "stride")
    mine = evaluation.calibration or {}
    cals = [
        c for c in (mine, *others) if c and c.get("blocks") and all(c.get(k) == mine.get(k) for k in same)
    ]
    if not cals:
        return evaluation.calibration
    out = {**cals[0], "blocks": max(int(c["blocks"]) for c in cals)}
    names = set().union(*(c.get("features", {}) for c in cals))
    out["features"] = {f: max(float(c.get("features", {}).get(f, 0.0)) for c in cals) for f in sorted(names)}
    for k in ("score_wasserstein", "flag_log2_ratio"):
        out[k] = max(float(c.get(k, 0.0)) for c in cals)
    return out


def served_file(paths: Paths, version: str) -> Path:
    return paths.root / "monitoring" / SERVED_DIR / f"{version}-served.parquet"


def _save(rows: pd.DataFrame, file: Path) -> pd.DataFrame:
    frame = current_frame(rows).reset_index(drop=True)
    frame = frame[[c for c in (*_KEEP, *_IDS) if c in frame.columns]]
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".parquet.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(file)
    return frame


def _load(file: Path, evaluation: Reference, drift: DriftSettings | None, carried: dict | None) -> Reference:
    """The served reference in `file`, its thresholds' natural drift set (see `calibrated`)."""
    key = (str(file), file.stat().st_mtime_ns, repr(drift))
    if key not in _CACHE:
        ref = served_reference(pd.read_parquet(file), evaluation, path=file)
        own = calibrate_reference(ref, drift) if drift is not None and drift.calibrate else None
        _CACHE.clear()  # one champion at a time
        _CACHE[key] = (ref, own)
    ref, own = _CACHE[key]
    ref.calibration = calibrated(evaluation, drift, own, carried)
    return ref


def _jsonable(calibration: dict | None) -> dict | None:
    """A calibration as the state file keeps it (what a next promotion carries over)."""
    if not calibration:
        return None
    return {**calibration, "features": {f: float(v) for f, v in calibration.get("features", {}).items()}}


def reference_in_force(
    paths: Paths,
    settings: RebaselineSettings,
    champion: ModelVersion,
    evaluation: Reference,
    log_df: pd.DataFrame,
    state: dict,
    window_size: int,
    drift: DriftSettings | None = None,
    at: str | None = None,
) -> InForce:
    """The reference this pass compares against (see the module doc); updates ``state[STATE_KEY]``.

    Args:
        paths: the home folder's layout (registry aliases; served references under monitoring/).
        settings: the `rebaseline:` section.
        champion: the champion version; ``evaluation`` is its own ``reference.parquet``.
        log_df: the prediction-log rows the pass read.
        state: the monitor's state (read and written by the monitor pass).
        window_size: the monitor's window (``settings.rows`` 0 means twice this many rows).
        drift: the drift settings (calibrations are compared and made with them).
        at: the pass's time (recorded when re-baselining starts and ends).
    """
    last = state.get(STATE_KEY) or None
    version = champion.version
    mine = last if last and last.get("version") == version else None
    if mine and mine.get("source") == "served":
        file = paths.root / mine.get("file", "")
        if settings.enabled and file.is_file():
            ref = _load(file, evaluation, drift, mine.get("carried"))
            state[STATE_KEY] = mine = {**mine, "calibration": _jsonable(ref.calibration)}
            return InForce(ref, mine)
        if settings.enabled:
            log.warning("served reference %s is gone: re-baselining %s again", file, version)
            mine = {k: mine.get(k) for k in ("version", "replaces", "carried")} | {
                "source": "rebaselining",
                "since": at,
            }
    if mine is None and settings.enabled:
        previous = ModelRegistry(paths.registry).aliases().get(PREVIOUS_CHAMPION)
        if was_promoted(version, previous, last):
            carried = (last or {}).get("calibration")
            mine = {
                "version": version,
                "source": "rebaselining",
                "replaces": previous,
                "since": at,
                "carried": carried,
            }
            log.info(
                "champion %s replaced %s: re-baselining the drift reference on its traffic", version, previous
            )
    if not settings.enabled or not mine or mine.get("source") != "rebaselining":
        if drift is not None and drift.calibrate:
            drift_thresholds(evaluation, drift)  # what the pass computes anyway; kept to be carried over
        entry = {"version": version, "source": "evaluation", "file": str(evaluation.path),
                 "calibration": _jsonable(evaluation.calibration)}  # fmt: skip
        state[STATE_KEY] = entry
        return InForce(evaluation, entry)
    rows, progress = served_window(log_df, version, settings.rows or 2 * window_size, settings.min_hours)
    entry = {**mine, "progress": progress}
    if rows is None:
        state[STATE_KEY] = entry
        return InForce(evaluation, entry)
    file = served_file(paths, version)
    frame = _save(rows, file)
    entry.update(source="served", file=str(file.relative_to(paths.root)), window=window_of(rows), built_at=at)
    ref = _load(file, evaluation, drift, entry.get("carried"))
    entry["calibration"] = _jsonable(ref.calibration)
    state[STATE_KEY] = entry
    log.info(
        "drift reference of %s re-baselined on %d served rows (%s)", version, len(frame), entry["window"]
    )
    return InForce(ref, entry)
