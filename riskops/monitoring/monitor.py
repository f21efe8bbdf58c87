"""The monitor: one pass = read the log window -> drift + volume -> rules -> reports and alerts.

    result = run_monitor_once(paths, config)

One pass (`run_monitor_once`):

1. the champion (registry alias) and its reference (`reference.parquet` in the version folder;
   cached with its calibration between passes of a loop); after a promotion, the first traffic the
   new champion served, two windows over a day (`riskops.monitoring.rebaseline`; until then the
   pass reports ``status: rebaselining`` and runs no distribution check);
2. the newest ``window.size`` scored transactions of the prediction log (segments are read newest
   first, only as far back as needed, ``window.scan_rows`` at most for the labelled window) from
   ``paths.prediction_log_source``: the shipped log at $RISKOPS_PREDICTION_LOG_URI when set (on a
   cluster: what every replica shipped), else the local folder;
3. feedback labels joined on transaction_id -> the labelled window (the newest
   ``window.performance_rows`` labelled rows scored by the champion);
4. `compute_drift` (Evidently report) + hourly volume anomalies -> flat metrics -> `evaluate_rules`;
5. reports under ``<home>/reports/monitoring/<UTC timestamp>/`` (drift.html/json, performance.html/json
   when labels allow, volume.json, verdict.json), the newest ``reports.keep_last`` kept; the pass's
   Evidently reports also become one run of the Evidently workspace ``<home>/<reports.workspace>``
   (`riskops.monitoring.workspace`; `riskops ui` shows its dashboard);
6. when a rule fired: an alert event (`riskops.monitoring.alerts.emit_alert`); volume anomalies
   already alerted for the same hour are not repeated.

The monitor reports a verdict; what to do about it (retrain, gate, promote) is the lifecycle's:
`riskops.lifecycle.loop` runs this pass and acts on its verdict (`riskops monitor`).

Nothing here raises into a loop for data problems: a pass with too little data reports
``status: insufficient_data``.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from riskops.monitoring.alerts import AlertSettings, emit_alert
from riskops.monitoring.drift import DriftResult, compute_drift
from riskops.monitoring.drift_settings import DriftSettings
from riskops.monitoring.feedback import labelled_window, load_feedback
from riskops.monitoring.prediction_log import read_prediction_log
from riskops.monitoring.rebaseline import RebaselineSettings, reference_in_force
from riskops.monitoring.reference import Reference, ReferenceError, current_frame, load_reference
from riskops.monitoring.rules import Rule, Verdict, evaluate_rules, load_rules
from riskops.monitoring.volume import VolumeSettings, detect_volume_anomalies, hourly_volumes_from_log
from riskops.registry.store import ModelRegistry, ModelVersion
from riskops.settings import Paths, from_dict

log = logging.getLogger(__name__)

MONITOR_SECTIONS = ("window", "drift", "volume", "rules", "rule_overrides", "alerts", "reports", "rebaseline")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class WindowSettings:
    """The `window:` section of configs/monitor.yaml."""

    size: int = 1500  # newest scored transactions compared with the reference
    min_rows: int = 500  # below this a pass reports insufficient_data (rules also have their own minimums)
    performance_rows: int = 5000  # newest labelled rows used for the performance check
    scan_rows: int = 50_000  # how far back the log is read to find labelled rows

    @classmethod
    def from_dict(cls, d: dict | None) -> WindowSettings:
        return from_dict(cls, d, "window")


@dataclass
class ReportSettings:
    """The `reports:` section of configs/monitor.yaml."""

    dir: str = "monitoring"  # under Paths.reports
    html: bool = True
    keep_last: int = 48  # report folders kept (each HTML drift report is a few MB)
    # Evidently workspace each pass adds its reports to, as one run (riskops.monitoring.workspace;
    # `riskops ui` serves it): a folder under the home, or an absolute path (a mounted volume); "" = off
    workspace: str = "evidently"
    workspace_keep_runs: int = 5000  # runs kept in the workspace (~80 KB each once slimmed; 0 = all)

    @classmethod
    def from_dict(cls, d: dict | None) -> ReportSettings:
        return from_dict(cls, d, "reports")

    def __post_init__(self) -> None:
        if "://" in self.workspace:
            raise ValueError(
                f"reports.workspace {self.workspace!r}: the Evidently workspace is a local folder (a mounted "
                "volume on a cluster), not an object-store URI"
            )


@dataclass
class MonitorConfig:
    """The monitor's sections of configs/monitor.yaml (`riskops.lifecycle.loop.LoopConfig` reads the
    whole file: these plus what the lifecycle does about a verdict)."""

    window: WindowSettings = field(default_factory=WindowSettings)
    drift: DriftSettings = field(default_factory=DriftSettings)
    volume: VolumeSettings = field(default_factory=VolumeSettings)
    rules: list[Rule] = field(default_factory=lambda: load_rules({}))
    alerts: AlertSettings = field(default_factory=AlertSettings)
    reports: ReportSettings = field(default_factory=ReportSettings)
    rebaseline: RebaselineSettings = field(default_factory=RebaselineSettings)

    @classmethod
    def from_dict(cls, d: dict | None) -> MonitorConfig:
        d = dict(d or {})
        unknown = sorted(set(d) - set(MONITOR_SECTIONS))
        if unknown:
            raise ValueError(
                f"monitor config: unknown sections {unknown} (known: {', '.join(MONITOR_SECTIONS)})"
            )
        window = WindowSettings.from_dict(d.get("window"))
        drift = dict(d.get("drift") or {})
        drift.setdefault("window_size", window.size)  # calibrate at the size the monitor compares
        return cls(
            window=window,
            drift=DriftSettings.from_dict(drift),
            volume=VolumeSettings.from_dict(d.get("volume")),
            rules=load_rules(d),
            alerts=AlertSettings.from_dict(d.get("alerts")),
            reports=ReportSettings.from_dict(d.get("reports")),
            rebaseline=RebaselineSettings.from_dict(d.get("rebaseline")),
        )


# --------------------------------------------------------------------------------------------
# One pass
# --------------------------------------------------------------------------------------------


@dataclass
class MonitorResult:
    """What one pass saw and wrote; `summary()` is what verdict.json holds."""

    at: str
    status: str  # ok | insufficient_data | rebaselining | no_champion | no_reference
    verdict: Verdict
    champion: str | None = None
    report_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    volume_anomalies: list[dict] = field(default_factory=list)
    alert: dict | None = None
    seconds: float = 0.0
    webhook_thread: threading.Thread | None = None
    reference: dict | None = None  # the reference in force (riskops.monitoring.rebaseline)
    drift_columns: dict[str, dict] = field(default_factory=dict)  # per monitored input: ratio, drifted, ...

    def summary(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "status": self.status,
            "champion": self.champion,
            "drift": self.verdict.drift,
            "alert": self.verdict.alert,
            "reasons": self.verdict.reasons,
            "skipped": self.verdict.skipped,
            "volume_anomalies": self.volume_anomalies,
            "report_dir": str(self.report_dir) if self.report_dir else None,
            "seconds": round(self.seconds, 3),
            "reference": self.reference,
        }


def read_monitor_log(paths: Paths, window: WindowSettings) -> pd.DataFrame:
    """The prediction-log rows one pass reads: the newest ``max(size, scan_rows)`` rows."""
    return read_prediction_log(paths.prediction_log_source, newest_rows=max(window.size, window.scan_rows))


def write_verdict(result: MonitorResult, summary: dict[str, Any]) -> None:
    """Write ``verdict.json`` into the pass's report folder (logged, never raised, on a disk error)."""
    try:
        path = result.report_dir / "verdict.json"
        path.write_text(json.dumps(summary, indent=2, default=str))
        result.files["verdict.json"] = path
    except OSError as exc:
        log.error("cannot write verdict: %s", exc)


