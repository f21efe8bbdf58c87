"""The monitor: one pass = read the log window -> drift + volume -> rules -> reports, alert, retrain.

    result = run_monitor_once(paths, config)                 # `riskops monitor --once`
    run_monitor_loop(paths, config, every_seconds=60, stop_event=ev)   # `riskops monitor --every 60s`

One pass (`run_monitor_once`):

1. the champion (registry alias) and its reference (`reference.parquet` in the version folder;
   cached with its calibration between passes of a loop);
2. the newest ``window.size`` scored transactions of the prediction log (segments are read newest
   first, only as far back as needed, ``window.scan_rows`` at most for the labelled window);
3. feedback labels joined on transaction_id -> the labelled window (the newest
   ``window.performance_rows`` labelled rows scored by the champion);
4. `compute_drift` (Evidently report) + hourly volume anomalies -> flat metrics -> `evaluate_rules`;
5. reports under ``<home>/reports/monitoring/<UTC timestamp>/`` (drift.html/json, performance.html/json
   when labels allow, volume.json, verdict.json), the newest ``reports.keep_last`` kept;
6. when a rule fired: an alert event appended to ``<home>/alerts.jsonl`` and, when
   ``alerts.webhook_url`` is set, POSTed in a background thread (short timeout; failures logged,
   never raised); volume anomalies already alerted for the same hour are not repeated;
7. on drift (a rule with action ``retrain``): `RetrainTrigger.maybe_trigger` (debounced);
8. the closed loop: when a retraining run has finished and registered a challenger, the promotion
   gate (`riskops.lifecycle.promotion.run_promotion_gate`) compares it with the champion on the labelled
   rows neither trained on (``promotion.auto``).

Nothing here raises into the loop for data problems: a pass with too little data reports
``status: insufficient_data``; a pass that fails is logged and the loop goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from riskops.monitoring.drift import (
    DriftSettings,
    Reference,
    ReferenceError,
    compute_drift,
    current_frame,
    load_reference,
)
from riskops.monitoring.prediction_log import read_prediction_log
from riskops.monitoring.rules import Rule, Verdict, evaluate_rules, load_rules
from riskops.monitoring.volume import VolumeSettings, detect_volume_anomalies, hourly_volumes_from_log
from riskops.settings import PROJECT_ROOT, Paths, load_yaml

log = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = PROJECT_ROOT / "configs" / "monitor.yaml"
SECTIONS = ("window", "drift", "volume", "rules", "rule_overrides", "retrain", "promotion", "alerts", "reports",
            "canary")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class WindowSettings:
    size: int = 1500  # newest scored transactions compared with the reference
    min_rows: int = 500  # below this a pass reports insufficient_data (rules also have their own minimums)
    performance_rows: int = 5000  # newest labelled rows used for the performance check
    scan_rows: int = 50_000  # how far back the log is read to find labelled rows

    @classmethod
    def from_dict(cls, d: dict | None) -> WindowSettings:
        return _from_dict(cls, d, "window")


@dataclass
class AlertSettings:
    file: str = "alerts.jsonl"  # relative to the home folder
    webhook_url: str = ""
    webhook_timeout: float = 3.0

    @classmethod
    def from_dict(cls, d: dict | None) -> AlertSettings:
        return _from_dict(cls, d, "alerts")


@dataclass
class ReportSettings:
    dir: str = "monitoring"  # under Paths.reports
    html: bool = True
    keep_last: int = 48  # report folders kept (each HTML drift report is a few MB)

    @classmethod
    def from_dict(cls, d: dict | None) -> ReportSettings:
        return _from_dict(cls, d, "reports")


def _from_dict(cls, d: dict | None, section: str):
    d = dict(d or {})
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{section}: unknown keys {unknown} (known: {', '.join(sorted(known))})")
    return cls(**d)


@dataclass
class MonitorConfig:
    window: WindowSettings = field(default_factory=WindowSettings)
    drift: DriftSettings = field(default_factory=DriftSettings)
    volume: VolumeSettings = field(default_factory=VolumeSettings)
    rules: list[Rule] = field(default_factory=lambda: load_rules({}))
    retrain: dict = field(default_factory=dict)  # riskops.lifecycle.retrain.RetrainSettings
    promotion: dict = field(default_factory=dict)  # riskops.lifecycle.promotion.PromotionSettings
    alerts: AlertSettings = field(default_factory=AlertSettings)
    reports: ReportSettings = field(default_factory=ReportSettings)
    raw: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict | None) -> MonitorConfig:
        d = dict(d or {})
        unknown = sorted(set(d) - set(SECTIONS))
        if unknown:
            raise ValueError(f"monitor config: unknown sections {unknown} (known: {', '.join(SECTIONS)})")
        window = WindowSettings.from_dict(d.get("window"))
        drift_d = dict(d.get("drift") or {})
        drift_d.setdefault("window_size", window.size)  # calibrate at the size the monitor compares
        from riskops.lifecycle.promotion import PromotionSettings
        from riskops.lifecycle.retrain import RetrainSettings

        RetrainSettings.from_dict(d.get("retrain"))  # validate early: a typo fails at start, not at drift
        PromotionSettings.from_dict(d.get("promotion"))
        return cls(
            window=window,
            drift=DriftSettings.from_dict(drift_d),
            volume=VolumeSettings.from_dict(d.get("volume")),
            rules=load_rules(d),
            retrain=dict(d.get("retrain") or {}),
            promotion=dict(d.get("promotion") or {}),
            alerts=AlertSettings.from_dict(d.get("alerts")),
            reports=ReportSettings.from_dict(d.get("reports")),
            raw=d,
        )


def load_monitor_config(path: Path | str | None = None) -> MonitorConfig:
    """configs/monitor.yaml (or `path`); a missing default file means the built-in defaults."""
    if path is None:
        return MonitorConfig.from_dict(load_yaml(DEFAULT_CONFIG_FILE) if DEFAULT_CONFIG_FILE.exists() else {})
    return MonitorConfig.from_dict(load_yaml(path))


def _config(config: MonitorConfig | dict | str | Path | None) -> MonitorConfig:
    if isinstance(config, MonitorConfig):
        return config
    if isinstance(config, dict):
        return MonitorConfig.from_dict(config)
    return load_monitor_config(config)


# --------------------------------------------------------------------------------------------
# Alerts
# --------------------------------------------------------------------------------------------


def post_webhook(url: str, event: dict, timeout: float = 3.0) -> threading.Thread:
    """POST `event` as JSON in a daemon thread; failures are logged, never raised. Returns the thread."""

    def _send() -> None:
        try:
            req = urllib.request.Request(
                url, data=json.dumps(event, default=str).encode(), method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "riskops-monitor"},
            )
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - operator-configured URL
                if resp.status >= 300:
                    log.warning("alert webhook %s answered %s", url, resp.status)
        except Exception as exc:
            log.warning("alert webhook %s failed: %s", url, exc)

    t = threading.Thread(target=_send, name="riskops-alert-webhook", daemon=True)
    t.start()
    return t


def emit_alert(paths: Paths, event: dict, settings: AlertSettings | None = None) -> threading.Thread | None:
    """Append the event to the alerts JSONL (never raises) and POST it when a webhook is configured."""
    settings = settings or AlertSettings()
    p = Path(settings.file)
    p = p if p.is_absolute() else paths.root / p
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "a") as fh:
            fh.write(json.dumps(event, default=str, sort_keys=True) + "\n")
    except OSError as exc:
        log.error("cannot write alert to %s: %s", p, exc)
    if settings.webhook_url:
        return post_webhook(settings.webhook_url, event, settings.webhook_timeout)
    return None


# --------------------------------------------------------------------------------------------
# One pass
# --------------------------------------------------------------------------------------------


@dataclass
class MonitorResult:
    at: str
    status: str  # ok | insufficient_data | no_champion | no_reference
    verdict: Verdict
    champion: str | None = None
    report_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    volume_anomalies: list[dict] = field(default_factory=list)
    alert: dict | None = None
    trigger: Any = None  # riskops.lifecycle.retrain.TriggerRecord
    promotion: Any = None  # riskops.lifecycle.promotion.PromotionDecision
    seconds: float = 0.0
    webhook_thread: threading.Thread | None = None

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
            "trigger": self.trigger.to_dict() if self.trigger is not None else None,
            "promotion": self.promotion.to_dict() if self.promotion is not None else None,
            "seconds": round(self.seconds, 3),
        }


_REFERENCE_CACHE: dict[tuple, Reference] = {}


def _reference(mv, default_thresholds: dict | None = None) -> Reference:
    p = Path(mv.path) / "reference.parquet"
    key = (str(p), p.stat().st_mtime_ns if p.exists() else 0)
    ref = _REFERENCE_CACHE.get(key)
    if ref is None:
        ref = load_reference(mv.path, default_thresholds, model_version=mv.version)
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
    if not cfg.volume.enabled:
        return {}, [], None
    hourly = hourly_volumes_from_log(paths.prediction_log, paths.root / "monitoring" / "volume_cache",
                                     cfg.volume.time_column)
    vnow = now if cfg.volume.time_column == "logged_at" else None  # replayed event times have their own clock
    result = detect_volume_anomalies(hourly, cfg.volume, now=vnow)
    alerted = set(state.get("volume_alerted", []))
    fresh = [a for a in result.anomalies if f"{a['series']}|{a['hour']}" not in alerted]
    state["volume_alerted"] = sorted(alerted | {f"{a['series']}|{a['hour']}" for a in result.anomalies})[-500:]
    metrics = {
        "volume.anomalies": float(len(fresh)),
        "volume.anomalies_total": float(len(result.anomalies)),
        "volume.history_hours": float(result.hours),
        "volume.summary": "; ".join(a["message"] for a in fresh[:5]),
    }
    return metrics, fresh, result


def run_monitor_once(
    paths: Paths,
    config: MonitorConfig | dict | str | Path | None = None,
    now: datetime | None = None,
    trigger: Any = None,
    log_df: pd.DataFrame | None = None,
) -> MonitorResult:
    """One monitoring pass (see the module doc). Returns a MonitorResult; writes reports/alerts.

    ``trigger``: a `riskops.lifecycle.retrain.RetrainTrigger` (default: one built from ``config.retrain``);
    ``log_df``: prediction-log rows to use instead of reading ``paths.prediction_log`` (tests, replays).
    """
    from riskops.monitoring.feedback import labelled_window, load_feedback
    from riskops.registry.store import ModelRegistry

    started = time.perf_counter()
    cfg = _config(config)
    now_dt = now or datetime.now(UTC)
    at = now_dt.isoformat(timespec="seconds")
    stamp = now_dt.strftime("%Y%m%dT%H%M%S%fZ")
    report_root = paths.reports / cfg.reports.dir
    report_dir = report_root / stamp
    state = _read_state(paths)

    registry = ModelRegistry(paths.registry)
    champion = registry.champion()
    status = "ok"
    metrics: dict[str, Any] = {}
    drift_result = None
    reference = None
    if champion is None:
        status = "no_champion"
    else:
        try:
            reference = _reference(champion)
        except ReferenceError as exc:
            log.warning("%s", exc)
            status = "no_reference"

    if log_df is None:
        scan = max(cfg.window.size, cfg.window.scan_rows)
        log_df = read_prediction_log(paths.prediction_log, newest_rows=scan)
    window = log_df.tail(cfg.window.size) if len(log_df) else log_df
    metrics["log.rows_read"] = float(len(log_df))

    if reference is not None:
        if len(window) < cfg.window.min_rows:
            status = "insufficient_data"
        feedback = load_feedback(paths)
        labelled = labelled_window(log_df, feedback) if len(log_df) and len(feedback) else None
        if labelled is not None and len(labelled):
            if "model_version" in labelled.columns:
                labelled = labelled[labelled["model_version"].astype(str) == champion.version]
            labelled = labelled.tail(cfg.window.performance_rows)
        metrics["feedback.records"] = float(len(feedback))
        cur = current_frame(window) if len(window) else current_frame(log_df.head(0))
        drift_result = compute_drift(reference, cur, cfg.drift, labelled=labelled)
        metrics.update(drift_result.metrics)

    vmetrics, fresh_anomalies, vresult = _volume(paths, cfg, pd.Timestamp(now_dt), state)
    metrics.update(vmetrics)
    verdict = evaluate_rules(metrics, cfg.rules)

    result = MonitorResult(at=at, status=status, verdict=verdict, champion=champion.version if champion else None,
                           report_dir=report_dir, volume_anomalies=fresh_anomalies)
    # reports
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
        if drift_result is not None:
            result.files.update(drift_result.write(report_dir, html=cfg.reports.html))
        if vresult is not None:
            (report_dir / "volume.json").write_text(json.dumps(vresult.to_dict(), indent=2, default=str))
            result.files["volume.json"] = report_dir / "volume.json"
        _prune_reports(report_root, cfg.reports.keep_last)
    except OSError as exc:
        log.error("cannot write monitoring reports to %s: %s", report_dir, exc)

    # alert
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

    # retraining (debounced) and the closed loop
    if trigger is None:
        from riskops.lifecycle.retrain import RetrainTrigger

        trigger = RetrainTrigger(paths, cfg.retrain)
    if verdict.drift and status == "ok":
        reason = {"at": at, "champion": result.champion, "rules": [r["rule"] for r in verdict.reasons],
                  "messages": [r["message"] for r in verdict.reasons], "report_dir": str(report_dir)}
        try:
            result.trigger = trigger.maybe_trigger(reason)
        except Exception as exc:  # the trigger records its own failures; this is a last resort
            log.exception("retraining trigger failed: %s", exc)
    if trigger is not None:
        result.promotion = _close_loop(paths, cfg, trigger, state, log_df)

    _write_state(paths, state)
    result.seconds = time.perf_counter() - started
    try:
        (report_dir / "verdict.json").write_text(json.dumps(result.summary(), indent=2, default=str))
        result.files["verdict.json"] = report_dir / "verdict.json"
    except OSError as exc:
        log.error("cannot write verdict: %s", exc)
    return result


def _close_loop(paths: Paths, cfg: MonitorConfig, trigger: Any, state: dict, log_df: pd.DataFrame) -> Any:
    """After a finished retraining run: gate its challenger once (promotion.auto)."""
    if not cfg.promotion.get("auto", True):
        return None
    try:
        trigger.refresh()
        last = trigger.state().get("last_run") or {}
    except Exception as exc:
        log.warning("cannot read retraining state: %s", exc)
        return None
    reg = last.get("registration") or {}
    version = reg.get("version")
    if last.get("outcome") != "succeeded" or not version or state.get("gated_run") == last.get("run_id"):
        return None
    state["gated_run"] = last.get("run_id")
    try:
        from riskops.lifecycle.promotion import run_promotion_gate

        return run_promotion_gate(paths, cfg.promotion, challenger_version=version, log_df=log_df,
                                  cutoff=last.get("cutoff"), holdout_file=last.get("holdout_file"))
    except Exception as exc:
        log.exception("promotion gate failed for %s: %s", version, exc)
        emit_alert(paths, {"type": "promotion_error", "at": datetime.now(UTC).isoformat(timespec="seconds"),
                           "challenger": version, "error": str(exc)}, cfg.alerts)
        return None


def run_monitor_loop(
    paths: Paths,
    config: MonitorConfig | dict | str | Path | None = None,
    every_seconds: float = 60.0,
    stop_event: threading.Event | None = None,
    max_runs: int | None = None,
    on_result: Any = None,
) -> int:
    """Run `run_monitor_once` every `every_seconds` until `stop_event` is set (or `max_runs` passes).

    A failing pass is logged and the loop goes on. ``on_result(MonitorResult)`` is called after each
    successful pass (e.g. to print a line). Returns the number of passes run.
    """
    cfg = _config(config)
    stop = stop_event or threading.Event()
    runs = 0
    trigger = None
    with contextlib.suppress(Exception):
        from riskops.lifecycle.retrain import RetrainTrigger

        trigger = RetrainTrigger(paths, cfg.retrain)
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            res = run_monitor_once(paths, cfg, trigger=trigger)
            if on_result is not None:
                on_result(res)
        except Exception:
            log.exception("monitor pass failed")
        runs += 1
        if max_runs is not None and runs >= max_runs:
            break
        stop.wait(max(0.0, every_seconds - (time.monotonic() - t0)))
    return runs
