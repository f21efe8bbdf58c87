"""Submitting the pipeline to a cluster: `pipelines.runner.submit` and `riskops pipeline run --host`.

STAND-IN, NOT A REAL KFP: no Kubeflow Pipelines API server can run on these machines (no
containers, no cluster), so `KfpStandIn` below is a ~50-line local HTTP server that answers the
four KFP v2beta1 REST endpoints kfp.Client 2.17 calls when it creates a run (healthz, list and
create experiment, create run) with minimal JSON, and records every request. The tests assert
what the real client sent over the wire: endpoints, the `Authorization: Bearer` header from
KFP_TOKEN, the compiled pipeline spec inline in the create-run body (the prod-gpu profile's GPU
settings on the train task) and the run parameters. What the stand-in cannot tell: whether a
real KFP backend accepts the spec, schedules the pods or runs them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines.runner import SubmitError, submit
from pipelines.training_pipeline import compile_pipeline

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token-0123456789"
RUN_ID = "5b7c1f3e-0000-4000-8000-000000000001"
EXPERIMENT_ID = "e0f1a2b3-0000-4000-8000-000000000002"


class KfpStandIn:
    """Stand-in for a KFP API server (see the module docstring): records requests, answers
    kfp.Client's run-creation calls. `required_token`: answer 401 to any other bearer token."""

    def __init__(self, required_token: str | None = None) -> None:
        self.requests: list[dict] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                stand_in.requests.append(
                    {
                        "method": self.command,
                        "path": url.path,
                        "query": parse_qs(url.query),
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": json.loads(raw) if raw else None,
                    }
                )
                auth = self.headers.get("Authorization", "")
                if required_token and auth != f"Bearer {required_token}":
                    return self._reply(401, {"error": "unauthenticated", "code": 16})
                route = (self.command, url.path)
                if route == ("GET", "/apis/v2beta1/healthz"):
                    return self._reply(200, {"multi_user": False})
                if route == ("GET", "/apis/v2beta1/experiments"):
                    return self._reply(200, {})  # no experiment with that name yet
                if route == ("POST", "/apis/v2beta1/experiments"):
                    name = stand_in.requests[-1]["body"]["display_name"]
                    return self._reply(200, {"experiment_id": EXPERIMENT_ID, "display_name": name})
                if route == ("POST", "/apis/v2beta1/runs"):
                    body = stand_in.requests[-1]["body"]
                    return self._reply(
                        200,
                        {
                            "run_id": RUN_ID,
                            "experiment_id": body["experiment_id"],
                            "display_name": body["display_name"],
                            "state": "PENDING",
                        },
                    )
                return self._reply(404, {"error": f"no route {self.command} {url.path}"})

            do_GET = do_POST = _handle

            def log_message(self, *args) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> KfpStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def calls(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.requests]


@pytest.fixture(autouse=True)
def kfp_env(monkeypatch, tmp_path):
    """A clean client environment: the token, no KFP endpoint/namespace variables, no ~/.config/kfp."""
    for k in list(os.environ):
        if k.startswith("KF_PIPELINES_") or k == "KFP_NAMESPACE":
            monkeypatch.delenv(k)
    monkeypatch.setenv("KFP_TOKEN", TOKEN)
    monkeypatch.setenv("HOME", str(tmp_path))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _expected_spec(profile: str, tmp_path: Path) -> dict:
    """What kfp.Client puts in the body: the compiled YAML's first document as PipelineSpec JSON."""
    docs = list(yaml.safe_load_all(compile_pipeline(profile, tmp_path / "expected.yaml").read_text()))
    return json_format.MessageToDict(json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec()))


