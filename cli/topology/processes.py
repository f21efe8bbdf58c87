"""The cluster's topology as local processes: Redis, the predictor, N transformer replicas, the monitor.

    with ClusterTopology(home) as topology:      # `riskops up`
        topology.urls                            # the transformer replicas (spread requests over them)
        topology.run_monitor()                   # one monitor pass, as the CronJob runs it

Every command and environment comes from the rendered manifests (cli/topology/manifests.py says
what is rewritten for this machine). What stands in for the cluster, and why:

* the front: none — the caller spreads requests over `urls` round-robin, as the cluster's Service
  would (the drift demo's replay does);
* KServe's rollout of a new model (a new predictor revision): the predictor follows the local
  registry's ``champion`` alias (``--registry``) and hot-swaps when a promotion moves it;
* the Kubeflow Pipelines API: the monitor's retraining runs on ``kfp.local`` (``retrain.mode:
  local``), the same pipeline the cluster's KFP would run;
* the object store: a ``file://`` folder (the S3 path itself is tested against an S3 stand-in);
* the Prometheus Operator: with ``observability``, a Prometheus and a Pushgateway started from the
  overlay's PodMonitor, ServiceMonitor and PrometheusRule (cli/topology/observability.py), and the
  riskops-ui Deployment over the drift history the monitor writes in the home (the cluster's volume).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets as tokens
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from cli.topology import observability as obs
from cli.topology.manifests import Workload, arg, render, set_arg, workload
from riskops.pii import pii_key
from riskops.registry.store import ModelRegistry
from riskops.settings import MODEL_NAME, Paths
from serving.environment import server_environment

log = logging.getLogger(__name__)

SERVICE_NAME = "risk-model"  # the InferenceService's name in k8s/base


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Process:
    name: str
    proc: subprocess.Popen
    log: Path
    url: str | None = None
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


class ClusterTopology:
    """Start what `k8s/overlays/<overlay>` deploys as processes over `home` (a built home: Feast
    repo, a champion in the registry); `stop` (or leaving the `with`) stops them all, SIGTERM first.

    Args:
        transformers: transformer replicas (the prod overlay autoscales 2-10).
        startup_s: how long a server may take to answer ready.
        serving_settings: ServingConfig fields given to the transformers as a serving.yaml (what a
            site would mount), e.g. a shorter ``log_segment_seconds`` so the monitor sees traffic
            sooner. ``server_cpu: off`` is always set (the predictor gets that one too).
        observability: also start Prometheus (the overlay's alert rules, scraping every server),
            the Pushgateway the monitor pushes its verdicts to, and riskops-ui (Evidently's UI over
            the drift history); see `prometheus_url`, `ui_url`.
    """

    def __init__(
        self,
        home: Paths,
        overlay: str = "dev",
        transformers: int = 2,
        startup_s: float = 300.0,
        serving_settings: dict | None = None,
        observability: bool = False,
    ):
        self.home, self.overlay, self.replicas, self.startup_s = home, overlay, transformers, startup_s
        # ServingConfig fields for the transformers on top of the manifests' (a site's serving.yaml)
        # pods with a CPU quota never pin themselves (serving/cpus.py); processes sharing this
        # machine must not either, or every server would pin to the same CPU
        self.serving_settings = {"server_cpu": "off", **(serving_settings or {})}
        self.root = home.root / "topology"
        self.store = self.root / "object-store"  # stands in for the S3 bucket
        self.log_uri = (self.store / "prediction-log").as_uri() + "/"
        self.processes: list[Process] = []
        self.redis_port = free_port()
        self.secrets = {
            "pii-key": pii_key().decode(),  # the key this home's features were hashed with
            "redis-password": tokens.token_hex(16),
            "s3-access-key": "local",
            "s3-secret-key": "local",
        }
        self._docs: list[dict] = []
        self.observability = observability
        self.pushgateway_url: str | None = None  # with observability: where the monitor pushes
        self.prometheus_url: str | None = None

    # -- the processes ---------------------------------------------------------------------
    def start(self) -> ClusterTopology:
        self._docs = render(self.overlay)
        self.root.mkdir(parents=True, exist_ok=True)
        if self.observability:
            self.pushgateway_url = f"http://127.0.0.1:{free_port()}"
        self._start_redis()
        predictor = self._start_predictor()
        for i in range(self.replicas):
            self._start_transformer(i, predictor)
        for p in self.processes:
            if p.url is not None:
                self._wait_ready(p)
        if self.observability:
            self._start_observability()
        return self

    def _start_observability(self) -> None:
        """Prometheus and the Pushgateway (cli/topology/observability.py); ready when this returns."""
        prometheus, pushgateway = obs.binaries()
        root = self.root / "prometheus"
        pods = {p.name: p.url for p in self.processes if p.url is not None}
        config = obs.write_prometheus_files(root, self._docs, pods, self.pushgateway_url)
        env = server_environment(os.environ)
        pgw_address = self.pushgateway_url.removeprefix("http://")
        self._spawn("pushgateway", [pushgateway, f"--web.listen-address={pgw_address}", "--persistence.file="],
                    env, self.pushgateway_url)  # fmt: skip
        self.prometheus_url = f"http://127.0.0.1:{free_port()}"
        cmd = [prometheus, f"--config.file={config}", f"--storage.tsdb.path={root / 'tsdb'}",
               f"--web.listen-address={self.prometheus_url.removeprefix('http://')}"]  # fmt: skip
        self._spawn("prometheus", cmd, env, self.prometheus_url)
        for p in self.processes[-2:]:
            self._wait_ready(p, path="/-/ready")
        self._start_ui()

    def _start_ui(self) -> None:
        """The riskops-ui Deployment: Evidently's UI over the drift history, which the monitor job
        writes under the home here (the cluster's volume); ready when this returns."""
        w = workload(self._docs, "Deployment", "riskops-ui", self.secrets)
        port = free_port()
        cmd = [sys.executable, "-m", "cli.main", *w.command[1:]] if w.command[:1] == ["riskops"] else w.command
        cmd = set_arg(cmd, "--workspace", str(self.home.root / "evidently"))
        cmd = set_arg(set_arg(cmd, "--host", "127.0.0.1"), "--port", str(port))
        ui = self._spawn("ui", cmd, self._env(w, "ui"), f"http://127.0.0.1:{port}")
        self._wait_ready(ui, path="/api/projects")

    @property
    def ui_url(self) -> str | None:
        """riskops-ui (Evidently's UI over the drift history), with ``observability``."""
        return next((p.url for p in self.processes if p.name == "ui"), None)

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.processes if p.name.startswith("transformer") and p.url]

    @property
    def redis_url(self) -> str:
        return f"redis://:{self.secrets['redis-password']}@127.0.0.1:{self.redis_port}/0"

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str], url: str | None = None) -> Process:
        logfile = self.root / f"{name}.log"
        with open(logfile, "ab") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=self.root)
        p = Process(name, proc, logfile, url, cmd, env)
        self.processes.append(p)
        log.info("started %s (pid %d): %s", name, proc.pid, " ".join(cmd))
        return p

    def _env(self, w: Workload, pod: str) -> dict[str, str]:
        """The container's environment, cluster names rewritten for this machine."""
        env = server_environment(os.environ)
        env.update(w.env)
        env["RISKOPS_HOME"] = str(self.root / "pods" / pod)
        env.pop("AWS_ENDPOINT_URL", None)  # the object store is a local folder here
        env.pop("FEAST_S3_ENDPOINT_URL", None)
        if "RISKOPS_PREDICTION_LOG_URI" in env:
            env["RISKOPS_PREDICTION_LOG_URI"] = self.log_uri
        env.pop("RISKOPS_PUSHGATEWAY_URL", None)  # the cluster's Service name: the local one, or none
        if self.pushgateway_url:
            env["RISKOPS_PUSHGATEWAY_URL"] = self.pushgateway_url
        if "RISKOPS_REDIS_URL" in env:
            env["RISKOPS_REDIS_URL"] = env["RISKOPS_REDIS_URL"].replace(
                "@redis:6379", f"@127.0.0.1:{self.redis_port}"
            )
        return env

    @staticmethod
    def _python(command: list[str]) -> list[str]:
        return [sys.executable, *command[1:]] if command and command[0] == "python" else command

    def _start_redis(self) -> None:
        w = workload(self._docs, "StatefulSet", "redis", self.secrets)
        data = self.root / "redis"
        data.mkdir(exist_ok=True)
        args = set_arg(w.args, "--dir", str(data))
        args += ["--port", str(self.redis_port), "--bind", "127.0.0.1"]
        self._spawn("redis", [*w.command, *args], server_environment(os.environ))
        import redis

        client = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                if client.ping():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server did not answer: {(self.root / 'redis.log').read_text()[-2000:]}"
                )
            time.sleep(0.1)

    def _start_predictor(self, name: str = "predictor", follow: str = "champion") -> Process:
        w = workload(self._docs, "InferenceService", SERVICE_NAME, self.secrets, part="predictor")
        champion = ModelRegistry(self.home.registry, MODEL_NAME).resolve(follow)
        port = free_port()
        args = set_arg(w.args, "--model_dir", str(champion.path))  # the storage initializer's download
        args = set_arg(args, "--http_port", str(port))
        policy_mount = arg(w.args, "--policy_file")
        if policy_mount is not None:
            args = set_arg(args, "--policy_file", str(self._write_mounted(w, policy_mount, name)))
        # KServe rolls a new predictor out when a promotion patches the storage URI; here the
        # predictor follows the registry's champion alias instead (hot swap)
        args += ["--registry", str(self.home.registry), "--follow", follow, "--bind_host", "127.0.0.1"]
        args += self._local_server_args(predictor=True)
        env = self._env(w, name)
        env.pop("STORAGE_URI", None)
        return self._spawn(name, [*self._python(w.command), *args], env, f"http://127.0.0.1:{port}")

    def _start_transformer(self, i: int | str, predictor: Process) -> Process:
        w = workload(self._docs, "InferenceService", SERVICE_NAME, self.secrets, part="transformer")
        port = free_port()
        args = set_arg(w.args, "--feature_repo", str(self.home.feature_repo))
        args = set_arg(args, "--http_port", str(port))
        # KServe passes the predictor's address to the transformer
        args += ["--predictor_host", predictor.url.removeprefix("http://"), "--bind_host", "127.0.0.1"]
        args += self._local_server_args()
        name = f"transformer-{i}" if isinstance(i, int) else i
        return self._spawn(
            name, [*self._python(w.command), *args], self._env(w, name), f"http://127.0.0.1:{port}"
        )

    def _local_server_args(self, predictor: bool = False) -> list[str]:
        """What a pod has by itself and processes on one machine do not: its own network namespace
        (each pod's gRPC port 8081 is its own: off here, the topology speaks REST) and CPUs."""
        site = self.root / "serving.yaml"
        settings = {k: v for k, v in self.serving_settings.items() if not predictor or k == "server_cpu"}
        target = site if not predictor else self.root / "serving-predictor.yaml"
        target.write_text(yaml.safe_dump(settings, sort_keys=False))
        return ["--enable_grpc", "false", "--serving_config", str(target)]

    def _write_mounted(self, w: Workload, path: str, pod: str) -> Path:
        """A ConfigMap file the container reads at `path`, written under the pod's local folder."""
        folder, name = path.rsplit("/", 1)
        data = w.files.get(folder)
        if data is None or name not in data:
            raise KeyError(f"{w.name}: nothing mounted at {path}")
        local = self.root / "pods" / pod / "mounts" / folder.strip("/") / name
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(data[name])
        return local

    def _wait_ready(self, p: Process, path: str = "/v2/health/ready") -> None:
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if p.proc.poll() is not None:
                raise RuntimeError(f"{p.name} exited with {p.proc.returncode}:\n{p.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{p.url}{path}", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"{p.name} not ready after {self.startup_s:.0f}s:\n{p.log.read_text()[-3000:]}")

    # -- KServe's canary revision -------------------------------------------------------------
    def start_canary(self) -> str:
        """A canary revision beside the running one, as KServe starts on a `canaryTrafficPercent`
        rollout: a predictor of the registry's ``challenger`` and a transformer in front of it
        (sharing Redis and the log store). Returns the transformer's URL; the front splits traffic."""
        predictor = self._start_predictor("canary-predictor", follow="challenger")
        transformer = self._start_transformer("canary-transformer", predictor)
        for p in (predictor, transformer):
            self._wait_ready(p)
        return transformer.url

    def stop_canary(self) -> None:
        """The canary revision goes (promoted: the main revision now serves its model; rolled back)."""
        canary = [p for p in self.processes if p.name.startswith("canary-")]
        for p in canary:
            p.proc.send_signal(signal.SIGTERM)
        for p in canary:
            try:
                p.proc.wait(30)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait(10)
            self.processes.remove(p)

    def restart(self, name: str) -> Process:
        """Start process `name` again as before (same command, port and pod folder), as the kubelet
        restarts a container that died; waits until it is ready."""
        old = next(p for p in self.processes if p.name == name)
        if old.proc.poll() is None:
            raise RuntimeError(f"{name} is still running (pid {old.proc.pid})")
        self.processes.remove(old)
        new = self._spawn(name, old.cmd, old.env, old.url)
        if new.url is not None:
            self._wait_ready(new)
        return new

    # -- the monitor CronJob -----------------------------------------------------------------
    def monitor_job(self) -> tuple[list[str], dict[str, str]]:
        """The CronJob's command and environment: it reads the shipped log, and the home's registry
        (the cluster's model store); retraining runs on kfp.local instead of the KFP API."""
        w = workload(self._docs, "CronJob", "riskops-monitor", self.secrets)
        env = self._env(w, "monitor")
        env["RISKOPS_HOME"] = str(self.home.root)
        config_path = env.get("RISKOPS_MONITOR_CONFIG", "/etc/riskops/monitor/monitor.yaml")
        local = self._write_mounted(w, config_path, "monitor")
        config = yaml.safe_load(local.read_text()) or {}
        config.setdefault("retrain", {})["mode"] = "local"
        reports = config.setdefault("reports", {})
        if str(reports.get("workspace", "")).startswith("/"):  # the CronJob's volume: a folder of the home
            reports["workspace"] = "evidently"  # (riskops-ui serves the same folder: _start_ui)
        local.write_text(yaml.safe_dump(config, sort_keys=False))
        env["RISKOPS_MONITOR_CONFIG"] = str(local)
        env.pop("KF_PIPELINES_SA_TOKEN_PATH", None)
        command = w.command
        if command and command[0] == "riskops":
            command = [sys.executable, "-m", "cli.main", *command[1:]]
        return [*command, *w.args], env

    def monitor_schedule(self) -> str | None:
        return workload(self._docs, "CronJob", "riskops-monitor", self.secrets).schedule

    def run_monitor(self, timeout_s: float = 3600.0) -> subprocess.CompletedProcess:
        cmd, env = self.monitor_job()
        return subprocess.run(cmd, env=env, cwd=self.root, capture_output=True, text=True, timeout=timeout_s)

    # -- stopping ------------------------------------------------------------------------------
    def stop(self) -> None:
        for p in reversed(self.processes):
            if p.proc.poll() is None:
                p.proc.send_signal(signal.SIGTERM)
        for p in reversed(self.processes):
            try:
                p.proc.wait(30)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait(10)
        self.processes.clear()

    def __enter__(self) -> ClusterTopology:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
