"""Serving benchmark, part 5 (`--topology`): the cluster's topology beside the floor and the embedded server.

`cli.topology.processes.ClusterTopology` starts what `k8s/` deploys, as processes over the
benchmark's home: Redis (the shared entity state), one predictor, N transformer replicas (REST v1
to the predictor). There is no front process: the load generator is the round-robin front, spreading
the requests over the transformers as the cluster's Service would. The floor (a bare KServe model
returning a constant) and the embedded server (`python -m serving`: model and per-process state in
one process) stay up and are measured in the same phases with the same client code:

* c1: sequential requests, rounds alternating floor / embedded / topology -> p50/p99;
* cost: a fixed load (--cost-requests at --cost-concurrency, closed loop: no server is pushed past
  what it can answer); the CPU of every server process (utime + stime, and its children's, from
  /proc/<pid>/stat, clock ticks) read before and after (after a 1 s settle for the pushes and log
  writes the load left) -> CPU ms per answered transaction, per process and in all;
* freshness across replicas (topology only): a new user's transaction scored on replica A; right
  after A's answer a separate Redis client reads the user's ``c:1h`` counter until it holds the
  transaction (visible - acknowledged: the staleness B would see; the state script runs before A
  answers, so the first read finds it and the figure is that read's round trip); then the user's
  next transaction goes to replica B, and B's prediction log must show it counted
  (``user_txn_count_1h`` >= 1, not degraded). A's answer -> B's answer is reported beside;
* open loop at --rps (last: a server it overloads works through its backlog afterwards), latency
  from the scheduled send time, errors, degraded answers.

The servers pin themselves with ``server_cpu: auto`` (serving/cpus.py): here all three topology
processes would take CPU 0. The pods `k8s/` ships run under a CPU quota, where nothing pins, so the
benchmark lets the topology's threads run on every CPU (`unpin`). The goals, the capacity model and
the table are in serving_report.py (`evaluate_topology_goals`, `capacity_model`, `render_topology`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
from serving_load import Bodies, batch_stats, http_client, pct, scrape
from serving_report import capacity_model, evaluate_topology_goals
from serving_servers import MODEL, log

FRONT = "the load generator, round-robin over the transformer replicas (no front process)"
SETTLE_S = 1.0  # after a load, before reading CPU: pushes and log writes the load left to do


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `--topology` flags of bench_serving.py."""
    p.add_argument(
        "--topology",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the cluster's topology: Redis, the predictor, transformer replicas",
    )
    p.add_argument("--topology-replicas", type=int, default=2, help="transformer replicas")
    p.add_argument("--cost-requests", type=int, default=1000, help="the fixed load CPU is read around")
    p.add_argument("--cost-concurrency", type=int, default=4)
    p.add_argument("--freshness-probes", type=int, default=100)  # fmt: skip


# -- CPU from /proc -------------------------------------------------------------------------------


def stat_ticks(stat: str) -> int:
    """utime + stime + cutime + cstime (clock ticks) of a /proc/<pid>/stat line; cutime/cstime hold
    the children that exited and were waited for, so a helper ending mid-load is still counted."""
    fields = stat.rsplit(")", 1)[1].split()  # the command name, in parentheses, may hold spaces
    return sum(int(fields[i]) for i in (11, 12, 13, 14))


def tree_ticks(pid: int) -> int:
    """CPU ticks of a process and its live descendants (0 for a process that is gone)."""
    try:
        total = stat_ticks(Path(f"/proc/{pid}/stat").read_text())
        kids = [
            int(k) for t in Path(f"/proc/{pid}/task").iterdir() for k in (t / "children").read_text().split()
        ]
    except OSError:
        return 0
    return total + sum(tree_ticks(k) for k in kids)