_REFERENCE_CACHE: dict[tuple, Reference] = {}


def _reference(mv: ModelVersion) -> Reference:
    p = Path(mv.path) / "reference.parquet"
    key = (str(p), p.stat().st_mtime_ns if p.exists() else 0)
    ref = _REFERENCE_CACHE.get(key)
    if ref is None:
        ref = load_reference(mv.path, model_version=mv.version)
        _REFERENCE_CACHE.clear()  # one champion at a time
        _REFERENCE_CACHE[key] = ref
    return ref


def _state_file(paths: Paths) -> Path:
    return paths.root / "monitoring" / "state.json"


def _read_state(paths: Paths) -> dict:
    try:
        return json.loads(_state_file(paths).read_text())
    except (OSError, ValueError):
        return {}


def _write_state(paths: Paths, state: dict) -> None:
    f = _state_file(paths)
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(f)


def _prune_reports(root: Path, keep: int) -> None:
    if keep <= 0 or not root.exists():
        return
    dirs = sorted(d for d in root.iterdir() if d.is_dir())
    for d in dirs[:-keep]:
        shutil.rmtree(d, ignore_errors=True)


def _volume(paths: Paths, cfg: MonitorConfig, now: pd.Timestamp, state: dict) -> tuple[dict, list[dict], Any]:
    """Hourly volume anomalies as flat metrics; the ones already alerted (per series and hour) are not fresh."""
    if not cfg.volume.enabled:
        return {}, [], None
    hourly = hourly_volumes_from_log(
        paths.prediction_log_source, paths.root / "monitoring" / "volume_cache", cfg.volume.time_column
    )
    vnow = now if cfg.volume.time_column == "logged_at" else None  # replayed event times have their own clock
    result = detect_volume_anomalies(hourly, cfg.volume, now=vnow)
    alerted = set(state.get("volume_alerted", []))
    fresh = [a for a in result.anomalies if f"{a['series']}|{a['hour']}" not in alerted]
    state["volume_alerted"] = sorted(alerted | {f"{a['series']}|{a['hour']}" for a in result.anomalies})[
        -500:
    ]
    metrics = {
        "volume.anomalies": float(len(fresh)),
        "volume.anomalies_total": float(len(result.anomalies)),
        "volume.history_hours": float(result.hours),
        "volume.summary": "; ".join(a["message"] for a in fresh[:5]),
    }
    return metrics, fresh, result


