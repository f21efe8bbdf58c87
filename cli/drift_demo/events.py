"""The demo's timeline of events: timestamped (wall clock, since the onset, transactions), printed as they happen."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any


class Events:
    """Timestamped events, printed as they happen."""

    def __init__(self, console: Any = None) -> None:
        self.t0 = time.monotonic()
        self.onset_t: float | None = None
        self.items: list[dict] = []
        self.console = console

    def now(self) -> float:
        """Seconds since the demo started."""
        return time.monotonic() - self.t0

    def since_onset(self) -> float | None:
        """Seconds since the onset (None before it)."""
        return None if self.onset_t is None else time.monotonic() - self.onset_t

    def add(self, event: str, text: str, tx: int, tx_after_onset: int | None = None, **details: Any) -> dict:
        """Record an event (and print it); `details` are kept in the timeline JSON."""
        item = {
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "t_s": round(self.now(), 2),
            "since_onset_s": None if self.onset_t is None else round(self.since_onset(), 2),
            "tx": tx,
            "tx_after_onset": tx_after_onset,
            "event": event,
            "text": text,
            **details,
        }
        self.items.append(item)
        if self.console is not None:
            since = f"onset{item['since_onset_s']:+7.1f}s" if item["since_onset_s"] is not None else " " * 13
            txs = f"tx {tx:>5}" + (f" (onset+{tx_after_onset})" if tx_after_onset is not None else "")
            self.console.print(f"{item['at'][11:23]}  +{item['t_s']:6.1f}s  {since}  {txs:<24} {text}")
        return item
