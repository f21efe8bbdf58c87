"""`riskops demo`: the whole loop on synthetic data, narrated (what `make demo` runs)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
from rich.rule import Rule

from cli.arguments import pipeline_params
from cli.console import narration_console, print_failure, print_run_summary
from cli.drift_demo import DEMO_DIR, LoopOptions, Timeline, build_timeline, print_figures, run_loop
from cli.drift_demo.server_process import free_port, wait_ready
from pipelines.runner import PipelineFailed, run_local
from riskops.data.generator import GeneratorConfig, generate_with_drift, write_transactions
from riskops.settings import Paths, paths


def sample_traffic(rows: int, seed: int, n: int) -> list[dict]:
    """New orders from the same simulated world as the training data, just after it in time."""
    df = generate_with_drift(GeneratorConfig(rows=rows, seed=seed), "fraud_ring", drift_rows=max(n, 200))
    onset = df.attrs["drift_onset"]
    recent = df[df["event_timestamp"] >= onset].head(n)
    records = json.loads(recent.drop(columns=["is_fraud", "fraud_type"]).to_json(orient="records", date_format="iso"))
    labels = recent["is_fraud"].tolist()
    return [dict(r, _label=y) for r, y in zip(records, labels, strict=True)]


def score_sample(home: Paths, rows: int, seed: int, n: int = 200, console=None, traffic: list[dict] | None = None) -> dict:
    """Start the KServe server on the champion, score `n` generated orders one by one, stop it.

    ``traffic``: the orders to score (request instances plus ``_label``); default: `sample_traffic`."""
    port = free_port()
    log_file = home.root / "demo-server.log"
    with open(log_file, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving", "--port", str(port), "--home", str(home.root)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, f"{base}/v2/models/risk-model/ready", log_file=log_file)
        traffic = sample_traffic(rows, seed, n) if traffic is None else [dict(t) for t in traffic]
        decisions: Counter[str] = Counter()
        shown, latencies, by_label = [], [], {0: [], 1: []}
        with httpx.Client(base_url=base, timeout=10.0) as client:
            for txn in traffic:
                label = txn.pop("_label")
                started = time.perf_counter()
                r = client.post("/v1/models/risk-model:predict", json={"instances": [txn]})
                latencies.append((time.perf_counter() - started) * 1000)
                r.raise_for_status()
                pred = r.json()["predictions"][0]
                decisions[pred["decision"]] += 1
                by_label[int(label)].append(pred["risk_score"])
                if pred["decision"] != "approve" and len(shown) < 5 or len(shown) < 2:
                    shown.append((txn, pred, label))
        if console is not None:
            for txn, pred, label in shown:
                reasons = "; ".join(
                    r if isinstance(r, str) else str(r.get("text") or r) for r in pred.get("reasons", [])[:3]
                )
                console.print(
                    f"  {txn['transaction_id']}  {txn['amount']:>10.2f} {txn['currency']}  "
                    f"{txn['product_title'][:34]:<34}  score {pred['risk_score']:.3f}  "
                    f"[bold]{pred['decision']}[/bold]  (truth: {'fraud' if label else 'legit'})  {reasons}"
                )
        latencies.sort()
        return {
            "scored": len(traffic),
            "decisions": dict(decisions),
            "p50_ms": latencies[len(latencies) // 2],
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "mean_score_fraud": sum(by_label[1]) / max(1, len(by_label[1])),
            "mean_score_legit": sum(by_label[0]) / max(1, len(by_label[0])),
            "server_log": str(log_file),
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


# What an earlier run leaves in the home that the demo would read back. The demo replays the same
# simulated world (same seed, same users, devices, IPs and times), so the old prediction log and the
# entity state the old traffic pushed to the online store (IPs and devices "already seen", users per
# device) read as live traffic: the monitor flagged drift from its first pass, before the onset.
EARLIER_STATE = ("registry", "prediction_log", "feature_repo", DEMO_DIR)
# The packaged-data cache (riskops.data.packaged_files): not state, slow to rebuild; --fresh keeps it.
KEPT_BY_FRESH = frozenset({"cache"})
# Everything riskops writes directly under a home folder: --fresh empties a home holding only these,
# and refuses (naming the rest) a folder that holds anything else, e.g. RISKOPS_HOME pointed at $HOME.
HOME_ENTRIES = KEPT_BY_FRESH | frozenset({
    *EARLIER_STATE, "alerts.jsonl", "catalogue.jsonl", "data", "datasets", "demo-server.log", "demo-summary.json",
    "evidently", "feedback", "models", "monitoring", "object-store", "pipeline_root", "pods", "policy.yaml",
    "prometheus", "promotion", "redis", "reports", "retrain", "serving-predictor.yaml", "serving.yaml", "topology",
})  # fmt: skip


def earlier_state(home: Paths) -> list[str]:
    """The entries of EARLIER_STATE that `home` holds and that are not empty (sorted)."""
    found = []
    for name in EARLIER_STATE:
        path = home.root / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            found.append(name)
    return sorted(found)


def empty_home(home: Paths) -> None:
    """Delete everything riskops wrote in `home` but the cache (``--fresh``); refuse when it holds anything else."""
    entries = sorted(home.root.iterdir()) if home.root.is_dir() else []
    foreign = [e.name for e in entries if e.name not in HOME_ENTRIES]
    if foreign:
        raise SystemExit(
            f"--fresh: {home.root} also holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}, "
            "which riskops did not write; not deleting anything. Point RISKOPS_HOME at a folder of its own."
        )
    for entry in (e for e in entries if e.name not in KEPT_BY_FRESH):
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def run_demo(args: argparse.Namespace) -> int:
    """`riskops demo`: train through the pipeline, serve and score a sample, then close the loop."""
    console = narration_console()
    started = time.perf_counter()
    home = paths()
    loop = not args.skip_loop and not args.input
    n_steps = 3 if loop else 2
    console.print(Rule("riskops demo"))
    console.print(f"state folder: {home.root}")
    earlier = earlier_state(home)
    if earlier and not args.fresh:
        console.print(
            f"[red]{home.root} holds an earlier run's state ({', '.join(earlier)}).[/red] The demo replays the same "
            "simulated world, so the earlier run's prediction log and the entity state its traffic pushed to the "
            "online store would read as live traffic (the monitor would see drift before there is any). Start "
            "over with `riskops demo --fresh` (`make demo FRESH=1`), which empties that folder, or set "
            "RISKOPS_HOME to an empty one."
        )
        return 2
    if earlier:
        empty_home(home)
        console.print(f"--fresh: emptied {home.root} (it held {', '.join(earlier)})")
    params = pipeline_params(args)
    if params["promotion"] == "if-none":
        params["promotion"] = "always"  # the demo serves what it just trained
    sample_n = 200
    timeline = None
    if not args.input:
        # one simulated world for the whole demo: training history, then normal traffic, then the drift
        opts = LoopOptions(scenario=args.scenario, seed=args.seed, train_rows=args.rows, normal_rows=1500 + sample_n,
                           encoder=args.encoder, epochs=args.epochs, max_train_rows=args.max_train_rows,
                           # the demo retrains the MiniLM model (minutes on 2 CPUs): enough drifted traffic,
                           # replayed slowly while it trains, so the loop can close before the traffic ends
                           drift_rows=12_000, retrain_rate=4.0, timeout_s=1200.0)
        timeline = build_timeline(opts)
        history = write_transactions(timeline.train, home.root / DEMO_DIR / "history.parquet")
        params.update(source="file", input_path=str(history))
    console.print(
        f"[bold]1/{n_steps} train[/bold] - the KFP pipeline on kfp.local: synthetic transactions -> Great Expectations"
        " gate -> Feast features -> fine-tune MiniLM risk model -> evaluate vs baselines -> register"
    )
    try:
        run = run_local(home, **params)
    except PipelineFailed as exc:
        print_failure(exc)
        return 1
    print_run_summary(run)

    console.print(
        f"\n[bold]2/{n_steps} serve[/bold] - KServe ModelServer with the champion: validation, PII hashing, Feast online"
        " lookup, model, decision policy; each scored order updates its entities' online features"
    )
    traffic = None
    if timeline is not None:
        sample = timeline.normal.head(sample_n)
        traffic = [dict(r, _label=int(y)) for r, y in zip(
            json.loads(sample.drop(columns=["is_fraud", "fraud_type"]).to_json(orient="records", date_format="iso")),
            sample["is_fraud"], strict=True)]
    summary = score_sample(home, rows=args.rows, seed=args.seed, n=sample_n, console=console, traffic=traffic)
    console.print(
        f"scored {summary['scored']} new orders one at a time over REST v1: decisions {summary['decisions']};"
        f" latency p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms (client-side, incl. HTTP)"
    )
    console.print(
        f"mean risk score: fraud {summary['mean_score_fraud']:.3f} vs legit {summary['mean_score_legit']:.3f};"
        f" server log {summary['server_log']}; prediction log {home.prediction_log}"
    )
    result = None
    if loop:
        console.print(
            f"\n[bold]3/{n_steps} closed loop[/bold] - normal traffic, then '{args.scenario}' with delayed feedback:"
            " monitor (Evidently) -> drift -> retraining pipeline (subprocess) -> promotion gate -> new champion"
        )
        rest = Timeline(train=timeline.train, normal=timeline.normal.iloc[sample_n:].reset_index(drop=True),
                        drift=timeline.drift, onset=timeline.onset, scenario=timeline.scenario)
        result = run_loop(home, rest, opts, console)
        print_figures(console, result)
        console.print(f"timeline: {result.timeline_file}")
    elif args.input:
        console.print("(the closed loop needs the built-in simulated world: skipped with --input)")
    seconds = time.perf_counter() - started
    ok = result is None or result.closed
    console.print(Rule(f"demo finished in {seconds:.0f}s" + ("" if result is None else f"; loop: {result.outcome}")))
    Path(home.root / "demo-summary.json").write_text(json.dumps(
        {"seconds": seconds, "serving": summary,
         "loop": None if result is None else {"closed": result.closed, "outcome": result.outcome,
                                              "figures": result.figures, "timeline": str(result.timeline_file)}},
        indent=2, default=str))
    return 0 if ok else 1
