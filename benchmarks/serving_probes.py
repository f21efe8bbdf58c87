"""Serving benchmark, part 3: the probes of our server alone (`--c32-probe`, `--c1-probe`) and CPU accounting."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path

from serving_load import HEADERS, PREPROCESS_COUNT, Bodies, batch_stats, closed_loop, merge_runs, pct, scrape
from serving_report import write_results
from serving_servers import MODEL, feed_catalogue, free_port, log, start_server, stop_server


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """Direct child processes of a process (Linux /proc), e.g. the server's Feast pusher."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def _tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """(the process's own CPU seconds, its live children's) -- children that exited are not counted."""
    kids = 0.0
    for kid in _children(pid):
        try:
            kids += _cpu_seconds(kid)
        except OSError:  # exited meanwhile
            pass
    return _cpu_seconds(pid), kids


def _machine_idle() -> tuple[int, int]:
    """(all jiffies, idle + iowait jiffies) of the whole machine."""
    v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(v), v[3] + v[4]


def c32_probe(make_cmd, home_root: Path, work: Path, bodies: Bodies, results: dict, args) -> int:
    """Our server alone under the c32 closed loop, and where the machine's CPU went meanwhile.

    (Over 80 lines: starting the N servers, the loop and the CPU accounting share one try/finally.)

    With --probe-servers N > 1: N independent servers (copies of the home), each sent the
    transactions of its share of the users (crc32(user_id) % N) over 32/N connections: what
    entity-affine routing over N processes could give on this machine.
    """
    import resource
    import zlib

    n = max(1, args.probe_servers)
    homes = [home_root] + [work / f"home{k}" for k in range(1, n)]
    for h in homes[1:]:
        shutil.copytree(home_root, h)
    shares: list[list[bytes]] = [[] for _ in range(n)]
    for body in bodies.bodies:
        user = json.loads(body)["instances"][0].get("user_id", "")
        shares[zlib.crc32(str(user).encode()) % n].append(body)
    ports = [free_port() for _ in range(n)]
    procs = []
    try:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        chosen = any(item.startswith("server_cpu=") for item in args.set)
        for k, (h, port) in enumerate(zip(homes, ports, strict=True)):
            cmd = make_cmd(port, h)
            if n > 1 and cpus and not chosen:  # each server on a CPU of its own, not all on "auto"'s one
                cmd += ["--set", f"server_cpu={cpus[k % len(cpus)]}"]
            procs.append(start_server(cmd, port, work / f"ours{k}.log"))
        predicts = [f"http://127.0.0.1:{port}/v1/models/{MODEL}:predict" for port in ports]
        if not args.no_catalogue:
            for port in ports:
                results["catalogue"] = feed_catalogue(f"http://127.0.0.1:{port}", args.rows, args.seed)
        loads = [Bodies(share) for share in shares]

        async def run(seconds: float | None, requests: int | None, keep: bool) -> list[dict]:
            return await asyncio.gather(
                *(
                    closed_loop(u, b, 32 // n, seconds, requests, keep, client=args.client)
                    for u, b in zip(predicts, loads, strict=True)
                )
            )

        asyncio.run(run(None, args.warmup * 5 // n, False))
        log(f"server pids {[p.pid for p in procs]}: measuring {args.c32_seconds:g} s at concurrency 32")
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        metrics0 = [scrape(b) for b in bases]
        server0, machine0 = [_tree_cpu_seconds(p.pid) for p in procs], _machine_idle()
        client0 = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        runs = asyncio.run(run(args.c32_seconds, None, True))
        wall = time.perf_counter() - started
        client1 = resource.getrusage(resource.RUSAGE_SELF)
        server1, machine1 = [_tree_cpu_seconds(p.pid) for p in procs], _machine_idle()
        metrics1 = [scrape(b) for b in bases]
    finally:
        for proc in procs:
            stop_server(proc)
    client = (client1.ru_utime + client1.ru_stime - client0.ru_utime - client0.ru_stime) / wall
    idle_share = (machine1[1] - machine0[1]) / max(1, machine1[0] - machine0[0])
    res = merge_runs([{**r, "seconds": wall} for r in runs])
    res["seconds"], res["throughput_rps"] = round(wall, 2), round(sum(r["throughput_rps"] for r in runs), 1)
    res["throughput_rps_per_server"] = res.pop("throughput_rps_per_round")
    res["servers"] = n
    res["cpu_cores"] = {
        "server_processes": [round((b[0] - a[0]) / wall, 2) for a, b in zip(server0, server1, strict=True)],
        # the servers' child processes (the Feast reader and pusher, serving/feast_process.py)
        "server_children": [round((b[1] - a[1]) / wall, 2) for a, b in zip(server0, server1, strict=True)],
        "load_generator": round(client, 2),
        "idle": round(idle_share * (os.cpu_count() or 1), 2),
    }
    # the first server's stages and collector pauses over the measured seconds
    res.update(batch_stats(metrics0[0], metrics1[0]))
    def delta(key: str) -> float:
        return metrics1[0].get(key, 0.0) - metrics0[0].get(key, 0.0)

    answered = delta(PREPROCESS_COUNT)
    res["gc_ms_per_request"] = {
        g: round(1000 * delta(f'riskops_gc_pause_seconds_sum{{generation="{g}"}}') / answered, 4) if answered else None
        for g in "012"
    }
    results["ours"] = {"c32": res}
    return write_results(
        results,
        f"\nours ({n} server{'s' if n > 1 else ''}), c32 closed loop: {res['throughput_rps']} req/s"
        f" {res['throughput_rps_per_server'] if n > 1 else ''}, p50 {res['p50_ms']} ms, p99 {res['p99_ms']} ms,"
        f" {res['errors']} errors; CPU cores: {res['cpu_cores']}; collector pauses per request by generation"
        f" (ms): {res['gc_ms_per_request']}; mean batch rows {res['mean_batch_rows']}",
        work,
        args,
    )


async def _sequential(url: str, bodies: Bodies, n: int) -> list[tuple[float, str]]:
    """n requests one after the other on one connection: (latency in s, decision) each."""
    import aiohttp

    out: list[tuple[float, str]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        for _ in range(n):
            t = time.perf_counter()
            async with s.post(url, data=bodies.next(), headers=HEADERS) as r:
                payload = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"{r.status}: {payload}")
            out.append((time.perf_counter() - t, payload["predictions"][0]["decision"]))
    return out


def c1_probe(cmd: list[str], work: Path, bodies: Bodies, results: dict, args) -> int:
    """Our server alone, one request at a time: latency by decision and where the slowest ones fall.

    The slowest requests' positions show periodic stalls: evenly spaced positions point at
    something that runs on a timer (the 0.5 s push flush, a collection, a registry poll).
    """
    port = int(cmd[cmd.index("--port") + 1])
    proc = start_server(cmd, port, work / "ours.log")
    try:
        url = f"http://127.0.0.1:{port}"
        if not args.no_catalogue:
            results["catalogue"] = feed_catalogue(url, args.rows, args.seed)
        predict = f"{url}/v1/models/{MODEL}:predict"
        asyncio.run(_sequential(predict, bodies, args.warmup))
        log(f"server pid {proc.pid}: {args.c1_requests} requests one at a time")
        got = asyncio.run(_sequential(predict, bodies, args.c1_requests))
    finally:
        stop_server(proc)
    lat = [t for t, _ in got]
    flagged = [t for t, d in got if d != "approve"]
    slowest = sorted(range(len(lat)), key=lat.__getitem__)[-max(1, len(lat) // 100) :]
    res = {
        **pct(lat),
        "flagged_share": round(len(flagged) / len(lat), 4),
        "flagged": pct(flagged) if flagged else None,
        "approved": pct([t for t, d in got if d == "approve"]),
        "slowest_1pct": [{"position": i, "ms": round(lat[i] * 1000, 2)} for i in sorted(slowest)],
    }
    results["ours"] = {"c1": res}
    return write_results(
        results,
        f"\nours, c1 ({len(lat)} requests): p50 {res['p50_ms']} ms, p95 {res['p95_ms']} ms, p99 {res['p99_ms']} ms,"
        f" max {res['max_ms']} ms; flagged {res['flagged_share']:.1%}; slowest 1% at positions"
        f" {[x['position'] for x in res['slowest_1pct']]}",
        work,
        args,
    )

