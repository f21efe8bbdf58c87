"""The loop's verdicts as Prometheus metrics: the textfile, a real Pushgateway, and the journals' counts."""

from __future__ import annotations

import json
import math

import httpx
from prometheus_client.parser import text_string_to_metric_families
from support.prometheus import running_pushgateway

from riskops.lifecycle.loop_metrics import (
    MetricsSettings,
    export_loop_metrics,
    promotion_decisions,
    retraining_runs,
)
from riskops.monitoring.monitor import MonitorResult
from riskops.monitoring.rules import Verdict
from riskops.settings import paths


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("job", "instance")))
            out[(s.name, labels)] = s.value
    return out


def _result(drift: bool = True, status: str = "ok") -> MonitorResult:
    metrics = {
        "score_drift.ratio": 1.7,
        "decision.flag_rate_ref": 0.05,
        "decision.flag_rate_cur": 0.09,
        "performance.pr_auc": 0.61,
        "performance.baseline_pr_auc": 0.66,
        "performance.rows": 900.0,
        "feature_drift.max_column": "amount",  # a string: never exported as a number
    }
    verdict = Verdict(drift=drift, alert=drift, reasons=[], skipped=[], metrics=metrics)
    columns = {
        "amount": {"ratio": 2.5, "drifted": True},
        "hour": {"ratio": 0.4, "drifted": False},
        "channel": {"ratio": 0.9, "drifted": False},
        "payment_method": {"ratio": 1.2, "drifted": True},
    }
    return MonitorResult(
        at="2026-12-06T00:00:00+00:00", status=status, verdict=verdict, drift_columns=columns
    )


def _journals(home) -> None:
    (home.root / "retrain").mkdir(parents=True)
    records = [
        {"event": "trigger", "outcome": "started"},
        {"event": "finished", "outcome": "succeeded"},
        {"event": "trigger", "outcome": "failed"},  # could not start: counts as a failed run
        {"event": "trigger", "outcome": "skipped"},
        {"event": "finished", "outcome": "failed"},
    ]
    text = "".join(json.dumps(r) + "\n" for r in records) + '{"event": "fini'  # a torn last line
    (home.root / "retrain" / "triggers.jsonl").write_text(text)
    (home.root / "promotion").mkdir(parents=True)
    decisions = [{"kind": "gate", "promote": True}, {"kind": "gate", "promote": False},
                 {"kind": "canary", "action": "rollback"}]  # fmt: skip
    (home.root / "promotion" / "decisions.jsonl").write_text("".join(json.dumps(d) + "\n" for d in decisions))


def test_the_journals_are_counted(riskops_home):
    home = paths()
    assert retraining_runs(home) == {"succeeded": 0, "failed": 0}  # no journal yet: zeros, not missing
    _journals(home)
    assert retraining_runs(home) == {"succeeded": 1, "failed": 2}
    d = promotion_decisions(home)
    assert d[("gate", "promote")] == 1 and d[("gate", "reject")] == 1
    assert d[("canary", "rollback")] == 1 and d[("canary", "promote")] == 0


def test_the_textfile_holds_every_series_of_the_pass(riskops_home):
    home = paths()
    _journals(home)
    out = export_loop_metrics(home, _result(), MetricsSettings())
    assert out["error"] is None and out["pushed_to"] is None
    s = _samples(open(out["textfile"]).read())
    assert s[("riskops_monitor_drift_detected", ())] == 1.0
    assert s[("riskops_monitor_drift_share", ())] == 0.5  # 2 of 4 inputs drifted
    assert s[("riskops_monitor_input_drift_ratio", (("feature", "amount"),))] == 2.5
    assert s[("riskops_monitor_score_drift_ratio", ())] == 1.7
    assert s[("riskops_monitor_flag_rate", (("window", "current"),))] == 0.09
    assert s[("riskops_monitor_pr_auc", ())] == 0.61 and s[("riskops_monitor_pr_auc_baseline", ())] == 0.66
    assert s[("riskops_monitor_pass_status", (("status", "ok"),))] == 1.0
    assert s[("riskops_monitor_pass_status", (("status", "rebaselining"),))] == 0.0
    assert s[("riskops_retraining_runs_total", (("outcome", "failed"),))] == 2.0
    assert s[("riskops_promotion_decisions_total", (("decision", "rollback"), ("kind", "canary")))] == 1.0


def test_a_pass_without_drift_or_labels_exports_zeros_and_nan(riskops_home):
    home = paths()
    result = _result(drift=False, status="insufficient_data")
    result.verdict.metrics.clear()
    result.drift_columns = {}
    s = _samples(open(export_loop_metrics(home, result, MetricsSettings())["textfile"]).read())
    assert s[("riskops_monitor_drift_detected", ())] == 0.0 and s[("riskops_monitor_drift_share", ())] == 0.0
    assert math.isnan(s[("riskops_monitor_pr_auc", ())])
    assert s[("riskops_monitor_pass_status", (("status", "insufficient_data"),))] == 1.0
    assert s[("riskops_retraining_runs_total", (("outcome", "failed"),))] == 0.0  # present before any failure


def test_the_pass_is_pushed_to_a_real_pushgateway(riskops_home, tmp_path, monkeypatch):
    home = paths()
    with running_pushgateway(tmp_path / "pgw") as url:
        monkeypatch.setenv("RISKOPS_PUSHGATEWAY_URL", url)  # the environment wins over the config
        out = export_loop_metrics(home, _result(), MetricsSettings(pushgateway="http://nowhere.invalid:1"))
        assert out["pushed_to"] == url and out["error"] is None
        text = httpx.get(url + "/metrics", timeout=5).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        (sample,) = families["riskops_monitor_drift_share"].samples
        assert sample.labels["job"] == "riskops-monitor" and sample.labels["instance"] == "monitor"
        assert sample.value == 0.5
        # the next pass replaces the group: no stale per-input series survive
        later = _result(drift=False)
        later.drift_columns = {"hour": {"ratio": 0.3, "drifted": False}}
        export_loop_metrics(home, later, MetricsSettings())
        text = httpx.get(url + "/metrics", timeout=5).text
        ratios = [s for f in text_string_to_metric_families(text) if f.name == "riskops_monitor_input_drift_ratio"
                  for s in f.samples]  # fmt: skip
        assert [s.labels["feature"] for s in ratios] == ["hour"]


def test_an_unreachable_gateway_is_reported_not_raised(riskops_home, tmp_path):
    home = paths()
    from support.servers import free_port

    settings = MetricsSettings(pushgateway=f"http://127.0.0.1:{free_port()}", timeout_s=1.0)
    out = export_loop_metrics(home, _result(), settings)
    assert out["pushed_to"] is None and "push to" in out["error"]
    assert out["textfile"] is not None  # the textfile is still written
