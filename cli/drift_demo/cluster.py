"""`riskops drift-demo --topology cluster`: the loop closes through the cluster's own topology.

Serving is `cli.topology.ClusterTopology` — Redis, the predictor, two transformer replicas, all
started from the rendered manifests — instead of one combined server. The demo's replay is the
round-robin front (`RoundRobin`: each batch goes to the next replica). The transformers ship their
prediction-log segments to the topology's object store (a ``file://`` folder standing in for S3)
every `segment_seconds`, and the monitor passes read that URI (``RISKOPS_PREDICTION_LOG_URI``),
never a replica's disk. Feedback labels arrive as files (`riskops feedback`), as the transformers
have no feedback route. A promotion moves the registry's champion alias; the predictor follows it
(the stand-in for KServe rolling out a new predictor), so every replica answers with the new version.
With ``--canary`` the gate's pass starts a canary revision (a predictor of the challenger and a
transformer before it, `ClusterTopology.start_canary`) and the front sends it the canary's share of
transactions, as KServe's ``canaryTrafficPercent`` does; `ClusterCanary` judges the two arms with
the combined server's canary rules, and its decision moves the registry aliases.
Entity state is exact in Redis, so the drift check compares every input (no `SERVING_SKEWED_INPUTS`).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import httpx

from cli.drift_demo.decisions import canary_state
from cli.topology.processes import ClusterTopology
from riskops.lifecycle.canary import CanaryDecision, CanaryRouter, CanarySettings, CanaryState
from riskops.lifecycle.promotion import apply_canary_decision
from riskops.registry.store import CHALLENGER, CHAMPION
from riskops.settings import Paths

LOG_URI_ENV = "RISKOPS_PREDICTION_LOG_URI"


class ClusterCanary:
    """KServe's canary split and the canary's judge: a share of the transactions (by transaction id,
    `CanaryRouter`) goes to the canary revision; `CanaryState` counts both arms' answers, errors and
    the labels that come back, and decides (the same rules as the combined server's canary)."""

    def __init__(
        self, url: str, settings: CanarySettings, champion: str, challenger: str, timeout: float
    ) -> None:
        self.url = url
        self.client = httpx.Client(base_url=url, timeout=timeout)
        self.router = CanaryRouter(settings.share, settings.seed)
        self.state = CanaryState(settings, champion, challenger)
        self.answered: dict[str, tuple[str, float]] = {}  # transaction id -> (arm, score)

    def record(self, arm: str, response: httpx.Response, ids: list[str]) -> None:
        if response.status_code != 200:
            for _ in ids:
                self.state.record_request(arm, error=True)
            return
        for tid, p in zip(ids, response.json()["predictions"], strict=True):
            self.state.record_request(arm, float(p["risk_score"]))
            self.answered[tid] = (arm, float(p["risk_score"]))

    def outcomes(self, labels: list[dict]) -> None:
        """Feedback labels joined to the arm that answered (what the server's canary does)."""
        for rec in labels:
            got = self.answered.pop(rec["transaction_id"], None)
            if got is not None:
                self.state.record_outcome(got[0], rec["is_fraud"], got[1])


class RoundRobin:
    """An HTTP client over the replicas: predictions go to the next replica in turn (the front a
    Kubernetes Service puts before the pods), anything else to the first. While a canary runs, the
    transactions the router gives it go to the canary revision instead (KServe's traffic split)."""

    def __init__(self, urls: list[str], timeout: float) -> None:
        self.urls = urls
        self.timeout = timeout
        self.clients = [httpx.Client(base_url=u, timeout=timeout) for u in urls]
        self._turn = itertools.cycle(range(len(urls)))
        self.last_version: dict[str, str] = {}  # replica url -> the model version it answered with last
        self.canary: ClusterCanary | None = None

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        if not path.endswith(":predict"):
            return self.clients[0].post(path, **kwargs)
        ids = [str(i.get("transaction_id")) for i in (kwargs.get("json") or {}).get("instances", [])]
        canary = self.canary
        if canary is not None and ids and canary.router.use_challenger(ids[0]):
            r = canary.client.post(path, **kwargs)
            canary.record(CHALLENGER, r, ids)
            return r
        i = next(self._turn)
        r = self.clients[i].post(path, **kwargs)
        if canary is not None:
            canary.record(CHAMPION, r, ids)
        if r.status_code == 200:
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
        if self.canary is not None:
            self.canary.client.close()


class ClusterServing:
    """The drift demo's serving side in the cluster's topology (`Server`'s interface)."""

    def __init__(self, home: Paths, replicas: int = 2, segment_seconds: float = 2.0) -> None:
        self.topology = ClusterTopology(
            home, transformers=replicas, serving_settings={"log_segment_seconds": segment_seconds}
        )
        self._saved_uri: str | None = None
        self.front: RoundRobin | None = None

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
        self.front = RoundRobin(self.topology.urls, timeout)
        return self.front

    # -- the canary (`--canary`): KServe's canaryTrafficPercent rollout, and its judge -----------
    def start_canary(self, settings: CanarySettings, champion: str, challenger: str) -> None:
        url = self.topology.start_canary()
        self.front.canary = ClusterCanary(url, settings, champion, challenger, self.front.timeout)

    def canary_decision(self) -> CanaryDecision | None:
        """The canary's decision once it is one (promote / rollback), else None."""
        canary = self.front.canary
        if canary is None:
            return None
        decision = canary.state.decide()
        return None if decision.action == "continue" else decision

    def follow_canary(self, loop: Any) -> None:
        """`ClosedLoop._follow_canary` for this topology: start the canary revision after the gate
        passed, and once the canary decides, apply it (registry aliases) and end the revision."""
        st = loop.st
        if self.front.canary is None and canary_state(loop.registry, st.new) is None:
            settings = loop.cfg.promotion.canary
            self.start_canary(settings, loop.champion0.version, st.new)
            loop.ev.add(
                "canary_start",
                f"canary revision of {st.new} up (a predictor + a transformer); the front sends it "
                f"{settings.share:.0%} of the transactions",
                loop.tx,
                loop.after(),
            )
        decision = self.canary_decision()
        if decision is None:
            return
        apply_canary_decision(loop.registry, self.front.canary.state, decision, loop.home)
        self.end_canary()
        loop.ev.add("canary", f"the canary decided: {decision.action} ({'; '.join(decision.reasons)})",
                    loop.tx, loop.after())  # fmt: skip
        st.outcome = "promoted" if decision.action == "promote" else "canary_rollback"

    def end_canary(self) -> None:
        """The decision is applied: all traffic to the main revision, the canary revision stopped."""
        if self.front.canary is not None:
            self.front.canary.client.close()
            self.front.canary = None
        self.topology.stop_canary()

    def stop(self) -> None:
        self.topology.stop()
        if self._saved_uri is None:
            os.environ.pop(LOG_URI_ENV, None)
        else:
            os.environ[LOG_URI_ENV] = self._saved_uri
