"""The closed loop end to end, small: the real pipeline trains a champion, the real KServe server
answers replayed traffic over HTTP, feedback arrives through POST /v1/feedback, the monitor runs
in-process, the retraining pipeline runs as a subprocess, the promotion gate decides and the server
serves its decision. (`riskops drift-demo` is the same code at full size.)

After the promotion the replay goes on (shortened here: 500 rows of the learned shift after the
re-baselining instead of a window's 1,500): the drift reference is re-baselined on the new
champion's own traffic, (a) the learned shift then raises no drift and no second retraining with
the retraining trigger armed (no cooldown, dry run), and (b) a different shift injected later (a new
payment method) is still caught."""

import json

import pandas as pd
import pytest
from support.browser import open_drift_history
from support.loops import small_loop

from cli.drift_demo import build_timeline, run_loop, train_champion
from riskops.lifecycle.retrain import RetrainTrigger
from riskops.monitoring.feedback import load_feedback
from riskops.monitoring.workspace import PANELS, DriftWorkspace, project_name
from riskops.registry.store import ModelRegistry
from riskops.settings import paths

pytestmark = pytest.mark.slow


def test_drift_is_detected_and_the_loop_closes(riskops_home):
    opts = small_loop(
        settle_rows=500,  # the short version: two passes on the learned shift after the re-baselining
        second_rows=1500,
    )
    home = paths()
    timeline = build_timeline(opts)
    first = train_champion(home, timeline, opts)
    assert (home.registry / "risk-model" / first["version"] / "reference.parquet").exists()

    result = run_loop(home, timeline, opts)
    f = result.figures
    assert f["false_alarms_before_onset"] == 0, result.events
    assert f["detection_delay_tx"] is not None and 0 < f["detection_delay_tx"] <= 2000, f
    assert f["retrain_run"]["outcome"] == "succeeded", f["retrain_run"]
    assert f["retrain_run"]["registration"]["alias"] == "challenger"  # --promotion never: the gate decides
    # the challenger trains on the labelled part of the shift (retrain.train_on_recent): it must win;
    # the rejection path is tests/unit/test_promotion.py's (a worse challenger is kept out, with an alert)
    assert result.closed and result.outcome == "promoted", (result.outcome, result.events[-6:])

    gate = f["gate"]
    assert gate["n"] >= 500 and gate["frauds"] >= 15 and gate["champion_version"] == first["version"]
    decisions = [
        json.loads(x) for x in (home.root / "promotion" / "decisions.jsonl").read_text().splitlines()
    ]
    assert decisions[-1]["challenger_version"] == gate["challenger_version"]
    assert decisions[-1]["promote"] == gate["promote"]
    assert gate["delta"]["pr_auc"] >= 0.01 and gate["delta"]["pr_auc_ci95"][0] > 0, gate["delta"]
    champion = ModelRegistry(home.registry).champion().version
    # the server hot-swapped the new champion: it answered post-drift traffic after the decision
    assert champion == gate["challenger_version"] and f["served_rows_after_onset"].get(champion, 0) > 0
    assert f["onset_to_serving_new_s"] >= f["onset_to_gate_s"] >= f["onset_to_detected_s"]

    # labels went through the server's POST /v1/feedback into the store the monitor and gate read
    assert f["feedback_channel"] == "api" and len(load_feedback(home)) == f["feedback_delivered"] > 0
    doc = json.loads(result.timeline_file.read_text())
    assert result.timeline_file.parent == home.reports / "drift-demo"
    assert doc["closed"] and [e["event"] for e in doc["events"] if e["event"] in ("onset", "detected")] == [
        "onset",
        "detected",
    ]
    assert doc["monitor_passes"] and all(
        p["status"] in ("ok", "insufficient_data", "rebaselining") for p in doc["monitor_passes"]
    )

    # after the promotion the loop settles
    a = f["after_promotion"]
    assert result.settled and doc["settled"], (a, result.events[-8:])
    ref = a["reference"]
    # the reference is re-baselined on the new champion's first clean traffic: two windows, a day of it
    assert ref["version"] == champion and ref["source"] == "served" and ref["replaces"] == first["version"]
    w = ref["window"]
    assert w["rows"] >= 2 * opts.window and pd.Timestamp(w["end"]) - pd.Timestamp(w["start"]) >= pd.Timedelta(
        hours=24
    )
    stored = pd.read_parquet(home.root / ref["file"])
    assert len(stored) == w["rows"] and set(stored["model_version"]) == {champion}
    state = json.loads((home.root / "monitoring" / "state.json").read_text())
    assert state["reference"]["file"] == ref["file"] and state["reference"]["window"] == w  # kept on disk
    # until then no distribution check ran: passes said "rebaselining", never drift
    after = [p for p in doc["monitor_passes"] if p.get("phase")]
    waiting = [p for p in after if p["phase"] == "rebaselining"]
    assert a["rebaselining_passes"] == len(waiting) >= 1
    assert all(p["status"] == "rebaselining" and not p["drift"] and p["trigger"] is None for p in waiting)
    # (a) the learned shift, checked against the new reference: no drift, no second retraining
    assert a["learned_shift_passes"] >= 2 and a["learned_shift_rows_checked"] >= opts.settle_rows
    assert a["learned_shift_drift_verdicts"] == 0 and a["learned_shift_retrain_triggers"] == 0
    started = [r for r in RetrainTrigger(home).records() if r.get("outcome") == "started"]
    assert [r["run_id"] for r in started] == [f["retrain_run"]["run_id"]]  # one retraining run in all
    # (b) the new shift is caught against the re-baselined reference, and the trigger would retrain
    assert a["new_shift_caught"] and a["second_scenario"] == "new_payment_method"
    assert 0 < a["second_detection_delay_tx"] <= 1000, a
    caught = [p for p in after if p["phase"] == "second" and p["drift"]]
    assert caught and caught[0]["reference"] == "served" and caught[0]["status"] == "ok"
    assert a["second_trigger"] is not None and "dry run" in a["second_trigger"]["why"], a["second_trigger"]

    # the drift history in Evidently's UI: one run per monitor pass of the demo, in order, with its
    # status; the browser's dashboard plots every pass that compared a window, the drifted ones apart
    passes = doc["monitor_passes"]
    runs = DriftWorkspace(home.root / "evidently").runs()
    assert [r["metadata"]["report_dir"] for r in runs] == [p["report_dir"] for p in passes]
    assert [r["tags"][1] for r in runs] == [f"status:{p['status']}" for p in passes]
    compared = [r for r in runs if "drift" in r["metadata"]["reports"].split(",")]
    drifted = [r for r in compared if r["tags"][0] == "drift"]
    assert len(drifted) >= 2  # the first shift and, after the re-baselining, the second
    charts = [p.title for p in PANELS if p.kind != "text"]
    view = open_drift_history(
        home.root / "evidently", riskops_home.parent, project_name(), [p.title for p in PANELS], charts
    )
    assert view.runs_total == len(passes)
    assert [t[0] for t in view.run_tags] == [r["tags"][0] for r in reversed(runs)][: len(view.run_tags)]
    assert view.panels["Share of drifted inputs per pass"].marks == len(compared)
    assert view.panels["Drifted inputs per pass"].bars == len(compared)
    assert view.panels["Passes with a drift verdict"].marks == len(drifted)
    assert all(view.panels[t].drawn for t in charts), {t: view.panels[t] for t in charts}
