"""Serving benchmark: our model server vs. a bare KServe ModelServer returning a constant (the floor).

Same machine, same async load generator (aiohttp; `--client httpx` for c1/c32), one server at a time, all bound to 127.0.0.1
with gRPC off. The goals compare with the floor on KServe's defaults (asyncio event loop, uvicorn's
access log, KServe's timing middleware). A second floor runs the constant model behind our server's
HTTP front settings (uvloop, neither per-request log: `serving.http.rest_front`), so the table
separates what the front saves from what our own work costs (`--no-front-floor` skips it). Phases:

* concurrency 1: sequential single-transaction v1 requests -> p50/p95/p99 latency;
* concurrency 32, closed loop: 32 clients each send the next request when the last answered ->
  throughput and latency;
* ours only, open loop: requests *scheduled* at a fixed rate (default 300/s) for ~10 s, latency
  measured from each request's scheduled send time (so a stalled server cannot hide queueing),
  error count;
* ours only, staleness: a transaction of a brand-new user is scored, then a separate Feast client
  polls the online store until the pushed state is visible; staleness = visible - acknowledged.

Data: the synthetic generator; the older part builds the Feast repo (offline + online store), the
newer part is replayed in time order as requests (known users and merchants, new ones too).
Before measuring, the replayed world's product catalogue (`riskops.data.generator.product_catalogue`) is
sent to our server's `POST /v1/catalogue`, as a shop's product feed would, so its texts are encoded
before their first order (`--no-catalogue` to measure without).
Model: a trained MiniLM champion from the riskops registry ($RISKOPS_HOME or ./.riskops) when one
exists, else a small model with the tiny encoder trained here (`--encoder` forces a choice); the
result says which. Results: benchmarks/results/serving.json and a table on stdout.

    python benchmarks/bench_serving.py [--rows 14000] [--rps 300] [--set KEY=VALUE ...]
    python benchmarks/bench_serving.py --c32-probe [--probe-servers N] [--set KEY=VALUE ...]  # ours at c32 + CPU split
    python benchmarks/bench_serving.py --c1-probe [--c1-requests 1500] [--set KEY=VALUE ...]  # ours at c1, slowest 1%
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
MODEL = "risk-model"
GOALS = {
    "p99_c1_ratio_max": 10.0,
    "throughput_c32_ratio_min": 0.5,
    "open_p99_ms_max": 100.0,
    "staleness_s_max": 1.0,
}

for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "FEAST_USAGE": "False",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)


# ---------------------------------------------------------------------------------------------
# The floor: a bare KServe model returning a constant
# ---------------------------------------------------------------------------------------------


def run_floor_server(port: int, front: str = "kserve") -> None:
    """front "kserve": KServe's defaults (the goals' floor); "ours": our server's HTTP front settings."""
    sys.argv = sys.argv[:1]  # kserve parses argv at import
    from kserve import Model, ModelServer

    from serving.config import ServingConfig
    from serving.http import front_options, rest_front

    class Constant(Model):
        def __init__(self) -> None:
            super().__init__(MODEL)
            self.ready = True

        async def predict(self, payload, headers=None, response_headers=None):
            return {"predictions": [{"risk_score": 0.5, "decision": "approve"} for _ in payload["instances"]]}

    server = ModelServer(http_port=port, enable_grpc=False, enable_latency_logging=False)
    options = front_options(ServingConfig()) if front == "ours" else {}
    with rest_front("127.0.0.1", **options):
        server.start([Constant()])


# ---------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def registry_minilm() -> tuple[Path, str] | None:
    """The riskops registry's champion, if it is a trained MiniLM model."""
    from riskops.registry.store import ModelRegistry, RegistryError
    from riskops.settings import paths

    try:
        mv = ModelRegistry(paths().registry).resolve("champion")
    except RegistryError:
        return None
    cfg = json.loads((mv.path / "config.json").read_text()) if (mv.path / "config.json").exists() else {}
    return (mv.path, mv.version) if cfg.get("encoder") == "minilm" else None


