"""Alerts: every `block`, and bursts of high scores for one entity.

* ``block``: one alert per blocked transaction.
* ``canary``: a canary decision (promote / rollback) or a challenger that failed to load
  (serving.canary), through `emit`.
* ``burst``: `burst_count` or more scores >= the review threshold for one user, device or IP
  within `burst_window_s` of event time. One alert per entity per window (the next one can fire
  once the window has moved past the alerted burst).

Alerts are appended to ``<home>/alerts.jsonl`` and, when a webhook URL is configured, POSTed as
JSON by a background thread with a short timeout. Neither can fail or slow a scoring request:
the request thread only puts the alert on a queue; a failed webhook is logged and counted
(`riskops_alert_webhook_failures_total`).
"""

from __future__ import annotations

import logging
import queue
import threading
import urllib.request
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from serving import prometheus_metrics

log = logging.getLogger(__name__)

BURST_ENTITIES = ("user_id", "device_id", "ip_hash")
_STOP = object()


class AlertManager:
    def __init__(
        self,
        path: Path | str,
        webhook_url: str | None = None,
        webhook_timeout_s: float = 2.0,
        burst_count: int = 3,
        burst_window_s: float = 600.0,
        max_tracked: int = 100_000,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.webhook_url = webhook_url
        self.webhook_timeout_s = webhook_timeout_s
        self.burst_count = int(burst_count)
        self.burst_window_s = float(burst_window_s)
        self.max_tracked = max_tracked
        self._high: dict[tuple[str, str], deque[float]] = {}
        self._alerted_until: dict[tuple[str, str], float] = {}
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="riskops-alerts", daemon=True)
        self._thread.start()
        self.sent = 0
        self.webhook_failures = 0

    # -- request path (cheap) ----------------------------------------------------------------
    def observe(self, result: dict[str, Any], record: dict[str, Any]) -> list[dict]:
        """Check one scored transaction; queue and return the alerts it raises.

        `result` carries risk_score, decision, ``above_review`` (score >= the review threshold,
        not the fail-mode floor of a degraded answer), model_version and degraded.
        """
        alerts: list[dict] = []
        base = {
            "transaction_id": record.get("transaction_id"),
            "request_id": result.get("request_id"),
            "risk_score": result["risk_score"],
            "decision": result["decision"],
            "model_version": result.get("model_version"),
            "event_timestamp": _iso(record.get("event_timestamp")),
            "user_id": record.get("user_id"),
            "degraded": result.get("degraded", False),
        }
        if result["decision"] == "block":
            alerts.append({"kind": "block", **base, "reasons": result.get("reasons", [])})
        if result.get("above_review"):
            t = _epoch(record.get("event_timestamp"))
            for field in BURST_ENTITIES:
                key = record.get(field)
                if not key:
                    continue
                ek = (field, str(key))
                times = self._high.get(ek)
                if times is None:
                    if len(self._high) >= self.max_tracked:
                        self._high.pop(next(iter(self._high)))
                    times = self._high[ek] = deque()
                t_ev = max(t, times[-1]) if times else t
                times.append(t_ev)
                while times and times[0] <= t_ev - self.burst_window_s:
                    times.popleft()
                if len(times) >= self.burst_count and t_ev >= self._alerted_until.get(ek, float("-inf")):
                    self._alerted_until[ek] = t_ev + self.burst_window_s
                    if len(self._alerted_until) > self.max_tracked:
                        self._alerted_until.pop(next(iter(self._alerted_until)))
                    alerts.append(
                        {
                            "kind": "burst",
                            **base,
                            "entity": field,
                            "key": str(key),
                            "count": len(times),
                            "window_s": self.burst_window_s,
                        }
                    )
        for a in alerts:
            a["raised_at"] = datetime.now(UTC).isoformat()
            prometheus_metrics.ALERTS.labels(a["kind"]).inc()
            self._queue.put(a)
        return alerts

    def emit(self, alert: dict[str, Any]) -> None:
        """Queue an alert raised elsewhere (e.g. a canary decision; ``kind`` names it)."""
        alert = {"kind": "event", **alert}
        alert.setdefault("raised_at", datetime.now(UTC).isoformat())
        prometheus_metrics.ALERTS.labels(str(alert["kind"])).inc()
        self._queue.put(alert)

    # -- background --------------------------------------------------------------------------
    def _run(self) -> None:
        with open(self.path, "ab") as fh:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    return
                batch = [item]
                while True:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        self._deliver(fh, batch)
                        return
                    batch.append(nxt)
                self._deliver(fh, batch)

    def _deliver(self, fh, batch: list[dict]) -> None:
        try:
            fh.write(b"".join(orjson.dumps(a, default=str) + b"\n" for a in batch))
            fh.flush()
        except OSError as exc:
            log.error("cannot append %d alerts to %s: %s", len(batch), self.path, exc)
        if not self.webhook_url:
            return
        for alert in batch:
            try:
                req = urllib.request.Request(
                    self.webhook_url,
                    data=orjson.dumps(alert, default=str),
                    headers={"Content-Type": "application/json"},
                    method="POST",
                )
                with urllib.request.urlopen(req, timeout=self.webhook_timeout_s) as resp:  # noqa: S310 - operator-configured URL
                    resp.read()
                self.sent += 1
            except Exception as exc:  # noqa: BLE001 - a webhook failure never propagates
                self.webhook_failures += 1
                prometheus_metrics.WEBHOOK_FAILURES.inc()
                log.warning("alert webhook %s failed: %s", self.webhook_url, exc)

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout)


def _iso(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


def _epoch(v: Any) -> float:
    if isinstance(v, datetime):
        return v.timestamp()
    if v is None:
        return datetime.now(UTC).timestamp()
    return pd.Timestamp(v).timestamp()
