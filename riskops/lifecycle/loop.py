"""The closed loop: a monitor pass, then what the lifecycle does about its verdict.

    cfg = load_loop_config(path)                                    # configs/monitor.yaml
    trigger = RetrainTrigger(paths, cfg.retrain, submit=submit)     # submit: pipelines.runner.submit
    result = run_loop_once(paths, cfg, trigger)                     # `riskops monitor --once`
    run_loop(paths, cfg, trigger, every_seconds=60, stop_event=ev)  # `riskops monitor --every 60s`

One pass (`run_loop_once`):

1. `riskops.monitoring.monitor.run_monitor_once`: reports, the verdict, alerts;
2. on drift (a rule with action ``retrain``) with status ok: `RetrainTrigger.maybe_trigger` (debounced).
   After a promotion the monitor re-baselines the champion's reference on its own traffic
   (`riskops.monitoring.rebaseline`); until then its passes report ``status: rebaselining``, so the
   shift the new champion was retrained for does not start a second retraining;
3. when a retraining run has finished and registered a challenger: the promotion gate
   (`riskops.lifecycle.promotion.run_promotion_gate`) compares it with the champion on the labelled
   rows neither trained on, once per run (``promotion.auto``);
4. ``verdict.json`` rewritten with what was started and decided;
5. the verdict, retraining runs and promotion decisions exported as Prometheus metrics
   (`riskops.lifecycle.loop_metrics`: a Pushgateway when configured, and a textfile).

A failing pass of `run_loop` is logged and the loop goes on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from riskops.lifecycle.canary import CanaryDecision
from riskops.lifecycle.loop_metrics import MetricsSettings, export_loop_metrics
from riskops.lifecycle.promotion import (
    PromotionDecision,
    PromotionSettings,
    judge_cluster_canary,
    run_promotion_gate,
)
from riskops.lifecycle.retrain import RetrainTrigger, TriggerRecord
from riskops.lifecycle.retrain_settings import RetrainSettings
from riskops.monitoring.alerts import emit_alert
from riskops.monitoring.monitor import (
    MONITOR_SECTIONS,
    MonitorConfig,
    MonitorResult,
    read_monitor_log,
    run_monitor_once,
    write_verdict,
)
from riskops.settings import PROJECT_ROOT, Paths, load_yaml

log = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = PROJECT_ROOT / "configs" / "monitor.yaml"
# "canary" is accepted at the top level for configs written before it moved under promotion:
LIFECYCLE_SECTIONS = ("retrain", "promotion", "canary", "metrics")


@dataclass
class LoopConfig(MonitorConfig):
    """The whole of configs/monitor.yaml: the monitor's sections plus what the lifecycle does about a verdict."""

    retrain: RetrainSettings = field(default_factory=RetrainSettings)
    promotion: PromotionSettings = field(default_factory=PromotionSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

    @classmethod
    def from_dict(cls, d: dict | None) -> LoopConfig:
        d = dict(d or {})
        known = (*MONITOR_SECTIONS, *LIFECYCLE_SECTIONS)
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"monitor config: unknown sections {unknown} (known: {', '.join(known)})")
        monitor = MonitorConfig.from_dict({k: v for k, v in d.items() if k in MONITOR_SECTIONS})
        return cls(
            **{f.name: getattr(monitor, f.name) for f in fields(MonitorConfig)},
            retrain=RetrainSettings.from_dict(d.get("retrain")),  # a typo fails at start, not at drift
            promotion=PromotionSettings.from_dict(d.get("promotion")),
            metrics=MetricsSettings.from_dict(d.get("metrics")),
        )


def load_loop_config(path: Path | str | None = None) -> LoopConfig:
    """configs/monitor.yaml (or `path`); a missing default file means the built-in defaults."""
    if path is None:
        return LoopConfig.from_dict(load_yaml(DEFAULT_CONFIG_FILE) if DEFAULT_CONFIG_FILE.exists() else {})
    return LoopConfig.from_dict(load_yaml(path))


@dataclass
class LoopResult(MonitorResult):
    """A monitor pass and what the lifecycle did about it."""

    trigger: TriggerRecord | None = None  # the retraining trigger's decision (on drift)
    promotion: PromotionDecision | None = None  # the gate's decision on a freshly retrained challenger
    canary: CanaryDecision | None = None  # on a cluster: the canary's decision from the shipped log
    exported: dict | None = None  # where the pass's Prometheus metrics went (textfile, pushgateway, error)

    def summary(self) -> dict[str, Any]:
        return {
            **super().summary(),
            "trigger": self.trigger.to_dict() if self.trigger is not None else None,
            "promotion": self.promotion.to_dict() if self.promotion is not None else None,
            "canary": self.canary.to_dict() if self.canary is not None else None,
            "exported": self.exported,
        }


def _config(config: LoopConfig | dict | str | Path | None) -> LoopConfig:
    if isinstance(config, LoopConfig):
        return config
    if isinstance(config, dict):
        return LoopConfig.from_dict(config)
    return load_loop_config(config)


