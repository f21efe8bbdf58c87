"""Micro-benchmark: the serving entity tracker's cost per transaction (`EntityTracker.observe`).

Replays generated transactions (validated and PII-hashed as the server does) through a fresh
`serving.entity_state.EntityTracker`, the way the server's event loop calls it: first-seen
entities get an online snapshot as baseline (a few hours old, every feature 3.0, so `combine`
does its full ageing and pooling work; `--no-baselines` gives first-seen entities no history).
Prints the best of `--repeats` passes in microseconds per transaction.

    python benchmarks/micro_entity_state.py [--rows 6000] [--repeats 5] [--code DIR]

`--code DIR` imports `riskops`/`serving` from another checkout (e.g. a `git worktree` of an older
commit) to compare two versions on the same machine in the same minute.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import timedelta
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=6000, help="generated transactions to replay")
    p.add_argument("--repeats", type=int, default=5, help="passes; the best is reported")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--no-baselines", action="store_true", help="first-seen entities get no snapshot")
    p.add_argument("--code", default=str(Path(__file__).resolve().parent.parent), help="checkout to import")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(args.code).resolve()))

    from riskops.data.generator import GeneratorConfig, generate
    from riskops.features.contract import ENTITY_FEATURES, snapshot_time_key
    from riskops.pii import hash_record
    from serving.entity_state import EntityTracker
    from serving.validation import validate_instances

    df = generate(GeneratorConfig(rows=args.rows, seed=args.seed))
    labels = [c for c in ("is_fraud", "fraud_type") if c in df.columns]
    raw = json.loads(df.drop(columns=labels).to_json(orient="records", date_format="iso"))
    records = [hash_record(r) for r in validate_instances(raw, limit=len(raw))]
    taken = (records[0]["event_timestamp"] - timedelta(hours=3)).timestamp()
    snapshots = {}
    for entity, names in ENTITY_FEATURES.items():
        snapshots[entity] = {f: 3.0 for f in names} | {snapshot_time_key(entity): taken}

    best = float("inf")
    for _ in range(args.repeats):
        tracker = EntityTracker()
        started = time.perf_counter()
        for r in records:
            missing = tracker.untracked([r])
            tracker.observe(r, {ek: None if args.no_baselines else snapshots[ek[0]] for ek in missing})
        best = min(best, time.perf_counter() - started)
    print(
        f"EntityTracker.observe: {best / len(records) * 1e6:.1f} us per transaction "
        f"({len(records)} transactions, best of {args.repeats}, code {args.code})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