def test_submit_creates_a_run_with_the_compiled_prod_gpu_spec(tmp_path):
    params = {"rows": 5000, "epochs": 1, "encoder": "tiny", "promotion": "never", "git_commit": "abc1234"}
    with KfpStandIn() as kfp_api:
        run_id = submit(kfp_api.url, profile="prod-gpu", experiment="riskops-ci", **params)
    assert run_id == RUN_ID
    assert kfp_api.calls() == [
        ("GET", "/apis/v2beta1/healthz"),
        ("GET", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/runs"),
    ]
    for r in kfp_api.requests:
        assert r["headers"]["authorization"] == f"Bearer {TOKEN}", r["path"]
    listed = json.loads(kfp_api.requests[1]["query"]["filter"][0])
    assert listed["predicates"][0]["key"] == "display_name"
    assert listed["predicates"][0]["stringValue"] == "riskops-ci"
    assert kfp_api.requests[2]["body"]["display_name"] == "riskops-ci"

    run = kfp_api.requests[3]
    assert run["headers"]["content-type"] == "application/json"
    body = run["body"]
    assert body["experiment_id"] == EXPERIMENT_ID
    assert body["display_name"].startswith("riskops-training-")
    assert body["runtime_config"]["parameters"] == params
    spec, platform = body["pipeline_spec"]["pipeline_spec"], body["pipeline_spec"]["platform_spec"]
    assert spec == _expected_spec("prod-gpu", tmp_path)  # the whole compiled pipeline, inline
    assert spec["pipelineInfo"]["name"] == "riskops-training"
    train = spec["deploymentSpec"]["executors"]["exec-train-model-op"]["container"]
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert int(train["resources"]["accelerator"]["resourceCount"]) == 1
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-model-op"]
    assert k8s["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert k8s["tolerations"][0]["key"] == "nvidia.com/gpu"
    # only the train task asks for a GPU
    others = [e for n, e in spec["deploymentSpec"]["executors"].items() if n != "exec-train-model-op"]
    assert others and all("accelerator" not in e["container"].get("resources", {}) for e in others)


def test_cli_pipeline_run_host_submits_its_parameters():
    from cli.main import main

    with KfpStandIn() as kfp_api:
        code = main(
            ["pipeline", "run", "--host", kfp_api.url, "--profile", "dev", "--rows", "3000",
             "--encoder", "tiny", "--epochs", "1", "--promotion", "never"]
        )  # fmt: skip
    assert code == 0
    (run,) = [r for r in kfp_api.requests if r["path"] == "/apis/v2beta1/runs"]
    assert run["headers"]["authorization"] == f"Bearer {TOKEN}"
    params = run["body"]["runtime_config"]["parameters"]
    assert params["rows"] == 3000 and params["encoder"] == "tiny" and params["epochs"] == 1
    assert params["promotion"] == "never" and params["source"] == "synthetic"
    assert "git_commit" in params
    # the dev profile: no GPU anywhere
    assert "nvidia.com/gpu" not in json.dumps(run["body"]["pipeline_spec"])


def test_wrong_token_is_a_clear_error():
    with KfpStandIn(required_token="the-right-one") as kfp_api:
        with pytest.raises(SubmitError, match=r"rejected the request: HTTP 401.*KFP_TOKEN"):
            # with a namespace kfp.Client skips /healthz, whose failures it retries for 25 s
            submit(kfp_api.url, profile="dev", namespace="team-risk")
    assert kfp_api.calls() == [("GET", "/apis/v2beta1/experiments")]
    assert kfp_api.requests[0]["query"]["namespace"] == ["team-risk"]


@pytest.mark.slow  # 10-15 s: keeps `make test-fast` under 3 minutes
def test_unreachable_host_is_a_clear_error(tmp_path):
    host = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(SubmitError, match=r"cannot reach the Kubeflow Pipelines API at http://127\.0\.0\.1"):
        submit(host, profile="dev")
    # and from the command line: non-zero exit, the reason on stderr
    env = {**os.environ, "PYTHONPATH": str(REPO), "RISKOPS_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "pipeline", "run", "--host", host],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr  # one clear line, not a stack trace
    assert f"cannot reach the Kubeflow Pipelines API at {host}" in proc.stdout + proc.stderr
    assert "Connection refused" in proc.stdout + proc.stderr