def _drift(
    paths: Paths,
    cfg: MonitorConfig,
    champion: ModelVersion,
    reference: Reference,
    log_df: pd.DataFrame,
    metrics: dict[str, Any],
    compare: bool = True,
) -> DriftResult:
    """The window (and its labelled part, scored by the champion) against the champion's reference."""
    window = log_df.tail(cfg.window.size) if compare else log_df.head(0)  # re-baselining: labelled rows only
    feedback = load_feedback(paths)
    labelled = labelled_window(log_df, feedback) if len(log_df) and len(feedback) else None
    if labelled is not None and len(labelled):
        if "model_version" in labelled.columns:
            labelled = labelled[labelled["model_version"].astype(str) == champion.version]
        labelled = labelled.tail(cfg.window.performance_rows)
    metrics["feedback.records"] = float(len(feedback))
    cur = current_frame(window) if len(window) else current_frame(log_df.head(0))
    return compute_drift(reference, cur, cfg.drift, labelled=labelled)


def _write_reports(
    report_dir: Path, cfg: MonitorConfig, drift: DriftResult | None, volume: Any
) -> dict[str, Path]:
    files: dict[str, Path] = {}
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
        if drift is not None:
            files.update(drift.write(report_dir, html=cfg.reports.html))
        if volume is not None:
            (report_dir / "volume.json").write_text(json.dumps(volume.to_dict(), indent=2, default=str))
            files["volume.json"] = report_dir / "volume.json"
        _prune_reports(report_dir.parent, cfg.reports.keep_last)
    except OSError as exc:
        log.error("cannot write monitoring reports to %s: %s", report_dir, exc)
    return files


def workspace_path(paths: Paths, reports: ReportSettings) -> Path | None:
    """Where the pass's Evidently runs go (`ReportSettings.workspace` under the home), None when off."""
    return paths.root / reports.workspace if reports.workspace else None


