"""The shared prediction log: local fsync'd segments shipped as hourly Parquet, read back from the URI.

`serving.predlog.PredictionLog(ship_uri=...)` ships closed segments through `riskops.monitoring.log_store`;
`riskops.monitoring.prediction_log.read_prediction_log` reads the shipped log from its URI. The S3 tests
run against moto's S3 server (`moto_server`, started here as a subprocess): an S3 API stand-in, not a
real S3 service; they check the s3fs / S3 API path, not AWS's own behaviour.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pandas as pd
import pytest
import s3fs
from support.servers import free_port

from riskops.data.generator import GeneratorConfig, generate
from riskops.lifecycle.retrain import RetrainTrigger
from riskops.monitoring.log_store import pending_segments, ship_segment
from riskops.monitoring.monitor import WindowSettings, read_monitor_log
from riskops.monitoring.prediction_log import read_prediction_log, segments
from riskops.monitoring.volume import hourly_volumes_from_log
from riskops.settings import PROJECT_ROOT
from riskops.settings import paths as home_paths
from serving.predlog import PredictionLog


def _record(i: int) -> dict:
    """A record shaped like serving's (nested transaction / entity state / model inputs, history tokens)."""
    minute = 40 + i  # 14:40 onwards: the records span two UTC hours
    logged = pd.Timestamp("2026-12-05T14:00:00Z") + pd.Timedelta(minutes=minute)
    return {
        "request_id": f"r{i}",
        "logged_at": logged.isoformat(),
        "event_timestamp": (logged - pd.Timedelta(seconds=3)).isoformat(),
        "transaction_id": f"t{i}",
        "model_version": "v0001",
        "arm": None,
        "risk_score": round(i / 50, 4),
        "decision": ["allow", "review", "block"][i % 3],
        "degraded": False,
        "reasons": ["amount"] if i % 2 else [],
        "transaction": {
            "amount": 10.0 + i,
            "quantity": None if i % 5 == 0 else 1,
            "payment_method": ["card", "wallet"][i % 2],
            "user_id": f"u{i % 4}",
            "is_refund": i % 7 == 0,
        },
        "entity_features": {"user_txn_count_1h": i % 3, "user_amount_mean_7d": None if i % 4 == 0 else 12.5},
        "features": {"amount_log": 1.0 + i / 10, "hour": float(logged.hour)},
        "history": [f"t{j}" for j in range(max(0, i - 2), i)],
        "history_tokens": [[j, j + 1] for j in range(i % 3)],
    }


def _write(plog: PredictionLog, n: int) -> None:
    for start in range(0, n, 5):
        plog.write([_record(i) for i in range(start, min(n, start + 5))])


def _hours(uri_root: Path) -> set[str]:
    return {p.name for p in uri_root.glob("hour=*")}


def test_file_uri_ships_hourly_parquet_that_reads_back_as_the_local_log(tmp_path):
    folder, root = tmp_path / "log", tmp_path / "shipped"
    uri = f"file://{root}"
    plog = PredictionLog(folder, segment_bytes=6000, fsync=False, ship_uri=uri)
    _write(plog, 40)
    plog.close()
    assert len(segments(folder)) > 1 and pending_segments(folder, uri) == []
    assert _hours(root) == {"hour=2026-12-05T14", "hour=2026-12-05T15"}
    local, shipped = read_prediction_log(folder), read_prediction_log(uri)
    assert len(local) == 40
    pd.testing.assert_frame_equal(shipped, local)  # same rows, order, columns and dtypes
    assert isinstance(shipped["history_tokens"].iloc[5], list) and "model.amount_log" in shipped.columns
    assert shipped["user_amount_mean_7d"].dtype == "float64" and shipped["logged_at"].dt.tz is not None
    pd.testing.assert_frame_equal(
        read_prediction_log(uri, newest_rows=7), read_prediction_log(folder, newest_rows=7)
    )
    pd.testing.assert_frame_equal(hourly_volumes_from_log(uri), hourly_volumes_from_log(folder))
    # Hive-style: pandas reads the folder itself, with the hour as a column
    raw = pd.read_parquet(root)
    assert len(raw) == 40 and set(raw["hour"].astype(str)) == {"2026-12-05T14", "2026-12-05T15"}
    # shipping a segment again writes the same objects: nothing is duplicated
    files = sorted(root.rglob("*.parquet"))
    ship_segment(segments(folder)[0], uri)
    assert sorted(root.rglob("*.parquet")) == files
    pd.testing.assert_frame_equal(read_prediction_log(uri), local)


