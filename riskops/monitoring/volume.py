"""Hourly volume anomalies: spikes and drops against a robust seasonal baseline.

Series (per UTC hour): ``orders`` (every scored transaction), ``refunds``, ``blocks``, ``reviews``
and ``payments.<method>`` for each payment method seen.

Baseline for hour *t* of a series: the same season slot (hour of day, or hour of week once the
history holds ``min_history`` weeks — ``season: auto``) over the previous ``history_days``, hour *t*
itself excluded:

    baseline = median,   sigma = max(1.4826 * MAD, sqrt(max(baseline, 1)), min_sigma)

The square-root floor is the Poisson noise of a count: a quiet series (3 blocks an hour) whose MAD
happens to be 0 does not alarm on 5. An hour is anomalous when ``|z| >= z_threshold`` AND the
absolute change is at least ``min_abs_change`` events (and, for drops, the baseline is at least
``min_baseline_for_drop``). Only complete hours are judged: the hour containing ``now`` is still
filling up and would always look like a drop. Hours with no events count as 0 (an outage is a drop).

Reading: `hourly_volumes` works on any frame with a timestamp; `hourly_volumes_from_log` reads the
prediction log (a local folder or the shipped log's URI) segment by segment and caches each segment's
hourly counts (keyed by segment name and size), so a monitor running every minute re-reads only the
segments that changed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from riskops.monitoring.prediction_log import segment_records, segment_size, segments
from riskops.settings import from_dict

if TYPE_CHECKING:
    from riskops.monitoring.log_store import ShippedSegment

log = logging.getLogger(__name__)

MAD_SCALE = 1.4826


@dataclass
class VolumeSettings:
    """The `volume:` section of configs/monitor.yaml."""

    enabled: bool = True
    time_column: str = "event_timestamp"  # or logged_at (wall clock of serving)
    season: str = "auto"  # hour_of_day | hour_of_week | auto
    history_days: int = 14
    min_history: int = 3  # same-slot observations needed before an hour is judged
    z_threshold: float = 4.0
    min_abs_change: float = 10.0
    min_baseline_for_drop: float = 5.0
    min_sigma: float = 1.0
    lookback_hours: int = 2  # complete hours judged per run (the newest ones)
    series: list[str] = field(default_factory=lambda: ["orders", "payments", "refunds", "blocks", "reviews"])

    @classmethod
    def from_dict(cls, d: dict | None) -> VolumeSettings:
        s = from_dict(cls, d, "volume")
        if s.season not in ("auto", "hour_of_day", "hour_of_week"):
            raise ValueError(f"volume.season must be auto, hour_of_day or hour_of_week, got {s.season!r}")
        return s


@dataclass
class VolumeResult:
    anomalies: list[dict]  # one per (series, hour) judged anomalous
    judged: pd.DataFrame  # every judged (series, hour): value, baseline, sigma, z, anomaly
    season: str
    hours: int  # complete hours of history available

    def to_dict(self) -> dict[str, Any]:
        return {
            "anomalies": self.anomalies,
            "season": self.season,
            "history_hours": self.hours,
            "judged": json.loads(self.judged.to_json(orient="records", date_format="iso")),
        }


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "t", "yes")
    try:
        return bool(v) and v == v
    except (TypeError, ValueError):
        return False


def _counts_frame(
    ts: pd.Series, payment: pd.Series | None, refund: pd.Series | None, decision: pd.Series | None
) -> pd.DataFrame:
    """Per-hour counts (no hour filling) of one batch of events."""
    hour = pd.to_datetime(ts, utc=True, errors="coerce").dt.floor("h")
    ok = hour.notna()
    parts = {"orders": pd.Series(1, index=ts.index)}
    if refund is not None:
        parts["refunds"] = refund.map(_truthy).astype("int64")
    if decision is not None:
        d = decision.astype(str)
        parts["blocks"] = (d == "block").astype("int64")
        parts["reviews"] = (d == "review").astype("int64")
    frame = pd.DataFrame(parts)
    if payment is not None:
        pm = pd.get_dummies(payment.astype(str), prefix="payments", prefix_sep=".").astype("int64")
        frame = pd.concat([frame, pm], axis=1)
    frame = frame[ok.to_numpy()]
    frame.index = hour[ok].to_numpy()
    return frame.groupby(level=0).sum()


def hourly_volumes(df: pd.DataFrame, time_column: str = "event_timestamp") -> pd.DataFrame:
    """Hourly counts of a frame of events (prediction-log rows or transactions), every hour between
    the first and the last present (zeros filled). Index: UTC hour starts."""
    if df.empty or time_column not in df.columns:
        return pd.DataFrame(columns=["orders"], dtype="int64")
    counts = _counts_frame(
        df[time_column],
        df["payment_method"] if "payment_method" in df.columns else None,
        df["is_refund"] if "is_refund" in df.columns else None,
        df["decision"] if "decision" in df.columns else None,
    )
    return _fill_hours(counts)


def _fill_hours(counts: pd.DataFrame) -> pd.DataFrame:
    if counts.empty:
        return counts
    idx = pd.date_range(counts.index.min(), counts.index.max(), freq="h", tz="UTC")
    return counts.reindex(idx, fill_value=0).fillna(0).astype("int64")


def _segment_counts(segment: Path | ShippedSegment, time_column: str) -> pd.DataFrame:
    ts, pm, refund, decision = [], [], [], []
    for rec in segment_records(segment):
        tx = rec.get("transaction") or {}
        ts.append(rec.get(time_column) or tx.get(time_column))
        pm.append(tx.get("payment_method", rec.get("payment_method")))
        refund.append(tx.get("is_refund", rec.get("is_refund")))
        decision.append(rec.get("decision"))
    if not ts:
        return pd.DataFrame()
    frame = pd.DataFrame({"t": ts, "pm": pm, "refund": refund, "decision": decision})
    frame["t"] = pd.to_datetime(frame["t"], utc=True, errors="coerce", format="ISO8601")
    return _counts_frame(frame["t"], frame["pm"], frame["refund"], frame["decision"])


def hourly_volumes_from_log(
    source: Path | str, cache_dir: Path | str | None = None, time_column: str = "event_timestamp"
) -> pd.DataFrame:
    """Hourly counts of the whole prediction log (a folder or the shipped log's URI), with a per-segment cache."""
    cache = Path(cache_dir) if cache_dir else None
    index: dict[str, Any] = {}
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
        try:
            index = json.loads((cache / "index.json").read_text())
        except (OSError, ValueError):
            index = {}
    parts = []
    new_index: dict[str, Any] = {}
    present = segments(source)
    for seg in present:
        size = segment_size(seg)
        key = f"{seg.name}|{size}|{time_column}"
        cached = cache / (seg.stem + f".{time_column}.parquet") if cache else None
        if cached is not None and index.get(seg.name) == key and cached.exists():
            counts = pd.read_parquet(cached)
        else:
            counts = _segment_counts(seg, time_column)
            if cached is not None and not counts.empty:
                counts.to_parquet(cached)
        if cached is not None:
            new_index[seg.name] = key
        if not counts.empty:
            parts.append(counts)
    if cache:
        (cache / "index.json").write_text(json.dumps(new_index))
        for stale in cache.glob("predictions-*.parquet"):  # segments removed by retention
            if stale.name.split(".")[0] not in {s.stem for s in present}:
                stale.unlink(missing_ok=True)
    if not parts:
        return pd.DataFrame(columns=["orders"], dtype="int64")
    counts = pd.concat(parts).fillna(0).groupby(level=0).sum()
    counts.index = (
        pd.DatetimeIndex(counts.index).tz_convert("UTC")
        if counts.index.tz
        else pd.DatetimeIndex(counts.index).tz_localize("UTC")
    )
    return _fill_hours(counts.astype("int64"))


def _series_columns(hourly: pd.DataFrame, wanted: list[str]) -> list[str]:
    cols = []
    for c in hourly.columns:
        family = c.split(".", 1)[0]
        if c in wanted or family in wanted:
            cols.append(c)
    return cols


def detect_volume_anomalies(
    hourly: pd.DataFrame, settings: VolumeSettings | None = None, now: pd.Timestamp | None = None
) -> VolumeResult:
    """Judge the newest ``lookback_hours`` complete hours of each series against its baseline.

    ``now`` (UTC) marks the present; the hour containing it is incomplete and not judged. Default:
    the end of the last hour present in ``hourly`` (i.e. every hour in the frame is complete).
    """
    settings = settings or VolumeSettings()
    if hourly is None or hourly.empty:
        return VolumeResult([], pd.DataFrame(), settings.season, 0)
    hourly = hourly.sort_index()
    if now is None:
        now = hourly.index.max() + pd.Timedelta(hours=1)
    now = pd.Timestamp(now)
    now = now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")
    current_hour = now.floor("h")
    # extend to the hour before `now` with zeros (silence since the last event is a drop)
    if hourly.index.max() < current_hour - pd.Timedelta(hours=1):
        idx = pd.date_range(hourly.index.min(), current_hour - pd.Timedelta(hours=1), freq="h", tz="UTC")
        hourly = hourly.reindex(idx, fill_value=0)
    complete = hourly[hourly.index < current_hour]
    history_hours = len(complete)
    season = settings.season
    if season == "auto":
        season = "hour_of_week" if history_hours >= settings.min_history * 7 * 24 else "hour_of_day"
    period = 168 if season == "hour_of_week" else 24
    max_lags = max(1, int(settings.history_days * 24 // period))
    judged_hours = (
        complete.index[-settings.lookback_hours :] if settings.lookback_hours > 0 else complete.index[:0]
    )
    cols = _series_columns(complete, settings.series)
    values = complete[cols].to_numpy(dtype="float64") if cols else np.zeros((len(complete), 0))
    pos_of = {t: i for i, t in enumerate(complete.index)}
    rows, anomalies = [], []
    for t in judged_hours:
        i = pos_of[t]
        lags = [i - k * period for k in range(1, max_lags + 1) if i - k * period >= 0]
        if len(lags) < settings.min_history:
            continue
        hist = values[lags]  # (n_lags, n_series)
        base = np.median(hist, axis=0)
        mad = np.median(np.abs(hist - base), axis=0)
        sigma = np.maximum.reduce(
            [MAD_SCALE * mad, np.sqrt(np.maximum(base, 1.0)), np.full_like(base, settings.min_sigma)]
        )
        x = values[i]
        z = (x - base) / sigma
        for j, col in enumerate(cols):
            change = x[j] - base[j]
            anomaly = abs(z[j]) >= settings.z_threshold and abs(change) >= settings.min_abs_change
            if anomaly and change < 0 and base[j] < settings.min_baseline_for_drop:
                anomaly = False
            row = {
                "hour": t.isoformat(),
                "series": col,
                "value": float(x[j]),
                "baseline": float(base[j]),
                "sigma": float(sigma[j]),
                "z": float(z[j]),
                "history": len(lags),
                "anomaly": bool(anomaly),
            }
            rows.append(row)
            if anomaly:
                kind = "spike" if change > 0 else "drop"
                anomalies.append(
                    {
                        **row,
                        "kind": kind,
                        "message": f"{col} {kind} at {t:%Y-%m-%d %H:00}Z: {x[j]:.0f} vs baseline "
                        f"{base[j]:.0f} (z={z[j]:+.1f}, {season})",
                    }
                )
    return VolumeResult(anomalies, pd.DataFrame(rows), season, history_hours)