def run_loop_once(
    paths: Paths,
    config: LoopConfig | dict | str | Path | None = None,
    trigger: RetrainTrigger | None = None,
    now: datetime | None = None,
    log_df: pd.DataFrame | None = None,
) -> LoopResult:
    """One pass of the closed loop (see the module doc).

    Args:
        paths: the home folder's layout.
        config: a LoopConfig, a dict of its sections, or a YAML file (None: configs/monitor.yaml).
        trigger: the retraining trigger (default: one built from ``config.retrain``, which can start
            local runs only: a cluster run needs ``RetrainTrigger(submit=...)``).
        now: the pass's time (default: now, UTC).
        log_df: prediction-log rows to use instead of reading ``paths.prediction_log``.
    """
    started = time.perf_counter()
    cfg = _config(config)
    trigger = trigger if trigger is not None else RetrainTrigger(paths, cfg.retrain)
    if log_df is None:
        log_df = read_monitor_log(paths, cfg.window)  # read once: the gate judges the same rows
    monitored = run_monitor_once(paths, cfg, now=now, log_df=log_df)
    result = LoopResult(**{f.name: getattr(monitored, f.name) for f in fields(MonitorResult)})
    if result.verdict.drift and result.status == "ok":
        reason = {
            "at": result.at,
            "champion": result.champion,
            "rules": [r["rule"] for r in result.verdict.reasons],
            "messages": [r["message"] for r in result.verdict.reasons],
            "report_dir": str(result.report_dir),
        }
        try:
            result.trigger = trigger.maybe_trigger(reason)
        except Exception as exc:  # the trigger records its own failures; this is a last resort
            log.exception("retraining trigger failed: %s", exc)
    result.promotion = _gate_finished_run(paths, cfg, trigger, log_df)
    try:
        result.canary = judge_cluster_canary(paths, cfg.promotion, log_df)
    except Exception as exc:  # a failed patch (RolloutError) leaves the registry as it was
        log.exception("canary decision failed: %s", exc)
        emit_alert(paths, {"type": "rollout_failed", "at": datetime.now(UTC).isoformat(timespec="seconds"),
                           "reasons": [str(exc)]}, cfg.alerts)  # fmt: skip
    result.exported = export_loop_metrics(paths, result, cfg.metrics)
    result.seconds = time.perf_counter() - started
    write_verdict(result, result.summary())
    return result


def _gated_file(paths: Paths) -> Path:
    return paths.root / "promotion" / "gated_run.json"


def _gate_finished_run(
    paths: Paths, cfg: LoopConfig, trigger: RetrainTrigger, log_df: pd.DataFrame
) -> PromotionDecision | None:
    """After a finished retraining run: gate its challenger, once per run (``promotion.auto``)."""
    if not cfg.promotion.auto:
        return None
    try:
        trigger.refresh()
        last = trigger.state().get("last_run") or {}
    except Exception as exc:
        log.warning("cannot read retraining state: %s", exc)
        return None
    version = (last.get("registration") or {}).get("version")
    if last.get("outcome") != "succeeded" or not version or _gated_run(paths) == last.get("run_id"):
        return None
    _gated_file(paths).parent.mkdir(parents=True, exist_ok=True)
    _gated_file(paths).write_text(json.dumps({"run_id": last.get("run_id")}))
    try:
        return run_promotion_gate(
            paths,
            cfg.promotion,
            challenger_version=version,
            log_df=log_df,
            cutoff=last.get("cutoff"),
            holdout_file=last.get("holdout_file"),
        )
    except Exception as exc:
        log.exception("promotion gate failed for %s: %s", version, exc)
        emit_alert(
            paths,
            {
                "type": "promotion_error",
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "challenger": version,
                "error": str(exc),
            },
            cfg.alerts,
        )
        return None


def _gated_run(paths: Paths) -> str | None:
    try:
        return json.loads(_gated_file(paths).read_text()).get("run_id")
    except (OSError, ValueError):
        return None


def run_loop(
    paths: Paths,
    config: LoopConfig | dict | str | Path | None = None,
    trigger: RetrainTrigger | None = None,
    every_seconds: float = 60.0,
    stop_event: threading.Event | None = None,
    max_runs: int | None = None,
    on_result: Callable[[LoopResult], Any] | None = None,
) -> int:
    """Run `run_loop_once` every `every_seconds` until `stop_event` is set (or `max_runs` passes).

    A failing pass is logged and the loop goes on. ``on_result(LoopResult)`` is called after each
    successful pass (e.g. to print a line). Returns the number of passes run.
    """
    cfg = _config(config)
    trigger = trigger if trigger is not None else RetrainTrigger(paths, cfg.retrain)
    stop = stop_event or threading.Event()
    runs = 0
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            res = run_loop_once(paths, cfg, trigger=trigger)
            if on_result is not None:
                on_result(res)
        except Exception:
            log.exception("monitor pass failed")
        runs += 1
        if max_runs is not None and runs >= max_runs:
            break
        stop.wait(max(0.0, every_seconds - (time.monotonic() - t0)))
    return runs
