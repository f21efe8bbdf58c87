"""Serving benchmark, part 4: the goals, the result file and the table."""

from __future__ import annotations

import json
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
