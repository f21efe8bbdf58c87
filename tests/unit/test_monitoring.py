"""Monitoring: drift detection vs no detection over seeds, volume anomalies, rules, the monitor pass.

The detection data: the built-in generator, entity features from riskops.features.aggregates (the state
before each transaction, as Feast serves it), model inputs from riskops.features.contract.build_model_frame
and scores from a quick sklearn model (riskops.training.baselines logistic regression). For each seed:

* the no-drift case is one continuous stretch of normal traffic; the reference is the 30% of it
  before the "onset" and the monitored windows are the 1,500 transactions ending 1,500 / 2,000
  transactions later — they must never alarm;
* each drift scenario is normal traffic followed by the scenario (`generate_with_drift`); windows
  slide in steps of 250 transactions after the onset and the first alarm must come within 2,000.

The sweeps use the "fast" engine (the same formulas as the Evidently report, checked equal below).
"""

from __future__ import annotations

import json
import threading
import warnings
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pandas as pd
import pytest
from support.monitoring import model_frame_with_prior_state, write_prediction_log

from riskops.monitoring.drift import compute_drift
from riskops.monitoring.drift_settings import DriftSettings
from riskops.monitoring.reference import current_frame, load_reference, save_reference
from riskops.monitoring.rules import evaluate_rules, load_rules
from riskops.monitoring.volume import (
    VolumeSettings,
    detect_volume_anomalies,
    hourly_volumes,
    hourly_volumes_from_log,
)
from riskops.settings import paths as home_paths

