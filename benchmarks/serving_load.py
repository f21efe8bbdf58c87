"""Serving benchmark, part 2: the load generator (closed loop, open loop), scraping /metrics, staleness."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from serving_servers import MODEL, log

# ---------------------------------------------------------------------------------------------
# Load generation
# ---------------------------------------------------------------------------------------------


def pct(lat_s: list[float]) -> dict:
    if not lat_s:
        return {"n": 0}
    a = np.asarray(lat_s) * 1000
    return {
        "n": len(a),
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p95_ms": round(float(np.percentile(a, 95)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "max_ms": round(float(a.max()), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


class Bodies:
    """Request bodies handed out in order; `cycle` = distinct transactions before the replay repeats
    (with shifted times and fresh ids: every entity then is one the server has already seen)."""

    def __init__(self, bodies: list[bytes], cycle: int | None = None) -> None:
        self.bodies = bodies
        self.cycle = cycle or len(bodies)
        self.i = 0

    def first_pass_share(self, start: int, end: int) -> float:
        """Share of the bodies handed out in [start, end) that come from the replay's first pass."""
        return round(max(0, min(end, self.cycle) - start) / (end - start), 3) if end > start else 0.0

    def next(self) -> bytes:
        b = self.bodies[self.i % len(self.bodies)]
        self.i += 1
        return b


HEADERS = {"Content-Type": "application/json"}


CLIENTS = ("aiohttp", "httpx")


@contextlib.asynccontextmanager
async def http_client(client: str, concurrency: int):
    """Yields `post(url, body) -> (ok, error)` over one pooled async HTTP client.

    aiohttp (default) is the leanest async client here: at concurrency 32 it drives the bare floor
    to ~2,500-3,000 req/s. httpx's AsyncClient costs several times more CPU per request and tops
    out near ~450-550 req/s on these two cores, so with it both servers are measured through the
    client's own limit (`--client httpx`, to compare with figures taken with such a client).
    """
    if client == "httpx":
        import httpx

        limits = httpx.Limits(
            max_connections=concurrency or None, max_keepalive_connections=concurrency or None
        )
        async with httpx.AsyncClient(limits=limits, timeout=30) as c:

            async def post(url: str, body: bytes) -> tuple[bool, str]:
                try:
                    r = await c.post(url, content=body, headers=HEADERS)
                except Exception as exc:  # noqa: BLE001
                    return False, f"{type(exc).__name__}: {exc}"
                return (
                    (True, "") if r.status_code == 200 else (False, f"{r.status_code}: {r.content[:200]!r}")
                )

            yield post
        return
    if client != "aiohttp":
        raise ValueError(f"unknown client {client!r}; expected one of {CLIENTS}")
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as s:

        async def post(url: str, body: bytes) -> tuple[bool, str]:
            try:
                async with s.post(url, data=body, headers=HEADERS) as r:
                    payload = await r.read()
                    if r.status != 200:
                        return False, f"{r.status}: {payload[:200]!r}"
                    return True, ""
            except Exception as exc:  # noqa: BLE001
                return False, f"{type(exc).__name__}: {exc}"

        yield post


async def closed_loop(
    url: str,
    bodies: Bodies,
    concurrency: int,
    seconds: float | None,
    requests: int | None,
    keep_latencies: bool = False,
    client: str = "aiohttp",
) -> dict:
    lat: list[float] = []
    errors: list[str] = []
    async with http_client(client, concurrency) as post:
        started = time.perf_counter()
        deadline = started + seconds if seconds else None
        remaining = [requests] if requests else None

        async def worker():
            while True:
                if deadline and time.perf_counter() >= deadline:
                    return
                if remaining is not None:
                    if remaining[0] <= 0:
                        return
                    remaining[0] -= 1
                t = time.perf_counter()
                ok, err = await post(url, bodies.next())
                (lat.append(time.perf_counter() - t) if ok else errors.append(err))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        **pct(lat),
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "throughput_rps": round(len(lat) / elapsed, 1),
        "errors": len(errors),
        "error_examples": errors[:3],
        **({"_lat": lat} if keep_latencies else {}),
    }


