"""The monitoring reference is captured at train time: evaluate writes it, register stores it with
the version, and the monitor finds it for the champion."""

import json

import numpy as np
import pandas as pd
from support.data import FakeScorer, synthetic_transactions

from riskops.data.splits import time_split
from riskops.features.contract import build_model_frame
from riskops.monitoring.reference import REFERENCE_FILE, load_reference, save_reference
from riskops.registry.register import register_model
from riskops.settings import paths
from riskops.training.evaluate import run_evaluation


def test_evaluate_writes_the_reference_and_register_stores_it(tmp_path):
    df = synthetic_transactions(3000, seed=3)
    result = run_evaluation(df, FakeScorer(), tmp_path / "eval")
    held = result.held_out
    ref_file = save_reference(tmp_path / "ref", held.frame, held.scores, held.labels, held.timestamps)
    assert ref_file == tmp_path / "ref" / REFERENCE_FILE

    # validation + test rows (the period the model did not train on), the model's own scores
    _, val, test = time_split(df, 0.2, 0.15)
    held_out = pd.concat([val, test])
    ref = pd.read_parquet(ref_file)
    assert len(ref) == len(held_out) == 1050
    assert ref["event_timestamp"].is_monotonic_increasing
    expected = np.sort(FakeScorer().predict_proba(build_model_frame(held_out))[:, 1])
    np.testing.assert_allclose(np.sort(ref["risk_score"].to_numpy()), expected, rtol=1e-12)
    assert ref["is_fraud"].sum() == held_out["is_fraud"].sum()

    # register: reference.parquet travels into the version folder with policy and evaluation
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    home = paths()
    reg = register_model(model_dir, result.document, home.registry, extra_files={REFERENCE_FILE: ref_file})
    stored = home.registry / "risk-model" / reg.version / REFERENCE_FILE
    assert stored.exists() and reg.alias == "champion"
    loaded = load_reference(stored.parent, model_version=reg.version)
    assert len(loaded.frame) == 1050
    assert loaded.thresholds == {k: float(v) for k, v in result.document["policy_thresholds"].items()}
    assert loaded.baseline["pr_auc"] == result.document["models"]["transformer"]["pr_auc"]

    # the monitor finds the champion's reference (no traffic yet: insufficient data, not no_reference)
    from riskops.monitoring.monitor import run_monitor_once

    res = run_monitor_once(home, {"drift": {"engine": "fast"}})
    assert res.status == "insufficient_data" and res.champion == reg.version
    assert json.loads((res.report_dir / "verdict.json").read_text())["status"] == "insufficient_data"
