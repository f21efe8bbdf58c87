"""Drift history in Evidently's own UI, in a real browser.

A small home: the built-in generator's traffic (normal, then the new_payment_method scenario), a
logistic-regression champion with its reference, the prediction log and feedback labels. Real
monitor passes (`run_monitor_once`, Evidently reports) walk over the log, a window every 500
transactions: the first passes see normal traffic, the later ones the shift. Then `riskops ui`
serves the home's Evidently workspace as a subprocess and headless Chromium (Selenium, the OS's
chromedriver) opens the project's dashboard: every chart panel must show one point (or bar) per
pass and series that holds its metric (the score's mean and quantiles, each decision's rate), each
series named in its legend, the drift-verdict panel one per drifted pass, the counters the last
pass's values, and the Reports page one run per pass, the drifted ones tagged ``drift``. A pass
made while the UI runs shows up on the next load. The dashboard's screenshot is saved as
``screenshot.png`` under the test's tmp folder (and $RISKOPS_TEST_ARTIFACTS when set).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from datetime import timedelta

import httpx
import pandas as pd
import pytest
from support.browser import chromium, read_dashboard, read_report_list, running_ui, save_screenshot
from support.monitoring import model_frame_with_prior_state, write_prediction_log
from support.servers import subprocess_env

from riskops.monitoring.monitor import WindowSettings, read_monitor_log, run_monitor_once
from riskops.monitoring.workspace import PANELS, project_name
from riskops.settings import paths as home_paths

WINDOW, PASSES, BEFORE_ONSET = 500, 4, 2  # passes every 500 transactions; the first 2 before the shift
CONFIG = {
    "window": {"size": WINDOW, "min_rows": 200, "performance_rows": 1000},
    "drift": {"engine": "evidently", "performance_min_rows": 200},
    "reports": {"html": False},
}
TITLES = [p.title for p in PANELS]
CHARTS = [p.title for p in PANELS if p.kind != "text"]


def _monitored_home(root):
    """A champion (logistic regression on generated traffic) with its reference, a prediction log of
    normal traffic then the new_payment_method shift, and labels for its older part."""
    from riskops.data.generator import GeneratorConfig, generate_with_drift
    from riskops.monitoring.feedback import append_feedback
    from riskops.monitoring.reference import save_reference
    from riskops.registry.store import ModelRegistry
    from riskops.training.baselines import fit_logistic_regression
    from riskops.training.metrics import thresholds_for_policy

    raw = generate_with_drift(GeneratorConfig(rows=6000, seed=1), "new_payment_method", 2000)
    frame = model_frame_with_prior_state(raw)
    onset = int((frame["event_timestamp"] < pd.Timestamp(raw.attrs["drift_onset"])).sum())
    n = onset
    train, val, ref = frame.iloc[: n // 2], frame.iloc[n // 2 : int(0.65 * n)], frame.iloc[int(0.65 * n) : n]
    model = fit_logistic_regression(train, train["is_fraud"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no threshold reaches block precision"
        thresholds = thresholds_for_policy(val["is_fraud"], model.predict_scores(val))
    frame["risk_score"] = model.predict_scores(frame)
    ref = frame.iloc[int(0.65 * n) : n]
    model_dir = root / "model"
    save_reference(model_dir, ref, ref["risk_score"], ref["is_fraud"], ref["event_timestamp"])
    (model_dir / "policy.json").write_text(json.dumps(thresholds))

    home = home_paths(root / "home")
    reg = ModelRegistry(home.registry)
    mv = reg.register(model_dir)
    reg.set_alias("champion", mv.version)
    served = frame.iloc[onset - BEFORE_ONSET * WINDOW : onset + (PASSES + 1 - BEFORE_ONSET) * WINDOW]
    write_prediction_log(home.prediction_log, served, mv.version, thresholds)
    labelled = served.iloc[: (BEFORE_ONSET + 1) * WINDOW]  # outcomes arrive for the older traffic
    outcomes = zip(labelled["transaction_id"], labelled["is_fraud"], strict=True)
    append_feedback(
        home, [{"transaction_id": t, "is_fraud": int(y), "source": "chargeback"} for t, y in outcomes]
    )
    return home


def _pass(home, log_df, end: int):
    """One monitor pass over the log's first `end` rows, at the time of its newest transaction."""
    window = log_df.iloc[:end]
    now = pd.Timestamp(window["event_timestamp"].max()).to_pydatetime() + timedelta(minutes=1)
    return run_monitor_once(home, CONFIG, now=now, log_df=window)


