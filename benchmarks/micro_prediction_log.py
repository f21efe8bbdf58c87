"""Micro-benchmark: the event loop's CPU per prediction-log append, as a request handler awaits it.

Rounds of `--concurrency` appends at a time (one small record each, as `RiskTransformer.finish`
does per request) are awaited on one event loop, in two ways, interleaved:

- ``chained``: ``asyncio.wrap_future(log.append(...))`` — a `concurrent.futures.Future` per append,
  chained to an asyncio future and woken on its own (the server's way before 2026-12-04);
- ``loop``: ``await log.append_async(...)`` — the loop's own future, all of a commit's waiters
  settled with one hand-off (the server's way now).

Reports the CPU time of the event loop's thread per append (the writer thread's work is the same
for both and not counted). The server's prediction log fsyncs by default; `--fsync` times that
too (the commits then hold more appends each).

    python benchmarks/micro_prediction_log.py [--rounds 1500] [--concurrency 32] [--repeats 3] [--fsync]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECORD = {"transaction_id": "t1", "risk_score": 0.5, "decision": "approve", "amount": 12.5}


async def _timed(plog, way: str, rounds: int, concurrency: int) -> float:
    """µs of this thread's CPU per append."""

    async def one() -> None:
        if way == "chained":
            await asyncio.wrap_future(plog.append([RECORD]))
        else:
            await plog.append_async([RECORD])

    started = time.thread_time()
    for _ in range(rounds):
        await asyncio.gather(*(one() for _ in range(concurrency)))
    return (time.thread_time() - started) / (rounds * concurrency) * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=1500, help="rounds of concurrent appends per measurement")
    p.add_argument("--concurrency", type=int, default=32, help="appends awaited together per round")
    p.add_argument("--repeats", type=int, default=3, help="interleaved measurements of each way")
    p.add_argument("--fsync", action="store_true", help="fsync every commit, as the server does by default")
    args = p.parse_args(argv)

    from serving.predlog import PredictionLog

    times: dict[str, list[float]] = {"chained": [], "loop": []}
    with tempfile.TemporaryDirectory() as d:
        plog = PredictionLog(d, fsync=args.fsync)
        try:
            asyncio.run(_timed(plog, "loop", 100, args.concurrency))  # warm-up: the first segment is opened
            for _ in range(args.repeats):
                for way, got in times.items():
                    got.append(asyncio.run(_timed(plog, way, args.rounds, args.concurrency)))
        finally:
            plog.close()
    print(f"event loop CPU per append, {args.concurrency} concurrent, fsync {'on' if args.fsync else 'off'}:")
    print(f"{'way':<10} {'median µs':>10}   runs")
    for way, got in times.items():
        print(f"{way:<10} {statistics.median(got):>10.1f}   {' / '.join(f'{t:.1f}' for t in got)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
