"""Serving benchmark, part 4: the goals, the result file and the table."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

from serving_servers import log

GOALS = {
    "p99_c1_ratio_max": 10.0,
    "throughput_c32_ratio_min": 0.5,
    "open_p99_ms_max": 100.0,
    "staleness_s_max": 1.0,
}


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
        servers.append(("floor (constant, fast path)", r["floor_front"]))
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


def evaluate_goals(results: dict, rps: float) -> list[dict]:
    """Each goal (`GOALS`) with its value, target and whether it passed."""
    f, o = results["floor"], results["ours"]
    checks = [
        ("p99 @ c1 vs floor", o["c1"]["p99_ms"] / f["c1"]["p99_ms"], f"<= {GOALS['p99_c1_ratio_max']}x",
         o["c1"]["p99_ms"] / f["c1"]["p99_ms"] <= GOALS["p99_c1_ratio_max"]),
        ("throughput @ c32 vs floor", o["c32"]["throughput_rps"] / f["c32"]["throughput_rps"],
         f">= {GOALS['throughput_c32_ratio_min']}x",
         o["c32"]["throughput_rps"] / f["c32"]["throughput_rps"] >= GOALS["throughput_c32_ratio_min"]),
        (f"p99 @ {rps:g} rps open loop (ms)", o["open"]["p99_ms"], f"<= {GOALS['open_p99_ms_max']:g} ms, 0 errors",
         o["open"]["p99_ms"] <= GOALS["open_p99_ms_max"] and o["open"]["errors"] == 0),
        ("Feast push->visible staleness max (s)", o["staleness"]["max_s"], f"<= {GOALS['staleness_s_max']:g} s",
         o["staleness"]["max_s"] is not None and o["staleness"]["max_s"] <= GOALS["staleness_s_max"] and not o["staleness"]["missed"]),
    ]  # fmt: skip
    results["goals"] = [
        {"goal": g, "value": round(v, 3), "target": t, "pass": bool(ok)} for g, v, t, ok in checks
    ]
    return [{"goal": g, "value": round(v, 3), "target": t, "pass": bool(ok)} for g, v, t, ok in checks]


# ---------------------------------------------------------------------------------------------
# The cluster's topology (benchmarks/serving_topology.py): goals, capacity model, table
# ---------------------------------------------------------------------------------------------

TOPOLOGY_GOALS = {
    "cost_ratio_max": 2.5,
    "p99_c1_ratio_max": 10.0,
    "open_p99_ms_max": 50.0,
    "freshness_p99_ms_max": 10.0,
}
UTILISATION = 0.6  # capacity model: each process planned at this share of its core (queueing headroom)


def evaluate_topology_goals(t: dict, rps: float) -> list[dict]:
    """The topology's goals (`TOPOLOGY_GOALS`): the topology's value and pass, the embedded server's
    value and pass for the same figure beside (None where it does not apply), the target."""
    g, c1, op, fr = TOPOLOGY_GOALS, t["c1"], t["open"], t["freshness"]
    cost = {
        k: v["cpu_ms_per_request"] / t["cost"]["floor"]["cpu_ms_per_request"] for k, v in t["cost"].items()
    }
    p99 = {k: v["p99_ms"] / c1["floor"]["p99_ms"] for k, v in c1.items()}
    fresh = fr["visible_ms"].get("p99")
    rows = [  # goal, {server: value}, target, {server: pass}
        ("CPU ms per transaction vs floor", cost, f"<= {g['cost_ratio_max']}x",
         {k: v <= g["cost_ratio_max"] for k, v in cost.items()}),
        ("p99 @ c1 vs floor", p99, f"<= {g['p99_c1_ratio_max']:g}x",
         {k: v <= g["p99_c1_ratio_max"] for k, v in p99.items()}),
        (f"p99 @ {rps:g} rps open loop (ms)", {k: v.get("p99_ms") for k, v in op.items()},
         f"<= {g['open_p99_ms_max']:g} ms, 0 errors",
         {k: v["errors"] == 0 and v.get("p99_ms", 1e9) <= g["open_p99_ms_max"] for k, v in op.items()}),
        ("freshness across replicas p99 (ms): A's answer -> in the shared state", {"topology": fresh},
         f"<= {g['freshness_p99_ms_max']:g} ms, B counts every probe",
         {"topology": fresh is not None and fresh <= g["freshness_p99_ms_max"]
                      and fr["counted_by_b"] == fr["probes"]}),
    ]  # fmt: skip
    out = []
    for goal, value, target, ok in rows:
        v, e = value.get("topology"), value.get("embedded")
        out.append({"goal": goal, "value": None if v is None else round(v, 3), "target": target,
                    "pass": bool(ok["topology"]), "embedded": None if e is None else round(e, 3),
                    "embedded_pass": ok.get("embedded")})  # fmt: skip
    return out


def capacity_model(ms_by_process: dict[str, float], rates=(1_000, 10_000), utilisation=UTILISATION) -> dict:
    """Replicas needed per rate from the measured CPU ms per transaction of each process.

    Replicas of one kind (``transformer-0``, ``transformer-1``) add up to one role. Each serving
    replica is one process with one event loop under the GIL, so it uses at most one core (the
    transformer's pod limit is 1 CPU); it is planned at `utilisation` of that core. Redis runs its
    commands on one thread: ``redis_primaries`` is how many such threads the rate needs at
    `utilisation` (more than one needs the state sharded, which the state script does not support).
    """
    roles: dict[str, float] = {}
    for name, ms in ms_by_process.items():
        role = re.sub(r"-\d+$", "", name)
        roles[role] = roles.get(role, 0.0) + ms
    out: dict = {
        "cpu_ms_per_transaction": {k: round(v, 4) for k, v in roles.items()},
        "utilisation": utilisation,
    }

    def needed(cores: float) -> int:  # rounded first: 3 / 0.6 is 5.000000000000001, which is 5
        return math.ceil(round(cores / utilisation, 6))

    for rate in rates:
        cores = {k: rate * v / 1000 for k, v in roles.items()}
        out[f"{rate}/s"] = {"replicas": {k: needed(c) for k, c in cores.items() if k != "redis"},
                            "cores_in_all": round(sum(cores.values()) / utilisation, 1)}  # fmt: skip
        if "redis" in cores:
            out[f"{rate}/s"].update(
                redis_cores=round(cores["redis"], 3), redis_primaries=needed(cores["redis"])
            )
    return out


def render_topology(t: dict) -> str:
    """The topology's tables (printed after bench_serving's)."""
    if not t.get("ran"):
        return f"\ncluster topology: not run ({t['why']})"
    lines = ["", f"cluster topology; the front: {t['setup']['front']}", "",
             "| server | c1 p50 ms | c1 p99 ms | CPU ms/transaction | by process | cost load req/s "
             f"| open {t['open']['floor']['offered_rps']:g}/s p50 ms | p99 ms | errors | degraded |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    names = {"floor": "floor (constant, KServe)", "embedded": "embedded state (python -m serving)",
             "topology": f"Redis state: {t['setup']['replicas']} transformers, predictor, Redis"}  # fmt: skip
    for k, name in names.items():
        c, cost, o = t["c1"][k], t["cost"][k], t["open"][k]
        by = ", ".join(f"{p} {v}" for p, v in cost["by_process"].items())
        lines.append(f"| {name} | {c['p50_ms']} | {c['p99_ms']} | {cost['cpu_ms_per_request']} | {by} "
                     f"| {cost['throughput_rps']} | {o.get('p50_ms', '-')} | {o.get('p99_ms', '-')} "
                     f"| {o['errors']} | {o['degraded']} |")  # fmt: skip
    f, cost = t["freshness"], t["cost"]["topology"]
    lines += ["", f"CPU read around {cost['answered']} transactions at concurrency {cost['concurrency']}"
              f" (closed loop). Freshness across replicas ({f['probes']} probes): A's answer -> in Redis"
              f" {f['visible_ms']} ms (on the first read in {f['visible_on_first_read']}), B counted A's"
              f" transaction in {f['counted_by_b']}; A's answer -> B's answer {f['b_answer_ms']} ms.",
              "", "| goal | Redis state (topology) | embedded state | target | pass |",
              "|---|---|---|---|---|"]  # fmt: skip
    for g in t["goals"]:
        emb = "-" if g["embedded"] is None else f"{g['embedded']} ({'yes' if g['embedded_pass'] else 'NO'})"
        lines.append(
            f"| {g['goal']} | {g['value']} | {emb} | {g['target']} | {'yes' if g['pass'] else 'NO'} |"
        )
    cap, cap_e = t["capacity"]["topology"], t["capacity"]["embedded"]
    lines += [
        "",
        f"capacity model: CPU ms per transaction {cap['cpu_ms_per_transaction']} (embedded state:"
        f" {cap_e['cpu_ms_per_transaction']}), each process at {cap['utilisation']:.0%} of one core",
        "",
        "| transactions/s | transformer replicas | predictor replicas | Redis cores (primaries needed) "
        "| cores in all | embedded state: replicas (not shared) |",
        "|---|---|---|---|---|---|",
    ]
    for rate in (k for k in cap if k.endswith("/s")):
        c, e = cap[rate], cap_e[rate]
        lines.append(f"| {rate} | {c['replicas'].get('transformer')} | {c['replicas'].get('predictor')} "
                     f"| {c.get('redis_cores')} ({c.get('redis_primaries')}) | {c['cores_in_all']} "
                     f"| {sum(e['replicas'].values())} |")  # fmt: skip
    return "\n".join(lines)