def test_a_quiet_logs_open_segment_is_closed_by_age_and_shipped_without_more_traffic(tmp_path):
    folder, uri = tmp_path / "log", f"file://{tmp_path / 'shipped'}"
    plog = PredictionLog(folder, segment_seconds=0.3, fsync=False, ship_uri=uri, ship_retry_seconds=0.05)
    try:
        _write(plog, 4)
        _wait(
            lambda: plog.current_segment is None and not pending_segments(folder, uri),
            "the idle segment to ship",
        )
        pd.testing.assert_frame_equal(read_prediction_log(uri), read_prediction_log(folder))
        _write(plog, 2)  # the next write opens a new segment
        assert len(segments(folder)) == 2
    finally:
        plog.close()
    assert len(read_prediction_log(uri)) == 6


@contextlib.contextmanager
def _moto_s3(port: int, tmp_path: Path) -> Iterator[str]:
    """moto's S3 server (an S3 API stand-in) on 127.0.0.1:port; yields its endpoint."""
    exe = Path(sys.executable).parent / "moto_server"
    out = open(tmp_path / f"moto-{port}.log", "wb")  # noqa: SIM115 - the server process owns it
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _s3_client(endpoint).list_buckets()
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / f"moto-{port}.log").read_text()[-2000:]) from None
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(20)
        out.close()


def _s3_client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def s3_env(monkeypatch):
    """The standard AWS variables s3fs reads (no endpoint yet); s3fs's instance cache emptied around the test."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
    }.items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()  # instances are cached by arguments, not by environment
    yield monkeypatch
    s3fs.S3FileSystem.clear_instance_cache()


def test_s3_uri_against_moto_and_the_monitor_reads_the_uri(tmp_path, s3_env):
    port = free_port()
    with _moto_s3(port, tmp_path) as endpoint:
        s3_env.setenv("AWS_ENDPOINT_URL", endpoint)  # s3fs (botocore) takes the endpoint from here
        _s3_client(endpoint).create_bucket(Bucket="riskops-log")
        uri = "s3://riskops-log/prediction-log"
        plog = PredictionLog(tmp_path / "log", segment_bytes=6000, fsync=False, ship_uri=uri)
        _write(plog, 30)
        plog.close()
        keys = [o["Key"] for o in _s3_client(endpoint).list_objects_v2(Bucket="riskops-log")["Contents"]]
        assert keys and all(k.startswith("prediction-log/hour=2026-12-05T1") for k in keys)
        local = read_prediction_log(tmp_path / "log")
        pd.testing.assert_frame_equal(read_prediction_log(uri), local)
        # the monitor reads the shipped log named by RISKOPS_PREDICTION_LOG_URI, not a local folder
        s3_env.setenv("RISKOPS_PREDICTION_LOG_URI", uri)
        home = home_paths(tmp_path / "monitor-home")
        assert home.prediction_log_source == uri and not home.prediction_log.exists()
        window = read_monitor_log(home, WindowSettings(size=10, scan_rows=10))
        pd.testing.assert_frame_equal(window, read_prediction_log(tmp_path / "log", newest_rows=10))


def test_a_failed_upload_keeps_the_segment_local_and_ships_on_a_later_attempt(tmp_path, s3_env, caplog):
    port = free_port()  # nothing listens there yet: the store is unreachable
    s3_env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    folder, uri = tmp_path / "log", "s3://riskops-retry/log"
    plog = PredictionLog(folder, segment_bytes=3000, fsync=False, ship_uri=uri, ship_retry_seconds=0.2)
    try:
        _write(plog, 20)
        _wait(lambda: "failed (retried later)" in caplog.text, "a failed upload")
        closed = [p for p in segments(folder) if p != plog.current_segment]
        assert closed and set(closed) <= set(pending_segments(folder, uri))
        assert not list(folder.glob("*.shipped")) and len(read_prediction_log(folder)) == 20
        with _moto_s3(port, tmp_path) as endpoint:  # the store comes back on the same endpoint
            _s3_client(endpoint).create_bucket(Bucket="riskops-retry")
            # the shipper's periodic retry ships the closed segments while the log keeps running
            _wait(lambda: not set(closed) & set(pending_segments(folder, uri)), "the retry to ship")
            _write(plog, 3)
            plog.close()
            assert pending_segments(folder, uri) == []
            pd.testing.assert_frame_equal(read_prediction_log(uri), read_prediction_log(folder))
    finally:
        plog.close()


def _wait(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


WRITER = """
import itertools, sys
from datetime import UTC, datetime
from serving.predlog import PredictionLog

