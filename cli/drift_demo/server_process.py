"""The model server as a subprocess (`python -m serving`): start it on a free port, wait until ready, stop it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from cli.drift_demo.world import DEMO_DIR
from cli.topology.processes import free_port
from riskops.settings import PROJECT_ROOT, Paths


def _last_error_line(log_file: Path | None) -> str:
    """The server log's last line that says what went wrong (the exception), for the error message."""
    if log_file is None or not log_file.exists():
        return ""
    lines = [ln.strip() for ln in log_file.read_text(errors="replace").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln:
            return ln
    return lines[-1] if lines else ""


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 120.0, log_file: Path | None = None) -> None:
    """Poll `url` until it answers 200; raise RuntimeError (with the log's last error) if the server exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            why = _last_error_line(log_file)
            raise RuntimeError(
                f"the model server exited with code {proc.returncode}"
                + (f": {why}" if why else "")
                + (f" (log: {log_file})" if log_file else "")
            )
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the model server was not ready after {timeout:.0f}s")


class Server:
    """`python -m serving` on a free port, following the champion alias (1 s polls)."""

    def __init__(self, home: Paths, port: int = 0, sets: dict[str, Any] | None = None) -> None:
        self.home = home
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_file = home.root / DEMO_DIR / "server.log"
        self.sets = {"registry_poll_s": 1.0, **(sets or {})}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> None:
        """Start the server and wait until the model is ready (RuntimeError with the log's last error if not)."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "serving", "--port", str(self.port), "--home", str(self.home.root)]
        for k, v in self.sets.items():
            cmd += ["--set", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(PROJECT_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        )
        with open(self.log_file, "w") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(PROJECT_ROOT)
            )  # noqa: S603
        wait_ready(self.proc, f"{self.base}/v2/models/risk-model/ready", timeout, self.log_file)

    def stop(self) -> None:
        """SIGTERM, then kill after 30 s; a no-op when the server is not running."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