def _expected(results) -> dict[str, int]:
    """Points per chart panel: one per pass holding the panel's metric, per series."""
    compared = sum("drift.json" in r.files for r in results)  # passes with a drift report
    drifted = sum(r.verdict.drift and "drift.json" in r.files for r in results)
    labelled = sum("performance.json" in r.files for r in results)
    return {
        "Share of drifted inputs per pass": compared,
        "Passes with a drift verdict": drifted,
        "Drifted inputs per pass": compared,  # bars
        "Risk score per pass (mean, p50, p90, p99)": 4 * compared,  # four series
        "Score drift (risk_score)": compared,
        "Score drift p-value (risk_score, KS)": compared,
        "Decision rates per pass": 3 * compared,  # approve, review, block
        "Decision mix shift (chi-square p-value)": compared,
        "Performance on the labelled window": 3 * labelled,  # three series
    }


def _drawn(panels, title: str) -> int:
    p = panels[title]
    return p.bars if title == "Drifted inputs per pass" else p.marks


def _per_series(panels, expected: dict[str, int]) -> tuple[dict, dict]:
    """(drawn, wanted) per chart panel: its legend's names and the points (bars) of each series. Every
    series of a panel holds one value per pass, so each draws the panel's points / its series count."""
    drawn, wanted = {}, {}
    for p in PANELS:
        if p.title in expected:
            view = panels[p.title]
            per_series = [view.bars] if p.title == "Drifted inputs per pass" else view.series_marks
            drawn[p.title] = (sorted(view.legends), sorted(per_series))
            wanted[p.title] = (
                sorted(s.legend for s in p.series),
                [expected[p.title] // len(p.series)] * len(p.series),
            )
    return drawn, wanted


def test_the_dashboard_shows_every_monitor_pass(tmp_path):
    home = _monitored_home(tmp_path)
    log_df = read_monitor_log(home, WindowSettings(size=WINDOW, scan_rows=20_000))
    results = [_pass(home, log_df, (i + 1) * WINDOW) for i in range(PASSES)]
    drift = [r.verdict.drift for r in results]
    assert drift == [False] * BEFORE_ONSET + [True] * (PASSES - BEFORE_ONSET), [
        r.verdict.reasons for r in results
    ]
    assert sum("performance.json" in r.files for r in results) >= 2  # the labelled windows

    workspace = home.root / "evidently"
    out = tmp_path / "out"
    out.mkdir()
    with running_ui(workspace, out) as url:
        projects = [
            p for p in httpx.get(url + "/api/projects", timeout=10).json() if p["name"] == project_name()
        ]
        assert len(projects) == 1
        dashboard = f"{url}/projects/{projects[0]['id']}"
        with chromium(out / "chromium-profile") as driver:
            panels = read_dashboard(driver, dashboard, TITLES, CHARTS)
            screenshot = save_screenshot(driver, tmp_path / "screenshot.png")
            missing = [t for t in TITLES if t not in panels]
            empty = [t for t in CHARTS if t in panels and not panels[t].drawn]
            assert not missing and not empty, f"panels missing {missing}, drawing nothing {empty}"
            shown = {t: _drawn(panels, t) for t in _expected(results)}
            assert shown == _expected(results)
            drawn, wanted = _per_series(panels, _expected(results))
            assert drawn == wanted  # each series named in the legend, one point per pass
            # the counters: the last pass's numbers, as its report computed them
            last = results[-1].verdict.metrics
            assert panels["Drifted inputs, newest pass"].counters == [f"{last['feature_drift.count']:.0f}"]
            share = float(panels["Share of drifted inputs, newest pass"].counters[0])
            assert share == pytest.approx(last["feature_drift.share"], abs=0.005)

            total, tags = read_report_list(driver, dashboard + "/reports")
            assert total == PASSES
            assert [t[0] for t in tags] == ["drift" if d else "no-drift" for d in reversed(drift)]

            # a pass made while the UI runs is on the dashboard at the next load
            results.append(_pass(home, log_df, (PASSES + 1) * WINDOW))
            want = _expected(results)
            panels = read_dashboard(driver, dashboard, TITLES, CHARTS,
                                    until=lambda ps: {t: _drawn(ps, t) for t in want} == want)  # fmt: skip
            assert {t: _drawn(panels, t) for t in want} == want

    assert screenshot.stat().st_size > 50_000  # a rendered dashboard, not a blank page
    shutil.rmtree(out / "chromium-profile", ignore_errors=True)


def test_ui_create_serves_the_project_before_the_first_pass(tmp_path):
    """The cluster's riskops-ui starts before the monitor's first pass (`--create`); without the flag
    an empty workspace is refused with what to run first."""
    workspace = tmp_path / "evidently"
    refused = subprocess.run([sys.executable, "-m", "cli.main", "ui", "--workspace", str(workspace)],
                             capture_output=True, text=True, timeout=120, env=subprocess_env())  # fmt: skip
    assert refused.returncode == 2 and "riskops monitor --once" in refused.stdout
    with running_ui(workspace, tmp_path, "--create") as url:
        projects = httpx.get(url + "/api/projects", timeout=10).json()
    assert [p["name"] for p in projects] == [project_name()]
