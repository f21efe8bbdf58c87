"""The server under KServe's own ``--workers 2`` (spawned uvicorn worker processes), over real HTTP.

Each worker builds its own service (serving.service.WorkerRiskService): v1 and v2 requests are
scored whichever worker accepts them, each worker writes its own prediction log segment (its pid
in the name), /metrics sums every worker's counts, and the fast path, which cannot reach KServe's
worker processes, turns itself off with a log line.
"""

from __future__ import annotations

import concurrent.futures as cf
import re
import shutil
import time

import httpx
import pytest
from support.servers import MODEL, predict, running_server, tx

from riskops.monitoring.prediction_log import read_prediction_log
from riskops.schema import FIELDS_BY_NAME
from riskops.settings import paths

pytestmark = pytest.mark.slow


def _worker_pids(log_text: str) -> set[int]:
    return {int(pid) for pid in re.findall(r"worker (\d+): serving " + MODEL, log_text)}


def _v1_requests_counted(metrics_text: str) -> float:
    name = 'riskops_http_requests_total{code="200",route="v1_predict"}'
    return sum(float(line.split()[-1]) for line in metrics_text.splitlines() if line.startswith(name + " "))


def _v2_body(transaction: dict) -> dict:
    """A v2 JSON inference request of one transaction: one input per field, typed by the schema."""
    datatypes = {"string": "BYTES", "timestamp": "BYTES", "float": "FP32", "int": "INT64"}
    inputs = [
        {"name": k, "shape": [1], "datatype": datatypes.get(FIELDS_BY_NAME[k].kind, "BOOL"), "data": [v]}
        for k, v in transaction.items()
    ]
    return {"inputs": inputs}


def test_two_kserve_workers_score_v1_and_v2_and_keep_a_log_segment_each(tmp_path, built_home):
    home = paths(tmp_path / "home")
    shutil.copytree(built_home[0].root, home.root)
    with running_server(tmp_path, home, built_home[1], "workers=2", "push_interval_s=0.05") as served:
        deadline = time.monotonic() + 240
        while len(_worker_pids(served.log.read_text(errors="replace"))) < 2:
            assert served.proc.poll() is None, served.log.read_text()[-4000:]
            assert time.monotonic() < deadline, served.log.read_text()[-4000:]
            time.sleep(0.5)
        text = served.log.read_text(errors="replace")
        workers = _worker_pids(text)
        assert served.proc.pid not in workers
        assert "workers: 2: fast_path True -> False" in text
        assert "fast path off" in text and "fast path on" not in text

        # v1 from several clients at once, so both workers accept some (each request a new connection)
        sent, pids_logged = 0, set()
        with cf.ThreadPoolExecutor(8) as pool:
            while len(pids_logged) < 2 and sent < 400:
                answers = list(pool.map(lambda _: predict(served, [tx()]), range(40)))
                assert [r.status_code for r in answers] == [200] * 40, [r.text for r in answers if r.status_code != 200]
                sent += 40
                pids_logged = {int(p.name.split("-")[-2]) for p in home.prediction_log.glob("predictions-*.jsonl")}
        assert pids_logged == workers, (pids_logged, workers)

        r = httpx.post(f"{served.url}/v2/models/{MODEL}/infer", json=_v2_body(tx()), timeout=60)
        assert r.status_code == 200, r.text
        outputs = {o["name"]: o["data"] for o in r.json()["outputs"]}
        assert 0.0 <= outputs["risk_score"][0] <= 1.0 and outputs["decision"][0] in ("approve", "review", "block")

        # the counts of both workers, summed (prometheus_client multiprocess mode)
        assert _v1_requests_counted(httpx.get(served.url + "/metrics").text) == sent
    records = read_prediction_log(home.prediction_log)
    assert len(records) == sent + 1  # every v1 instance and the v2 one, from both workers' segments
