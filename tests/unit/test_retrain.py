"""Retraining trigger: data assembly, debounce (in progress / cooldown), records, failures, submission."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from riskops.data.generator import GeneratorConfig, generate
from riskops.lifecycle.retrain import RetrainTrigger
from riskops.lifecycle.retrain_settings import RetrainError, RetrainSettings
from riskops.lifecycle.retraining_data import RetrainingData, build_retraining_data
from riskops.registry.store import ModelRegistry
from riskops.settings import paths as home_paths


@pytest.fixture
def paths(riskops_home):
    return home_paths(riskops_home)


@pytest.fixture(scope="module")
def transactions():
    return generate(GeneratorConfig(rows=3000, seed=5, fraud_rate=0.03))


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


def _settings(**kw) -> dict:
    base = {"mode": "local", "cooldown_seconds": 3600, "min_rows": 500, "min_frauds": 5,
            "command": ["{python}", "-c", "import sys; sys.exit(0)"]}
    base.update(kw)
    return base


def _wait_finished(trigger: RetrainTrigger, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = trigger.refresh()
        if rec is not None:
            return rec
        time.sleep(0.2)
    raise AssertionError("retraining run did not finish")


def test_build_retraining_data_labels_and_holdout(tmp_path, transactions):
    tx = transactions.copy()
    flip = tx["transaction_id"].iloc[:10].tolist()  # feedback says the first 10 are fraud
    fb = pd.DataFrame({"transaction_id": flip, "is_fraud": 1, "fraud_type": "chargeback_confirmed"})
    data = build_retraining_data(tx, fb, tmp_path, RetrainSettings(min_rows=500, min_frauds=5, holdout_fraction=0.2))
    train = pd.read_parquet(data.train_file)
    hold = pd.read_parquet(data.holdout_file)
    assert len(train) + len(hold) == len(tx) and data.holdout_rows == len(hold) == 600
    assert data.feedback_labels == 10
    assert train.set_index("transaction_id").loc[flip, "is_fraud"].eq(1).all()
    assert pd.to_datetime(train["event_timestamp"]).max() <= pd.to_datetime(hold["event_timestamp"]).min()
    assert pd.Timestamp(data.cutoff) == pd.to_datetime(hold["event_timestamp"]).min()
    # "legit": rows without feedback are presumed legitimate
    d2 = build_retraining_data(tx, fb, tmp_path / "b", RetrainSettings(unlabelled="legit", min_rows=500,
                                                                      min_frauds=5))
    assert pd.read_parquet(d2.train_file)["is_fraud"].sum() == 10
    with pytest.raises(RetrainError, match="not enough training data"):
        build_retraining_data(tx.head(100), None, tmp_path / "c", RetrainSettings())


def test_retraining_with_history_trains_on_the_whole_recent_window(tmp_path, transactions):
    from riskops.data.splits import time_split

    ts = pd.to_datetime(transactions["event_timestamp"], utc=True)
    split_at = ts.sort_values().iloc[2000]
    history, recent = transactions[ts < split_at], transactions[ts >= split_at]
    settings = RetrainSettings(min_rows=500, min_frauds=5, holdout_fraction=0.2)
    data = build_retraining_data(recent, None, tmp_path / "a", settings, history=history)
    train = pd.read_parquet(data.train_file)
    recent_train = train[pd.to_datetime(train["event_timestamp"], utc=True) >= pd.Timestamp(data.recent_from)]
    assert len(recent_train) == len(recent) - data.holdout_rows == 800
    # what the pipeline's train step does with it: every recent row trains, validation/test are history
    tr, va, te = time_split(train, 0.05, 0.05, recent_from=data.recent_from)
    assert set(recent_train["transaction_id"]) <= set(tr["transaction_id"])
    assert pd.to_datetime(te["event_timestamp"], utc=True).max() < pd.Timestamp(data.recent_from)
    off = build_retraining_data(recent, None, tmp_path / "b", RetrainSettings(
        min_rows=500, min_frauds=5, train_on_recent=False), history=history)
    assert off.recent_from is None
    no_history = build_retraining_data(recent, None, tmp_path / "c", settings)
    assert no_history.recent_from is None  # nothing older to validate on: the usual split


def test_local_command_uses_real_cli_flags(paths, tmp_path):
    from cli.main import build_parser

    trig = RetrainTrigger(paths, {"pipeline_args": ["--encoder", "tiny", "--epochs", "1"]})
    data = RetrainingData(tmp_path / "train.parquet", None, 1, 1, 0, 0, None)
    cmd = trig.local_command(data, tmp_path)
    assert cmd[:3] == [sys.executable, "-m", "cli.main"]
    args = build_parser().parse_args(cmd[3:])  # every flag exists in the CLI
    assert args.input == str(tmp_path / "train.parquet") and args.promotion == "never"
    assert args.encoder == "tiny" and args.epochs == 1 and args.recent_from == ""
    data.recent_from = "2026-03-01T12:00:00+00:00"
    args = build_parser().parse_args(trig.local_command(data, tmp_path)[3:])
    assert args.recent_from == "2026-03-01T12:00:00+00:00"


def test_debounce_in_progress_then_cooldown(paths, transactions):
    clock = Clock()
    sleeper = ["{python}", "-c", "import time; time.sleep(60)"]
    trig = RetrainTrigger(paths, _settings(command=sleeper), data_provider=lambda: transactions,
                          clock=clock)
    first = trig.maybe_trigger({"rules": ["feature_drift"]})
    assert first.outcome == "started" and first.pid
    try:
        second = trig.maybe_trigger({"rules": ["feature_drift"]})  # the same shift, a minute later
        assert second.outcome == "skipped" and "in progress" in second.why and second.run_id == first.run_id
        clock.advance(7200)  # past the cooldown, but the run is still going: still one run
        third = trig.maybe_trigger({"rules": ["score_drift"]})
        assert third.outcome == "skipped" and "in progress" in third.why
    finally:
        os.killpg(first.pid, 15)  # our own launcher's session (it runs the sleeper)
    done = _wait_finished(trig)
    assert done.event == "finished" and done.outcome == "failed" and done.run_id == first.run_id
    assert trig.state()["running"] is None
    # the cooldown counts from the last start: 2 h passed > 1 h cooldown -> a new run may start
    trig.settings.command = ["{python}", "-c", "pass"]
    fourth = trig.maybe_trigger({"rules": ["feature_drift"]})
    assert fourth.outcome == "started" and fourth.run_id != first.run_id
    _wait_finished(trig)


def test_two_drifts_one_trigger_then_cooldown_expires(paths, transactions):
    clock = Clock()
    trig = RetrainTrigger(paths, _settings(), data_provider=lambda: transactions, clock=clock)
    a = trig.maybe_trigger({"rules": ["feature_drift"], "n": 1})
    assert a.outcome == "started"
    fin = _wait_finished(trig)
    assert fin.outcome == "succeeded" and fin.returncode == 0
    clock.advance(60)
    b = trig.maybe_trigger({"rules": ["feature_drift"], "n": 2})
    assert b.outcome == "skipped" and b.why.startswith("cooldown")
    clock.advance(3600)
    c = trig.maybe_trigger({"rules": ["feature_drift"], "n": 3})
    assert c.outcome == "started"
    _wait_finished(trig)
    recs = trig.records()
    triggers = [r for r in recs if r["event"] == "trigger"]
    assert [r["outcome"] for r in triggers] == ["started", "skipped", "started"]
    assert all({"at", "why", "reason", "trigger_id"} <= set(r) for r in recs)
    assert [r["reason"]["n"] for r in triggers] == [1, 2, 3]
    started = [r for r in triggers if r["outcome"] == "started"]
    assert all(Path(r["input"]).exists() and r["run_id"] for r in started)
    assert sum(r["event"] == "finished" for r in recs) == 2
    run_dir = paths.root / "retrain" / "runs" / started[0]["run_id"]
    assert json.loads((run_dir / "result.json").read_text())["returncode"] == 0


def test_crashed_run_is_recorded_and_registry_untouched(paths, transactions, tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"x")
    reg = ModelRegistry(paths.registry)
    v1 = reg.register(model)
    reg.set_alias("champion", v1.version)
    crash = ["{python}", "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"]
    trig = RetrainTrigger(paths, _settings(command=crash), data_provider=lambda: transactions)
    assert trig.maybe_trigger({"rules": ["performance_drop"]}).outcome == "started"
    fin = _wait_finished(trig)
    assert fin.outcome == "failed" and fin.returncode == 3 and "exited with 3" in fin.why
    assert "boom" in Path(fin.log_file).read_text()
    assert reg.aliases() == {"champion": v1.version} and len(reg.list_versions()) == 1


def test_registration_found_after_success(paths, transactions, tmp_path):
    """The launcher reports the version a run registered (diffing the registry)."""
    model = tmp_path / "m"
    model.mkdir()
    (model / "w").write_text("1")
    script = (
        "from riskops.registry.store import ModelRegistry; import sys; "
        f"r = ModelRegistry({str(paths.registry)!r}); v = r.register({str(model)!r}); r.set_alias('challenger', v.version)"
    )
    trig = RetrainTrigger(paths, _settings(command=["{python}", "-c", script]),
                          data_provider=lambda: transactions)
    trig.maybe_trigger({"rules": ["feature_drift"]})
    fin = _wait_finished(trig)
    assert fin.outcome == "succeeded" and fin.registration == {"version": "v0001", "alias": "challenger"}
    assert trig.state()["last_run"]["registration"]["version"] == "v0001"


def test_no_data_and_disabled_are_recorded(paths):
    trig = RetrainTrigger(paths, _settings())
    rec = trig.maybe_trigger({"rules": ["feature_drift"]})
    assert rec.outcome == "failed" and "no recent transactions" in rec.why
    off = RetrainTrigger(paths, _settings(enabled=False))
    assert off.maybe_trigger({}).outcome == "skipped"
    assert len(trig.records()) == 2


def test_cluster_submission(paths, transactions, monkeypatch, tmp_path):
    calls = {}

    def fake_submit(host, profile="dev", **params):  # pipelines.runner.submit's signature
        calls.update(host=host, profile=profile, **params)
        return "kfp-run-42"

    store = (tmp_path / "object-store").as_uri()  # a file:// URI: the copy is real (S3: tests/integration)
    cfg = _settings(mode="cluster", host="https://kfp.example/pipeline", cluster_input_path=store + "/{run_id}/t.parquet")
    no_submit = RetrainTrigger(home_paths(tmp_path / "other"), cfg, data_provider=lambda: transactions)
    rec = no_submit.maybe_trigger({"rules": ["feature_drift"]})
    assert rec.outcome == "failed" and "needs a submit function" in rec.why  # recorded, never raised
    trig = RetrainTrigger(paths, cfg, data_provider=lambda: transactions, submit=fake_submit)
    rec = trig.maybe_trigger({"rules": ["feature_drift"]})
    assert rec.outcome == "started" and "kfp-run-42" in rec.why
    assert calls["host"] == "https://kfp.example/pipeline" and calls["promotion"] == "never"
    assert calls["input_path"] == f"{store}/{rec.run_id}/t.parquet" and calls["source"] == "file"
    shipped = pd.read_parquet(tmp_path / "object-store" / rec.run_id / "t.parquet")
    assert len(shipped) == len(pd.read_parquet(rec.input))  # the cluster reads what was prepared here
    assert trig.state()["running"]["kfp_run_id"] == "kfp-run-42"
    monkeypatch.setattr(RetrainTrigger, "_cluster_status", lambda self, rid: "SUCCEEDED")
    fin = trig.refresh()
    assert fin.outcome == "succeeded" and trig.state()["running"] is None


def test_settings_validation():
    with pytest.raises(ValueError, match="unknown keys"):
        RetrainSettings.from_dict({"cooldown": 5})
    with pytest.raises(ValueError, match="needs retrain.host"):
        RetrainSettings.from_dict({"mode": "cluster"})
