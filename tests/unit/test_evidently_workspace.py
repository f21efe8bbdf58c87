"""The Evidently workspace the monitor fills (riskops.monitoring.workspace): one project with one
dashboard however many passes and processes add to it, one run per pass at the pass's time with the
verdict's tags, panels that find the runs' values, bounded size, and a pass that never fails for it.
The score-distribution and decision-rate panels show the champion's rows of a window only.

The reports are real: `compute_drift` on a small random reference and windows (four monitored
inputs, so that Evidently stays quick); "shifted" windows move an input, the score and bring a
payment method the reference never saw (the new_category rule's drift). Whether a panel finds its
values is asked of Evidently's own series query (`InMemoryDataStorage.get_data_series`, what the UI
calls); tests/integration/test_evidently_ui.py looks at the rendered dashboard in a browser.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from cli.main import main as riskops_main
from riskops.features.contract import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from riskops.monitoring.drift import compute_drift
from riskops.monitoring.drift_settings import DriftSettings
from riskops.monitoring.monitor import MonitorConfig, ReportSettings, run_monitor_once
from riskops.monitoring.reference import current_frame, load_reference, save_reference
from riskops.monitoring.workspace import PANELS, DriftWorkspace, project_name
from riskops.registry.store import ModelRegistry
from riskops.settings import paths as home_paths

FEATURES = ["amount_log", "quantity", "payment_method", "channel"]
WINDOW = 500
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _frame(n: int, seed: int, start: str, shifted: bool = False) -> pd.DataFrame:
    """Model-frame rows: every input (normal noise, three categories), a score, a label, a time."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f: rng.normal(size=n) for f in NUMERIC_FEATURES})
    for c in CATEGORICAL_FEATURES:
        frame[c] = rng.choice(["a", "b", "c"], n)
    frame["risk_score"] = rng.beta(2, 4, n) if shifted else rng.beta(1, 6, n)
    if shifted:
        frame["amount_log"] += 2.0
        frame.loc[frame.index[: n // 10], "payment_method"] = "crypto"  # never in the reference
    frame["is_fraud"] = (rng.random(n) < frame["risk_score"] * 0.5).astype(int)
    frame["event_timestamp"] = pd.date_range(start, periods=n, freq="3min", tz="UTC")
    frame["transaction_id"] = [f"{seed}-{i}" for i in range(n)]
    frame["model_version"] = "v0001"
    return frame


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A model folder with a reference (3,000 rows over ~6 days) and decision thresholds."""
    d = tmp_path_factory.mktemp("model")
    ref = _frame(3000, 0, "2026-02-20")
    save_reference(d, ref, ref["risk_score"], ref["is_fraud"], ref["event_timestamp"])
    (d / "policy.json").write_text(json.dumps({"review": 0.5, "block": 0.9}))
    return d


@pytest.fixture(scope="module")
def windows():
    return {
        "normal": _frame(WINDOW, 1, "2026-03-01"),
        "shifted": _frame(WINDOW, 2, "2026-03-02", shifted=True),
    }


SETTINGS = DriftSettings(features=FEATURES, window_size=WINDOW, performance_min_rows=200, bootstrap=0)


@pytest.fixture(scope="module")
def snapshots(model_dir, windows):
    """name -> the Evidently snapshots (drift + performance) of each window."""
    ref = load_reference(model_dir, model_version="v0001")
    out = {}
    for name, w in windows.items():
        result = compute_drift(ref, current_frame(w), SETTINGS, labelled=w)
        assert set(result.snapshots) == {"drift", "performance"}
        out[name] = result.snapshots
    return out


def _metric_count(snaps) -> int:
    return sum(len(s.to_snapshot_model().metric_results) for s in snaps.values())


def test_passes_share_one_project_and_one_dashboard(tmp_path, snapshots):
    folder = tmp_path / "ws"
    # several processes' first passes at once (threads with their own lock file handles, as processes)
    seen = []
    threads = [
        threading.Thread(target=lambda: seen.append(DriftWorkspace(folder).project().id)) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1
    DriftWorkspace(folder).add_pass(snapshots["normal"], T0, ["no-drift", "status:ok"], {"verdict": "ok"})
    DriftWorkspace(folder).add_pass(snapshots["shifted"], T0 + timedelta(minutes=10), ["drift", "alert"])

    projects = [p for p in folder.iterdir() if p.is_dir()]
    assert len(projects) == 1
    meta = json.loads((projects[0] / "metadata.json").read_text())
    assert meta["name"] == project_name() == "riskops drift monitor (risk-model)"
    dashboard = json.loads((projects[0] / "dashboard.json").read_text())
    assert [p["title"] for p in dashboard["panels"]] == [p.title for p in PANELS]
    assert len(dashboard["tabs"]) == 1 and dashboard["tabs"][0]["panels"] == [
        p["id"] for p in dashboard["panels"]
    ]
    before = (projects[0] / "dashboard.json").read_bytes()
    DriftWorkspace(folder).project()  # a later process: the dashboard is left as it is
    assert (projects[0] / "dashboard.json").read_bytes() == before

    runs = DriftWorkspace(folder).runs()
    assert [r["timestamp"] for r in runs] == [
        datetime(2026, 3, 1, 12, 0),
        datetime(2026, 3, 1, 12, 10),
    ]  # UTC
    assert [r["tags"] for r in runs] == [["no-drift", "status:ok"], ["drift", "alert"]]
    assert runs[0]["metadata"] == {"verdict": "ok"}
    # one run per pass: the drift and performance reports of a pass together
    assert [r["metrics"] for r in runs] == [
        _metric_count(snapshots["normal"]),
        _metric_count(snapshots["shifted"]),
    ]


def _series(folder, project_id, series) -> list:
    """What the UI's series query answers for one panel series: its values per run."""
    from evidently.ui.service.base import SeriesFilter
    from evidently.ui.service.storage.local.base import InMemoryDataStorage

    flt = SeriesFilter(
        tags=list(series.tags),
        metadata={},
        metric=f"evidently:metric_v2:{series.metric}",
        metric_labels=dict(series.labels),
    )
    answer = asyncio.run(InMemoryDataStorage(str(folder)).get_data_series(project_id, [flt], None, None))
    return [v for s in answer.series for v in s.values]


def test_every_panel_series_finds_a_value_in_every_run(tmp_path, snapshots):
    from riskops.monitoring.workspace import Series

    folder = tmp_path / "ws"
    ws = DriftWorkspace(folder)
    ws.add_pass(snapshots["normal"], T0, ["no-drift"])
    ws.add_pass(snapshots["shifted"], T0 + timedelta(hours=1), ["drift"])
    project_id = ws.project().id
    for panel in PANELS:
        for series in panel.series:
            values = _series(folder, project_id, series)
            expected = 1 if "drift" in series.tags else 2  # the tagged series: the drift pass only
            assert len(values) == expected and all(v is not None for v in values), (
                panel.title,
                series,
                values,
            )
    # the query is discriminating: a label the runs do not hold finds nothing
    assert _series(folder, project_id, Series("ValueDrift", (("column", "no_such_input"),))) == []
    # and the values are the reports' own: the shifted window drifted more inputs
    share = Series("DriftedColumnsCount", (("value_type", "share"),))
    normal, shifted = _series(folder, project_id, share)
    assert shifted > normal
    # ... and scored higher; the decision rates of a pass add up to one
    mean = Series("MeanValue", (("column", "risk_score"),))
    normal, shifted = _series(folder, project_id, mean)
    assert shifted > normal + 0.1
    rates = _panel(project_id, folder, "Decision rates per pass")
    assert [sum(per_pass) for per_pass in zip(*rates.values(), strict=True)] == pytest.approx([1.0, 1.0])


def _panel(project_id, folder, title) -> dict[str, list]:
    """legend -> values per run of each series of the panel titled `title`."""
    (panel,) = [p for p in PANELS if p.title == title]
    return {s.legend: _series(folder, project_id, s) for s in panel.series}


def test_score_and_decision_panels_show_the_champions_rows_only(tmp_path, model_dir, windows):
    """A canary challenger scores a third of the window, all of it near 1 (blocks, had they been
    counted): the window's score quantiles and decision rates are the champion's rows' alone, as
    riskops' own numbers have them (numpy, not Evidently), and the decision mix test compares them."""
    ref = load_reference(model_dir, model_version="v0001")
    w = windows["normal"].copy()
    challenger = w.index[::3]
    w.loc[challenger, "model_version"] = "v0002"
    w.loc[challenger, "risk_score"] = 0.99
    result = compute_drift(ref, current_frame(w), SETTINGS)
    fast = compute_drift(ref, current_frame(w), replace(SETTINGS, engine="fast")).metrics
    ws = DriftWorkspace(tmp_path / "ws")
    ws.add_pass(result.snapshots, T0, ["no-drift"])
    pid = ws.project().id
    m = result.metrics
    assert m["window.champion_share"] == pytest.approx(2 / 3, abs=0.01)

    score = {k: v for k, (v,) in _panel(pid, ws.path, "Risk score per pass (mean, p50, p90, p99)").items()}
    assert score["mean"] == pytest.approx(m["score.mean_cur"])
    assert score["p99"] == pytest.approx(m["score.p99_cur"]) and score["p99"] < 0.9
    assert score["p50"] < score["p90"] < score["p99"]
    rates = {k: v for k, (v,) in _panel(pid, ws.path, "Decision rates per pass").items()}
    assert rates["review"] == pytest.approx(m["decision.review_rate_cur"])
    assert rates["block"] == pytest.approx(m["decision.block_rate_cur"]) and rates["block"] < 0.1
    assert sum(rates.values()) == pytest.approx(1.0)
    # the challenger's rows are missing decisions, not a category of their own
    assert m["decision.chisquare_p_value"] == pytest.approx(fast["decision.chisquare_p_value"])
    assert m["decision.chisquare_p_value"] > 0.001


def test_older_runs_are_slimmed_and_the_oldest_deleted(tmp_path, snapshots):
    folder = tmp_path / "ws"
    ws = DriftWorkspace(folder, keep_full=1, keep_runs=3)
    for i in range(4):
        ws.add_pass(snapshots["normal"], T0 + timedelta(hours=i), [f"pass:{i}"])
    runs = ws.runs()
    assert [r["tags"] for r in runs] == [["pass:1"], ["pass:2"], ["pass:3"]]  # the oldest is gone
    evws = ws._workspace()
    pid = ws.project().id
    models = [evws.get_run(pid, r["id"]) for r in runs]
    assert [bool(m.widgets) for m in models] == [False, False, True]  # only the newest keeps its plots
    full, slim = models[2], models[0]
    assert not any(r.widget for r in slim.metric_results.values())
    assert len(json.dumps(slim.dict(), default=str)) < len(json.dumps(full.dict(), default=str)) / 3
    # what the dashboard reads is kept: every panel series still finds all three runs
    for panel in PANELS:
        for series in panel.series:
            if not series.tags:
                assert len(_series(folder, pid, series)) == 3, panel.title


def _champion(paths, model_dir) -> str:
    reg = ModelRegistry(paths.registry)
    mv = reg.register(model_dir)
    reg.set_alias("champion", mv.version)
    return mv.version


CONFIG = {
    "window": {"size": WINDOW, "min_rows": 200, "performance_rows": 1000},
    "drift": {"features": FEATURES, "performance_min_rows": 200, "bootstrap": 0},
    "reports": {"html": False},
    "volume": {"enabled": False},
}


def test_each_monitor_pass_adds_one_run_with_its_verdict(riskops_home, model_dir, windows):
    from riskops.monitoring.feedback import append_feedback

    paths = home_paths(riskops_home)
    version = _champion(paths, model_dir)
    log_df = pd.concat([windows["normal"], windows["shifted"]], ignore_index=True)
    append_feedback(
        paths,
        [
            {"transaction_id": t, "is_fraud": int(y), "source": "chargeback"}
            for t, y in zip(log_df["transaction_id"], log_df["is_fraud"], strict=True)
        ],
    )
    first = run_monitor_once(paths, CONFIG, now=T0, log_df=log_df.head(WINDOW))
    second = run_monitor_once(paths, CONFIG, now=T0 + timedelta(minutes=10), log_df=log_df)
    assert not first.verdict.drift and second.verdict.drift  # the unseen payment method

    ws = DriftWorkspace(paths.root / "evidently")
    runs = ws.runs()
    assert len(runs) == 2 and len([p for p in (paths.root / "evidently").iterdir() if p.is_dir()]) == 1
    assert [r["timestamp"] for r in runs] == [datetime(2026, 3, 1, 12, 0), datetime(2026, 3, 1, 12, 10)]
    assert runs[0]["tags"] == ["no-drift", "status:ok", f"champion:{version}"]
    assert runs[1]["tags"] == ["drift", "status:ok", f"champion:{version}", "alert"]
    assert runs[1]["metadata"]["verdict"] == "drift" and "new_category" in runs[1]["metadata"]["rules"]
    assert runs[1]["metadata"]["report_dir"] == str(second.report_dir)
    assert all(r["metrics"] > 0 for r in runs)


def test_a_pass_that_compared_nothing_is_still_a_run(riskops_home):
    paths = home_paths(riskops_home)
    res = run_monitor_once(paths, {"volume": {"enabled": False}}, now=T0)
    assert res.status == "no_champion"
    runs = DriftWorkspace(paths.root / "evidently").runs()
    assert [(r["tags"], r["metrics"]) for r in runs] == [
        (["no-drift", "status:no_champion", "champion:none"], 0)
    ]


def test_a_disabled_workspace_writes_nothing(riskops_home, model_dir, windows):
    paths = home_paths(riskops_home)
    _champion(paths, model_dir)
    config = {**CONFIG, "reports": {"html": False, "workspace": ""}}
    res = run_monitor_once(paths, config, now=T0, log_df=windows["normal"])
    assert res.status == "ok" and "drift.json" in res.files
    assert not (paths.root / "evidently").exists()
    assert sorted(p.name for p in paths.root.iterdir()) == ["monitoring", "registry", "reports"]


def test_a_broken_workspace_never_fails_the_pass(riskops_home, model_dir, windows, caplog):
    paths = home_paths(riskops_home)
    _champion(paths, model_dir)
    (paths.root / "blocked").write_text("a file where the workspace folder should be")
    config = {**CONFIG, "reports": {"html": False, "workspace": "blocked/evidently"}}
    with caplog.at_level(logging.ERROR, logger="riskops.monitoring.monitor"):
        res = run_monitor_once(paths, config, now=T0, log_df=windows["shifted"])
    assert res.status == "ok" and res.verdict.drift
    assert json.loads((res.report_dir / "verdict.json").read_text())["drift"] is True
    assert any(
        "Evidently workspace" in r.getMessage() and "blocked" in r.getMessage() for r in caplog.records
    )


def test_an_object_store_workspace_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="mounted volume"):
        MonitorConfig.from_dict({"reports": {"workspace": "s3://bucket/evidently"}})
    with pytest.raises(ValueError, match="mount a volume"):
        DriftWorkspace("s3://bucket/evidently")
    assert ReportSettings().workspace == "evidently"


def test_riskops_ui_without_runs_says_what_to_run_first(tmp_path, capsys):
    assert riskops_main(["ui", "--workspace", str(tmp_path / "nothing")]) == 2
    out = capsys.readouterr().out
    assert "riskops monitor --once" in out and "drift-demo" in out
    assert not (tmp_path / "nothing").exists()  # looking creates nothing
