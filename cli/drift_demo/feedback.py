"""Feedback labels delivered late, as chargebacks and reviews arrive: over POST /v1/feedback or as dropped files."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from cli.drift_demo.world import DEMO_DIR
from riskops.monitoring.feedback import ingest_feedback_file
from riskops.settings import Paths


class DelayedFeedback:
    """Delivers labels ``delay`` transactions late, over POST /v1/feedback or as dropped files."""

    def __init__(self, home: Paths, client: Any, mode: str, delay: int) -> None:
        self.home, self.client, self.mode, self.delay = home, client, mode, delay
        self.pending: list[tuple[int, dict]] = []  # (tx index when scored, record)
        self.sent = 0
        self.files = 0
        self.inbox = home.root / DEMO_DIR / "inbox"
        self.on_delivered: Callable[[list[dict]], Any] | None = None  # also told of each delivery

    def add(self, tx: int, transaction_id: str, is_fraud: int, fraud_type: str) -> None:
        """Queue the label of transaction number `tx` (a chargeback if fraud, else a review outcome)."""
        src = "chargeback" if is_fraud else "review"
        self.pending.append(
            (
                tx,
                {
                    "transaction_id": transaction_id,
                    "is_fraud": int(is_fraud),
                    "fraud_type": fraud_type if is_fraud else None,
                    "source": src,
                },
            )
        )

    def deliver(self, tx_now: int, flush: bool = False) -> int:
        """Send the labels that are due at transaction `tx_now` (all of them with `flush`); returns how many."""
        due = [r for t, r in self.pending if flush or tx_now - t >= self.delay]
        if not due:
            return 0
        self.pending = [] if flush else [(t, r) for t, r in self.pending if tx_now - t < self.delay]
        recs = [{k: v for k, v in r.items() if v is not None} for r in due]
        if self.on_delivered is not None:
            self.on_delivered(recs)
        if self.mode == "auto":
            r = self.client.post("/v1/feedback", json={"feedback": recs[:1]})
            self.mode = "api" if r.status_code == 200 else "file"
            recs = recs[1:] if self.mode == "api" else recs
            self.sent += 1 if self.mode == "api" else 0
        if recs and self.mode == "api":
            for i in range(0, len(recs), 500):
                r = self.client.post("/v1/feedback", json={"feedback": recs[i : i + 500]})
                r.raise_for_status()
        elif recs:
            self.inbox.mkdir(parents=True, exist_ok=True)
            self.files += 1
            f = self.inbox / f"labels-{self.files:05d}.csv"
            pd.DataFrame.from_records(recs).to_csv(f, index=False)
            ingest_feedback_file(self.home, f)  # what `riskops feedback FILE` does
        self.sent += len(recs)
        return len(due)
