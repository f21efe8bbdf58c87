"""Alert events: appended to ``<home>/alerts.jsonl`` and, when configured, POSTed to a webhook.

Used by the monitor (drift, volume anomalies) and by the lifecycle (a rejected challenger, a failed
rollout). Delivering an alert never raises: a full disk or a dead webhook is logged, and the pass
that raised the alert goes on.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from riskops.settings import Paths, from_dict

log = logging.getLogger(__name__)


@dataclass
class AlertSettings:
    """The `alerts:` section of configs/monitor.yaml."""

    file: str = "alerts.jsonl"  # relative to the home folder
    webhook_url: str = ""
    webhook_timeout: float = 3.0

    @classmethod
    def from_dict(cls, d: dict | None) -> AlertSettings:
        return from_dict(cls, d, "alerts")


def post_webhook(url: str, event: dict, timeout: float = 3.0) -> threading.Thread:
    """POST `event` as JSON in a daemon thread; failures are logged, never raised. Returns the thread."""

    def _send() -> None:
        try:
            req = urllib.request.Request(
                url, data=json.dumps(event, default=str).encode(), method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "riskops-monitor"},
            )
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - operator-configured URL
                if resp.status >= 300:
                    log.warning("alert webhook %s answered %s", url, resp.status)
        except Exception as exc:
            log.warning("alert webhook %s failed: %s", url, exc)

    t = threading.Thread(target=_send, name="riskops-alert-webhook", daemon=True)
    t.start()
    return t


def emit_alert(paths: Paths, event: dict, settings: AlertSettings | None = None) -> threading.Thread | None:
    """Append the event to the alerts JSONL (never raises) and POST it when a webhook is configured.

    Returns the webhook's thread (to join in tests), or None when no webhook is set.
    """
    settings = settings or AlertSettings()
    p = Path(settings.file)
    p = p if p.is_absolute() else paths.root / p
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "a") as fh:
            fh.write(json.dumps(event, default=str, sort_keys=True) + "\n")
    except OSError as exc:
        log.error("cannot write alert to %s: %s", p, exc)
    if settings.webhook_url:
        return post_webhook(settings.webhook_url, event, settings.webhook_timeout)
    return None