def setup_home(work: Path, rows: int, encoder: str, model_dir: str | None, seed: int, warm_texts: int):
    """Feast repo from the older half of the data, a model in a fresh registry; returns (home, replay, model)."""
    from riskops.data.generator import GeneratorConfig, generate
    from riskops.features.build import build_features
    from riskops.registry.store import ModelRegistry
    from riskops.settings import paths

    home = paths(work / "home")
    df = generate(GeneratorConfig(rows=rows, seed=seed)).sort_values("event_timestamp", kind="stable")
    df = df.reset_index(drop=True)
    cut = len(df) // 2
    history, replay = df.iloc[:cut], df.iloc[cut:]
    t = time.perf_counter()
    feats = build_features(history, home.feature_repo)
    log(f"Feast repo from {len(history)} transactions in {time.perf_counter() - t:.0f}s")

    model_info: dict
    found = registry_minilm() if encoder in ("auto", "minilm") and not model_dir else None
    if model_dir:
        src, model_info = Path(model_dir), {"source": f"--model-dir {model_dir}"}
    elif found:
        src, model_info = found[0], {"source": f"registry champion {found[1]} ({found[0]})"}
    else:
        enc = "minilm" if encoder == "minilm" else "tiny"
        from riskops.training.finetune import TrainConfig, train_from_training_set

        t = time.perf_counter()
        steps = 30 if enc == "minilm" else None
        trained = train_from_training_set(
            feats.training_frame,
            work / "model",
            TrainConfig(encoder=enc, epochs=1, max_train_rows=3000, max_steps=steps, progress=False),
        )
        src = trained.model_dir
        model_info = {
            "source": f"trained here: {enc} encoder, 1 epoch on {min(3000, len(history))} rows"
            + (f", {steps} steps" if steps else "")
            + f" ({time.perf_counter() - t:.0f}s), val PR-AUC {trained.val_pr_auc:.3f}"
        }
        if not (src / "policy.json").exists():
            (src / "policy.json").write_text(json.dumps({"review": 0.5, "block": 0.9}))
    cfg = json.loads((src / "config.json").read_text())
    model_info.update(
        encoder=cfg.get("encoder"), encoder_layers=(cfg.get("encoder_config") or {}).get("num_hidden_layers")
    )
    registry = ModelRegistry(home.registry)
    mv = registry.register(src)
    registry.set_alias("champion", mv.version)
    if warm_texts > 0:
        # Optional (the product catalogue feed is the default way, see main): replace the copy's
        # warm texts (its training world's) with this world's most frequent history texts.
        from riskops.features.contract import TEXT_COLUMN, build_model_frame
        from riskops.training.model import WARM_TEXTS_FILE

        texts = build_model_frame(history)[TEXT_COLUMN].value_counts().index[:warm_texts].tolist()
        (mv.path / WARM_TEXTS_FILE).write_text(json.dumps(texts))
        model_info["warm_texts"] = (
            f"{len(texts)} most frequent texts of the Feast history (of {history.shape[0]} rows)"
        )
    return home, replay, model_info


def feed_catalogue(url: str, rows: int, seed: int, chunk: int = 2000) -> dict:
    """POST the replayed world's product catalogue to /v1/catalogue, as a shop's product feed would."""
    import httpx

    from riskops.data.generator import GeneratorConfig, product_catalogue

    products = product_catalogue(GeneratorConfig(rows=rows, seed=seed))
    cols = ["product_title", "product_category", "merchant_category"]
    records = products[cols].to_dict("records")
    started = time.perf_counter()
    new = 0
    with httpx.Client(timeout=600) as client:
        for i in range(0, len(records), chunk):
            r = client.post(f"{url}/v1/catalogue", json={"products": records[i : i + chunk]})
            r.raise_for_status()
            new += r.json()["new"]
        state = client.get(f"{url}/v1/catalogue").json()
    return {
        "products": len(records),
        "new_texts": new,
        "cached_in_model": state["cached_in_model"],
        "seconds": round(time.perf_counter() - started, 2),
    }