def cpu_cost(before: dict[str, int], after: dict[str, int], answered: int, ticks_per_s: float) -> dict:
    """CPU ms per answered request, each process and all together, from ticks read around a load."""
    each = {name: 1000 * (after[name] - before[name]) / ticks_per_s / max(answered, 1) for name in before}
    return {"cpu_ms_per_request": round(sum(each.values()), 4),
            "by_process": {k: round(v, 4) for k, v in each.items()}, "answered": answered}  # fmt: skip


def unpin(pids: list[int]) -> None:
    """Every thread of these processes (so every thread they start later) on all our CPUs."""
    cpus = os.sched_getaffinity(0)
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:  # a thread that ended meanwhile
                pass


# -- load: closed and open loop over one URL, or round-robin over several ---------------------------


def predict_url(base: str) -> str:
    return f"{base}/v1/models/{MODEL}:predict"


async def closed_loop(urls: list[str], bodies: Bodies, n: int, concurrency: int = 1, client: str = "aiohttp"):
    """n requests, `concurrency` in flight, the i-th to urls[i % len(urls)]."""
    lat: list[float] = []
    errors: list[str] = []
    sent = iter(range(n))
    async with http_client(client, concurrency * len(urls)) as post:

        async def worker():
            for i in sent:
                t = time.perf_counter()
                ok, err = await post(predict_url(urls[i % len(urls)]), bodies.next())
                (lat.append(time.perf_counter() - t) if ok else errors.append(err))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"_lat": lat, "errors": len(errors), "error_examples": errors[:3],
            "throughput_rps": round(len(lat) / (time.perf_counter() - started), 1)}  # fmt: skip


