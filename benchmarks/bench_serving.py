"""Serving benchmark: our model server vs. a bare KServe ModelServer returning a constant (the floor).

Same machine, same async load generator (aiohttp; `--client httpx` for c1/c32), one server at a time, all bound to 127.0.0.1
with gRPC off. The goals compare with the floor on plain KServe (asyncio event loop, uvicorn's
access log, KServe's timing middleware). A second floor runs the constant model behind the fast
path (serving/fast_path.py), so the table separates what the fast path saves from what our own
work costs (`--no-front-floor` skips it). Our server runs with its settings (`--set fast_path=false`:
plain KServe). Phases:

* concurrency 1: sequential single-transaction v1 requests -> p50/p95/p99 latency;
* concurrency 32, closed loop: 32 clients each send the next request when the last answered ->
  throughput and latency;
* ours only, open loop: requests *scheduled* at a fixed rate (default 300/s) for ~10 s, latency
  measured from each request's scheduled send time (so a stalled server cannot hide queueing),
  error count;
* ours only, staleness: a transaction of a brand-new user is scored, then a separate Feast client
  polls the online store until the pushed state is visible; staleness = visible - acknowledged;
* the cluster's topology (`--topology`, on by default; `--no-topology` skips it): Redis, the
  predictor and two transformer replicas from the rendered manifests, beside the floor and ours
  (embedded state): c1, CPU per transaction around a fixed load, freshness across replicas, the
  open loop, a capacity model (benchmarks/serving_topology.py).

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
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

from riskops.settings import use_offline_environment  # noqa: E402

use_offline_environment()


from serving_load import CLIENTS, Bodies, batch_stats, measure_interleaved, open_loop, scrape, staleness  # noqa: E402
from serving_probes import c1_probe, c32_probe  # noqa: E402
from serving_report import evaluate_goals, render, render_topology, write_results  # noqa: E402
from serving_servers import (  # noqa: E402
    MODEL,
    feed_catalogue,
    free_port,
    log,
    request_bodies,
    run_floor_server,
    setup_home,
    start_server,
    stop_server,
)
from serving_topology import add_arguments as add_topology_arguments  # noqa: E402
from serving_topology import run_topology  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags (see the module doc); one ``add_argument`` after another, hence its length."""
    from riskops.training.scorer import WARM_TEXTS_LIMIT

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
        help="skip the second floor that runs behind the fast path",
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
    add_topology_arguments(p)
    return p


def machine_info() -> dict:
    """What the figures were taken on."""
    import kserve
    import torch

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "kserve": kserve.__version__ if hasattr(kserve, "__version__") else "0.21",
        "torch": torch.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "load_avg_at_start": os.getloadavg(),
    }


def open_loop_phases(url: str, feature_repo: Path, bodies: Bodies, args) -> dict:
    """Ours only: the open-loop sweep, the Feast staleness probes, then the open loop at --rps."""
    out: dict = {}
    sweep = {}
    for rate in [float(x) for x in args.sweep.split(",") if x.strip()]:
        time.sleep(5)  # let background pushes and log writes drain
        before = scrape(url)
        res = asyncio.run(
            open_loop(f"{url}/v1/models/{MODEL}:predict", bodies, rate, args.open_seconds)
        )
        res.update(batch_stats(before, scrape(url)))
        res["load_avg_after"] = os.getloadavg()[0]
        sweep[f"{rate:g}"] = res
        log(
            f"  open loop {rate:g}/s: p50 {res['p50_ms']} ms, p99 {res['p99_ms']} ms, {res['errors']} errors"
        )
    if sweep:
        out["open_sweep"] = sweep
    time.sleep(5)
    last = json.loads(bodies.bodies[(bodies.i - 1) % len(bodies.bodies)])["instances"][0]
    t_base = datetime.fromisoformat(last["event_timestamp"]) + timedelta(minutes=5)
    out["staleness"] = staleness(url, feature_repo, args.staleness_probes, t_base)
    log(f"  staleness: {out['staleness']}")
    time.sleep(5)
    out["load_avg_before_open"] = os.getloadavg()[0]
    before = scrape(url)
    out["open"] = asyncio.run(
        open_loop(f"{url}/v1/models/{MODEL}:predict", bodies, args.rps, args.open_seconds)
    )
    out["open"].update(batch_stats(before, scrape(url)))
    out["open"]["load_avg_after"] = os.getloadavg()[0]
    log(f"  open loop {args.rps:g}/s: {out['open']}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Set up, start the servers, run the phases, report. Longer than 80 lines: the phases share the
    servers' lifetime (one try/finally stops every server whatever fails)."""
    args = build_parser().parse_args(argv)
    if args.floor_server:
        run_floor_server(args.floor_server, args.floor_front)
        return 0
    probe = "c32_probe" if args.c32_probe else "c1_probe" if args.c1_probe else None
    args.out = args.out or str(RESULTS / (f"serving_{probe}.json" if probe else "serving.json"))

    work = Path(tempfile.mkdtemp(prefix="riskops-bench-serving-"))
    log(f"work dir {work}")
    started = time.perf_counter()
    home, replay, model_info = setup_home(
        work, args.rows, args.encoder, args.model_dir, args.seed, args.warm_texts
    )
    log(f"model: {model_info}")
    n_bodies = (
        args.warmup * 2 + args.c1_requests + int(args.rps * args.open_seconds) + int(3000 * args.c32_seconds)
    ) + (args.c1_requests + args.cost_requests + int(args.rps * args.open_seconds) if args.topology else 0)
    bodies_ours = Bodies(request_bodies(replay, min(n_bodies, 60_000)), cycle=len(replay))
    bodies_floor = Bodies(bodies_ours.bodies, cycle=len(replay))
    results: dict = {
        "command": "python benchmarks/bench_serving.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
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
                     "--floor-front", "fast"],
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
        results["ours"].update(open_loop_phases(url, home.feature_repo, bodies_ours, args))
        from riskops.monitoring.prediction_log import read_prediction_log

        results["ours"]["prediction_log_records"] = len(read_prediction_log(home.prediction_log))
        results["topology"] = {"ran": False, "why": "--no-topology"}
        if args.topology:  # the floor and ours stay up: measured again beside the topology
            # each server's URLs, processes (their CPU read from /proc) and /metrics
            floor = {"urls": [urls["floor"]], "pids": {"floor": procs[0].pid}, "metrics": {}}
            ours = {"urls": [url], "pids": {"embedded": procs[-1].pid}, "metrics": {"embedded": url}}
            others = {"floor": floor, "embedded": ours}
            try:
                results["topology"] = run_topology(home, bodies_ours, others, args)
            except Exception as exc:  # noqa: BLE001 - the other phases' figures are still written
                log(f"the topology phase failed: {traceback.format_exc()}")
                results["topology"] = {"ran": False, "why": f"failed: {type(exc).__name__}: {exc}"}
    finally:
        for proc in procs:
            stop_server(proc)

    results["goals"] = evaluate_goals(results, args.rps)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    write_results(results, render(results) + render_topology(results["topology"]), work, args)
    return 1 if results["topology"].get("why", "").startswith("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
