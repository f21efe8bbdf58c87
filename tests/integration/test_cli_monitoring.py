"""`riskops monitor`, `riskops feedback`, `riskops retrain status` over a small real setup.

The setup: generated traffic (normal, then the new_payment_method scenario), model inputs with the
entity state before each event (support.monitoring.model_frame_with_prior_state), a logistic-regression champion
registered with its reference (save_reference), and a prediction log written by serving's own
PredictionLog. The monitor pass is the real one (Evidently report, rules, dry-run retraining).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from support.monitoring import drifted_world, write_prediction_log

from cli.main import build_parser, main
from riskops.data.generator import write_transactions
from riskops.monitoring.feedback import load_feedback
from riskops.settings import paths


@pytest.fixture(scope="session")
def world_root(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-monitoring")


@pytest.fixture
def drifted_home(world_root, tmp_path):
    """A home with a champion + reference and a prediction log that ends 1,000 rows into the drift."""
    from riskops.registry.store import ModelRegistry

    w = drifted_world(world_root)
    home = paths()
    reg = ModelRegistry(home.registry)
    mv = reg.register(w["ref_dir"])
    reg.set_alias("champion", mv.version)
    write_prediction_log(
        home.prediction_log,
        w["frame"].iloc[w["onset"] - 300 : w["onset"] + 1000],
        mv.version,
        w["thresholds"],
    )
    # what the ingestion side keeps for retraining (configs/monitor.yaml retrain.transactions_file)
    write_transactions(
        w["raw"].iloc[w["onset"] - 300 : w["onset"] + 1000], home.data / "recent_transactions.parquet"
    )
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "window": {"size": 1000, "min_rows": 500},
                "retrain": {"mode": "dry_run", "min_rows": 10, "min_frauds": 1},
                "reports": {"keep_last": 5},
            }
        )
    )
    return home, mv.version, cfg


@pytest.mark.slow  # 10-15 s: keeps `make test-fast` under 3 minutes
def test_monitor_once_prints_the_verdict_table_and_reports(drifted_home, capsys):
    home, version, cfg = drifted_home
    assert main(["monitor", "--once", "--config", str(cfg)]) == 0  # drift is reported, not an error
    out = capsys.readouterr().out
    assert f"champion {version}" in out and "DRIFT" in out
    row = next(line for line in out.splitlines() if "new_category" in line)
    assert "FIRED" in row and "retrain" in row and "payment_method" in out
    assert "skipped" in out or " ok " in out  # the other rules are listed with their state
    reports = [
        line.split("report: ", 1)[1].strip() for line in out.splitlines() if line.startswith("report: ")
    ]
    assert any(r.endswith("drift.html") for r in reports) and any(r.endswith("verdict.json") for r in reports)
    verdict = json.loads(open(next(r for r in reports if r.endswith("verdict.json"))).read())
    assert verdict["drift"] is True and verdict["champion"] == version
    assert "retraining: skipped - dry run" in out  # retrain.mode dry_run: data prepared, nothing started
    # the verdict as Prometheus metrics: the textfile (no Pushgateway configured here)
    assert f"metrics: {home.root / 'monitoring' / 'metrics.prom'}" in out
    assert "riskops_monitor_drift_detected 1.0" in (home.root / "monitoring" / "metrics.prom").read_text()

    # --fail-on-drift for cron/CI; a loop of passes; a bad config is exit code 2
    assert main(["monitor", "--config", str(cfg), "--fail-on-drift"]) == 3
    capsys.readouterr()
    assert main(["monitor", "--every", "0.1s", "--max-runs", "2", "--config", str(cfg)]) == 0
    assert capsys.readouterr().out.count("monitor pass ") == 2
    bad = cfg.with_name("bad.yaml")
    bad.write_text("window: {sizee: 3}\n")
    assert main(["monitor", "--config", str(bad)]) == 2
    assert "sizee" in capsys.readouterr().out

    # retrain status lists what the trigger recorded (dry runs here) as a table or JSON
    assert main(["retrain", "status"]) == 0
    out = capsys.readouterr().out
    assert "running: none" in out and "retraining triggers" in out and "dry run" in out
    assert main(["retrain", "status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["triggers"] and all(t["event"] == "trigger" for t in doc["triggers"])


def test_monitor_interval_parsing():
    p = build_parser()
    assert p.parse_args(["monitor", "--every", "5m"]).every == 300
    assert p.parse_args(["monitor", "--every", "90"]).every == 90
    with pytest.raises(SystemExit):
        p.parse_args(["monitor", "--every", "soon"])
    with pytest.raises(SystemExit):
        p.parse_args(["monitor", "--once", "--every", "60s"])


def test_feedback_files_accept_reject_and_report_rows(tmp_path, capsys):
    home = paths()
    good_bad = tmp_path / "labels.csv"
    good_bad.write_text(
        "transaction_id,is_fraud,source\n"
        "tx-1,1,chargeback\n"
        "tx-2,legit,\n"
        ",1,chargeback\n"  # row 3: no id
        "tx-4,maybe,review\n"  # row 4: not a label
    )
    assert main(["feedback", str(good_bad)]) == 1
    out = capsys.readouterr().out
    assert "rejected row 3 (CSV line = row + 1)" in out and "transaction_id is missing" in out
    assert "rejected row 4" in out and "'maybe' is not 0/1" in out
    assert "nothing stored" in out and load_feedback(home).empty  # all or nothing by default

    assert main(["feedback", str(good_bad), "--skip-invalid"]) == 1
    out = capsys.readouterr().out
    assert "accepted 2 rows (1 fraud, 1 legit)" in out and "rejected 2" in out
    fb = load_feedback(home)
    assert dict(zip(fb["transaction_id"], fb["is_fraud"], strict=True)) == {"tx-1": 1, "tx-2": 0}
    assert set(fb["source"]) == {"chargeback", "file:labels.csv"}

    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text(
        '{"transaction_id": "tx-5", "is_fraud": true, "fraud_type": "card_testing"}\n'
        '{"transaction_id": "tx-1", "is_fraud": 0, "source": "manual_review"}\n'
    )
    parquet = tmp_path / "more.parquet"
    pd.DataFrame({"transaction_id": ["tx-6"], "is_fraud": [1]}).to_parquet(parquet)
    assert main(["feedback", str(jsonl), str(parquet)]) == 0
    out = capsys.readouterr().out
    assert "accepted 2 rows (1 fraud, 1 legit)" in out and "accepted 1 rows (1 fraud, 0 legit)" in out
    fb = load_feedback(home).set_index("transaction_id")
    assert fb.loc["tx-1", "is_fraud"] == 0  # the later review supersedes the chargeback
    assert len(fb) == 4

    wrong = tmp_path / "wrong.csv"
    wrong.write_text("id,label\n1,1\n")
    assert main(["feedback", str(wrong)]) == 2
    assert "missing required column(s) ['transaction_id', 'is_fraud']" in capsys.readouterr().out
    assert main(["feedback", str(tmp_path / "absent.csv")]) == 2
    assert "not found" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv", [["monitor"], ["feedback"], ["retrain"], ["retrain", "status"], ["drift-demo"]], ids=" ".join
)
def test_new_subcommands_explain_themselves(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: riskops " + " ".join(argv)) and len(out.splitlines()) > 5
    if argv[0] in ("monitor", "feedback", "drift-demo"):
        assert "Exit code" in out  # documented