async def open_loop(urls: list[str], bodies: Bodies, rps: float, seconds: float) -> dict:
    """serving_load.open_loop's schedule (latency from the scheduled send time), spread over `urls`."""
    n, lat, errors = int(rps * seconds), [], []
    async with http_client("aiohttp", 0) as post:

        async def fire(scheduled: float, url: str, body: bytes):
            ok, err = await post(url, body)
            (lat.append(time.perf_counter() - scheduled) if ok else errors.append(err))

        t0, tasks = time.perf_counter() + 0.1, []
        for i in range(n):
            if (delay := t0 + i / rps - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            tasks.append(
                asyncio.create_task(fire(t0 + i / rps, predict_url(urls[i % len(urls)]), bodies.next()))
            )
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    return {**pct(lat), "offered_rps": rps, "requests": n, "achieved_rps": round(len(lat) / elapsed, 1),
            "errors": len(errors), "error_examples": errors[:3]}  # fmt: skip


def cost_phase(server: dict, bodies: Bodies, args) -> dict:
    """The fixed closed-loop load with every server process's CPU read around it."""
    time.sleep(2)  # the previous phase's background work drains
    before = {name: tree_ticks(pid) for name, pid in server["pids"].items()}
    res = asyncio.run(
        closed_loop(server["urls"], bodies, args.cost_requests, args.cost_concurrency, args.client)
    )
    time.sleep(SETTLE_S)
    after = {name: tree_ticks(pid) for name, pid in server["pids"].items()}
    lat = res.pop("_lat")
    return {
        **cpu_cost(before, after, len(lat), os.sysconf("SC_CLK_TCK")),
        **res,
        "concurrency": args.cost_concurrency,
    }


def open_phase(server: dict, bodies: Bodies, args) -> dict:
    """The open loop at --rps; from /metrics, once the servers answer again (an overloaded one
    works through its backlog first), the answers given degraded and the text cache hits."""
    time.sleep(2)
    metrics = {name: scrape(url) for name, url in server["metrics"].items()}
    res = asyncio.run(open_loop(server["urls"], bodies, args.rps, args.open_seconds))
    started = time.perf_counter()
    stats = {name: batch_stats(m, after) for name, m in metrics.items()
             if (after := _scrape_when_answering(server["metrics"][name])) is not None}  # fmt: skip
    res["drained_s"] = round(time.perf_counter() - started, 1)
    res["degraded"] = sum(s["degraded"] for s in stats.values()) if len(stats) == len(metrics) else None
    res["text_cache_hit_rate"] = {
        k: s["text_cache_hit_rate"] for k, s in stats.items() if s["text_cache_hit_rate"]
    }
    return res


def _scrape_when_answering(url: str, deadline_s: float = 240.0) -> dict | None:
    import httpx

    deadline = time.perf_counter() + deadline_s
    while time.perf_counter() < deadline:
        try:
            return scrape(url)
        except httpx.HTTPError:
            time.sleep(1)
    log(f"  {url}/metrics did not answer in {deadline_s:g} s")
    return None


# -- freshness across replicas -------------------------------------------------------------------------


async def _probes(urls: list[str], redis_client, probes: int, t_base: datetime, client: str) -> list[dict]:
    from riskops.features.shared_state import PREFIX, keys_of
    from riskops.pii import hash_record
    from serving.examples import example_transaction

    out = []
    async with http_client(client, 2) as post:
        for k in range(probes):
            user, t = f"fresh-{uuid.uuid4().hex[:10]}", t_base + timedelta(seconds=2 * k)
            # entities of their own: the probes' timestamps run ahead of the replay's
            first, second = (
                example_transaction(transaction_id=f"{user}-{i}", user_id=user, device_id=user,
                                    merchant_id="fresh-merchant", ip_address="198.51.100.7",
                                    event_timestamp=(t + timedelta(seconds=i)).isoformat())
                for i in (0, 1)
            )  # fmt: skip
            key = PREFIX + "s:user:" + dict(keys_of(hash_record(first)))["user"]  # the state script's key
            ok, err = await post(predict_url(urls[k % len(urls)]), orjson.dumps({"instances": [first]}))
            acked, reads, visible = time.perf_counter(), 0, None
            while ok and visible is None and time.perf_counter() - acked < 1.0:
                reads += 1
                if int(redis_client.hget(key, "c:1h") or 0) >= 1:
                    visible = time.perf_counter() - acked
            ok_b, err_b = await post(
                predict_url(urls[(k + 1) % len(urls)]), orjson.dumps({"instances": [second]})
            )
            out.append({"second": second["transaction_id"], "visible_s": visible, "reads": reads,
                        "b_answer_s": time.perf_counter() - acked, "error": err or err_b})  # fmt: skip
            await asyncio.sleep(0.05)
    return out


def freshness(urls, redis_client, pod_logs: list[Path], probes: int, t_base: datetime, client: str) -> dict:
    """The probes (module doc); the transformers' prediction logs say whether B counted A's transaction."""
    from riskops.monitoring.prediction_log import iter_records

    got = asyncio.run(_probes(urls, redis_client, probes, t_base, client))
    logged = {r["transaction_id"]: r for p in pod_logs for r in iter_records(p)
              if str(r.get("transaction_id", "")).startswith("fresh-")}  # fmt: skip

    def quantiles(seconds: list[float]) -> dict:
        a = np.asarray(seconds) * 1000
        return {f"p{q}": round(float(np.percentile(a, q)), 3) for q in (50, 99)} if len(a) else {}

    return {
        "probes": probes,
        "errors": sum(1 for g in got if g["error"]),
        "counted_by_b": sum(1 for g in got if not g["error"] and counted(logged.get(g["second"]))),
        "visible_ms": quantiles([g["visible_s"] for g in got if g["visible_s"] is not None]),
        "visible_on_first_read": sum(1 for g in got if g["reads"] == 1 and g["visible_s"] is not None),
        "b_answer_ms": quantiles([g["b_answer_s"] for g in got if not g["error"]]),
    }


def counted(record: dict | None) -> bool:
    """A prediction log record whose answer counted one earlier transaction of the user in the hour."""
    features = (record or {}).get("entity_features") or {}
    return bool(record) and not record.get("degraded") and features.get("user_txn_count_1h", 0) >= 1


# -- the phases --------------------------------------------------------------------------------------


def run_topology(home, bodies: Bodies, others: dict[str, dict], args) -> dict:
    """Start the topology over `home`, measure it beside `others` ({"floor": ..., "embedded": ...},
    each {"urls", "pids", "metrics"}), stop it; the figures, goals and capacity model."""
    if shutil.which("redis-server") is None:
        return {
            "ran": False,
            "why": "redis-server is not installed (tools/install_os_packages.sh installs it)",
        }
    import redis

    from cli.topology.processes import ClusterTopology

    started = time.perf_counter()
    out: dict = {"ran": True}
    with ClusterTopology(home, transformers=args.topology_replicas) as topo:
        pids = {p.name: p.proc.pid for p in topo.processes}
        logs = [
            topo.root / "pods" / f"transformer-{i}" / "prediction_log" for i in range(args.topology_replicas)
        ]
        out["setup"] = {"replicas": args.topology_replicas, "front": FRONT, "processes": pids,
                        "startup_s": round(time.perf_counter() - started, 1),
                        "cpu_pinning": "none: every thread on every CPU, as in a pod under a CPU quota",
                        "prediction_logs": [str(p) for p in logs], "shipped_log": topo.log_uri}  # fmt: skip
        unpin([pid for name, pid in pids.items() if name != "redis"])
        log(f"topology up in {out['setup']['startup_s']} s: {pids}")
        predictor = next(p.url for p in topo.processes if p.name == "predictor")
        metrics = {"predictor": predictor, **{f"transformer-{i}": u for i, u in enumerate(topo.urls)}}
        servers = {**others, "topology": {"urls": topo.urls, "pids": pids, "metrics": metrics}}
        # the floor and the topology from the replay's start (Redis has seen none of it); the
        # embedded server goes on where it was (it answers a transaction it has seen from memory)
        loads = {"floor": Bodies(bodies.bodies, cycle=bodies.cycle), "embedded": bodies,
                 "topology": Bodies(bodies.bodies, cycle=bodies.cycle)}  # fmt: skip
        asyncio.run(closed_loop(topo.urls, loads["topology"], args.warmup, 2, args.client))
        runs: dict[str, list[dict]] = {name: [] for name in servers}
        for _ in range(max(1, args.rounds)):  # rounds alternate: each server sees the same background load
            for name, s in servers.items():
                n = max(1, args.c1_requests // max(1, args.rounds))
                runs[name].append(asyncio.run(closed_loop(s["urls"], loads[name], n, 1, args.client)))
        out["c1"] = {k: {**pct([x for r in rs for x in r["_lat"]]), "errors": sum(r["errors"] for r in rs)}
                     for k, rs in runs.items()}  # fmt: skip
        log(f"  c1 p99 ms: { {k: v['p99_ms'] for k, v in out['c1'].items()} }")
        out["cost"] = {name: cost_phase(s, loads[name], args) for name, s in servers.items()}
        log(f"  CPU ms per transaction: { {k: v['cpu_ms_per_request'] for k, v in out['cost'].items()} }")
        last = orjson.loads(loads["topology"].bodies[loads["topology"].i % len(bodies.bodies)])
        t_base = datetime.fromisoformat(last["instances"][0]["event_timestamp"]) + timedelta(days=1)
        client = redis.Redis.from_url(topo.redis_url)
        out["freshness"] = freshness(topo.urls, client, logs, args.freshness_probes, t_base, args.client)
        client.close()
        log(f"  freshness across replicas: {out['freshness']}")
        out["open"] = {name: open_phase(s, loads[name], args) for name, s in servers.items()}
        log(f"  open loop {args.rps:g}/s, (p99 ms, errors): "
            f"{ {k: (v.get('p99_ms'), v['errors']) for k, v in out['open'].items()} }")  # fmt: skip
    out["capacity"] = {k: capacity_model(out["cost"][k]["by_process"]) for k in ("topology", "embedded")}
    out["goals"] = evaluate_topology_goals(out, args.rps)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out
