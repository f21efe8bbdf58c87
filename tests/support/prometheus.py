"""A real Prometheus server and Pushgateway (the OS packages) for the tests, on free ports, as subprocesses.

`make test` and `.ci/run` install them (tools/install_os_packages.sh); without them the tests that
need them fail with a message that says so. The Debian package's own daemon is never used.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml

from support.servers import free_port


def _binary(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise RuntimeError(f"{name} is not installed: run `make test` (it installs the OS packages)")
    return exe


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/-/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{proc.args[0]} not ready after {timeout}s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def _running(root: Path, name: str, port: int, cmd: list[str]) -> Iterator[str]:
    """`cmd` as a subprocess logging under `root`; yields its URL once /-/ready answers, then stops it."""
    log = root / f"{name}-{port}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, log)
        yield url
    finally:
        _stop(proc)


@contextlib.contextmanager
def running_pushgateway(root: Path) -> Iterator[str]:
    """`prometheus-pushgateway` on a free port, nothing persisted; yields its URL."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    cmd = [_binary("prometheus-pushgateway"), f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="]
    with _running(root, "pushgateway", port, cmd) as url:
        yield url


@contextlib.contextmanager
def running_prometheus(
    root: Path,
    targets: dict[str, list[str]],
    rule_files: list[Path] = (),
    honor_labels: tuple[str, ...] = (),
    interval: str = "1s",
) -> Iterator[str]:
    """`prometheus` on a free port scraping `targets` (job -> ["host:port", ...]) every `interval`,
    evaluating `rule_files` as often; `honor_labels` names the jobs whose own labels win (a
    Pushgateway's). Yields its URL."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": job, "honor_labels": job in honor_labels, "static_configs": [{"targets": hosts}]}
            for job, hosts in targets.items()
        ],
    }
    config_file = root / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [
        _binary("prometheus"),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={root / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with _running(root, "prometheus", port, cmd) as url:
        yield url


def query(url: str, promql: str) -> list[dict]:
    """The instant vector (or scalar, as one sample) of `promql` now; raises on a query error."""
    r = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10)
    body = r.json()
    if body.get("status") != "success":
        raise AssertionError(f"query failed: {promql}: {body.get('error')}")
    data = body["data"]
    if data["resultType"] in ("scalar", "string"):
        return [{"metric": {}, "value": data["result"]}]
    return data["result"]


def alerts(url: str) -> list[dict]:
    """Prometheus' active alerts (pending and firing)."""
    return httpx.get(f"{url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]


def wait_for(check, timeout: float, every: float = 1.0, what: str = "condition"):
    """Call `check()` until it returns something truthy (returned); AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not seen within {timeout:.0f}s (last: {last!r})")
