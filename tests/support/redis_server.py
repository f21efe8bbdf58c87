"""A real `redis-server` (the OS package) for the tests, on a free port, as a subprocess.

`make test` and `.ci/run` install it (tools/install_os_packages.sh); without it the tests that need
it fail with a message that says so.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from support.servers import free_port


@dataclass
class RedisServer:
    """A running redis-server: `url`, and `stop()` / `start()` to take it away and bring it back
    (with `persistent`, the append-only file keeps the data across the restart)."""

    root: Path
    persistent: bool = False
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)

    @classmethod
    def existing(cls, url: str) -> RedisServer:
        """A server someone else runs (CI's), at redis://host:port/db on this machine."""
        port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        return cls(Path("."), port=port)

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed: run `make test` (it installs the OS packages)")
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root), "--save", ""]
        cmd += ["--appendonly", "yes" if self.persistent else "no", "--appendfsync", "always"]
        log = open(self.root / "redis.log", "ab")  # noqa: SIM115 - the server process owns it
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError):
                if self.client().ping():
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{(self.root / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING within 20 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.proc = None


@contextlib.contextmanager
def running_redis(root: Path, persistent: bool = False) -> Iterator[RedisServer]:
    server = RedisServer(root, persistent)
    server.start()
    try:
        yield server
    finally:
        server.stop()