async def open_loop(url: str, bodies: Bodies, rps: float, seconds: float) -> dict:
    """Requests scheduled at a fixed rate; latency from the scheduled time (no coordinated omission)."""
    n = int(rps * seconds)
    lat: list[float] = []
    errors: list[str] = []
    late: list[float] = []
    async with http_client("aiohttp", 0) as post:  # unlimited connections: every send goes out on time

        async def fire(scheduled: float, body: bytes):
            late.append(time.perf_counter() - scheduled)
            ok, err = await post(url, body)
            (lat.append(time.perf_counter() - scheduled) if ok else errors.append(err))

        t0 = time.perf_counter() + 0.1
        tasks = []
        for i in range(n):
            scheduled = t0 + i / rps
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(fire(scheduled, bodies.next())))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    return {
        **pct(lat),
        "offered_rps": rps,
        "requests": n,
        "seconds": round(elapsed, 2),
        "achieved_rps": round(len(lat) / elapsed, 1),
        "errors": len(errors),
        "error_examples": errors[:3],
        "send_lateness_p99_ms": round(float(np.percentile(np.asarray(late) * 1000, 99)), 3) if late else None,
    }


def scrape(url: str) -> dict[str, float]:
    import httpx

    out: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        m = re.match(
            r"^((?:riskops|request)_[a-z_]+(?:_sum|_count|_total))(\{[^}]*\})?\s+([0-9.eE+-]+)$", line
        )
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


PREPROCESS_COUNT = 'request_preprocess_seconds_count{model_name="' + MODEL + '"}'


def batch_stats(before: dict, after: dict) -> dict:
    def d(k):
        return after.get(k, 0.0) - before.get(k, 0.0)

    def mean_ms(name: str, labels: str = "") -> float | None:
        n = d(f"{name}_count{labels}")
        return round(1000 * d(f"{name}_sum{labels}") / n, 2) if n else None

    model = '{model_name="' + MODEL + '"}'
    batches = d("riskops_model_batch_rows_count")
    hits, misses = d('riskops_text_cache_total{result="hit"}'), d('riskops_text_cache_total{result="miss"}')
    stages = {
        "preprocess (validate, hash, features)": mean_ms("request_preprocess_seconds", model),
        "predict (batch wait, model frame, model, policy, reasons)": mean_ms(
            "request_predict_seconds", model
        ),
        "postprocess (prediction log fsync, alerts, response)": mean_ms("request_postprocess_seconds", model),
        "feast online read (per read, shared by waiting requests)": mean_ms("riskops_feature_lookup_seconds"),
        "model call per batch (predict_proba + reasons)": mean_ms("riskops_model_batch_seconds"),
        "prediction log write + fsync (per group)": mean_ms("riskops_prediction_log_write_seconds"),
        # the server's collector pauses (serving.gc_control), all generations, per request answered
        "garbage collection (per request)": round(
            1000 * sum(d(f'riskops_gc_pause_seconds_sum{{generation="{g}"}}') for g in "012") / requests, 3
        )
        if (requests := d(f"request_preprocess_seconds_count{model}"))
        else None,
    }
    return {
        "stage_mean_ms": stages,
        "model_batches": int(batches),
        "mean_batch_rows": round(d("riskops_model_batch_rows_sum") / batches, 2) if batches else None,
        "mean_model_batch_ms": round(1000 * d("riskops_model_batch_seconds_sum") / batches, 2)
        if batches
        else None,
        "degraded": int(d("riskops_degraded_total")),
        "text_cache_hit_rate": round(hits / (hits + misses), 3) if hits + misses else None,
    }


