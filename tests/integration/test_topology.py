"""`riskops up`'s topology (cli/topology): the processes k8s/ deploys, started from the rendered
manifests over a built home — Redis, the predictor, two transformer replicas, Prometheus, the
Pushgateway and riskops-ui — and the monitor CronJob's pass over what they logged."""

from __future__ import annotations

import itertools
import shutil
import signal
import time
from datetime import timedelta

import httpx
import pandas as pd
import pytest
from support.prometheus import query, wait_for
from support.servers import MODEL, T_BASE, tx

from cli.topology.processes import ClusterTopology
from riskops.monitoring.prediction_log import read_prediction_log
from riskops.settings import paths

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def topology(tmp_path_factory, built_home):
    root = tmp_path_factory.mktemp("topology")
    shutil.copytree(built_home[0].root, root / "home")
    with ClusterTopology(paths(root / "home"), transformers=2, observability=True) as running:
        yield running


def _post(url: str, order: dict) -> dict:
    r = httpx.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": [order]}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["predictions"][0]


def _pod_logs(topology) -> pd.DataFrame:
    frames = [read_prediction_log(p) for p in sorted((topology.root / "pods").glob("transformer-*/prediction_log"))]
    return pd.concat(frames, ignore_index=True)


def test_every_process_runs_what_the_manifests_say(topology):
    names = [p.name for p in topology.processes]
    assert names == ["redis", "predictor", "transformer-0", "transformer-1", "pushgateway", "prometheus", "ui"]
    by_name = {p.name: p for p in topology.processes}
    assert by_name["redis"].proc.args[0] == "redis-server" and "--appendonly" in by_name["redis"].proc.args
    for name in ("transformer-0", "transformer-1"):
        argv = by_name[name].proc.args
        assert argv[1:3] == ["-m", "serving.transformer"] and argv[argv.index("--model_name") + 1] == MODEL
    assert all(p.proc.poll() is None for p in topology.processes)


def test_the_replicas_share_entity_state_through_redis(topology):
    burst = [tx(user_id="topology-user", event_timestamp=(T_BASE + timedelta(days=5, minutes=i)).isoformat())
             for i in range(4)]  # fmt: skip
    for order, url in zip(burst, itertools.cycle(topology.urls), strict=False):
        assert _post(url, order)["degraded"] is False
    log = _pod_logs(topology).set_index("transaction_id").loc[[o["transaction_id"] for o in burst]]
    assert log["user_txn_count_1h"].tolist() == [0, 1, 2, 3]
    assert len(set(_pod_logs(topology)["request_id"])) >= 4


def test_the_operators_view_scrapes_every_server_and_shows_the_monitors_pass(topology):
    """Prometheus scrapes every server and loads the rules; the monitor's pass is pushed to the
    Pushgateway, and riskops-ui serves the drift history it wrote."""
    prom = topology.prometheus_url

    def serving_up() -> dict[str, str]:
        return {s["metric"]["pod"]: s["value"][1] for s in query(prom, 'up{job="riskops-serving"}')}

    wait_for(lambda: serving_up() == dict.fromkeys(("predictor", "transformer-0", "transformer-1"), "1"),
             60, 1, "every server scraped")  # fmt: skip
    # the PodMonitor's relabelling: series carry their component (the dashboard splits by it)
    served = query(prom, 'riskops_model_info{component="predictor"} == 1')
    assert [s["metric"]["version"] for s in served] == ["v0001"]
    groups = httpx.get(f"{prom}/api/v1/rules", timeout=10).json()["data"]["groups"]
    names = {r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting"}
    assert {"RiskopsDegradedAnswers", "RiskopsDriftDetected", "RiskopsModelVersionSkew"} <= names
    done = topology.run_monitor()  # the CronJob's pass pushes its verdict to the Pushgateway
    assert done.returncode == 0, done.stderr[-2000:]
    pushed = wait_for(lambda: query(prom, 'riskops_monitor_last_pass_timestamp_seconds{job="riskops-monitor"}'),
                      30, 1, "the monitor's pushed verdict")  # fmt: skip
    assert float(pushed[0]["value"][1]) > time.time() - 600
    # riskops-ui (the Deployment's command) serves the drift history the pass wrote into the home
    projects = httpx.get(f"{topology.ui_url}/api/projects", timeout=10).json()
    assert [p["name"] for p in projects] == ["riskops drift monitor (risk-model)"]
    assert (topology.home.root / "evidently").is_dir()


def test_a_replica_killed_under_load_loses_no_acknowledged_prediction(topology):
    """SIGKILL one transformer while both take load; the kubelet's restart (`restart`) ships what
    the killed one had written, and the others ship theirs when they stop: every acknowledged
    prediction reaches the shared log. (The module's last test: it stops the topology.)"""
    acknowledged: dict[str, str] = {}  # transaction id -> the replica that answered
    victim = next(p for p in topology.processes if p.name == "transformer-0")
    t = T_BASE + timedelta(days=6)
    for i in range(30):
        order = tx(event_timestamp=(t + timedelta(seconds=i)).isoformat())
        url = topology.urls[i % 2] if victim.proc.poll() is None else topology.urls[-1]
        try:
            r = httpx.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": [order]}, timeout=30)
        except httpx.HTTPError:
            continue  # the killed replica never answered: not acknowledged
        if r.status_code == 200:
            acknowledged[order["transaction_id"]] = url
        if i == 15:
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(10)
    by_victim = {tid for tid, url in acknowledged.items() if url == victim.url}
    assert len(acknowledged) >= 25 and len(by_victim) >= 5
    topology.restart("transformer-0")  # ships, at start, the segment the killed process left open
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not by_victim <= set(read_prediction_log(topology.log_uri)["transaction_id"]):
        time.sleep(0.5)
    assert by_victim <= set(read_prediction_log(topology.log_uri)["transaction_id"])
    topology.stop()  # SIGTERM: each replica closes and ships its open segment
    shipped = read_prediction_log(topology.log_uri)
    assert set(acknowledged) <= set(shipped["transaction_id"])
    assert not shipped["transaction_id"].duplicated().any()  # shipped twice = overwritten, never doubled
