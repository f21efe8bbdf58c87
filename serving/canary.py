"""Online canary: the registry's ``challenger`` answers a deterministic share of the traffic.

The in-process equivalent of KServe's ``canaryTrafficPercent``, with the decision made by the
server itself. Enabled with the serving setting ``canary: true``; its knobs (share, seed,
min_requests, error / flag-rate / KS / PR-AUC bounds) are the ``promotion.canary`` section of the
monitor config (``canary_config``, default ``configs/monitor.yaml``), read again whenever a new
canary starts.

* `CanaryController` polls the registry aliases every ``registry_poll_s`` in a background thread.
  A ``challenger`` alias that differs from the served champion is loaded and warmed off the
  request path (a challenger that fails to load is logged, reported by ``GET /v1/canary`` and
  never touches the champion); then the canary is *active*.
* While active, every scored row is routed by `riskops.lifecycle.canary.CanaryRouter.arm(transaction_id)`
  (keyed hash: a retried request gets the same arm). Rows of one batch are scored by their arm's
  model; the answer's ``model_version`` and the prediction log's ``arm`` say which served it.
  A challenger that raises or returns a non-finite / out-of-range score is counted as an error and
  the row is answered by the champion (clients never see a broken challenger).
* `riskops.lifecycle.canary.CanaryState` keeps per-arm counters; labelled outcomes (``POST /v1/feedback``)
  for recently served transactions are joined on transaction_id from a bounded in-memory map.
* Each poll calls ``decide()``; ``promote`` / ``rollback`` go through
  `riskops.lifecycle.promotion.apply_canary_decision` (the champion alias moves to the challenger, or the
  challenger alias is removed; the decision is appended to ``<home>/promotion/decisions.jsonl``
  with ``kind: canary``) and an alert (kind ``canary``) is raised. On promotion the already warm
  challenger is swapped in as the champion at once (the registry watcher then sees nothing to do),
  so no request is answered by the old champion after the switch.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from riskops.features.contract import ColumnFrame, take_rows
from riskops.lifecycle.canary import CanaryDecision, CanaryRouter, CanarySettings, CanaryState
from riskops.lifecycle.promotion import PromotionSettings, apply_canary_decision
from riskops.registry.store import CHALLENGER, CHAMPION, ModelRegistry
from riskops.settings import PROJECT_ROOT, Paths, load_yaml
from serving import prometheus_metrics
from serving.predictor import LoadedModel, ModelHolder, load_model

log = logging.getLogger(__name__)

DEFAULT_CANARY_CONFIG = PROJECT_ROOT / "configs" / "monitor.yaml"
ARMS = (CHAMPION, CHALLENGER)


def read_canary_settings(path: Path | str | None) -> CanarySettings:
    """``promotion.canary`` of a monitor config (a missing default file = the built-in defaults)."""
    p = Path(path) if path is not None else DEFAULT_CANARY_CONFIG
    if not p.exists():
        if path is not None:
            raise FileNotFoundError(f"canary config not found: {p}")
        return CanarySettings()
    return PromotionSettings.from_dict(load_yaml(p).get("promotion")).canary


@dataclass(frozen=True)
class ActiveCanary:
    """One canary run: immutable, replaced as a whole (the model thread reads it once per batch)."""

    generation: int
    model: LoadedModel  # the challenger
    champion_version: str
    router: CanaryRouter
    state: CanaryState
    started_at: str

    @property
    def challenger_version(self) -> str:
        return self.model.version


class CanaryController:
    def __init__(
        self,
        holder: ModelHolder,
        home: Paths,
        model_name: str,
        poll_s: float = 2.0,
        config_file: Path | str | None = None,
        review_threshold: Callable[[LoadedModel], float] | None = None,
        alert: Callable[[dict], Any] | None = None,
        outcome_cache: int = 100_000,
        loader: Callable[..., Any] | None = None,
    ) -> None:
        self.holder = holder
        self.home = home
        self.model_name = model_name
        self.poll_s = poll_s
        self.config_file = config_file
        self.settings = read_canary_settings(config_file)  # fail at start on a broken config
        self.review_threshold = review_threshold
        self.alert = alert
        self.loader = loader
        self.active: ActiveCanary | None = None
        self.status = "idle"  # idle | loading | active | failed
        self.load_error: str | None = None
        self.failed_version: str | None = None
        self.last_decision: dict | None = None
        self.decisions = 0
        self._generation = 0
        self._info_version: str | None = None
        self._recent: OrderedDict[str, tuple[int, str, float]] = OrderedDict()
        self._recent_size = max(int(outcome_cache), 1)
        self._recent_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors_logged_at = float("-inf")
        prometheus_metrics.CANARY_ACTIVE.set(0)
        prometheus_metrics.CANARY_SHARE.set(self.settings.share)

    # -- background --------------------------------------------------------------------------
    def start(self) -> None:
        if self.poll_s <= 0:
            log.warning("canary enabled but registry_poll_s <= 0: the challenger alias is never read")
            return
        if self.settings.share <= 0:
            log.warning("canary enabled with share 0: the challenger would get no traffic")
        self._thread = threading.Thread(target=self._run, name="riskops-canary", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check_once()
            except Exception:  # noqa: BLE001 - the canary must never stop the server
                log.exception("canary check failed")

    def _registry(self) -> ModelRegistry:
        return ModelRegistry(self.home.registry, self.model_name)

    def check_once(self) -> None:
        """Follow the challenger alias; start, restart or end the canary; decide when due."""
        aliases = self._registry().aliases()
        version = aliases.get(CHALLENGER)
        champion = self.holder.current.version
        act = self.active
        if version is None or version in (champion, aliases.get(CHAMPION)):
            if act is not None:
                self._end(act, "challenger alias removed or now the champion")
            self.status, self.failed_version, self.load_error = "idle", None, None
            return
        if act is not None and act.challenger_version == version:
            if act.champion_version != champion:  # the champion moved under the canary: start over
                log.info("canary: champion is now %s; restarting the comparison", champion)
                self.active = self._new_run(act.model, champion)
                return
            self.evaluate(act)
            return
        if version == self.failed_version:
            return  # already reported; a fixed model is a new version
        if act is not None:
            self._end(act, f"challenger alias moved to {version}")
        self._load(version, champion)

    def _load(self, version: str, champion: str) -> None:
        self.status = "loading"
        try:
            mv = self._registry().get(version)
            lm = load_model(mv.path, mv.version, self.loader, self.holder.catalogue_texts())
        except Exception as exc:  # noqa: BLE001 - a broken challenger must not disturb the champion
            self.status, self.failed_version, self.load_error = (
                "failed",
                version,
                f"{type(exc).__name__}: {exc}",
            )
            prometheus_metrics.CANARY_LOAD_FAILURES.inc()
            log.error("canary: challenger %s failed to load, champion keeps all traffic: %s", version, exc)
            self._alert({"event": "load_failed", "challenger_version": version, "error": self.load_error})
            return
        try:
            self.settings = read_canary_settings(self.config_file)
        except Exception as exc:  # noqa: BLE001 - keep the last good settings
            log.error("canary: cannot re-read %s, keeping the previous settings: %s", self.config_file, exc)
        self.failed_version, self.load_error = None, None
        self.active = self._new_run(lm, champion)
        log.info(
            "canary: %s answers %.0f%% of traffic next to champion %s (decision after %d challenger requests)",
            version,
            self.settings.share * 100,
            champion,
            self.settings.min_requests,
        )

    def _new_run(self, lm: LoadedModel, champion: str) -> ActiveCanary:
        settings = self.settings
        if self.review_threshold is not None:
            settings = replace(settings, review_threshold=float(self.review_threshold(self.holder.current)))
        self._generation += 1
        run = ActiveCanary(
            generation=self._generation,
            model=lm,
            champion_version=champion,
            router=CanaryRouter(settings.share, settings.seed),
            state=CanaryState(settings, champion, lm.version),
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self.status = "active"
        prometheus_metrics.CANARY_ACTIVE.set(1)
        prometheus_metrics.CANARY_SHARE.set(settings.share)
        self._set_challenger_info(lm.version)
        return run

    def _set_challenger_info(self, version: str | None) -> None:
        # no Gauge.clear(): KServe's Prometheus setup warns on it (multi-process mode)
        old = self._info_version
        if old is not None and old != version:
            prometheus_metrics.CANARY_CHALLENGER.labels(old).set(0)
        if version is not None:
            prometheus_metrics.CANARY_CHALLENGER.labels(version).set(1)
        self._info_version = version

    def _end(self, act: ActiveCanary, why: str | None) -> None:
        if self.active is act:
            self.active = None
        self.status = "idle"
        prometheus_metrics.CANARY_ACTIVE.set(0)
        self._set_challenger_info(None)
        if why:
            log.info("canary of %s ended: %s", act.challenger_version, why)

    def evaluate(self, act: ActiveCanary | None = None) -> CanaryDecision | None:
        """decide(); on promote / rollback move the aliases, swap, record and alert."""
        act = act or self.active
        if act is None:
            return None
        decision = act.state.decide()
        if decision.action == "continue":
            return decision
        registry = self._registry()
        with self.holder.update_lock:  # the registry watcher swaps under the same lock
            if self.active is not act:
                return None
            if registry.aliases().get(CHALLENGER) != act.challenger_version:
                self._end(act, "challenger alias changed before the decision")
                return None
            apply_canary_decision(registry, act.state, decision, self.home)
            if decision.action == "promote":
                self.holder.swap(act.model)  # warm already: no reload, no request on the old champion
            self._end(act, None)
        self.decisions += 1
        prometheus_metrics.CANARY_DECISIONS.labels(decision.action).inc()
        self.last_decision = {
            "action": decision.action,
            "reasons": decision.reasons,
            "champion_version": act.champion_version,
            "challenger_version": act.challenger_version,
            "arms": act.state.snapshot(),
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        log.warning(
            "canary decision %s for %s (champion %s): %s",
            decision.action,
            act.challenger_version,
            act.champion_version,
            "; ".join(decision.reasons),
        )
        self._alert({"event": decision.action, **self.last_decision})
        return decision

    def _alert(self, event: dict) -> None:
        if self.alert is None:
            return
        try:
            self.alert({"kind": "canary", **event})
        except Exception as exc:  # noqa: BLE001
            log.error("canary alert failed: %s", exc)

    # -- request path (model thread) ---------------------------------------------------------
    def score(
        self,
        score_frame: Callable[[pd.DataFrame | ColumnFrame, list[bool], LoadedModel], list[dict]],
        frame: pd.DataFrame | ColumnFrame,
        degraded: Sequence[bool],
        transaction_ids: Sequence[str],
        champion: LoadedModel,
        act: ActiveCanary,
    ) -> list[dict]:
        """Score every row with its arm's model; a failing challenger row falls back to the champion."""
        n = len(frame)
        arms = [act.router.arm(t) for t in transaction_ids]
        idx = {a: [i for i in range(n) if arms[i] == a] for a in ARMS}
        results: list[dict | None] = [None] * n
        fallback: list[int] = []
        state = act.state
        if idx[CHALLENGER]:
            rows = idx[CHALLENGER]
            try:
                got = score_frame(take_rows(frame, rows), [degraded[i] for i in rows], act.model)
            except Exception as exc:  # noqa: BLE001
                self._log_error(act, exc)
                got = [None] * len(rows)
            for i, res in zip(rows, got, strict=True):
                score = None if res is None else res.get("risk_score")
                if score is None or not math.isfinite(score) or not 0.0 <= score <= 1.0:
                    state.record_request(CHALLENGER, error=True)
                    prometheus_metrics.CANARY_REQUESTS.labels(CHALLENGER, "error").inc()
                    fallback.append(i)
                else:
                    state.record_request(CHALLENGER, score)
                    prometheus_metrics.CANARY_REQUESTS.labels(CHALLENGER, "ok").inc()
                    results[i] = {**res, "arm": CHALLENGER}
        rows = sorted(idx[CHAMPION] + fallback)
        if rows:
            got = score_frame(take_rows(frame, rows), [degraded[i] for i in rows], champion)
            routed = set(idx[CHAMPION])
            for i, res in zip(rows, got, strict=True):
                results[i] = {**res, "arm": CHAMPION}
                if i in routed:
                    state.record_request(CHAMPION, res["risk_score"])
                    prometheus_metrics.CANARY_REQUESTS.labels(CHAMPION, "ok").inc()
        self._remember(act.generation, transaction_ids, results, set(fallback))
        return results  # type: ignore[return-value]

    def _log_error(self, act: ActiveCanary, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._errors_logged_at >= 10.0:
            self._errors_logged_at = now
            log.error(
                "canary: challenger %s failed to score, champion answered: %s", act.challenger_version, exc
            )

    def _remember(self, generation: int, tids: Sequence[str], results: list, skip: set[int]) -> None:
        with self._recent_lock:
            for i, (tid, res) in enumerate(zip(tids, results, strict=True)):
                if i in skip or res is None:
                    continue
                self._recent[str(tid)] = (generation, res["arm"], float(res["risk_score"]))
                self._recent.move_to_end(str(tid))
            while len(self._recent) > self._recent_size:
                self._recent.popitem(last=False)

    # -- feedback ----------------------------------------------------------------------------
    def record_outcomes(self, records: Sequence[dict]) -> int:
        """Labelled outcomes (normalised feedback) for transactions this canary run served."""
        act = self.active
        if act is None:
            return 0
        joined = 0
        with self._recent_lock:
            hits = [(self._recent.get(str(r["transaction_id"])), r) for r in records]
        for hit, rec in hits:
            if hit is None or hit[0] != act.generation:
                continue
            _, arm, score = hit
            act.state.record_outcome(arm, int(rec["is_fraud"]), score)
            prometheus_metrics.CANARY_OUTCOMES.labels(arm).inc()
            joined += 1
        return joined

    # -- status ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        act = self.active
        s = act.state.settings if act is not None else self.settings
        out: dict[str, Any] = {
            "enabled": True,
            "status": self.status,
            "active": act is not None,
            "share": s.share,
            "seed": s.seed,
            "min_requests": s.min_requests,
            "champion_version": self.holder.current.version if self.holder.loaded else None,
            "challenger_version": act.challenger_version if act is not None else None,
            "started_at": act.started_at if act is not None else None,
            "arms": act.state.snapshot() if act is not None else None,
            "load_error": self.load_error,
            "failed_version": self.failed_version,
            "last_decision": self.last_decision,
            "decisions": self.decisions,
        }
        return out