log = PredictionLog(sys.argv[1], segment_bytes=1500, fsync=True, ship_uri=sys.argv[2], ship_retry_seconds=0.05)
for i in itertools.count():
    log.write([{"request_id": f"r{i}", "transaction_id": f"t{i}", "logged_at": datetime.now(UTC).isoformat(),
                "risk_score": 0.5, "decision": "allow", "transaction": {"amount": float(i)}}])
    print(f"t{i}", flush=True)  # acknowledged: the record is fsync'd
"""


def test_records_acknowledged_before_a_sigkill_reach_the_shipped_log_after_a_restart(tmp_path):
    folder, uri = tmp_path / "log", f"file://{tmp_path / 'shipped'}"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(folder), uri],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    acked = []
    try:
        while len(acked) < 60:
            line = proc.stdout.readline()
            assert line, f"writer exited with {proc.poll()}"
            acked.append(line.strip())
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    acked += [
        line.strip() for line in proc.stdout.read().splitlines() if line.strip()
    ]  # printed = acknowledged
    proc.stdout.close()
    assert pending_segments(folder, uri)  # at least the segment open when it was killed is not shipped
    restarted = PredictionLog(folder, fsync=False, ship_uri=uri)  # a restart ships what was left
    restarted.close()
    assert pending_segments(folder, uri) == []
    shipped = read_prediction_log(uri)
    assert set(acked) <= set(shipped["transaction_id"])
    assert len(shipped) == len(read_prediction_log(folder))  # each record once, none invented


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    return generate(GeneratorConfig(rows=3000, seed=5, fraud_rate=0.03))


def _cluster_trigger(tmp_path: Path, input_path: str, transactions: pd.DataFrame, submitted: dict):
    def submit(host, profile="dev", **params):  # pipelines.runner.submit's signature
        submitted.update(params)
        return "kfp-run-1"

    cfg = {
        "mode": "cluster",
        "host": "https://kfp.example/pipeline",
        "min_rows": 500,
        "min_frauds": 5,
        "cluster_input_path": input_path,
    }
    return RetrainTrigger(
        home_paths(tmp_path / "home"), cfg, data_provider=lambda: transactions, submit=submit
    )


def test_retraining_input_is_written_to_the_cluster_input_path(tmp_path, transactions):
    submitted: dict = {}
    trigger = _cluster_trigger(
        tmp_path, f"file://{tmp_path}/cluster/{{run_id}}/train.parquet", transactions, submitted
    )
    rec = trigger.maybe_trigger({"rules": ["feature_drift"]})
    assert rec.outcome == "started", rec.why
    target = tmp_path / "cluster" / rec.run_id / "train.parquet"
    assert submitted["input_path"] == f"file://{target}"
    pd.testing.assert_frame_equal(pd.read_parquet(target), pd.read_parquet(rec.input))
    # a destination that cannot be written: recorded as failed, and no run is submitted without its input
    (tmp_path / "blocked").write_text("a file, not a folder")
    submitted.clear()
    blocked = _cluster_trigger(
        tmp_path / "b", f"file://{tmp_path}/blocked/{{run_id}}/train.parquet", transactions, submitted
    )
    rec = blocked.maybe_trigger({"rules": ["feature_drift"]})
    assert rec.outcome == "failed" and "cannot write the training set" in rec.why and not submitted
