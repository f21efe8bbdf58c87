"""The small closed loop the e2e tests run (`riskops drift-demo`'s code at a size CI affords)."""

from __future__ import annotations

from cli.drift_demo import LoopOptions


def small_loop(**overrides) -> LoopOptions:
    """A fraud-ring world of 8,000 training rows, 1,000 normal and 3,000 drifted ones, a monitor pass
    every 250 transactions over a 1,000-row window, labels 200 transactions late; `overrides` on top."""
    settings = dict(
        scenario="fraud_ring",
        seed=7,
        train_rows=8000,
        normal_rows=1000,
        drift_rows=3000,
        window=1000,
        monitor_every=250,
        label_delay=200,
        epochs=4,
        max_train_rows=3000,
        timeout_s=480,
        after_rows=100,
        retrain_rate=30.0,
        quiet=True,
    )
    return LoopOptions(**{**settings, **overrides})
