"""The Grafana dashboard (tools/grafana_dashboard.py): the checked-in JSON is the generated one, it is
well-formed for Grafana, and its queries parse (real promtool) and use only the metrics contract.

That every query returns data from a real Prometheus scraping riskops is the operator's-view
integration test's job; this module needs no server.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import grafana_dashboard as gd
import pytest
import yaml

# The metrics contract (the serving replicas' /metrics, the monitor's pushed verdicts), as listed
# for the alert rules and the dashboard; `up` and `ALERTS` are Prometheus' own.
CONTRACT = {
    "riskops_http_requests_total",
    "riskops_http_request_duration_seconds_bucket",
    "riskops_decisions_total",
    "riskops_degraded_total",
    "riskops_feature_lookup_seconds_bucket",
    "riskops_model_batch_seconds_bucket",
    "riskops_prediction_log_write_seconds_bucket",
    "riskops_feast_errors_total",
    "riskops_state_errors_total",
    "riskops_state_backlog",
    "riskops_features_last_update_timestamp_seconds",
    "riskops_state_push_lag_seconds_bucket",
    "riskops_risk_score_bucket",
    "riskops_model_info",
    "riskops_model_swaps_total",
    "riskops_canary_active",
    "riskops_canary_share",
    "riskops_canary_challenger_info",
    "riskops_canary_requests_total",
    "riskops_canary_decisions_total",
    "riskops_prediction_log_records_total",
    "riskops_monitor_last_pass_timestamp_seconds",
    "riskops_monitor_pass_status",
    "riskops_monitor_drift_detected",
    "riskops_monitor_alert",
    "riskops_monitor_drift_share",
    "riskops_monitor_input_drift_ratio",
    "riskops_monitor_score_drift_ratio",
    "riskops_monitor_flag_rate",
    "riskops_monitor_pr_auc",
    "riskops_monitor_pr_auc_baseline",
    "riskops_monitor_labelled_rows",
    "riskops_retraining_runs_total",
    "riskops_promotion_decisions_total",
    "up",
}
# contract series the dashboard deliberately leaves out (the rest must each appear in a panel)
NOT_SHOWN = {"up", "riskops_canary_challenger_info", "riskops_prediction_log_records_total"}
LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
KEYWORDS = {"and", "or", "unless", "bool", "offset"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads: identifiers that are not functions, aggregations,
    keywords, label names (matchers, by/on lists) or durations."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # range selectors
    s = LABEL_LISTS.sub("", s)
    names = set()
    for m in re.finditer(r"(?<![\w:.])[A-Za-z_:][\w:]*", s):  # not the unit of a number (1h)
        if m.group() not in KEYWORDS and not s[m.end() :].lstrip().startswith("("):
            names.add(m.group())
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return gd.build_dashboard()


def _panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]  # rows are section headers


def test_checked_in_json_is_the_generated_one():
    assert gd.DASHBOARD_PATH.read_text() == gd.render(), "run `python tools/grafana_dashboard.py --write`"
    assert gd.main(["--check"]) == 0


def test_check_fails_on_a_stale_file_and_write_fixes_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gd, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(gd, "DASHBOARD_PATH", tmp_path / "riskops-dashboard.json")
    gd.DASHBOARD_PATH.write_text(gd.render().replace("Traffic by route", "Traffic"))
    assert gd.main(["--check"]) == 1
    assert "--write" in capsys.readouterr().err  # says what to do
    assert gd.main(["--write"]) == 0 and gd.main(["--check"]) == 0


def test_metric_name_extraction():
    expr = (
        'sum by (route) (rate(a_total{component!="predictor",route=~"x|y"}[5m])) / ignoring(le) '
        'b_bucket or on() label_replace(vector(0), "arm", "none", "", "") and time() - c offset 1h'
    )
    assert metric_names(expr) == {"a_total", "b_bucket", "c"}
    assert metric_names('count(ALERTS{alertname=~"Riskops.*"})') == {"ALERTS"}


def test_every_panel_has_a_query_and_a_unique_id(dashboard):
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    for p in _panels(dashboard):
        assert p["type"] in {"timeseries", "stat", "heatmap", "bargauge"}, p["title"]
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]
    titles = [p["title"] for p in _panels(dashboard)]
    assert len(titles) == len(set(titles))


def test_queries_read_only_the_metrics_contract(dashboard):
    used: set[str] = set()
    for title, expr in gd.dashboard_queries():
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr}"
        assert names <= CONTRACT | {"ALERTS"}, f"{title}: {sorted(names - CONTRACT)} not in the contract"
        used |= names
    assert CONTRACT - NOT_SHOWN <= used, (
        f"contract series missing from the dashboard: {CONTRACT - NOT_SHOWN - used}"
    )
    assert "ALERTS" in used


def test_queries_run_as_written(dashboard):
    """Only the data source is a variable: dashboard_queries() leaves no Grafana variable behind."""
    queries = gd.dashboard_queries("2m")
    assert len(queries) == sum(len(p["targets"]) for p in _panels(dashboard))
    assert all("$" not in expr for _, expr in queries)
    assert sum("[2m]" in expr for _, expr in queries) >= 10  # the rate windows were substituted
    exprs = [t["expr"] for p in _panels(dashboard) for t in p["targets"]]
    assert any(gd.RI in e for e in exprs)  # ... from Grafana's own per-panel window


def test_queries_parse_with_promtool(tmp_path):
    """Every query, as a recording rule, passes the real `promtool check rules` (PromQL syntax)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is required: install the OS package prometheus (`make os-packages`)")
    rules = [
        {"record": f"riskops:dashboard_query_{i}", "expr": e}
        for i, (_, e) in enumerate(gd.dashboard_queries())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(rules)} rules found" in proc.stdout


def test_grafana_basics(dashboard):
    """What Grafana needs to import it: uid, title, schemaVersion, one data-source variable every
    target uses, and panels on the 24-column grid that do not overlap."""
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"]) and dashboard["title"]
    assert dashboard["schemaVersion"] >= 36
    (var,) = dashboard["templating"]["list"]
    assert (var["name"], var["type"], var["query"]) == ("datasource", "datasource", "prometheus")
    cells: set[tuple[int, int]] = set()
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in ("h", "w", "x", "y")), p["title"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, f"{p['title']} overlaps another panel"
        cells |= area
    for p in _panels(dashboard):
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert all(t["datasource"] == p["datasource"] for t in p["targets"])
    (heatmap,) = [p for p in _panels(dashboard) if p["type"] == "heatmap"]
    assert heatmap["targets"][0]["format"] == "heatmap"  # buckets de-accumulated by Grafana
    assert json.loads(gd.render()) == dashboard  # plain JSON, nothing lost in serialisation