def request_bodies(replay, n: int) -> list[bytes]:
    """n single-transaction v1 bodies in time order (cycled with shifted times and fresh ids if needed)."""
    import orjson

    cols = [c for c in replay.columns if c not in ("is_fraud", "fraud_type", "order_status")]
    recs = replay[cols].to_dict("records")
    span = replay["event_timestamp"].max() - replay["event_timestamp"].min() + timedelta(seconds=1)
    out = []
    for i in range(n):
        cycle, j = divmod(i, len(recs))
        r = dict(recs[j])
        r["event_timestamp"] = (r["event_timestamp"] + cycle * span).isoformat()
        if cycle:
            r["transaction_id"] = f"{r['transaction_id']}-c{cycle}"
        r = {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        out.append(orjson.dumps({"instances": [r]}))
    return out


def start_server(cmd: list[str], port: int, logfile: Path, timeout: float = 300) -> subprocess.Popen:
    import httpx

    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # this process imported Feast, which set PROMETHEUS_MULTIPROC_DIR to a temp dir of its own:
    # neither server should inherit it (it would keep every metric in mmap files; see serving/__init__)
    from serving import PROMETHEUS_DIR_VARIABLES

    for name in PROMETHEUS_DIR_VARIABLES:
        env.pop(name, None)
    with open(logfile, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{logfile.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"server not ready in {timeout}s:\n{logfile.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


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


_PREPROCESS_COUNT = 'request_preprocess_seconds_count{model_name="' + MODEL + '"}'


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


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


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

    answered = delta(_PREPROCESS_COUNT)
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


def write_results(results: dict, table: str, work: Path, args) -> int:
    """The JSON to --out, the human table to stdout; the work dir removed unless --keep."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(table)
    log(f"wrote {out}")
    if args.keep:
        log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    from riskops.training.model import WARM_TEXTS_LIMIT

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--rows", type=int, default=14_000, help="generated transactions (half history, half replay)"
    )
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--encoder", choices=("auto", "tiny", "minilm"), default="auto")
    p.add_argument("--model-dir", default=None, help="benchmark this model folder instead")
    p.add_argument(
        "--no-catalogue",
        action="store_true",
        help="do not send the world's product catalogue to POST /v1/catalogue before measuring",
    )
    p.add_argument(
        "--warm-texts",
        type=int,
        default=0,
        help="replace the model copy's warm texts with this world's N most frequent history"
        f" texts (at most {WARM_TEXTS_LIMIT}; default 0: keep them)",
    )
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--c1-requests", type=int, default=600)
    p.add_argument("--rounds", type=int, default=3, help="c1/c32 rounds, alternating floor and ours")
    p.add_argument("--c32-seconds", type=float, default=15.0, help="total over the rounds, per server")
    p.add_argument(
        "--client",
        choices=CLIENTS,
        default="aiohttp",
        help="load generator of the c1 and c32 phases (the open loop always uses aiohttp, which keeps"
        " up with the offered rate); httpx is several times costlier per request and becomes the limit at c32",
    )
    p.add_argument("--rps", type=float, default=300.0)
    p.add_argument("--open-seconds", type=float, default=10.0)
    p.add_argument(
        "--sweep", default="25,50,100", help="open-loop rates for ours run before --rps ('' = none)"
    )
    p.add_argument("--staleness-probes", type=int, default=20)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="ServingConfig override for our server",
    )
    p.add_argument(
        "--server-module", default="serving", help="entry point run as `python -m MODULE` for our server"
    )
    p.add_argument(
        "--out",
        default=None,
        help="result JSON (default benchmarks/results/serving.json, serving_c1_probe.json, serving_c32_probe.json)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary home (logs, prediction log)")
    p.add_argument(
        "--no-front-floor",
        action="store_true",
        help="skip the second floor that runs with our server's HTTP front settings",
    )
    p.add_argument(
        "--c32-probe",
        action="store_true",
        help="only our server, closed loop at concurrency 32 for --c32-seconds, with where the CPU went"
        " (server process, load generator, idle): a quick A/B of --set options, or a run to attach a"
        " profiler to (the server's pid is printed)",
    )
    p.add_argument(
        "--c1-probe",
        action="store_true",
        help="only our server, --c1-requests requests one at a time: latency by decision and the"
        " positions of the slowest 1%% (evenly spaced positions = a stall on a timer)",
    )
    p.add_argument(
        "--probe-servers",
        type=int,
        default=1,
        help="with --c32-probe: N servers, each sent its share of the users (entity-affine routing)",
    )
    p.add_argument("--floor-server", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--floor-front", default="kserve", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.floor_server:
        run_floor_server(args.floor_server, args.floor_front)
        return 0
    probe = "c32_probe" if args.c32_probe else "c1_probe" if args.c1_probe else None
    args.out = args.out or str(RESULTS / (f"serving_{probe}.json" if probe else "serving.json"))

    import kserve
    import torch

    work = Path(tempfile.mkdtemp(prefix="riskops-bench-serving-"))
    log(f"work dir {work}")
    started = time.perf_counter()
    home, replay, model_info = setup_home(
        work, args.rows, args.encoder, args.model_dir, args.seed, args.warm_texts
    )
    log(f"model: {model_info}")
    n_bodies = (
        args.warmup * 2 + args.c1_requests + int(args.rps * args.open_seconds) + int(3000 * args.c32_seconds)
    )
    bodies_ours = Bodies(request_bodies(replay, min(n_bodies, 60_000)), cycle=len(replay))
    bodies_floor = Bodies(bodies_ours.bodies, cycle=len(replay))
    results: dict = {
        "command": "python benchmarks/bench_serving.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "kserve": kserve.__version__ if hasattr(kserve, "__version__") else "0.21",
            "torch": torch.__version__,
            "torch_threads_default": torch.get_num_threads(),
            "load_avg_at_start": os.getloadavg(),
        },
        "model": model_info,
        "server_overrides": args.set,
        "server_module": args.server_module,
        "load_generator": f"{args.client} (c1, c32; open loop: aiohttp), one process on the same machine"
        " (shares the CPUs with the server)",
    }

    floor_port, front_floor_port, port = free_port(), free_port(), free_port()
    cmd = [sys.executable, "-m", args.server_module, "--port", str(port), "--home", str(home.root)]
    for item in args.set:
        cmd += ["--set", item]
    procs = []
    try:
        if args.c1_probe:
            return c1_probe(cmd, work, bodies_ours, results, args)
        if args.c32_probe:
            return c32_probe(
                lambda p, h: [*cmd[:3], "--port", str(p), "--home", str(h), *cmd[7:]],
                home.root,
                work,
                bodies_ours,
                results,
                args,
            )
        procs.append(
            start_server(
                [sys.executable, str(Path(__file__).resolve()), "--floor-server", str(floor_port)],
                floor_port,
                work / "floor.log",
            )
        )
        if not args.no_front_floor:
            procs.append(
                start_server(
                    [sys.executable, str(Path(__file__).resolve()), "--floor-server", str(front_floor_port),
                     "--floor-front", "ours"],
                    front_floor_port,
                    work / "floor_front.log",
                )
            )  # fmt: skip
        procs.append(start_server(cmd, port, work / "ours.log"))
        url = f"http://127.0.0.1:{port}"
        if not args.no_catalogue:
            results["catalogue"] = feed_catalogue(url, args.rows, args.seed)
            log(f"product catalogue sent to POST /v1/catalogue: {results['catalogue']}")
        urls = {"floor": f"http://127.0.0.1:{floor_port}", "ours": url}
        if not args.no_front_floor:
            urls["floor_front"] = f"http://127.0.0.1:{front_floor_port}"
        log(
            "floor: a bare KServe ModelServer returning a constant; ours: risk-model (validation, PII hashing,"
        )
        log("Feast, model, policy, reasons, durable prediction log); c1/c32 rounds alternate between the two")
        measured = measure_interleaved(
            urls, {"floor": bodies_floor, "ours": bodies_ours, "floor_front": bodies_floor}, args
        )
        results.update(measured)
        sweep = {}
        for rate in [float(x) for x in args.sweep.split(",") if x.strip()]:
            time.sleep(5)  # let background pushes and log writes drain
            before = scrape(url)
            res = asyncio.run(
                open_loop(f"{url}/v1/models/{MODEL}:predict", bodies_ours, rate, args.open_seconds)
            )
            res.update(batch_stats(before, scrape(url)))
            res["load_avg_after"] = os.getloadavg()[0]
            sweep[f"{rate:g}"] = res
            log(
                f"  open loop {rate:g}/s: p50 {res['p50_ms']} ms, p99 {res['p99_ms']} ms, {res['errors']} errors"
            )
        if sweep:
            results["ours"]["open_sweep"] = sweep
        time.sleep(5)
        last = json.loads(bodies_ours.bodies[(bodies_ours.i - 1) % len(bodies_ours.bodies)])["instances"][0]
        t_base = datetime.fromisoformat(last["event_timestamp"]) + timedelta(minutes=5)
        results["ours"]["staleness"] = staleness(url, home.feature_repo, args.staleness_probes, t_base)
        log(f"  staleness: {results['ours']['staleness']}")
        time.sleep(5)
        results["ours"]["load_avg_before_open"] = os.getloadavg()[0]
        before = scrape(url)
        results["ours"]["open"] = asyncio.run(
            open_loop(f"{url}/v1/models/{MODEL}:predict", bodies_ours, args.rps, args.open_seconds)
        )
        results["ours"]["open"].update(batch_stats(before, scrape(url)))
        results["ours"]["open"]["load_avg_after"] = os.getloadavg()[0]
        log(f"  open loop {args.rps:g}/s: {results['ours']['open']}")
        from riskops.monitoring.prediction_log import read_prediction_log

        results["ours"]["prediction_log_records"] = len(read_prediction_log(home.prediction_log))
    finally:
        for proc in procs:
            stop_server(proc)

    f, o = results["floor"], results["ours"]
    checks = [
        ("p99 @ c1 vs floor", o["c1"]["p99_ms"] / f["c1"]["p99_ms"], f"<= {GOALS['p99_c1_ratio_max']}x",
         o["c1"]["p99_ms"] / f["c1"]["p99_ms"] <= GOALS["p99_c1_ratio_max"]),
        ("throughput @ c32 vs floor", o["c32"]["throughput_rps"] / f["c32"]["throughput_rps"],
         f">= {GOALS['throughput_c32_ratio_min']}x",
         o["c32"]["throughput_rps"] / f["c32"]["throughput_rps"] >= GOALS["throughput_c32_ratio_min"]),
        (f"p99 @ {args.rps:g} rps open loop (ms)", o["open"]["p99_ms"], f"<= {GOALS['open_p99_ms_max']:g} ms, 0 errors",
         o["open"]["p99_ms"] <= GOALS["open_p99_ms_max"] and o["open"]["errors"] == 0),
        ("Feast push->visible staleness max (s)", o["staleness"]["max_s"], f"<= {GOALS['staleness_s_max']:g} s",
         o["staleness"]["max_s"] is not None and o["staleness"]["max_s"] <= GOALS["staleness_s_max"] and not o["staleness"]["missed"]),
    ]  # fmt: skip
    results["goals"] = [
        {"goal": g, "value": round(v, 3), "target": t, "pass": bool(ok)} for g, v, t, ok in checks
    ]
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    return write_results(results, render(results), work, args)


def render(r: dict) -> str:
    f, o = r["floor"], r["ours"]
    lines = [
        "",
        f"model: {r['model'].get('encoder')} encoder - {r['model']['source']}",
        f"machine: {r['machine']['cpus']} CPUs, load avg at start {r['machine']['load_avg_at_start'][0]:.2f}",
        f"product catalogue: {r.get('catalogue') or 'not sent (--no-catalogue)'}",
        "",
        "| phase | server | p50 ms | p95 ms | p99 ms | throughput req/s | errors | mean batch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    servers = [("floor (constant, KServe defaults)", f)]
    if r.get("floor_front"):
        servers.append(("floor (constant, our HTTP front)", r["floor_front"]))
    servers.append(("ours", o))
    for phase in ("c1", "c32"):
        for name, res in servers:
            x = res[phase]
            lines.append(
                f"| {phase} | {name} | {x['p50_ms']} | {x['p95_ms']} | {x['p99_ms']} | {x['throughput_rps']} "
                f"| {x['errors']} | {x.get('mean_batch_rows', '-')} |"
            )
    x = o["open"]
    lines.append(
        f"| open {x['offered_rps']:g}/s | ours | {x['p50_ms']} | {x['p95_ms']} | {x['p99_ms']} | {x['achieved_rps']} "
        f"| {x['errors']} | {x.get('mean_batch_rows', '-')} |"
    )
    per_round = o["c32"].get("throughput_rps_per_round") or []
    shares = o["c32"].get("first_pass_share_per_round") or []
    floors = f["c32"].get("throughput_rps_per_round") or []
    if per_round and len(shares) == len(per_round) == len(floors):
        rounds = ", ".join(
            f"{ours:g} vs {floor:g} ({ours / floor:.2f}x, first pass {share:.0%})"
            for ours, floor, share in zip(per_round, floors, shares, strict=True)
            if floor
        )
        lines += [
            "",
            "c32 by round, ours vs floor req/s (first pass: share of requests whose transactions the server "
            f"sees for the first time, their entities mostly new to it; later passes repeat the replay): {rounds}",
        ]
    lines += ["", "ours, mean time per stage (ms, from the server's Prometheus histograms):", ""]
    lines += ["| stage | c1 | c32 | open |", "|---|---|---|---|"]
    for stage in o["c1"].get("stage_mean_ms", {}):
        vals = [o[ph].get("stage_mean_ms", {}).get(stage) for ph in ("c1", "c32", "open")]
        lines.append(f"| {stage} | " + " | ".join("-" if v is None else str(v) for v in vals) + " |")
    hit = [o[ph].get("text_cache_hit_rate") for ph in ("c1", "c32", "open")]
    lines.append(
        "| text embedding cache hit rate | "
        + " | ".join("-" if v is None else f"{v:.1%}" for v in hit)
        + " |"
    )
    if o.get("open_sweep"):
        lines += [
            "",
            "| open loop (ours) | p50 ms | p95 ms | p99 ms | achieved req/s | errors | mean batch | load avg |",
        ]
        lines += ["|---|---|---|---|---|---|---|---|"]
        for rate, x in o["open_sweep"].items():
            lines.append(
                f"| {rate}/s | {x['p50_ms']} | {x['p95_ms']} | {x['p99_ms']} | {x['achieved_rps']} | {x['errors']} "
                f"| {x.get('mean_batch_rows', '-')} | {x['load_avg_after']:.2f} |"
            )
    s = o["staleness"]
    lines += [
        "",
        f"Feast push->visible staleness: p50 {s['p50_s']} s, p95 {s['p95_s']} s, max {s['max_s']} s ({s['probes']} probes, {s['missed']} missed)",
        "",
        "| goal | value | target | pass |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {g['goal']} | {g['value']} | {g['target']} | {'yes' if g['pass'] else 'NO'} |" for g in r["goals"]
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