def staleness(url: str, repo: Path, probes: int, t_base: datetime) -> dict:
    """Score a new user's transaction, then poll a separate Feast client until its state is visible."""
    import httpx

    from riskops.features.store import online_features, open_store
    from serving.examples import example_transaction

    store = open_store(repo)
    online_features(store, [{"user_id": "warm-up"}])
    values, missed = [], 0
    with httpx.Client(timeout=30) as client:
        for k in range(probes):
            user = f"staleness-{uuid.uuid4().hex[:10]}"
            tx = example_transaction(
                transaction_id=f"stale-{k}-{user}",
                user_id=user,
                event_timestamp=(t_base + timedelta(seconds=k)).isoformat(),
            )
            r = client.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": [tx]})
            acked = time.perf_counter()
            assert r.status_code == 200, r.text
            while True:
                f = online_features(store, [{"user_id": user}])[0]
                now = time.perf_counter()
                if f["user_txn_count_1h"] >= 1:
                    values.append(now - acked)
                    break
                if now - acked > 10:
                    missed += 1
                    break
                time.sleep(0.005)
            time.sleep(0.1)
    a = np.asarray(values)
    return {
        "probes": probes,
        "missed": missed,
        "p50_s": round(float(np.percentile(a, 50)), 3) if len(a) else None,
        "p95_s": round(float(np.percentile(a, 95)), 3) if len(a) else None,
        "max_s": round(float(a.max()), 3) if len(a) else None,
    }



def merge_runs(runs: list[dict], lat_key: str = "_lat") -> dict:
    """Pool the latencies of several rounds; throughput = all answered / all elapsed."""
    lat = [x for r in runs for x in r.pop(lat_key)]
    elapsed = sum(r["seconds"] for r in runs)
    errors = sum(r["errors"] for r in runs)
    out = {**pct(lat), "rounds": len(runs), "seconds": round(elapsed, 2), "errors": errors}
    out["throughput_rps"] = round(len(lat) / elapsed, 1) if elapsed else 0.0
    out["throughput_rps_per_round"] = [r["throughput_rps"] for r in runs]
    out["error_examples"] = [e for r in runs for e in r["error_examples"]][:3]
    return out


def measure_interleaved(urls: dict[str, str], bodies: dict[str, Bodies], args) -> dict:
    """c1 and c32 phases in rounds, floor and ours alternating, so both see the same background load."""
    out: dict = {name: {} for name in urls}
    for name, url in urls.items():  # warm up (model caches, connections)
        asyncio.run(
            closed_loop(
                f"{url}/v1/models/{MODEL}:predict", bodies[name], 4, None, args.warmup, client=args.client
            )
        )
    rounds = max(1, args.rounds)
    for phase, conc in (("c1", 1), ("c32", 32)):
        runs: dict[str, list[dict]] = {name: [] for name in urls}
        before = {name: scrape(url) for name, url in urls.items() if name == "ours"}
        for r in range(rounds):
            for name, url in urls.items():
                start = bodies[name].i
                res = asyncio.run(
                    closed_loop(
                        f"{url}/v1/models/{MODEL}:predict",
                        bodies[name],
                        conc,
                        args.c32_seconds / rounds if conc > 1 else None,
                        None if conc > 1 else max(1, args.c1_requests // rounds),
                        keep_latencies=True,
                        client=args.client,
                    )
                )
                res["load_avg"] = os.getloadavg()[0]
                res["first_pass_share"] = bodies[name].first_pass_share(start, bodies[name].i)
                runs[name].append(res)
                log(
                    f"  {phase} round {r + 1}/{rounds} {name}: p50 {res['p50_ms']} ms, p99 {res['p99_ms']} ms, {res['throughput_rps']} req/s, load {res['load_avg']:.2f}, first pass {res['first_pass_share']:.0%}"
                )
        for name in urls:
            out[name][phase] = merge_runs(runs[name])
            out[name][phase]["load_avg_per_round"] = [round(r["load_avg"], 2) for r in runs[name]]
            # share of each round's requests from the replay's first pass (entities new to the server)
            out[name][phase]["first_pass_share_per_round"] = [r["first_pass_share"] for r in runs[name]]
        if "ours" in before:
            out["ours"][phase].update(batch_stats(before["ours"], scrape(urls["ours"])))
    return out

