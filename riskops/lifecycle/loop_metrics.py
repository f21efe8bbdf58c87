"""The loop's verdicts as Prometheus metrics, for the alert rules and the dashboard.

The monitor is a batch job (a CronJob on a cluster, `riskops monitor` here), so Prometheus cannot
scrape it: after each pass `export_loop_metrics` writes every series to

* a **Pushgateway** (``metrics.pushgateway`` in configs/monitor.yaml, or ``$RISKOPS_PUSHGATEWAY_URL``),
  one group ``job=<metrics.job>, instance=<metrics.instance>`` replaced whole on each push, scraped
  with ``honor_labels`` (k8s/base/monitoring/pushgateway.yaml);
* a **textfile** in Prometheus' exposition format (``<home>/monitoring/metrics.prom`` by default), what
  node_exporter's textfile collector reads, and what a person can open.

Every series is written on every pass, zeros included, so `increase()` sees the first failure. The
retraining runs and promotion decisions are counted from their journals (``<home>/retrain/triggers.jsonl``,
``<home>/promotion/decisions.jsonl``): the counts survive restarts of the job, as counters must.
A failed push is logged and returned, never raised: the loop's decisions do not depend on it.
The series are listed in docs/operations.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, push_to_gateway, write_to_textfile

from riskops.lifecycle.promotion import decisions_file
from riskops.monitoring.monitor import MonitorResult
from riskops.settings import Paths, from_dict

log = logging.getLogger(__name__)

PUSHGATEWAY_ENV = "RISKOPS_PUSHGATEWAY_URL"
STATUSES = ("ok", "insufficient_data", "rebaselining", "no_champion", "no_reference")
RUN_OUTCOMES = ("succeeded", "failed")
DECISIONS = {"gate": ("promote", "reject"), "canary": ("promote", "rollback")}


@dataclass
class MetricsSettings:
    """The `metrics:` section of configs/monitor.yaml."""

    pushgateway: str = ""  # e.g. http://riskops-pushgateway.riskops.svc:9091; $RISKOPS_PUSHGATEWAY_URL wins
    job: str = "riskops-monitor"
    instance: str = "monitor"  # the push group's instance label: one group per monitored deployment
    textfile: str = "monitoring/metrics.prom"  # under the home; "" writes none
    timeout_s: float = 5.0

    @classmethod
    def from_dict(cls, d: dict | None) -> MetricsSettings:
        return from_dict(cls, d, "metrics")

    def gateway(self) -> str:
        return os.environ.get(PUSHGATEWAY_ENV) or self.pushgateway


def _number(metrics: dict[str, Any], key: str) -> float:
    v = metrics.get(key)
    return float(v) if isinstance(v, int | float) else math.nan


def _journal(path: Path) -> list[dict]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a torn last line of a crashed writer
    return out


def retraining_runs(paths: Paths) -> dict[str, int]:
    """Finished retraining runs by outcome; a run that failed to start counts as failed."""
    counts = dict.fromkeys(RUN_OUTCOMES, 0)
    for rec in _journal(paths.root / "retrain" / "triggers.jsonl"):
        finished = rec.get("event") == "finished" and rec.get("outcome") in RUN_OUTCOMES
        if finished or (rec.get("event") == "trigger" and rec.get("outcome") == "failed"):
            counts[rec["outcome"]] += 1
    return counts


def promotion_decisions(paths: Paths) -> dict[tuple[str, str], int]:
    """(kind, decision) -> count: the gate's promote/reject, the cluster canary's promote/rollback."""
    counts = {(kind, d): 0 for kind, ds in DECISIONS.items() for d in ds}
    for rec in _journal(decisions_file(paths)):
        kind = rec.get("kind", "gate")
        if kind == "gate":
            counts[("gate", "promote" if rec.get("promote") else "reject")] += 1
        elif kind == "canary" and (kind, rec.get("action")) in counts:
            counts[(kind, rec["action"])] += 1
    return counts


def loop_registry(paths: Paths, result: MonitorResult, now: float | None = None) -> CollectorRegistry:
    """A fresh registry holding every series of one pass (names in the module doc and docs/operations.md)."""
    reg = CollectorRegistry()

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, labels, registry=reg)

    m = result.verdict.metrics
    gauge("riskops_monitor_last_pass_timestamp_seconds", "Unix time of the monitor's last pass").set(
        now if now is not None else time.time()
    )
    status = gauge("riskops_monitor_pass_status", "1 for the last pass's status", ("status",))
    for s in STATUSES:
        status.labels(s).set(1.0 if result.status == s else 0.0)
    gauge("riskops_monitor_drift_detected", "1 when a retraining rule fired").set(float(result.verdict.drift))
    gauge("riskops_monitor_alert", "1 when any monitoring rule fired").set(float(result.verdict.alert))
    columns = result.drift_columns
    share = sum(bool(c.get("drifted")) for c in columns.values()) / len(columns) if columns else 0.0
    gauge("riskops_monitor_drift_share", "Share of monitored inputs drifted").set(share)
    ratio = gauge(
        "riskops_monitor_input_drift_ratio",
        "Input distance / its calibrated threshold (>=1: drifted)",
        ("feature",),
    )
    for name, info in columns.items():
        ratio.labels(name).set(float(info.get("ratio", math.nan)))
    gauge("riskops_monitor_score_drift_ratio", "Risk-score distance / its threshold").set(
        _number(m, "score_drift.ratio")
    )
    flag = gauge("riskops_monitor_flag_rate", "Share flagged (review + block)", ("window",))
    flag.labels("reference").set(_number(m, "decision.flag_rate_ref"))
    flag.labels("current").set(_number(m, "decision.flag_rate_cur"))
    gauge("riskops_monitor_pr_auc", "PR-AUC on the labelled window").set(_number(m, "performance.pr_auc"))
    gauge("riskops_monitor_pr_auc_baseline", "The champion's PR-AUC at evaluation").set(
        _number(m, "performance.baseline_pr_auc")
    )
    gauge("riskops_monitor_labelled_rows", "Labelled rows in the window").set(_number(m, "performance.rows"))

    runs = Counter("riskops_retraining_runs", "Retraining runs by outcome", ("outcome",), registry=reg)
    for outcome, n in retraining_runs(paths).items():
        runs.labels(outcome).inc(n)
    decisions = Counter(
        "riskops_promotion_decisions", "Promotion decisions by kind", ("kind", "decision"), registry=reg
    )
    for (kind, decision), n in promotion_decisions(paths).items():
        decisions.labels(kind, decision).inc(n)
    return reg


def export_loop_metrics(paths: Paths, result: MonitorResult, settings: MetricsSettings) -> dict[str, Any]:
    """Write the textfile and push to the Pushgateway (when configured). Returns what happened:
    ``{"textfile": path | None, "pushed_to": url | None, "error": message | None}``."""
    reg = loop_registry(paths, result)
    out: dict[str, Any] = {"textfile": None, "pushed_to": None, "error": None}
    if settings.textfile:
        f = paths.root / settings.textfile
        try:
            f.parent.mkdir(parents=True, exist_ok=True)
            write_to_textfile(str(f), reg)  # atomic: a temp file, then a rename
            out["textfile"] = str(f)
        except OSError as exc:
            out["error"] = f"cannot write {f}: {exc}"
            log.error("%s", out["error"])
    url = settings.gateway()
    if url:
        try:
            push_to_gateway(
                url, job=settings.job, registry=reg, grouping_key={"instance": settings.instance},
                timeout=settings.timeout_s,
            )  # fmt: skip
            out["pushed_to"] = url
        except Exception as exc:  # noqa: BLE001 - an unreachable gateway must not stop the loop
            out["error"] = f"push to {url} failed: {type(exc).__name__}: {exc}"
            log.warning("monitor metrics not pushed (alerts on the verdict will lag): %s", out["error"])
    return out
