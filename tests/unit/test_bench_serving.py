"""benchmarks/bench_serving.py (and its serving_*.py parts) helpers that decide what a reported figure means (no servers here)."""

from __future__ import annotations


def test_first_pass_share_marks_requests_before_the_replay_repeats(bench_serving):
    bodies = bench_serving.Bodies([b"{}"] * 10, cycle=4)
    assert bodies.first_pass_share(0, 4) == 1.0
    assert bodies.first_pass_share(2, 6) == 0.5
    assert bodies.first_pass_share(4, 10) == 0.0
    assert bodies.first_pass_share(3, 3) == 0.0
    # handing out bodies walks the list (and wraps), the share follows the position
    start = bodies.i
    for _ in range(6):
        bodies.next()
    assert bodies.first_pass_share(start, bodies.i) == round(4 / 6, 3)


def test_merge_runs_keeps_each_rounds_throughput(bench_serving):
    import serving_load  # benchmarks/, on the path while the bench_serving fixture is

    runs = [
        {"_lat": [1.0, 2.0], "seconds": 1.0, "errors": 0, "error_examples": [], "throughput_rps": 2.0},
        {"_lat": [1.0] * 6, "seconds": 1.0, "errors": 0, "error_examples": [], "throughput_rps": 6.0},
    ]
    merged = serving_load.merge_runs(runs)
    assert merged["throughput_rps"] == 4.0 and merged["throughput_rps_per_round"] == [2.0, 6.0]
