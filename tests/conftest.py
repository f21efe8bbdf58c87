"""Shared test setup: offline switches, an isolated RISKOPS_HOME per test, the benchmark scripts.

The suites: tests/unit (functions and classes in-process), tests/integration (real servers, Feast,
GX, KFP local, manifests, subprocesses; its conftest starts the model server), tests/e2e (whole
pipelines and the drift loop). Helpers they share live in tests/support; tests never import each
other. `slow` marks tests over ~30 s; `make test-fast` leaves them out.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path

import pytest

from riskops.settings import use_offline_environment

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

# No network at run time, in tests too.
use_offline_environment()


@pytest.fixture(autouse=True)
def riskops_home(tmp_path, monkeypatch):
    """Every test gets its own home folder, so runs never share registry/feature state."""
    home = tmp_path / "riskops-home"
    monkeypatch.setenv("RISKOPS_HOME", str(home))
    return home


@contextlib.contextmanager
def _benchmark_script(name: str):
    """A script of benchmarks/ imported as a module (the scripts import each other by name)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def bench_quality():
    with _benchmark_script("bench_quality") as module:
        yield module


@pytest.fixture(scope="module")
def cv_quality():
    with _benchmark_script("cv_quality") as module:
        yield module


@pytest.fixture(scope="module")
def bench_serving():
    with _benchmark_script("bench_serving") as module:
        yield module


@pytest.fixture
def count_wakeups():
    """`install(loop) -> count()`: counts the loop's `call_soon_threadsafe` calls from then on
    (how another thread hands a result back to it, each one waking it)."""

    def install(loop):
        calls = 0
        plain = loop.call_soon_threadsafe

        def counting(*args, **kwargs):
            nonlocal calls
            calls += 1
            return plain(*args, **kwargs)

        loop.call_soon_threadsafe = counting
        return lambda: calls

    return install


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One real redis-server (the OS package) for the session: the one `.ci/run` started
    ($RISKOPS_TEST_REDIS_URL), else one started here; tests that share it flush it first."""
    from support.redis_server import RedisServer, running_redis

    url = os.environ.get("RISKOPS_TEST_REDIS_URL")
    if url:
        yield RedisServer.existing(url)
        return
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server) -> str:
    """The session's Redis, emptied for this test."""
    redis_server.client().flushall()
    return redis_server.url
