"""Micro-benchmark: the CPU time of the entity-feature backfill (`compute_entity_features`).

Builds `--rows` random transactions over a few thousand users, devices and IPs and 50 merchants
(60 days), then times `riskops.features.aggregates.compute_entity_features` on them: the pass that
feature build and training backfills run. Prints the best of `--repeats` runs in CPU seconds
(process time: other jobs on a shared box do not count). It used to be a test bound: < 20 s CPU
for 50k rows.

    python benchmarks/micro_backfill.py [--rows 50000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from riskops.features.aggregates import compute_entity_features  # noqa: E402


def random_transactions(n: int, seed: int = 0) -> pd.DataFrame:
    """`n` PII-hashed transactions in 60 days with random entities, amounts and refunds."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2024-03-01T12:00:00Z")
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "event_timestamp": t0 + pd.to_timedelta(np.sort(rng.integers(0, 60 * 86400, n)), unit="s"),
            "user_id": [f"u{x}" for x in rng.integers(0, 2500, n)],
            "merchant_id": [f"m{x}" for x in rng.integers(0, 50, n)],
            "device_id": [f"d{x}" for x in rng.integers(0, 3000, n)],
            "ip_hash": [f"h{x}" for x in rng.integers(0, 2000, n)],
            "shipping_country": rng.choice(["US", "GB", "DE", "FR"], n),
            "amount": np.round(rng.lognormal(3, 1, n), 2),
            "is_refund": rng.random(n) < 0.05,
        }
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    tx = random_transactions(args.rows)
    seconds = []
    for _ in range(args.repeats):
        started = time.process_time()
        compute_entity_features(tx)
        seconds.append(time.process_time() - started)
    print(
        json.dumps(
            {
                "rows": args.rows,
                "cpu_s_best": round(min(seconds), 3),
                "cpu_s_all": [round(s, 3) for s in seconds],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
