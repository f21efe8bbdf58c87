"""Micro-benchmark: the CPU of one coalesced push flush, as the server's push child spends it.

Builds a Feast repo (generated history, `riskops.features.store.apply`, SQLite online store in WAL
mode) in a temporary folder, then times flushes of entity states through
`riskops.features.store.push_entity_state` (Feast's `push`), the call the push child
(`serving/feast_process.py`) makes once per entity per flush. The default sizes are what a 0.5 s
flush holds at ~300 requests/s (~150 users, devices and IPs, ~40 merchants). Run it under
`python -O` as the child runs (typeguard off, see serving/feast_process.py); `--profile` prints cProfile's
top functions of a few more flushes.

    python -O benchmarks/micro_push.py [--flushes 10] [--users 150] [--merchants 40] [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flushes", type=int, default=10, help="timed flushes (after 3 warm-up flushes)")
    p.add_argument("--users", type=int, default=150, help="user states per flush (also devices and IPs)")
    p.add_argument("--merchants", type=int, default=40, help="merchant states per flush")
    p.add_argument("--profile", action="store_true", help="cProfile 5 more flushes, print the top 25")
    args = p.parse_args(argv)

    from riskops.data.generator import GeneratorConfig, generate
    from riskops.features import store as fs
    from riskops.features.contract import ENTITY_FEATURES, ENTITY_KEYS
    from riskops.pii import hash_pii

    sizes = {"user": args.users, "merchant": args.merchants, "device": args.users, "ip": args.users}
    start = datetime(2026, 2, 1, tzinfo=UTC)

    def states(entity: str, n: int, flush: int) -> list[dict]:
        when = start + timedelta(seconds=flush)
        return [
            {ENTITY_KEYS[entity]: f"{entity}-{i}", "event_timestamp": when}
            | {f: float((i + flush) % 7) for f in ENTITY_FEATURES[entity]}
            for i in range(n)
        ]

    def flush(store, k: int) -> None:
        for entity, n in sizes.items():
            fs.push_entity_state(store, entity, states(entity, n, k))

    with tempfile.TemporaryDirectory() as tmp:
        repo = fs.prepare_repo(Path(tmp) / "repo")
        fs.write_feature_sources(repo, hash_pii(generate(GeneratorConfig(rows=2000, seed=2, days=3))))
        fs.apply(repo)
        store = fs.open_store(repo)
        for k in range(3):
            flush(store, k)
        cpu_ms, wall_ms = [], []
        for k in range(args.flushes):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            flush(store, 10 + k)
            cpu_ms.append((time.process_time() - cpu0) * 1e3)
            wall_ms.append((time.perf_counter() - wall0) * 1e3)
        print(
            f"push flush of {sum(sizes.values())} entity states ({sizes}), {args.flushes} flushes: "
            f"CPU ms median {statistics.median(cpu_ms):.1f}, min {min(cpu_ms):.1f}, max {max(cpu_ms):.1f}; "
            f"wall ms median {statistics.median(wall_ms):.1f}; python -O: {sys.flags.optimize > 0}"
        )
        print("CPU ms per flush:", " ".join(f"{x:.0f}" for x in cpu_ms))
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            for k in range(5):
                flush(store, 100 + k)
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