def _add_to_workspace(
    paths: Paths, cfg: MonitorConfig, result: MonitorResult, drift: DriftResult | None, now: datetime
) -> None:
    """The pass as one run of the Evidently workspace; a failure is logged, never raised into the pass."""
    folder = workspace_path(paths, cfg.reports)
    if folder is None:
        return
    # the verdict first: the UI's run list shows the first two tags of a run
    tags = [
        "drift" if result.verdict.drift else "no-drift",
        f"status:{result.status}",
        f"champion:{result.champion or 'none'}",
    ]
    if result.verdict.alert:
        tags.append("alert")
    snapshots = dict(sorted((drift.snapshots if drift else {}).items(), key=lambda kv: kv[0] != "drift"))
    metadata = {
        "verdict": "drift" if result.verdict.drift else "alert" if result.verdict.alert else "ok",
        "rules": ",".join(r["rule"] for r in result.verdict.reasons),
        "report_dir": str(result.report_dir),
        "reports": ",".join(snapshots),  # the Evidently reports the run holds (drift first)
        "at": result.at,
    }
    try:
        from riskops.monitoring.workspace import DriftWorkspace

        ws = DriftWorkspace(
            folder, keep_full=cfg.reports.keep_last, keep_runs=cfg.reports.workspace_keep_runs
        )
        ws.add_pass(snapshots, now, tags, metadata)
    except Exception as exc:  # the history is a view; the pass (verdict, alert, retraining) must go on
        log.error("cannot add the monitor pass to the Evidently workspace %s: %s", folder, exc)


def run_monitor_once(
    paths: Paths,
    config: MonitorConfig | dict | None = None,
    now: datetime | None = None,
    log_df: pd.DataFrame | None = None,
) -> MonitorResult:
    """One monitoring pass (see the module doc). Returns a MonitorResult; writes reports, verdict and alerts.

    Args:
        paths: the home folder's layout.
        config: the monitor's sections (a dict is read with `MonitorConfig.from_dict`; None: defaults).
        now: the pass's time (default: now, UTC).
        log_df: prediction-log rows to use instead of reading ``paths.prediction_log_source`` (tests, replays,
            and the lifecycle loop, which passes the same rows to the promotion gate).
    """
    started = time.perf_counter()
    cfg = config if isinstance(config, MonitorConfig) else MonitorConfig.from_dict(config)
    now_dt = now or datetime.now(UTC)
    at = now_dt.isoformat(timespec="seconds")
    report_dir = paths.reports / cfg.reports.dir / now_dt.strftime("%Y%m%dT%H%M%S%fZ")
    state = _read_state(paths)

    champion = ModelRegistry(paths.registry).champion()
    status, reference = "ok", None
    if champion is None:
        status = "no_champion"
    else:
        try:
            reference = _reference(champion)
        except ReferenceError as exc:
            log.warning("%s", exc)
            status = "no_reference"

    if log_df is None:
        log_df = read_monitor_log(paths, cfg.window)
    metrics: dict[str, Any] = {"log.rows_read": float(len(log_df))}
    drift = in_force = None
    if reference is not None:
        in_force = reference_in_force(
            paths, cfg.rebaseline, champion, reference, log_df, state, cfg.window.size, cfg.drift, at
        )
        reference = in_force.reference
        if min(len(log_df), cfg.window.size) < cfg.window.min_rows:
            status = "insufficient_data"
        if in_force.pending:  # no distribution check against the old reference: nothing to retrain on
            status = "rebaselining"
        drift = _drift(paths, cfg, champion, reference, log_df, metrics, compare=not in_force.pending)
        metrics.update(drift.metrics)
    vmetrics, fresh_anomalies, volume = _volume(paths, cfg, pd.Timestamp(now_dt), state)
    metrics.update(vmetrics)
    verdict = evaluate_rules(metrics, cfg.rules)

    result = MonitorResult(
        at=at,
        status=status,
        verdict=verdict,
        champion=champion.version if champion else None,
        report_dir=report_dir,
        volume_anomalies=fresh_anomalies,
        reference=in_force.entry if in_force else None,
        drift_columns=drift.columns if drift is not None else {},
    )
    result.files.update(_write_reports(report_dir, cfg, drift, volume))
    _add_to_workspace(paths, cfg, result, drift, now_dt)
    if verdict.alert:
        event = {
            "type": "drift" if verdict.drift else "monitor_alert",
            "at": at,
            "champion": result.champion,
            "reasons": verdict.reasons,
            "report_dir": str(report_dir),
            "window": {k: metrics.get(k) for k in ("window.rows", "window.start", "window.end")},
        }
        result.alert = event
        result.webhook_thread = emit_alert(paths, event, cfg.alerts)
    _write_state(paths, state)
    result.seconds = time.perf_counter() - started
    write_verdict(result, result.summary())
    return result
