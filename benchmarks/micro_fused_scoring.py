"""Micro-benchmark: one transaction through the fused model, as serving scores it, on one CPU thread.

Two parts, timed separately per transaction and reported as p50 / p99 in milliseconds:

* **sequence read** — `serving.entity_state.EntityTracker.history_tokens` (the user's, device's and
  IP's last events -> the history tokens) followed by `observe` (the event joins them), with the
  tracker seeded from the history's recent events as a server is;
* **model** — `RiskScorer.predict_proba` of the one-row model frame (`model_frame_and_numeric`, what
  the server hands the model), text embeddings from the warm cache as in steady-state serving.

Wall time and this thread's CPU time are both reported: on a shared machine the wall time includes
waiting for a core (the load average is printed with the figures).

The goal of issue #23: sequence read + model ≤ 5 ms at p99 on one thread.

    python benchmarks/micro_fused_scoring.py --model-dir DIR [--rows 20000] [--score 1000]

Without --model-dir a small fused model is trained first (MiniLM frozen, 3 epochs; ~1-2 min).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _percentiles(values: list[float]) -> dict[str, float]:
    import numpy as np

    ms = np.asarray(values) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="", help="a fused model folder (default: train one)")
    p.add_argument("--rows", type=int, default=20_000, help="generated history rows")
    p.add_argument("--score", type=int, default=1000, help="transactions scored one at a time")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default="", help="write the figures as JSON here too")
    args = p.parse_args(argv)

    import torch

    from riskops.data.generator import GeneratorConfig, generate
    from riskops.features.build import build_features
    from riskops.features.contract import model_frame_and_numeric, transaction_text
    from riskops.features.sequences import RECENT_EVENTS_FILE, SEQUENCE_KEY
    from riskops.pii import hash_record
    from riskops.training.scorer import RiskScorer
    from serving.entity_state import EntityTracker, load_recent_events
    from serving.validation import validate_instances

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="micro-fused-"))
    df = generate(GeneratorConfig(rows=args.rows + args.score, seed=args.seed))
    history, stream = df.iloc[: args.rows], df.iloc[args.rows :]
    built = build_features(history, work / "repo")
    model_dir = Path(args.model_dir) if args.model_dir else None
    if model_dir is None:
        from riskops.training.finetune import TrainConfig, train_from_training_set

        cfg = TrainConfig(encoder="minilm", finetune_layers=0, epochs=3, batch_size=256, progress=False)
        model_dir = train_from_training_set(built.training_frame, work / "model", cfg).model_dir
    scorer = RiskScorer.load(model_dir, device="cpu")
    if not scorer.config.sequence:
        raise SystemExit(f"{model_dir} does not read behaviour sequences")
    scorer.warm_cache(scorer.warm_texts)
    tracker = EntityTracker(history_seed=load_recent_events(built.repo / "data" / RECENT_EVENTS_FILE))
    raw = stream.drop(columns=["is_fraud", "fraud_type", "order_status"], errors="ignore")
    raw = raw.assign(event_timestamp=raw["event_timestamp"].map(lambda t: t.isoformat()))  # as a request sends it
    records = [hash_record(r) for r in validate_instances(raw.to_dict("records"), limit=len(raw))]
    scorer.text_embeddings(list({transaction_text(r) for r in records}))  # steady state: texts seen before

    read_s, model_s, read_cpu, model_cpu = [], [], [], []
    for r in records:
        t0, c0 = time.perf_counter(), time.thread_time()
        tokens, _ = tracker.history_tokens(r)
        features, _, _ = tracker.observe(r, dict.fromkeys(tracker.untracked([r])))  # no online snapshots
        t1, c1 = time.perf_counter(), time.thread_time()
        frame, _ = model_frame_and_numeric([{**r, **features, SEQUENCE_KEY: tokens}])
        scorer.predict_proba(frame)
        t2, c2 = time.perf_counter(), time.thread_time()
        read_s.append(t1 - t0)
        model_s.append(t2 - t1)
        read_cpu.append(c1 - c0)
        model_cpu.append(c2 - c1)
    result = {
        "transactions": len(records),
        "threads": torch.get_num_threads(),
        "sequence_read": _percentiles(read_s),
        "model": _percentiles(model_s),
        "total": _percentiles([a + b for a, b in zip(read_s, model_s, strict=True)]),
        # CPU time of this thread: what the work costs when the machine is shared (wall time then
        # includes waiting for a core)
        "cpu": {"sequence_read": _percentiles(read_cpu), "model": _percentiles(model_cpu),
                "total": _percentiles([a + b for a, b in zip(read_cpu, model_cpu, strict=True)])},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "model_dir": str(model_dir),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
