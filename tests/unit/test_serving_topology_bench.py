"""benchmarks/serving_topology.py and the topology part of serving_report.py: the CPU read from /proc,
the cost and goal arithmetic, the capacity model, the round-robin load (no servers here)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time

import pytest


@pytest.fixture(scope="module")
def topo(bench_serving):
    import serving_topology  # benchmarks/, on the path while the bench_serving fixture is

    return serving_topology


@pytest.fixture(scope="module")
def report(bench_serving):
    import serving_report

    return serving_report


def _stat_line(comm: str, utime: int, stime: int, cutime: int, cstime: int) -> str:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime ...
    return f"4242 ({comm}) S 1 4242 4242 0 -1 4194560 120 0 0 0 {utime} {stime} {cutime} {cstime} 20 0 3 0 99"


def test_stat_ticks_sums_own_and_waited_children_cpu_whatever_the_command_name(topo):
    assert topo.stat_ticks(_stat_line("python", 100, 50, 7, 3)) == 160
    # a command name with spaces and parentheses must not shift the fields
    assert topo.stat_ticks(_stat_line("redis-server (x) 127.0.0.1:6379", 1, 2, 0, 0)) == 3


def test_tree_ticks_counts_a_live_child_and_zero_for_a_gone_process(topo):
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with open(f"/proc/{child.pid}/stat") as fh:  # wait until the child has used some CPU
            while topo.stat_ticks(fh.read()) < 3:
                fh.seek(0)
                time.sleep(0.01)
        child_ticks = topo.tree_ticks(child.pid)
        own = topo.stat_ticks(open(f"/proc/{os.getpid()}/stat").read())
        # the counters only grow, so the tree read after both holds at least their sum
        assert topo.tree_ticks(os.getpid()) >= own + child_ticks >= own + 3
    finally:
        child.kill()
        child.wait()
    assert topo.tree_ticks(child.pid) == 0


def test_cpu_cost_is_ms_per_answered_request_per_process_and_summed(topo):
    cost = topo.cpu_cost({"a": 100, "b": 10}, {"a": 300, "b": 60}, answered=50, ticks_per_s=100)
    # a: 200 ticks = 2 s over 50 requests = 40 ms; b: 50 ticks = 0.5 s -> 10 ms
    assert cost["by_process"] == {"a": 40.0, "b": 10.0}
    assert cost["cpu_ms_per_request"] == 50.0 and cost["answered"] == 50
    assert topo.cpu_cost({"a": 0}, {"a": 5}, answered=0, ticks_per_s=100)["cpu_ms_per_request"] == 50.0


def test_capacity_model_replicas_per_rate(report):
    cap = report.capacity_model(
        {"transformer-0": 1.5, "transformer-1": 1.5, "predictor": 6.0, "redis": 0.3}, utilisation=0.6
    )
    assert cap["cpu_ms_per_transaction"] == {"transformer": 3.0, "predictor": 6.0, "redis": 0.3}
    # 1,000/s x 3 ms = 3 cores of transformers, at 60% each: 5 replicas (3 / 0.6 is 5.000000000000001)
    assert cap["1000/s"]["replicas"] == {"transformer": 5, "predictor": 10}
    assert cap["1000/s"]["redis_cores"] == 0.3 and cap["1000/s"]["redis_primaries"] == 1
    assert cap["1000/s"]["cores_in_all"] == 15.5
    assert cap["10000/s"]["replicas"] == {"transformer": 50, "predictor": 100}
    assert cap["10000/s"]["redis_primaries"] == 5  # 3 cores of Redis: more than one thread
    # one process doing everything (the embedded server): its replicas, no Redis
    embedded = report.capacity_model({"embedded": 2.4})
    assert embedded["1000/s"]["replicas"] == {"embedded": 4} and "redis_cores" not in embedded["1000/s"]


def _results(topology_cpu=1.0, topology_p99=5.0, open_errors=0, counted=20, visible_p99=0.5) -> dict:
    lat = {"p50_ms": 1.0}
    return {
        "ran": True,
        "setup": {"replicas": 2, "front": "the load generator"},
        "c1": {"floor": {**lat, "p99_ms": 1.0}, "embedded": {**lat, "p99_ms": 4.0},
               "topology": {**lat, "p99_ms": topology_p99}},
        "cost": {name: {"cpu_ms_per_request": cpu, "by_process": {name: cpu}, "throughput_rps": 10.0,
                        "answered": 100, "concurrency": 4}
                 for name, cpu in (("floor", 0.5), ("embedded", 2.0), ("topology", topology_cpu))},
        "open": {name: {**lat, "p99_ms": 20.0, "offered_rps": 300.0, "errors": 0, "degraded": 0}
                 for name in ("floor", "embedded")}
        | {"topology": {**lat, "p99_ms": 20.0, "offered_rps": 300.0, "errors": open_errors, "degraded": 0}},
        "freshness": {"probes": 20, "counted_by_b": counted, "visible_ms": {"p50": 0.2, "p99": visible_p99},
                      "visible_on_first_read": 20, "b_answer_ms": {"p50": 5.0, "p99": 9.0}, "errors": 0},
    }  # fmt: skip


def test_topology_goals_compare_with_the_floor_and_show_the_embedded_server(report):
    goals = report.evaluate_topology_goals(_results(), rps=300)
    assert [g["pass"] for g in goals] == [True, True, True, True]
    cost, c1, _, fresh = goals
    assert cost["value"] == 2.0 and cost["embedded"] == 4.0 and cost["embedded_pass"] is False
    assert c1["value"] == 5.0 and c1["embedded"] == 4.0
    assert fresh["embedded"] is None and fresh["embedded_pass"] is None  # one process: nothing to share

    failing = report.evaluate_topology_goals(
        _results(topology_cpu=1.5, topology_p99=11.0, open_errors=1, counted=19), rps=300
    )
    assert [g["pass"] for g in failing] == [False, False, False, False]  # 3x, 11x, an error, a probe B missed
    assert not report.evaluate_topology_goals(_results(visible_p99=12.0), rps=300)[3]["pass"]


def test_render_topology_prints_goals_and_capacity_or_why_it_did_not_run(report):
    r = _results()
    r["goals"] = report.evaluate_topology_goals(r, rps=300)
    r["capacity"] = {"topology": report.capacity_model({"transformer-0": 1.0, "predictor": 1.0, "redis": 0.1}),
                     "embedded": report.capacity_model({"embedded": 0.6})}  # fmt: skip
    table = report.render_topology(r)
    assert "| CPU ms per transaction vs floor | 2.0 | 4.0 (NO) | <= 2.5x | yes |" in table
    assert "| 1000/s | 2 | 2 | 0.1 (1) | 3.5 | 1 |" in table
    assert report.render_topology({"ran": False, "why": "--no-topology"}).endswith("not run (--no-topology)")


def test_counted_needs_an_undegraded_answer_that_saw_the_earlier_transaction(topo):
    assert topo.counted({"degraded": False, "entity_features": {"user_txn_count_1h": 1}})
    assert not topo.counted({"degraded": True, "entity_features": {"user_txn_count_1h": 1}})
    assert not topo.counted({"degraded": False, "entity_features": {"user_txn_count_1h": 0}})
    assert not topo.counted(None)


def test_the_load_goes_round_robin_over_the_replicas(topo, monkeypatch):
    sent: list[str] = []

    @contextlib.asynccontextmanager
    async def fake_client(client, concurrency):
        async def post(url, body):
            sent.append(url)
            return True, ""

        yield post

    monkeypatch.setattr(topo, "http_client", fake_client)
    bodies = topo.Bodies([b"{}"] * 3)
    res = asyncio.run(topo.closed_loop(["http://a", "http://b"], bodies, 7, concurrency=3))
    assert len(res["_lat"]) == 7 and res["errors"] == 0 and bodies.i == 7
    assert sorted(sent) == sorted([topo.predict_url("http://a")] * 4 + [topo.predict_url("http://b")] * 3)
    sent.clear()
    res = asyncio.run(topo.open_loop(["http://a", "http://b"], bodies, rps=2000, seconds=0.004))
    assert res["requests"] == 8 and res["n"] == 8
    assert sent == [topo.predict_url(u) for u in ["http://a", "http://b"] * 4]
