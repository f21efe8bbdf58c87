"""`riskops drift-demo --topology cluster`: the loop closes through the cluster's own topology.

Serving is `cli.topology.ClusterTopology` — Redis, the predictor, two transformer replicas, all
started from the rendered manifests — instead of one combined server. The demo's replay is the
round-robin front (`RoundRobin`: each batch goes to the next replica). The transformers ship their
prediction-log segments to the topology's object store (a ``file://`` folder standing in for S3)
every `segment_seconds`, and the monitor passes read that URI (``RISKOPS_PREDICTION_LOG_URI``),
never a replica's disk. Feedback labels arrive as files (`riskops feedback`), as the transformers
have no feedback route. A promotion moves the registry's champion alias; the predictor follows it
(the stand-in for KServe rolling out a new predictor), so every replica answers with the new version.
Entity state is exact in Redis, so the drift check compares every input (no `SERVING_SKEWED_INPUTS`).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import httpx

from cli.topology.processes import ClusterTopology
from riskops.settings import Paths

LOG_URI_ENV = "RISKOPS_PREDICTION_LOG_URI"


class RoundRobin:
    """An HTTP client over the replicas: predictions go to the next replica in turn (the front a
    Kubernetes Service puts before the pods), anything else to the first."""

    def __init__(self, urls: list[str], timeout: float) -> None:
        self.urls = urls
        self.clients = [httpx.Client(base_url=u, timeout=timeout) for u in urls]
        self._turn = itertools.cycle(range(len(urls)))
        self.last_version: dict[str, str] = {}  # replica url -> the model version it answered with last

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        i = next(self._turn) if path.endswith(":predict") else 0
        r = self.clients[i].post(path, **kwargs)
        if path.endswith(":predict") and r.status_code == 200:
            predictions = r.json().get("predictions") or []
            if predictions:
                self.last_version[self.urls[i]] = predictions[-1]["model_version"]
        return r

    def all_answer_with(self, version: str) -> bool:
        """Whether every replica's last answer came from `version`."""
        return len(self.last_version) == len(self.urls) and set(self.last_version.values()) == {version}

    def close(self) -> None:
        for c in self.clients:
            c.close()


class ClusterServing:
    """The drift demo's serving side in the cluster's topology (`Server`'s interface)."""

    def __init__(self, home: Paths, replicas: int = 2, segment_seconds: float = 2.0) -> None:
        self.topology = ClusterTopology(
            home, transformers=replicas, serving_settings={"log_segment_seconds": segment_seconds}
        )
        self._saved_uri: str | None = None

    @property
    def base(self) -> str:
        return ", ".join(self.topology.urls) or "(not started)"

    @property
    def log_file(self) -> Path:
        return self.topology.root

    def start(self) -> None:
        self.topology.start()
        # the monitor passes of this process read the shipped log, as the CronJob does
        self._saved_uri = os.environ.get(LOG_URI_ENV)
        os.environ[LOG_URI_ENV] = self.topology.log_uri

    def client(self, timeout: float) -> RoundRobin:
        return RoundRobin(self.topology.urls, timeout)

    def stop(self) -> None:
        self.topology.stop()
        if self._saved_uri is None:
            os.environ.pop(LOG_URI_ENV, None)
        else:
            os.environ[LOG_URI_ENV] = self._saved_uri
