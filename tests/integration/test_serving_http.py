"""The model server over real HTTP: a tiny real model, a real Feast SQLite repo, a subprocess server.

One module-scoped server (127.0.0.1, gRPC off) serves every test here; tests that change shared
state (policy.yaml, the online store file, the champion) restore it or run last.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.servers import (
    MODEL,
    Served,
    free_port,
    logged,
    predict,
    stop,
    subprocess_env,
    tx,
    wait_ready,
)

from riskops.monitoring.prediction_log import read_prediction_log


@pytest.fixture(scope="module")
def server_settings() -> tuple[str, ...]:
    """Quick Feast retries and pushes, so the degraded/recovery and push tests finish fast."""
    return ("feast_retry_after_s=0.3", "push_interval_s=0.05")


# --------------------------------------------------------------------------- happy paths
def test_health_and_metadata(served):
    assert httpx.get(served.url + "/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{served.url}/v2/models/{MODEL}/ready").status_code == 200
    assert httpx.get(f"{served.url}/v1/models/{MODEL}").json()["ready"] is True


def test_v1_predict(served):
    items = [tx(), tx(amount=999.0, payment_method="crypto", shipping_country="NG")]
    r = predict(served, items)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["transaction_id"] for p in preds] == [t["transaction_id"] for t in items]
    for p in preds:
        assert 0.0 <= p["risk_score"] <= 1.0
        assert p["decision"] in ("approve", "review", "block")
        assert isinstance(p["reasons"], list) and p["model_version"] == "v0001" and p["degraded"] is False


def test_v1_unknown_entities_get_defaults(served):
    new = tx(
        user_id=f"new-user-{uuid.uuid4().hex}",
        device_id=f"dev-{uuid.uuid4().hex}",
        ip_address="198.51.100.77",
    )
    r = predict(served, [new])
    assert r.status_code == 200 and r.json()["predictions"][0]["degraded"] is False
    rec = logged(served).set_index("transaction_id").loc[new["transaction_id"]]
    assert rec["user_txn_count_1h"] == 0 and np.isnan(rec["user_amount_mean_30d"])
    assert "ip_address" not in rec.index and len(rec["ip_hash"]) == 20  # PII only as a keyed hash


def test_v2_infer_with_kserve_client(served):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    from riskops.schema import FIELDS_BY_NAME

    items = [tx(), tx(quantity=3, is_refund=True)]
    inputs = []
    for name in items[0]:
        kind = FIELDS_BY_NAME[name].kind
        values = [t[name] for t in items]
        if kind in ("string", "timestamp"):
            arr, dt = np.array(values, dtype=object), "BYTES"
        elif kind == "float":
            arr, dt = np.array(values, dtype=np.float32), "FP32"
        elif kind == "int":
            arr, dt = np.array(values, dtype=np.int64), "INT64"
        else:
            arr, dt = np.array(values, dtype=bool), "BOOL"
        inp = InferInput(name, [len(items)], dt)
        inp.set_data_from_numpy(arr, binary_data=False)
        inputs.append(inp)

    async def call():
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60))
        try:
            return await client.infer(
                served.url,
                InferRequest(model_name=MODEL, infer_inputs=inputs, request_id="req-1"),
                model_name=MODEL,
            )
        finally:
            await client.close()

    res = asyncio.run(call())
    out = {o.name: o.as_numpy().tolist() for o in res.outputs}
    assert res.id == "req-1"
    assert out["transaction_id"] == [t["transaction_id"] for t in items]
    assert all(0.0 <= s <= 1.0 for s in out["risk_score"])
    assert set(out["decision"]) <= {"approve", "review", "block"}
    assert out["degraded"] == [False, False]
    assert {o.name: o.datatype for o in res.outputs}["risk_score"] == "FP32"


def test_explain(served):
    item = tx()
    r = httpx.post(f"{served.url}/v1/models/{MODEL}:explain", json={"instances": [item]}, timeout=60)
    assert r.status_code == 200, r.text
    (e,) = r.json()["explanations"]
    assert e["transaction_id"] == item["transaction_id"] and 0 <= e["risk_score"] <= 1
    assert {"amount_log", "user_txn_count_1h", "payment_method", "text"} <= set(e["attributions"])
    assert all(isinstance(v, float) for v in e["attributions"].values())
    # explaining is not scoring: nothing logged, no entity update
    assert item["transaction_id"] not in set(logged(served)["transaction_id"])


def test_metrics_endpoint(served):
    text = httpx.get(served.url + "/metrics").text
    for name in (
        "riskops_http_requests_total",
        "riskops_http_request_duration_seconds_bucket",
        "riskops_decisions_total",
        "riskops_model_info",
    ):
        assert name in text
    assert 'riskops_http_requests_total{code="200",route="v1_predict"}' in text
    # serve() froze the start-up heap out of the collector's walks (serving/gc_control.py)
    frozen = [line for line in text.splitlines() if line.startswith("riskops_gc_frozen_objects ")]
    assert frozen and float(frozen[0].split()[1]) > 100_000, frozen
    assert "riskops_gc_pause_seconds_bucket" in text


def test_the_http_front_writes_no_log_line_per_request(served):
    """KServe 0.21 logs two timing lines (and calls getrusage twice) and uvicorn one access line per
    request; the fast path (the default, serving.fast_path) runs on uvloop with both off: requests are
    counted on /metrics and every scored instance is in the prediction log."""
    text = served.log.read_text(errors="replace")
    assert "fast path on: uvloop event loop, no per-request log lines, v1 predict direct" in text
    start = len(served.log.read_bytes())
    counted = _metric(
        httpx.get(served.url + "/metrics").text, 'riskops_http_requests_total{code="200",route="v1_predict"}'
    )
    for _ in range(5):
        assert predict(served, [tx()]).status_code == 200
    new = served.log.read_bytes()[start:].decode(errors="replace")
    assert "kserve.trace" not in new and "POST /v1/models" not in new, new[-2000:]
    after = _metric(
        httpx.get(served.url + "/metrics").text, 'riskops_http_requests_total{code="200",route="v1_predict"}'
    )
    assert after == counted + 5


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # field 4: the parent's pid
                out.append(int(d))
    return out


def test_the_server_threads_share_one_cpu_and_the_feast_child_the_others(served):
    """serving/cpus.py with the default `server_cpu: auto`: every thread of the server on one CPU
    (hand-offs between them stay on it), the Feast push child on the others. On a machine where
    auto does not pin (one CPU, a shared quota) everything keeps the CPUs it was given."""
    from serving.cpus import cgroup_cpu_quota, plan_cpus

    allowed = os.sched_getaffinity(0)  # the server inherited this process's CPUs
    plan = plan_cpus("auto", allowed, cgroup_cpu_quota())
    assert f"CPUs: {plan.reason}" in served.log.read_text(errors="replace")
    assert predict(served, [tx()]).status_code == 200  # the Feast child is up by now
    pid = served.proc.pid
    threads = {int(t): os.sched_getaffinity(int(t)) for t in os.listdir(f"/proc/{pid}/task")}
    assert len(threads) >= 4  # event loop, model thread, Feast threads, prediction log ...
    children = _children(pid)
    assert children, "no Feast child process"
    for cpus in threads.values():
        assert cpus == (plan.server if plan.pinned else allowed)
    for child in children:
        assert os.sched_getaffinity(child) == (plan.helpers if plan.pinned else allowed)


def test_kserve_stage_histograms_are_observed(served):
    """The fast path runs KServe's stages itself (serving.fast_path.run_stages): each still lands in KServe's own
    ``request_*_seconds{model_name}`` histogram, once per request, a failing stage included."""
    stages = ("preprocess", "predict", "explain", "postprocess")

    def counts() -> dict[str, float]:
        text = httpx.get(served.url + "/metrics").text
        return {s: _metric(text, f'request_{s}_seconds_count{{model_name="{MODEL}"}}') for s in stages}

    before = counts()
    assert predict(served, [tx()]).status_code == 200
    assert predict(served, [tx(amount=-1.0)]).status_code == 400  # fails in preprocess
    explained = httpx.post(
        f"{served.url}/v1/models/{MODEL}:explain", json={"instances": [tx()]}, timeout=60
    )
    assert explained.status_code == 200
    after = counts()
    assert {s: after[s] - before[s] for s in stages} == {
        "preprocess": 3,
        "predict": 1,
        "explain": 1,
        "postprocess": 2,
    }


def _metric(text: str, name: str) -> float:
    lines = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(lines[0].split()[-1]) if lines else 0.0


# --------------------------------------------------------------------------- bad input -> 4xx
BAD_CASES = [
    ({"amount": None}, "amount", 400),
    ({"amount": -3.5}, "amount", 400),
    ({"amount": 0}, "amount", 400),
    ({"amount": 5e9}, "amount", 400),
    ({"amount": "ten"}, "amount", 400),
    ({"currency": "DOGE"}, "currency", 400),
    ({"payment_method": "barter"}, "payment_method", 400),
    ({"channel": "carrier-pigeon"}, "channel", 400),
    ({"billing_country": "XX"}, "billing_country", 400),
    ({"product_category": "uranium"}, "product_category", 400),
    ({"event_timestamp": "31/12/2025"}, "event_timestamp", 400),
    ({"quantity": "2"}, "quantity", 400),
    ({"is_refund": "maybe"}, "is_refund", 400),
    ({"user_id": 123}, "user_id", 400),
]


@pytest.mark.parametrize(("mutation", "field", "status"), BAD_CASES)
def test_bad_field_is_a_4xx_naming_it_and_service_continues(served, mutation, field, status):
    bad = tx(**mutation)
    if mutation.get("amount", 1) is None:
        del bad["amount"]
    r = predict(served, [bad])
    assert r.status_code == status, r.text
    assert f"instances[0].{field}" in r.json()["error"]
    assert predict(served, [tx()]).status_code == 200


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400, "malformed JSON"),
        (b"", {"Content-Type": "application/json"}, 400, "empty"),
        (b'{"instances": [{}]}', {"Content-Type": "text/plain"}, 415, "Content-Type"),
        (b'{"instances": [{}]}', {}, 415, "Content-Type"),
        (b'{"instances": [{}]}', {"Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type"),
        (b'{"instances": 5}', {"Content-Type": "application/json"}, 400, "instances: must be a list"),
        (b"[1, 2]", {"Content-Type": "application/json"}, 400, "JSON object"),
        (b'{"instances": []}', {"Content-Type": "application/json"}, 400, "is empty"),
        (b"x" * (1 << 20 + 1), {"Content-Type": "application/json"}, 413, "exceeds the limit"),
    ],
)
def test_malformed_requests_are_4xx_with_a_clear_message(served, body, headers, status, words):
    r = httpx.post(f"{served.url}/v1/models/{MODEL}:predict", content=body, headers=headers, timeout=60)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]
    assert predict(served, [tx()]).status_code == 200


def test_charset_content_type_and_batch_limit(served):
    body = json.dumps({"instances": [tx()]}).encode()
    r = httpx.post(
        f"{served.url}/v1/models/{MODEL}:predict",
        content=body,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 200, r.text
    r = predict(served, [tx() for _ in range(257)])
    assert r.status_code == 413 and "limit of 256" in r.json()["error"]


def test_v2_bad_inputs_are_4xx(served):
    url = f"{served.url}/v2/models/{MODEL}/infer"
    cases = [
        ({"inputs": [{"name": "amount", "shape": [1], "datatype": "FP32", "data": [-1.0]}]}, "amount"),
        ({"inputs": [{"name": "amount", "shape": [2], "datatype": "FP32", "data": [1.0]}]}, "amount"),
        ({"inputs": [{"name": "user_id", "shape": [1], "datatype": "FP32", "data": [1.0]}]}, "user_id"),
        ({"inputs": "nope"}, "inputs"),
        ({"instances": [tx()]}, "inputs"),
    ]
    for body, word in cases:
        r = httpx.post(url, json=body, timeout=60)
        assert 400 <= r.status_code < 500, r.text
        assert word in r.json()["error"], r.text
    r = httpx.post(url, content=b"{}", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415


# Arbitrary bodies: never a 5xx.
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=10,
)
_field_values = st.one_of(_json, st.sampled_from(["USD", "web", "US", "fashion", "2026-01-09T00:00:00Z", ""]))


@st.composite
def bodies(draw):
    kind = draw(st.sampled_from(["json", "instances", "v2", "bytes"]))
    if kind == "json":
        return json.dumps(draw(_json)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "instances":
        items = []
        for _ in range(draw(st.integers(0, 3))):
            t = tx()
            t.update(draw(st.dictionaries(st.sampled_from(sorted(t)), _field_values, max_size=4)))
            for k in draw(st.lists(st.sampled_from(sorted(t)), max_size=2)):
                t.pop(k, None)
            items.append(t)
        return json.dumps({"instances": items}).encode()
    inputs = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.sampled_from(["amount", "user_id", "quantity", "x", "is_refund"]),
                    "shape": st.lists(st.integers(-1, 3), min_size=0, max_size=2),
                    "datatype": st.sampled_from(["FP32", "INT64", "BYTES", "BOOL", "FP16", "WAT"]),
                    "data": st.lists(_json, max_size=3),
                }
            ),
            max_size=3,
        )
    )
    return json.dumps({"inputs": inputs}).encode()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=bodies(),
    route=st.sampled_from(
        [f"/v1/models/{MODEL}:predict", f"/v1/models/{MODEL}:explain", f"/v2/models/{MODEL}/infer"]
    ),
    ctype=st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", None]),
)
def test_fuzzed_bodies_never_5xx(served, body, route, ctype):
    headers = {"Content-Type": ctype} if ctype else {}
    r = httpx.post(served.url + route, content=body, headers=headers, timeout=60)
    assert r.status_code < 500, (r.status_code, r.text, body[:300])


# --------------------------------------------------------------------------- features and state
def test_burst_grows_velocity_features_and_pushes_them_online(served):
    from riskops.features.store import online_features, open_store

    user = f"burst-{uuid.uuid4().hex[:8]}"
    items = [tx(user_id=user, device_id=f"{user}-dev") for _ in range(5)]
    for item in items:
        r = predict(served, [item])
        assert r.status_code == 200 and r.json()["predictions"][0]["degraded"] is False
    log = logged(served).set_index("transaction_id")
    seen = [log.loc[t["transaction_id"], "user_txn_count_1h"] for t in items]
    assert seen == [0, 1, 2, 3, 4]  # the looked-up velocity grows request by request
    store = open_store(served.home.feature_repo)  # a fresh reader, not the server's
    deadline = time.monotonic() + 10
    while True:
        online = online_features(store, [{"user_id": user, "device_id": f"{user}-dev"}])[0]
        if (online["user_txn_count_1h"], online["device_txn_count_1h"]) == (
            5,
            5,
        ) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert online["user_txn_count_1h"] == 5 and online["device_txn_count_1h"] == 5
    assert online["user_last_event_epoch"] == pytest.approx(
        datetime.fromisoformat(items[-1]["event_timestamp"]).timestamp()
    )


def test_prediction_log_one_record_per_instance_and_torn_tail(served, tmp_path):
    items = [tx() for _ in range(7)]
    assert predict(served, items[:3]).status_code == 200
    assert predict(served, items[3:]).status_code == 200
    df = logged(served)
    counts = df["transaction_id"].value_counts()
    assert all(counts[t["transaction_id"]] == 1 for t in items)
    assert counts.max() == 1  # every scored instance exactly once across the whole module
    row = df.set_index("transaction_id").loc[items[0]["transaction_id"]]
    for col in (
        "request_id",
        "logged_at",
        "model_version",
        "risk_score",
        "decision",
        "user_id",
        "ip_hash",
        "user_txn_count_1h",
        "model.amount_log",
    ):
        assert col in row.index, col
    copy = tmp_path / "log"
    shutil.copytree(served.home.prediction_log, copy)
    last = sorted(copy.glob("predictions-*.jsonl"))[-1]
    with open(last, "ab") as fh:
        fh.write(b'{"request_id": "torn", "transaction_id": "torn-1", "risk_sc')
    again = read_prediction_log(copy)
    assert len(again) == len(df) and "torn-1" not in set(again["transaction_id"])


def test_policy_yaml_hot_reload_block_alerts_and_bursts(served):
    policy = served.home.root / "policy.yaml"
    alerts = served.home.root / "alerts.jsonl"
    try:
        policy.write_text("review: 0.0\nblock: 0.0\n")
        time.sleep(0.7)  # checked at most every 0.5 s
        user = f"alerted-{uuid.uuid4().hex[:8]}"
        items = [tx(user_id=user) for _ in range(3)]
        decisions = [predict(served, [t]).json()["predictions"][0]["decision"] for t in items]
        assert decisions == ["block"] * 3
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = [json.loads(x) for x in alerts.read_text().splitlines()] if alerts.exists() else []
            mine = [a for a in got if a.get("transaction_id") in {t["transaction_id"] for t in items}]
            if sum(a["kind"] == "burst" for a in mine) >= 1 and sum(a["kind"] == "block" for a in mine) == 3:
                break
            time.sleep(0.1)
        assert sum(a["kind"] == "block" for a in mine) == 3
        assert any(a["kind"] == "burst" and a["entity"] == "user_id" and a["count"] == 3 for a in mine)
    finally:
        policy.unlink(missing_ok=True)
    time.sleep(0.7)
    r = predict(served, [tx()]).json()["predictions"][0]
    assert r["decision"] in ("approve", "review")  # back on policy.json (review 0.5 / block 0.9)


def test_feast_down_answers_degraded_review_then_recovers(served):
    db = served.home.feature_repo / "data" / "online_store.db"
    # The store is in WAL mode (riskops.features.store.use_wal): the database, its write-ahead log and
    # its shared index all get garbage, on the same inodes, so the server's open connection cannot
    # keep serving from its page cache (the index header it checks per read has changed).
    files = [f for f in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")) if f.exists()]
    originals = {f: f.read_bytes() for f in files}
    try:
        for f, content in originals.items():
            with open(f, "r+b") as fh:  # same inode: the server's open connection sees garbage
                fh.write(b"\0" * len(content))
        r = predict(served, [tx(user_id=f"during-outage-{uuid.uuid4().hex[:6]}", device_id="d-outage")])
        assert r.status_code == 200, r.text
        p = r.json()["predictions"][0]
        assert p["degraded"] is True and p["decision"] in ("review", "block")
        assert any("online features unavailable" in reason for reason in p["reasons"])
    finally:
        for f, content in originals.items():
            with open(f, "r+b") as fh:
                fh.write(content)
    time.sleep(0.5)  # retry_after_s = 0.3
    deadline = time.monotonic() + 15
    while True:
        p = predict(served, [tx(user_id=f"after-{uuid.uuid4().hex[:6]}")]).json()["predictions"][0]
        if not p["degraded"] or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert p["degraded"] is False
    assert "Feast online store unavailable" in served.log.read_text()


# --------------------------------------------------------------------------- hot swap (changes the champion: last)
def test_hot_swap_under_load_has_no_failures(served):
    from riskops.registry.store import ModelRegistry

    results: list[tuple[float, int, str]] = []
    stop_at = time.monotonic() + 120

    def worker():
        with httpx.Client(timeout=60) as client:
            while time.monotonic() < stop_at:
                r = client.post(f"{served.url}/v1/models/{MODEL}:predict", json={"instances": [tx()]})
                version = r.json()["predictions"][0]["model_version"] if r.status_code == 200 else ""
                results.append((time.monotonic(), r.status_code, version))
                if version == "v0002" and sum(v == "v0002" for _, _, v in results) >= 20:
                    return

    with cf.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(worker) for _ in range(4)]
        time.sleep(1.0)
        registry = ModelRegistry(served.home.registry)
        mv = registry.register(served.model_dir)
        registry.set_alias("champion", mv.version)
        for f in futures:
            f.result()
    statuses = {s for _, s, _ in results}
    versions = [v for _, _, v in sorted(results)]
    assert statuses == {200}, statuses
    assert versions[0] == "v0001" and versions[-1] == "v0002"
    first_new = versions.index("v0002")
    assert versions[first_new + 10 :] == ["v0002"] * len(versions[first_new + 10 :])  # no flapping back
    assert "hot swap: now serving v0002" in served.log.read_text()


# --------------------------------------------------------------------------- split deployment
@pytest.mark.slow
def test_split_transformer_and_predictor_over_rest(served, tmp_path):
    """The two KServe components as separate processes (what an InferenceService runs)."""
    p_port, t_port = free_port(), free_port()
    env = subprocess_env()
    logs = tmp_path / "predictor.log", tmp_path / "transformer.log"
    common = ["--enable_grpc", "false", "--bind_host", "127.0.0.1", "--model_name", MODEL]
    with open(logs[0], "wb") as fh:
        pred = subprocess.Popen(
            [sys.executable, "-m", "serving.predictor", "--model_dir", str(served.model_dir),
             "--http_port", str(p_port), *common],
            stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
        )  # fmt: skip
    with open(logs[1], "wb") as fh:
        trans = subprocess.Popen(
            [sys.executable, "-m", "serving.transformer", "--predictor_host", f"127.0.0.1:{p_port}",
             "--feature_repo", str(served.home.feature_repo), "--home", str(tmp_path / "home"),
             "--http_port", str(t_port), *common],
            stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
        )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{p_port}", pred, logs[0])
        wait_ready(f"http://127.0.0.1:{t_port}", trans, logs[1])
        url = f"http://127.0.0.1:{t_port}/v1/models/{MODEL}"
        item = tx()
        r = httpx.post(url + ":predict", json={"instances": [item, tx()]}, timeout=60)
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert preds[0]["transaction_id"] == item["transaction_id"] and preds[0]["model_version"] == "model"
        assert 0 <= preds[0]["risk_score"] <= 1
        r = httpx.post(url + ":explain", json={"instances": [item]}, timeout=60)
        assert r.status_code == 200 and "attributions" in r.json()["explanations"][0]
        r = httpx.post(url + ":predict", json={"instances": [tx(amount=-1)]}, timeout=60)
        assert r.status_code == 400 and "amount" in r.json()["error"]
        assert len(read_prediction_log(tmp_path / "home" / "prediction_log")) == 2
    finally:
        stop(trans)
        stop(pred)


# --------------------------------------------------------------------------- fast path on / off
@pytest.mark.slow  # two more servers: ~35 s
def test_the_fast_path_answers_like_plain_kserve(tmp_path, built_home):
    """`fast_path: true` (the default, serving.fast_path) against plain KServe (`fast_path: false`):
    two servers on copies of one home, the same requests in the same order, the same statuses and
    bodies, scores and reasons included (so the same validation, features, entity state, model and
    policy ran)."""
    home = built_home[0]
    servers: dict[str, tuple[str, subprocess.Popen, Path]] = {}
    try:
        for name, extra in (("direct", []), ("routed", ["--set", "fast_path=false"])):
            root = tmp_path / name
            shutil.copytree(home.root, root / "home")
            port, log = free_port(), root / "server.log"
            cmd = [sys.executable, "-m", "serving", "--port", str(port), "--home", str(root / "home"), *extra]
            with open(log, "wb") as fh:
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=subprocess_env(), cwd=root)
            servers[name] = (f"http://127.0.0.1:{port}", proc, log)
        for url, proc, log in servers.values():
            wait_ready(url, proc, log)
        user = f"same-user-{uuid.uuid4().hex[:8]}"
        burst = [tx(user_id=user, amount=50.0 + 40 * i) for i in range(4)]
        ok = {"Content-Type": "application/json"}
        requests = [
            ("risk-model", {"instances": [tx(), tx(payment_method="crypto", shipping_country="NG")]}, ok),
            *[("risk-model", {"instances": [t]}, ok) for t in burst],  # entity state grows
            ("risk-model", {"instances": [tx(amount=-5)]}, ok),  # 400 naming the field
            ("risk-model", {"instances": [tx(currency="XYZ")]}, ok),
            ("risk-model", {"instances": []}, ok),
            ("risk-model", {"instances": [tx() for _ in range(257)]}, ok),  # 413
            ("risk-model", {"instances": [tx()]}, {"Content-Type": "application/json; charset=utf-8"}),
            ("risk-model", {"instances": [tx()]}, {"Content-Type": "text/plain"}),  # 415
            ("no-such-model", {"instances": [tx()]}, ok),  # KServe's 404
        ]
        answers: dict[str, list[tuple[int, str, object]]] = {}
        for name, (url, _, _) in servers.items():
            answers[name] = []
            for model, body, headers in requests:
                r = httpx.post(
                    f"{url}/v1/models/{model}:predict", content=json.dumps(body), headers=headers, timeout=60
                )
                answers[name].append((r.status_code, r.headers.get("content-type"), r.json()))
        assert [s for s, _, _ in answers["routed"]] == [200] * 5 + [400, 400, 400, 413, 200, 415, 404]
        for request, direct, routed in zip(requests, answers["direct"], answers["routed"], strict=True):
            assert direct == routed, (request[0], request[2], direct, routed)
        assert "fast path on" in servers["direct"][2].read_text()
        routed_log = servers["routed"][2].read_text()
        assert "fast path off" in routed_log and "fast path on" not in routed_log
    finally:
        for _, proc, _ in servers.values():
            stop(proc)


# --------------------------------------------------------------------------- product catalogue
def _cache_counts(served: Served) -> dict[str, float]:
    out = {}
    for line in httpx.get(served.url + "/metrics").text.splitlines():
        if line.startswith("riskops_text_cache_total{"):
            out[line.split('result="')[1].split('"')[0]] = float(line.split()[-1])
    return out


def test_catalogue_texts_are_encoded_before_their_first_order(served):
    from riskops.features.contract import transaction_text

    product = {
        "product_title": f"Catalogue lamp {uuid.uuid4().hex[:8]}",
        "product_category": "home",
        "merchant_category": "home furnishings",
    }
    before = httpx.get(served.url + "/v1/catalogue").json()
    r = httpx.post(served.url + "/v1/catalogue", json={"products": [product, product]}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["received"] == 2 and r.json()["new"] == 1 and r.json()["encoded"] == 1
    state = httpx.get(served.url + "/v1/catalogue").json()
    assert state["catalogue_texts"] == before["catalogue_texts"] + 1
    assert state["cached_in_model"] == state["catalogue_texts"]
    # kept for the next process and every model loaded later
    kept = [json.loads(x) for x in (served.home.root / "catalogue.jsonl").read_text().splitlines()]
    assert transaction_text(product) in kept
    # its first order is scored from the cache: no encoder pass on the request path
    counts = _cache_counts(served)
    r = predict(served, [tx(**product)])
    assert r.status_code == 200
    after = _cache_counts(served)
    assert after.get("miss", 0) == counts.get("miss", 0) and after["hit"] == counts.get("hit", 0) + 1
    # the same again: nothing new to encode
    r = httpx.post(served.url + "/v1/catalogue", json={"products": [product]}, timeout=60)
    assert r.json()["new"] == 0 and r.json()["encoded"] == 0


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"products": [{"product_title": "x", "product_category": "home"}]}, 400, "products[0].merchant_category"),
        ({"products": [{"product_title": "ok", "product_category": "home", "merchant_category": "m"},
                       {"product_title": 7, "product_category": "home", "merchant_category": "m"}]},
         400, "products[1].product_title"),
        ({"products": []}, 400, "products"),
        ({"items": []}, 400, "products"),
        ({"products": ["lamp"]}, 400, "products[0]: must be an object"),
    ],
)  # fmt: skip
def test_bad_catalogue_bodies_are_400_naming_the_product_and_field(served, body, status, words):
    before = httpx.get(served.url + "/v1/catalogue").json()["catalogue_texts"]
    r = httpx.post(served.url + "/v1/catalogue", json=body, timeout=30)
    assert r.status_code == status and words in r.json()["error"], r.text
    assert httpx.get(served.url + "/v1/catalogue").json()["catalogue_texts"] == before  # nothing stored