SEEDS = (1, 2, 3)
BASE_ROWS, DRIFT_ROWS, WINDOW = 30_000, 4_000, 1_500  # 12 days of normal traffic, then the scenario
FAST = DriftSettings(engine="fast", window_size=WINDOW)
_CACHE: dict = {}


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def world(seed: int, tmp_root) -> dict:
    """Per seed (cached for the session): frames, onsets, a fitted model and the reference.

    Every frame is `generate_with_drift(GeneratorConfig(rows=30_000, seed=seed), scenario, 4_000)`:
    the same 12 days of normal traffic (the same world, so the same model and reference serve
    all of them) followed by 4,000 transactions of the scenario — "normal" for the no-drift case.
    """
    if seed in _CACHE:
        return _CACHE[seed]
    from riskops.data.generator import GeneratorConfig, generate_with_drift
    from riskops.training.baselines import fit_logistic_regression
    from riskops.training.metrics import thresholds_for_policy

    frames, onsets = {}, {}
    for sc in ("normal", "fraud_ring", "price_shift", "new_payment_method"):
        raw = generate_with_drift(GeneratorConfig(rows=BASE_ROWS, seed=seed), sc, DRIFT_ROWS)
        frames[sc] = model_frame_with_prior_state(raw)
        onsets[sc] = int((frames[sc]["event_timestamp"] < pd.Timestamp(raw.attrs["drift_onset"])).sum())
    base = frames["normal"].iloc[: onsets["normal"]]
    n = len(base)
    train, val, ref = base.iloc[: int(0.55 * n)], base.iloc[int(0.55 * n) : int(0.7 * n)], base.iloc[int(0.7 * n) :]
    model = fit_logistic_regression(train, train["is_fraud"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no threshold reaches block precision": block stays above all
        thresholds = thresholds_for_policy(val["is_fraud"], model.predict_scores(val))
    for f in frames.values():
        f["risk_score"] = model.predict_scores(f)
    ref = frames["normal"].iloc[int(0.7 * n) : n]  # the champion's held-out period (val/test)
    ref_dir = tmp_root / f"ref-{seed}"
    save_reference(ref_dir, ref, ref["risk_score"], ref["is_fraud"], ref["event_timestamp"])
    (ref_dir / "policy.json").write_text(json.dumps(thresholds))
    _CACHE[seed] = {"frames": frames, "onsets": onsets, "model": model, "thresholds": thresholds, "ref": ref_dir}
    return _CACHE[seed]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("monitoring-data")


def _verdict(ref, frame: pd.DataFrame, end: int, settings: DriftSettings = FAST):
    result = compute_drift(ref, current_frame(frame.iloc[end - WINDOW : end]), settings)
    return evaluate_rules(result.metrics), result


# --------------------------------------------------------------------------------------------
# detection vs no detection
# --------------------------------------------------------------------------------------------


# the first seed's world is shared with the tests below; each other seed builds its own (~20 s): slow
@pytest.mark.parametrize("seed", [SEEDS[0], *(pytest.param(s, marks=pytest.mark.slow) for s in SEEDS[1:])])
def test_same_distribution_never_alarms_and_shifts_are_caught(seed, data_root):
    w = world(seed, data_root)
    frames, onsets = w["frames"], w["onsets"]
    ref = load_reference(w["ref"])
    for after in (1000, 1500, 2000, 2500):  # windows of normal traffic after the reference period
        v, r = _verdict(ref, frames["normal"], onsets["normal"] + after)
        assert not v.drift, (seed, after, v.reasons)
        assert r.metrics["calibration.blocks"] >= 8
    first = {}
    for sc in ("fraud_ring", "price_shift", "new_payment_method"):
        for after in range(250, 2001, 250):  # slide the window past the onset
            v, r = _verdict(ref, frames[sc], onsets[sc] + after)
            if v.drift:
                first[sc] = (after, [x["rule"] for x in v.reasons], r.metrics)
                break
        assert sc in first, f"seed {seed}: {sc} not detected within 2,000 transactions after the onset"
    # the alarms say why
    assert "new_category" in first["new_payment_method"][1]
    assert first["new_payment_method"][2]["new_category.column"] == "payment_method"
    assert set(first["new_payment_method"][2]["new_category.values"].split(",")) & {"crypto", "bnpl"}
    assert "feature_drift" in first["price_shift"][1]
    assert {"amount_log", "unit_price_log"} <= set(first["price_shift"][2]["feature_drift.drifted_columns"].split(","))
    assert "feature_drift" in first["fraud_ring"][1]


def test_performance_metrics_on_labelled_window(data_root):
    w = world(SEEDS[0], data_root)
    ref = load_reference(w["ref"])
    frame, onset = w["frames"]["price_shift"], w["onsets"]["price_shift"]
    window = frame.iloc[onset - 3000 : onset]
    labelled = window[["transaction_id", "risk_score", "is_fraud"]]
    r = compute_drift(ref, current_frame(window.tail(WINDOW)), replace(FAST, bootstrap=50), labelled=labelled)
    m = r.metrics
    assert m["performance.rows"] == 3000 and m["performance.frauds"] == window["is_fraud"].sum()
    assert 0 < m["performance.pr_auc"] < 1 and m["performance.pr_auc_se"] > 0
    assert "performance.baseline_pr_auc" in m and "performance.pr_auc_drop_z" in m
    # a model that lost its signal: scores shuffled -> the drop is flagged once enough frauds exist
    broken = labelled.assign(risk_score=np.random.default_rng(0).permutation(labelled["risk_score"].to_numpy()))
    bad = compute_drift(ref, current_frame(window.tail(WINDOW)), replace(FAST, bootstrap=50), labelled=broken)
    v = evaluate_rules({**bad.metrics, "performance.frauds": max(bad.metrics["performance.frauds"], 20)})
    assert bad.metrics["performance.pr_auc_drop"] > 0.1
    assert "performance_drop" in [x["rule"] for x in v.reasons]


# --------------------------------------------------------------------------------------------
# rules
# --------------------------------------------------------------------------------------------


def test_rules_require_skip_and_overrides():
    rules = load_rules({"rule_overrides": {"volume_anomaly": {"enabled": False},
                                           "new_category": {"when": ["new_category.share >= 0.5"]}}})
    names = [r.name for r in rules]
    assert "volume_anomaly" not in names
    v = evaluate_rules({"window.rows": 200.0, "feature_drift.count": 9.0, "new_category.share": 0.6}, rules)
    assert not v.drift  # 200 rows: every rule is skipped, none fired
    assert any(s["rule"] == "feature_drift" and "not enough data" in s["why"] for s in v.skipped)
    v = evaluate_rules({"window.rows": 1500.0, "feature_drift.count": 1.0, "feature_drift.share": 0.02,
                        "new_category.share": 0.6, "new_category.column": "payment_method",
                        "new_category.values": "crypto"}, rules)
    assert v.drift and [r["rule"] for r in v.reasons] == ["new_category"]
    assert "payment_method" in v.reasons[0]["message"] and "crypto" in v.reasons[0]["message"]
    with pytest.raises(ValueError, match="cannot parse condition"):
        load_rules({"rules": [{"name": "x", "when": ["score >> 3"]}]})
    with pytest.raises(ValueError, match="no rule named"):
        load_rules({"rule_overrides": {"nope": {"when": ["a > 1"]}}})
    alert_only = load_rules({"rules": [{"name": "v", "when": ["volume.anomalies >= 1"], "action": "alert"}]})
    v = evaluate_rules({"volume.anomalies": 2.0}, alert_only)
    assert v.alert and not v.drift


def test_default_config_file_matches_defaults():
    from riskops.lifecycle.loop import load_loop_config
    from riskops.lifecycle.promotion import PromotionSettings
    from riskops.lifecycle.retrain_settings import RetrainSettings
    from riskops.monitoring.rules import DEFAULT_RULES

    cfg = load_loop_config()
    assert [(r.name, [str(c) for c in r.when]) for r in cfg.rules] == [
        (r.name, [str(c) for c in r.when]) for r in load_rules({"rules": DEFAULT_RULES})]
    assert cfg.drift.window_size == cfg.window.size and cfg.drift == replace(DriftSettings(), window_size=cfg.window.size)
    assert cfg.volume == VolumeSettings()
    assert cfg.retrain == RetrainSettings()
    assert replace(cfg.promotion, canary=None, rollout=None) == replace(PromotionSettings(), canary=None, rollout=None)


# --------------------------------------------------------------------------------------------
# volume
# --------------------------------------------------------------------------------------------


def _traffic(days: int = 10, seed: int = 0, start: str = "2026-03-02") -> pd.DataFrame:
    """Events with a daily cycle: Poisson counts per hour, payment methods, refunds, decisions."""
    rng = np.random.default_rng(seed)
    hours = pd.date_range(start, periods=days * 24, freq="h", tz="UTC")
    lam = 60 + 40 * np.sin(2 * np.pi * (hours.hour.to_numpy() - 6) / 24)
    counts = rng.poisson(lam)
    ns = np.repeat(hours.asi8, counts) + (rng.random(counts.sum()) * 3600e9).astype("int64")
    n = len(ns)
    return pd.DataFrame({
        "event_timestamp": pd.to_datetime(ns, utc=True),
        "payment_method": rng.choice(["credit_card", "paypal", "debit_card"], n, p=[0.6, 0.25, 0.15]),
        "is_refund": rng.random(n) < 0.03,
        "decision": rng.choice(["approve", "review", "block"], n, p=[0.97, 0.02, 0.01]),
    })


def test_volume_quiet_on_normal_traffic():
    settings = VolumeSettings(lookback_hours=48)
    for seed in (0, 1, 2):
        res = detect_volume_anomalies(hourly_volumes(_traffic(seed=seed)), settings)
        assert res.anomalies == [], res.anomalies[:3]
        assert res.season == "hour_of_day" and len(res.judged) > 0


def test_volume_spike_and_drop_are_caught():
    df = _traffic(seed=3)
    last_day = df["event_timestamp"].max().floor("D")
    spike_hour = last_day + pd.Timedelta(hours=14)
    drop_hour = last_day + pd.Timedelta(hours=20)
    extra = df[df["event_timestamp"].dt.floor("h") == spike_hour].copy()
    extra = pd.concat([extra.assign(payment_method="crypto")] * 2)  # a burst on a new method
    in_drop = df["event_timestamp"].dt.floor("h") == drop_hour
    keep_drop = in_drop & (np.random.default_rng(0).random(len(df)) < 0.1)
    df = pd.concat([df[~in_drop | keep_drop], extra]).sort_values("event_timestamp")
    res = detect_volume_anomalies(hourly_volumes(df), VolumeSettings(lookback_hours=24))
    kinds = {(a["series"], a["hour"], a["kind"]) for a in res.anomalies}
    assert ("orders", spike_hour.isoformat(), "spike") in kinds
    assert ("payments.crypto", spike_hour.isoformat(), "spike") in kinds
    assert ("orders", drop_hour.isoformat(), "drop") in kinds
    assert all(a["message"] for a in res.anomalies)


def test_volume_ignores_the_hour_in_progress_and_sees_an_outage():
    df = _traffic(seed=4)
    end = df["event_timestamp"].max()
    now = end.floor("h") + pd.Timedelta(minutes=5)  # 5 minutes into a new hour: not judged
    res = detect_volume_anomalies(hourly_volumes(df), VolumeSettings(lookback_hours=3), now=now)
    assert res.anomalies == []
    outage = detect_volume_anomalies(hourly_volumes(df), VolumeSettings(lookback_hours=3),
                                     now=end + pd.Timedelta(hours=3))  # nothing logged for hours
    assert any(a["series"] == "orders" and a["kind"] == "drop" for a in outage.anomalies)


# --------------------------------------------------------------------------------------------
# the monitor pass: log -> reports, alert, webhook, retraining trigger
# --------------------------------------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):  # keep test output quiet
        pass


def test_run_monitor_once_end_to_end(data_root, riskops_home, tmp_path):
    import shutil

    from riskops.lifecycle.loop import run_loop_once
    from riskops.lifecycle.retrain import RetrainTrigger
    from riskops.registry.store import ModelRegistry

    paths = home_paths(riskops_home)
    w = world(SEEDS[0], data_root)
    model_dir = tmp_path / "model"
    shutil.copytree(w["ref"], model_dir)
    (model_dir / "evaluation.json").write_text(json.dumps({"models": {"transformer": {"pr_auc": 0.3}},
                                                           "primary_model": "transformer"}))
    reg = ModelRegistry(paths.registry)
    mv = reg.register(model_dir)
    reg.set_alias("champion", mv.version)
    frame, onset = w["frames"]["new_payment_method"], w["onsets"]["new_payment_method"]
    write_prediction_log(paths.prediction_log, frame.iloc[onset - 500 : onset + 1500], mv.version, w["thresholds"])
    from riskops.monitoring.feedback import append_feedback

    labelled = frame.iloc[onset - 500 : onset + 100]  # outcomes arrive for the older part of the window
    append_feedback(paths, [{"transaction_id": t, "is_fraud": int(y), "source": "chargeback"}
                            for t, y in zip(labelled["transaction_id"], labelled["is_fraud"], strict=True)])

    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received.clear()
    config = {
        "window": {"size": WINDOW},
        "drift": {"engine": "evidently"},
        "retrain": {"mode": "dry_run", "min_rows": 100, "min_frauds": 1},
        "alerts": {"webhook_url": f"http://127.0.0.1:{server.server_address[1]}/hook", "webhook_timeout": 2},
        "reports": {"keep_last": 2},
    }
    recent = frame.iloc[onset - 500 : onset + 1500][["transaction_id", "event_timestamp", "is_fraud"]]
    trigger = RetrainTrigger(paths, config["retrain"], data_provider=lambda: recent)
    try:
        res = run_loop_once(paths, config, trigger=trigger)
        res.webhook_thread.join(5)
    finally:
        server.shutdown()
    assert res.status == "ok" and res.champion == mv.version
    assert res.verdict.drift and "new_category" in [r["rule"] for r in res.verdict.reasons]
    for name in ("drift.html", "drift.json", "drift_metrics.json", "verdict.json", "volume.json",
                 "performance.html", "performance.json"):
        assert (res.report_dir / name).exists(), name
    assert res.report_dir.parent == paths.reports / "monitoring"
    alerts = [json.loads(x) for x in (paths.root / "alerts.jsonl").read_text().splitlines()]
    assert alerts[-1]["type"] == "drift" and alerts[-1]["reasons"]
    assert _Hook.received and _Hook.received[-1]["type"] == "drift"
    assert res.trigger is not None and res.trigger.reason["rules"] and res.trigger.data["rows"] > 0
    assert json.loads((res.report_dir / "verdict.json").read_text())["drift"] is True
    # the Evidently report's numbers are the fast path's numbers (same formulas, same window)
    from riskops.monitoring.prediction_log import read_prediction_log

    saved = json.loads((res.report_dir / "drift_metrics.json").read_text())
    assert saved["metrics"]["performance.rows"] == 600
    assert saved["metrics"]["performance.baseline_pr_auc"] == 0.3  # from the version's evaluation.json
    fast = compute_drift(load_reference(mv.path), current_frame(read_prediction_log(paths.prediction_log, newest_rows=WINDOW).tail(WINDOW)),
                         FAST)
    for k, v in fast.metrics.items():
        # performance.* needs the joined feedback labels, which only the monitor run has
        if isinstance(v, float) and np.isfinite(v) and not k.startswith("performance."):
            assert saved["metrics"][k] == pytest.approx(v, rel=1e-6, abs=1e-9), k
    assert {c: i["drifted"] for c, i in saved["columns"].items()} == {c: i["drifted"] for c, i in fast.columns.items()}
    doc = json.loads((res.report_dir / "drift.json").read_text())
    names = [m["metric_name"] for m in doc["metrics"]]
    assert any(n.startswith("DriftedColumnsCount") for n in names)
    assert any("ValueDrift(column=risk_score" in n for n in names)
    assert (res.report_dir / "drift.html").stat().st_size > 10_000

    # a dead webhook never breaks a pass; a second pass is debounced by the trigger (cooldown)
    config["alerts"]["webhook_url"] = "http://127.0.0.1:9/unreachable"
    config["drift"]["engine"] = "fast"
    trigger.settings.mode = "local"
    trigger.settings.command = ["{python}", "-c", "pass"]
    again = run_loop_once(paths, config, trigger=trigger)
    if again.webhook_thread is not None:
        again.webhook_thread.join(5)
    assert again.verdict.drift and again.trigger.outcome == "skipped" and "cooldown" in again.trigger.why
    assert len(list((paths.reports / "monitoring").iterdir())) <= 2  # keep_last


def test_monitor_without_champion_or_data(riskops_home):
    from riskops.lifecycle.loop import run_loop, run_loop_once

    paths = home_paths(riskops_home)
    res = run_loop_once(paths, {"retrain": {"mode": "dry_run"}})
    assert res.status == "no_champion" and not res.verdict.drift and res.trigger is None
    stop = threading.Event()
    seen = []
    runs = run_loop(paths, {"retrain": {"mode": "dry_run"}}, every_seconds=0.01, stop_event=stop,
                            max_runs=2, on_result=seen.append)
    assert runs == 2 and len(seen) == 2


def test_hourly_volumes_from_log_with_cache(data_root, riskops_home):
    paths = home_paths(riskops_home)
    w = world(SEEDS[0], data_root)
    frame = w["frames"]["fraud_ring"].iloc[:3000]
    write_prediction_log(paths.prediction_log, frame, "v0001", w["thresholds"])
    cache = paths.root / "vc"
    a = hourly_volumes_from_log(paths.prediction_log, cache)
    b = hourly_volumes_from_log(paths.prediction_log, cache)  # served from the cache
    pd.testing.assert_frame_equal(a, b)
    direct = hourly_volumes(frame.assign(decision="approve"))
    assert a["orders"].sum() == len(frame) == direct["orders"].sum()
    assert a["refunds"].sum() == frame["is_refund"].sum()
    assert {c for c in a.columns if c.startswith("payments.")} == {
        f"payments.{m}" for m in frame["payment_method"].unique()}
