#!/usr/bin/env python3
"""The riskops Grafana dashboard, generated from the compact panel list below (plain dicts, no SDK).

    .venv/bin/python tools/grafana_dashboard.py --write   # (re)write the checked-in JSON
    .venv/bin/python tools/grafana_dashboard.py --check   # exit 1 if the checked-in JSON is stale

The JSON (k8s/base/monitoring/riskops-dashboard.json) ships as the ConfigMap
riskops-grafana-dashboard, which kube-prometheus-stack's Grafana sidecar loads by its label.
Queries use only the metrics contract's series (serving replicas scraped by the PodMonitor, the
monitor's verdicts via the Pushgateway, Prometheus' ALERTS). They must return data both on a
cluster and on a local Prometheus scraping `python -m serving`, hence three conventions:

- `component!="predictor"` on the request series: on a cluster the transformer's numbers are the
  end-to-end ones (the predictor's would count each request twice); locally there is no
  `component` label and the matcher keeps everything.
- Per-replica panels group `by (instance)`: the pod's name on a cluster (the PodMonitor sets it),
  host:port locally. Grouping by a label that is absent is harmless, but legends would be empty.
- Counters with labels have no series until their first event (errors, canary, alerts): such
  queries fall back to an explicit 0 (`or on() ...vector(0)`), so "none" reads as 0, not "no data".

The only template variable is the data source, so `dashboard_queries()` can run every query as
written (with Grafana's `$__rate_interval` replaced).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_PATH = REPO_ROOT / "k8s" / "base" / "monitoring" / "riskops-dashboard.json"
UID = "riskops-overview"
DS = {"type": "prometheus", "uid": "${datasource}"}
RI = "$__rate_interval"


def _sel(metric: str, matchers: str = "") -> str:
    return f"{metric}{{{matchers}}}" if matchers else metric


def rate(metric: str, matchers: str = "", by: str = "", fn: str = "rate", window: str = RI) -> str:
    """`sum [by (by)] (fn(metric{matchers}[window]))`."""
    agg = f"sum by ({by}) " if by else "sum"
    return f"{agg}({fn}({_sel(metric, matchers)}[{window}]))"


def quantile(bucket: str, matchers: str = "", q: float = 0.99) -> str:
    """The q-quantile over every replica of a histogram (`..._bucket`)."""
    return f"histogram_quantile({q}, sum by (le) (rate({_sel(bucket, matchers)}[{RI}])))"


def share(part: str, whole: str) -> str:
    """part / whole, with a part that has no series yet (no 5xx so far) read as 0."""
    return f"({part} or vector(0)) / {whole}"


def or_zero(expr: str, label: str = "", text: str = "") -> str:
    """`expr`, or a single 0 when it has no series (named `label`=`text` for the legend)."""
    zero = f'label_replace(vector(0), "{label}", "{text}", "", "")' if label else "vector(0)"
    return f"({expr}) or on() {zero}"


def panel(kind: str, title: str, queries: list[tuple[str, str]], unit: str = "short", w: int = 8, **kw):
    """One panel: kind is timeseries | stat | heatmap | bargauge; queries are (legend, PromQL).
    Keywords: h (height: 5 for stat, else 8), description, thresholds [(from, color), ...], max,
    stack (timeseries), text_mode (stat: "name" shows the legend), instant (the last value only)."""
    return {"kind": kind, "title": title, "queries": queries, "unit": unit, "w": w, **kw}


REQ, LAT = "riskops_http_requests_total", "riskops_http_request_duration_seconds_bucket"
DEC = "riskops_decisions_total"
FEAST_ERR, STATE_ERR = "riskops_feast_errors_total", "riskops_state_errors_total"
ENTRY = 'component!="predictor"'
SCORING = f'{ENTRY},route=~"v1_predict|v2_infer"'
RED_FROM_1 = [(None, "green"), (1, "red")]
DRIFT = "Drift and model quality (the monitor job's verdicts, via the Pushgateway)"

SECTIONS: list[tuple[str, list[dict]]] = [
    ("Scoring traffic and latency", [
        panel("timeseries", "Traffic by route", [("{{route}}", rate(REQ, ENTRY, "route"))], "reqps",
              description="Requests per second at the entry point (the transformer on a cluster)."),
        panel("timeseries", "Scoring latency p50 / p99", [
            ("p50", quantile(LAT, SCORING, q=0.5)), ("p99", quantile(LAT, SCORING))], "s",
              description="Server side, end to end, v1 predict and v2 infer."),
        panel("timeseries", "Per-stage p99", [
            ("feature lookup", quantile("riskops_feature_lookup_seconds_bucket")),
            ("model", quantile("riskops_model_batch_seconds_bucket")),
            ("prediction log write", quantile("riskops_prediction_log_write_seconds_bucket"))], "s"),
        panel("timeseries", "Error share of scoring requests", [
            ("5xx", share(rate(REQ, SCORING + ',code=~"5.."'), rate(REQ, SCORING))),
            ("4xx (invalid requests)", share(rate(REQ, SCORING + ',code=~"4.."'), rate(REQ, SCORING)))],
              "percentunit"),
        panel("timeseries", "Degraded share", [
            ("degraded", f"{rate('riskops_degraded_total')} / {rate(DEC)}")], "percentunit",
              description="Scored without online features or entity state (policy fail_mode applied)."),
        panel("timeseries", "Decisions", [("{{decision}}", rate(DEC, by="decision"))], "ops", stack=True),
        panel("heatmap", "Risk score distribution", [
            ("{{le}}", rate("riskops_risk_score_bucket", by="le", fn="increase"))], w=12,
              description="Scores served per 0.05 bucket."),
        panel("timeseries", "Flag rate (review + block)", [
            ("flagged", share(rate(DEC, 'decision=~"review|block"'), rate(DEC)))], "percentunit", w=12),
    ]),
    ("Features and entity state", [
        panel("timeseries", "Feature freshness", [
            ("age {{instance}}", "time() - max by (instance) "
             f"(riskops_features_last_update_timestamp_seconds{{{ENTRY}}} > 0)"),
            ("push lag p99", quantile("riskops_state_push_lag_seconds_bucket"))], "s", w=12,
              description="Age of each replica's newest entity-state write (none before the first); "
              "entity update -> online store lag."),
        panel("timeseries", "Feature store / state errors", [
            # serving creates these series at 0 when it starts (serving/prometheus_metrics.py): no fallback,
            # so a panel without data means the metric is broken
            ("feast {{operation}}", rate(FEAST_ERR, by="operation")),
            ("state {{operation}}", rate(STATE_ERR, by="operation"))], "ops"),
        panel("stat", "State backlog", [("tx waiting", "sum(riskops_state_backlog)")], w=4,
              thresholds=RED_FROM_1, description="Scored while Redis was down, not yet applied."),
    ]),
    ("Model and canary", [
        panel("stat", "Model version per replica", [
            ("{{instance}}: {{version}}", "max by (instance, version) (riskops_model_info == 1)")],
              text_mode="name"),
        panel("stat", "Model swaps (1h)", [
            ("swaps", rate("riskops_model_swaps_total", fn="increase", window="1h"))], w=4),
        panel("stat", "Canary active", [("active", "max(riskops_canary_active)")], w=4),
        panel("stat", "Canary share", [("share", "max(riskops_canary_share)")], "percentunit", w=4),
        panel("stat", "Canary decisions (24h)", [("{{action}}", rate(
            "riskops_canary_decisions_total", by="action", fn="increase", window="24h"))], w=4),
        panel("timeseries", "Canary requests by arm", [("{{arm}} {{outcome}}", rate(
            "riskops_canary_requests_total", by="arm, outcome"))], "ops", w=24),
    ]),
    (DRIFT, [
        panel("stat", "Since the last monitor pass", [
            ("age", "time() - max(riskops_monitor_last_pass_timestamp_seconds)")], "s", w=6,
              thresholds=[(None, "green"), (1800, "red")], description="It runs every 10 minutes."),
        panel("stat", "Last pass status", [
            ("{{status}}", "max by (status) (riskops_monitor_pass_status) == 1")], w=6, text_mode="name"),
        panel("stat", "Labelled rows", [("rows", "max(riskops_monitor_labelled_rows)")], w=6),
        panel("stat", "Drift / alert flags", [
            ("drift (retrain)", "max(riskops_monitor_drift_detected)"),
            ("alert", "max(riskops_monitor_alert)")], w=6, thresholds=RED_FROM_1),
        panel("timeseries", "Drift share", [("drifted inputs", "max(riskops_monitor_drift_share)")],
              "percentunit", max=1),
        panel("bargauge", "Per-input drift ratio", [
            ("{{feature}}", "sort_desc(max by (feature) (riskops_monitor_input_drift_ratio))")],
              instant=True, thresholds=RED_FROM_1, description="Distance / its threshold: >= 1 drifted."),
        panel("timeseries", "Score drift ratio", [("score", "max(riskops_monitor_score_drift_ratio)")],
              thresholds=RED_FROM_1, description="Risk-score distance / its threshold: >= 1 drifted."),
        panel("timeseries", "Flag rate: reference vs current", [
            ("{{window}}", "max by (window) (riskops_monitor_flag_rate)")], "percentunit", w=12),
        panel("timeseries", "PR-AUC: labelled window vs baseline", [
            ("labelled window", "max(riskops_monitor_pr_auc)"),
            ("champion baseline", "max(riskops_monitor_pr_auc_baseline)")], max=1, w=12,
              description="NaN (no points) until labels arrive."),
        panel("bargauge", "Retraining runs (24h)", [("{{outcome}}", rate(
            "riskops_retraining_runs_total", by="outcome", fn="increase", window="24h"))],
              instant=True, w=12),
        panel("bargauge", "Promotion decisions (24h)", [("{{kind}}: {{decision}}", rate(
            "riskops_promotion_decisions_total", by="kind, decision", fn="increase", window="24h"))],
              instant=True, w=12),
    ]),
    ("Alerts", [
        panel("stat", "Riskops alerts firing", [
            ("firing", or_zero('count(ALERTS{alertname=~"Riskops.*",alertstate="firing"})'))], w=6,
              thresholds=RED_FROM_1),
        panel("timeseries", "Riskops alerts", [("{{alertname}} {{alertstate}}", or_zero(
            'count by (alertname, alertstate) (ALERTS{alertname=~"Riskops.*"})', "alertname", "none"))],
              w=18, stack=True),
    ]),
]  # fmt: skip


def _target(i: int, legend: str, expr: str, p: dict) -> dict:
    instant = bool(p.get("instant"))
    t = {"refId": chr(ord("A") + i), "datasource": DS, "editorMode": "code", "expr": expr}
    t.update(legendFormat=legend, range=not instant, instant=instant)
    if p["kind"] == "heatmap":
        t["format"] = "heatmap"  # Grafana turns the cumulative buckets into per-bucket counts
    return t


def _height(p: dict) -> int:
    return p.get("h", 5 if p["kind"] == "stat" else 8)


def _panel_json(p: dict, pid: int, x: int, y: int) -> dict:
    steps = [{"value": v, "color": c} for v, c in p.get("thresholds", [(None, "green")])]
    defaults: dict = {"unit": p["unit"], "thresholds": {"mode": "absolute", "steps": steps}, "min": 0}
    if "max" in p:
        defaults["max"] = p["max"]
    reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
    legend = {"showLegend": True, "displayMode": "list", "placement": "bottom", "calcs": []}
    if p["kind"] == "timeseries":
        defaults["color"] = {"mode": "palette-classic"}
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if p.get("stack") else 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if p.get("stack") else "none", "group": "A"},
            "thresholdsStyle": {"mode": "line" if "thresholds" in p else "off"},
        }
        options = {"legend": legend, "tooltip": {"mode": "multi", "sort": "desc"}}
    elif p["kind"] == "stat":
        defaults["color"] = {"mode": "thresholds"}
        text_mode = p.get("text_mode", "auto")
        options = {"reduceOptions": reduce, "colorMode": "value", "graphMode": "none"}
        options.update(textMode=text_mode, justifyMode="auto", orientation="auto", wideLayout=True)
    elif p["kind"] == "bargauge":
        defaults["color"] = {"mode": "thresholds"}
        options = {"reduceOptions": reduce, "displayMode": "gradient", "orientation": "horizontal"}
        options.update(showUnfilled=True, valueMode="color", namePlacement="auto", sizing="auto")
    elif p["kind"] == "heatmap":
        defaults = {"custom": {"scaleDistribution": {"type": "linear"}}}
        options = {
            "calculate": False,
            "cellGap": 1,
            "color": {
                "mode": "scheme",
                "scheme": "Oranges",
                "steps": 64,
                "exponent": 0.5,
                "fill": "dark-orange",
            },
            "yAxis": {"axisPlacement": "left", "unit": "short"},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"mode": "single", "yHistogram": False, "showColorScale": False},
            "legend": {"show": True},
        }
    else:
        raise ValueError(f"unknown panel kind {p['kind']!r} in {p['title']!r}")
    out = {"id": pid, "type": p["kind"], "title": p["title"], "description": p.get("description", "")}
    out.update(datasource=DS, gridPos={"h": _height(p), "w": p["w"], "x": x, "y": y})
    out.update(fieldConfig={"defaults": defaults, "overrides": []}, options=options)
    out["targets"] = [_target(i, legend, expr, p) for i, (legend, expr) in enumerate(p["queries"])]
    return out


def build_dashboard() -> dict:
    """The dashboard as Grafana's JSON model: a row per section, panels flowing left to right."""
    panels: list[dict] = []
    y = 0
    for section, specs in SECTIONS:
        panels.append({"id": len(panels) + 1, "type": "row", "title": section, "collapsed": False})
        panels[-1].update(gridPos={"h": 1, "w": 24, "x": 0, "y": y}, panels=[])
        y += 1
        x = line_h = 0
        for spec in specs:
            if x + spec["w"] > 24:  # wrap to the next line
                x, y, line_h = 0, y + line_h, 0
            panels.append(_panel_json(spec, len(panels) + 1, x, y))
            x, line_h = x + spec["w"], max(line_h, _height(spec))
        y += line_h
    ds_var = {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus"}
    ds_var.update(current={}, hide=0, includeAll=False, multi=False, options=[], refresh=1, regex="")
    builtin = {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True}
    builtin.update(hide=True, iconColor="rgba(0, 211, 255, 1)", name="Annotations & Alerts", type="dashboard")
    return {
        "uid": UID,
        "title": "riskops: scoring, features, drift",
        "description": "Generated by tools/grafana_dashboard.py; edit the panel list there, not this file.",
        "tags": ["riskops"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "utc",
        "refresh": "30s",
        "annotations": {"list": [builtin]},
        "templating": {"list": [ds_var]},
        "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build_dashboard(), indent=2) + "\n"


def dashboard_queries(rate_interval: str = "1m") -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel, `$__rate_interval` replaced: the
    queries as Prometheus runs them. A panel with several queries appears once per query."""
    return [
        (p["title"], t["expr"].replace(RI, rate_interval))
        for p in build_dashboard()["panels"]
        for t in p.get("targets", [])
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help=f"write {DASHBOARD_PATH.relative_to(REPO_ROOT)}")
    mode.add_argument("--check", action="store_true", help="exit 1 if the checked-in JSON is stale")
    args = ap.parse_args(argv)
    text = render()
    rel = DASHBOARD_PATH.relative_to(REPO_ROOT)
    if args.write:
        DASHBOARD_PATH.write_text(text)
        print(f"wrote {rel} ({len(text)} bytes)")
        return 0
    if not DASHBOARD_PATH.is_file() or DASHBOARD_PATH.read_text() != text:
        print(
            f"{rel} is stale: run `python tools/grafana_dashboard.py --write` and commit it", file=sys.stderr
        )
        return 1
    print(f"{rel} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
