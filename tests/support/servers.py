"""The real model server as a subprocess: a home to serve, start/stop, and request helpers.

`tests/integration/conftest.py` turns these into the `served` fixture; tests that need a server of
their own (two side by side, the split transformer/predictor) use `running_server` directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd

from riskops.monitoring.prediction_log import read_prediction_log
from riskops.settings import Paths, paths
from serving.environment import server_environment
from serving.examples import example_transaction

ROOT = Path(__file__).resolve().parents[2]
MODEL = "risk-model"
T_BASE = datetime(2026, 1, 9, 0, 0, tzinfo=UTC)  # after the generated history (starts 2026-01-01)
# what every test server gets unless a test module asks for other settings: quick registry polls,
# and a Feast timeout long enough for a loaded 2-core CI box
BASE_SETTINGS = ("registry_poll_s=0.3", "feast_timeout_s=5")


@dataclass
class Served:
    """A running server: its URL, the home it serves, the process, its log, the champion's folder."""

    url: str
    home: Paths
    proc: subprocess.Popen
    log: Path
    model_dir: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env() -> dict[str, str]:
    """This process's environment with the repository importable (the server runs `-m serving`),
    without the metrics dir importing Feast set here (serving/environment.py)."""
    env = server_environment(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def wait_ready(
    url: str, proc: subprocess.Popen, log: Path, timeout: float = 240.0, path: str = "/v2/health/ready"
) -> None:
    """Poll `url + path` until it answers 200; raise with the log's tail if the process dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not ready after {timeout}s:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (the server drains and exits), then SIGKILL if it does not within 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def build_home(root: Path) -> tuple[Paths, Path]:
    """Synthetic history -> Feast repo (offline + online) -> tiny model -> registry champion.

    Returns the home (under `root/home`) and the trained model's folder (`root/model`).
    """
    from riskops.data.generator import GeneratorConfig, generate
    from riskops.features.build import build_features
    from riskops.registry.store import ModelRegistry
    from riskops.training.finetune import TrainConfig, train_from_training_set

    home = paths(root / "home")
    df = generate(GeneratorConfig(rows=1200, seed=5, days=7))
    result = build_features(df, home.feature_repo)
    trained = train_from_training_set(
        result.training_frame,
        root / "model",
        TrainConfig(encoder="tiny", epochs=1, max_steps=6, max_train_rows=400, progress=False),
    )
    (trained.model_dir / "policy.json").write_text(json.dumps({"review": 0.5, "block": 0.9}))
    registry = ModelRegistry(home.registry)
    mv = registry.register(trained.model_dir)
    registry.set_alias("champion", mv.version)
    return home, trained.model_dir


@contextlib.contextmanager
def running_server(
    root: Path, home: Paths, model_dir: Path, *settings: str, base: tuple[str, ...] = BASE_SETTINGS
) -> Iterator[Served]:
    """`python -m serving` on a free port over `home` with `--set` overrides (`base`, then
    `settings`), its log under `root`; ready when entered, stopped on exit."""
    port = free_port()
    log = root / f"server-{port}.log"
    cmd = [sys.executable, "-m", "serving", "--port", str(port), "--home", str(home.root)]
    for item in (*base, *settings):
        cmd += ["--set", item]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=subprocess_env(), cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
        yield Served(url, home, proc, log, model_dir)
    finally:
        stop(proc)


_counter = iter(range(1_000_000))


def tx(**overrides) -> dict:
    """A valid transaction with a unique id and an increasing timestamp."""
    i = next(_counter)
    base = example_transaction(
        transaction_id=f"t-{uuid.uuid4().hex[:12]}",
        event_timestamp=(T_BASE + timedelta(seconds=i)).isoformat(),
    )
    base.update(overrides)
    return base


def predict(served: Served, instances: list[dict], **kw) -> httpx.Response:
    """POST a v1 predict of `instances` to the served model."""
    return httpx.post(
        f"{served.url}/v1/models/{MODEL}:predict", json={"instances": instances}, timeout=60, **kw
    )


def logged(served: Served) -> pd.DataFrame:
    """The server's prediction log so far."""
    return read_prediction_log(served.home.prediction_log)
