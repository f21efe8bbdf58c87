"""The risk model as one KServe `Model`: the transformer and the predictor in one process.

`RiskService` (named like the model, ``risk-model``) runs the transformer logic
(serving.transformer.RiskTransformer) and the predictor logic (serving.predictor.RiskPredictor)
in-process: no HTTP hop, and concurrent requests are scored together (dynamic batching: one model
frame and one model call per batch). On a cluster the same two classes run as the transformer and
predictor of an InferenceService. `build_service` assembles it from `ServingConfig`;
serving.server serves it.

With KServe's ``workers > 1`` each worker process gets a `WorkerRiskService` (see its doc).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from multiprocessing import util as multiprocessing_util
from pathlib import Path
from typing import Any

from kserve import Model
from kserve.errors import ModelNotReady
from kserve.model import InferenceVerb

from riskops.registry.store import CHAMPION, ModelRegistry
from riskops.settings import Paths
from serving import prometheus_metrics
from serving.batching import MicroBatcher
from serving.canary import CanaryController
from serving.catalogue import Catalogue
from serving.config import ServingConfig, apply_runtime_settings, setup_logging
from serving.environment import PROMETHEUS_DIR_VARIABLES
from serving.fast_path import run_stages, stage_timers
from serving.gc_control import GcController
from serving.handoff import run_on
from serving.http import install_guards
from serving.policy import PolicySource
from serving.predictor import LoadedModel, ModelHolder, RegistryWatcher, RiskPredictor, load_model
from serving.routes import install_multiprocess_metrics, install_routes
from serving.transformer import (
    EXPLAINING,
    Explained,
    Prepared,
    RiskTransformer,
    Scored,
    alert_manager_for,
    explanation_response,
    model_batch,
    model_frame,
    open_online_store,
    prediction_log_for,
)

log = logging.getLogger(__name__)

__all__ = ["RiskService", "WorkerRiskService", "build_service"]


class RiskService(Model):
    """Transformer + predictor in one KServe model (named like the model, ``risk-model``)."""

    def __init__(
        self,
        transformer: RiskTransformer,
        predictor: RiskPredictor,
        config: ServingConfig,
        watcher: RegistryWatcher | None = None,
        canary: CanaryController | None = None,
        home: Paths | None = None,
    ) -> None:
        super().__init__(config.model_name)
        self.transformer = transformer
        self.predictor = predictor
        self.config = config
        self.watcher = watcher
        self.canary = canary
        self.home = home
        self.batcher = MicroBatcher(
            self._score_batch, predictor.executor, config.max_batch_rows, config.batch_wait_ms / 1000
        )
        self.ready = predictor.holder.loaded
        # serving/fast_path.py: KServe's stages run by `run_stages` (None: KServe's own Model.__call__)
        self.stage_timers = stage_timers(self.name) if config.fast_path else None

    def load(self) -> bool:
        self.ready = self.predictor.holder.loaded
        return self.ready

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """KServe's ``--workers N`` sends the registered models to each worker process by pickling
        (spawn): a worker gets `WorkerRiskService`, which builds its own service from these settings."""
        return (WorkerRiskService, (self.config, self.home))

    # -- the request path --------------------------------------------------------------------
    async def __call__(
        self, body: Any, headers: dict[str, str] | None = None, verb: InferenceVerb = InferenceVerb.PREDICT
    ) -> tuple[Any, dict[str, str]]:
        """KServe's stages; `preprocess` reads whether this request explains (it must not count it as an event)."""
        token = EXPLAINING.set(verb == InferenceVerb.EXPLAIN)
        try:
            if self.stage_timers is not None:
                return await run_stages(self, self.stage_timers, body, headers, verb)
            return await super().__call__(body, headers=headers, verb=verb)
        finally:
            EXPLAINING.reset(token)

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Prepared:
        return await self.transformer.prepare(payload, headers, explain=EXPLAINING.get())

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers=None
    ) -> Scored:
        return await self.batcher.submit(payload, len(payload))

    def _score_batch(self, batch: list[Prepared]) -> list[Scored]:
        """Model thread: one model frame and one model call (per canary arm) for every request of the batch."""
        # the canary first, then the champion: a promotion swaps the champion before it ends the
        # canary, so this order never pairs "no canary" with the old champion after a promotion
        act = self.canary.active if self.canary is not None else None
        lm: LoadedModel = self.predictor.holder.current  # read once: the whole batch uses this model
        frame, numeric = model_batch(batch)
        flags = [d for p in batch for d in p.degraded]
        if act is None:
            results = self.predictor.score_frame(frame, flags, lm, numeric)
        else:
            tids = [r["transaction_id"] for p in batch for r in p.records]
            results = self.canary.score(self.predictor.score_frame, frame, flags, tids, lm, act)
        out, i = [], 0
        for p in batch:
            n = len(p)
            out.append(Scored(p, results[i : i + n], numeric[i : i + n]))
            i += n
        return out

    async def explain(self, payload: Any, headers: dict[str, str] | None = None) -> Explained:
        prepared: Prepared = payload

        def run() -> list[dict]:
            return self.predictor.explain_frame(model_frame([prepared]))

        return Explained(prepared, await run_on(self.predictor.executor, run))

    async def postprocess(
        self, result: Any, headers: dict[str, str] | None = None, response_headers=None
    ) -> Any:
        if isinstance(result, Scored):
            return await self.transformer.finish(result)
        if isinstance(result, Explained):
            return explanation_response(result)
        return result

    # -- the product catalogue -----------------------------------------------------------------
    @property
    def catalogue(self) -> Catalogue:
        return self.predictor.holder.catalogue

    def _models_to_warm(self) -> list[LoadedModel]:
        act = self.canary.active if self.canary is not None else None
        models = [self.predictor.holder.current]
        return models + [act.model] if act is not None else models

    async def add_catalogue_texts(self, texts: list[str]) -> dict[str, int]:
        """Remember `texts` and encode the new ones into the served model(s) before answering.

        Encoding runs on the model thread in chunks of `catalogue_chunk` texts, so scoring batches
        queue behind one chunk at most (tens of ms), never behind the whole catalogue.
        """
        catalogue = self.catalogue
        new = await asyncio.to_thread(catalogue.add, texts)
        encoded = 0
        step = max(1, self.config.catalogue_chunk)
        for start in range(0, len(new), step):
            chunk = new[start : start + step]

            def encode(chunk: list[str] = chunk) -> int:
                return sum(lm.scorer.warm_cache(chunk) for lm in self._models_to_warm())

            encoded += await run_on(self.predictor.executor, encode)
        prometheus_metrics.CATALOGUE_TEXTS.set(len(catalogue))
        return {
            "received": len(texts),
            "new": len(new),
            "encoded": encoded,
            "catalogue_texts": len(catalogue),
        }

    def catalogue_state(self) -> dict[str, Any]:
        texts = self.catalogue.texts()
        scorer = self.predictor.holder.current.scorer
        return {
            "catalogue_texts": len(texts),
            "cached_in_model": sum(1 for t in texts if scorer.is_cached(t)),
            "model_version": self.predictor.holder.current.version,
        }

    # -- lifecycle ---------------------------------------------------------------------------
    def stop(self) -> None:
        self.close()
        super().stop()

    def close(self) -> None:
        if getattr(self, "_closed", False):
            return
        self._closed = True
        if self.canary is not None:
            self.canary.stop()
        if self.watcher is not None:
            self.watcher.stop()
        self.transformer.close()


def _initial_model(
    config: ServingConfig, home: Paths, catalogue: Catalogue
) -> tuple[ModelHolder, RegistryWatcher | None]:
    """Load the model named by config.model_version: a version (pinned), an alias (followed) or a folder."""
    ref = config.model_version
    holder = ModelHolder()
    holder.catalogue = catalogue
    if ref and Path(ref).is_dir():
        holder.swap(load_model(Path(ref), Path(ref).name, extra_texts=holder.catalogue_texts()))
        return holder, None
    registry = ModelRegistry(home.registry, config.model_name)
    mv = registry.resolve(ref)  # RegistryError names what is missing
    holder.swap(load_model(mv.path, mv.version, extra_texts=holder.catalogue_texts()))
    pinned = bool(ref) and ref.startswith("v") and ref[1:].isdigit()
    if pinned or config.registry_poll_s <= 0:
        return holder, None
    watcher = RegistryWatcher(
        holder, home.registry, ref or "champion", config.registry_poll_s, config.model_name
    )
    watcher.start()
    return holder, watcher


def build_service(config: ServingConfig, home: Paths) -> RiskService:
    """Everything `serve` runs, without starting the HTTP server (tests and tools use it too)."""
    config = config.with_home(home)
    apply_runtime_settings(config)
    catalogue = Catalogue(config.catalogue_file)
    holder, watcher = _initial_model(config, home, catalogue)
    policy = PolicySource(config.policy_file, config.default_review, config.default_block, config.fail_mode)
    predictor = RiskPredictor(config.model_name, holder, policy, config)
    alerts = alert_manager_for(config, home)
    canary = None
    if config.canary:
        if watcher is None or config.model_version not in (None, CHAMPION):
            log.warning(
                "canary: true needs the server to follow the champion alias with registry_poll_s > 0 "
                "(model_version %r): canary off",
                config.model_version,
            )
        else:
            canary = CanaryController(
                holder,
                home,
                config.model_name,
                config.registry_poll_s,
                config.canary_config,
                review_threshold=lambda lm: policy.thresholds(lm.policy).review,
                alert=alerts.emit,
                outcome_cache=config.canary_outcome_cache,
            )
            canary.start()
    transformer = RiskTransformer(
        config.model_name,
        open_online_store(config),
        config,
        prediction_log=prediction_log_for(config, home),
        alerts=alerts,
    )
    return RiskService(transformer, predictor, config, watcher, canary, home)


class WorkerRiskService(Model):
    """`RiskService` in one of KServe's worker processes (``workers > 1``): what the worker unpickles.

    KServe 0.21 spawns its workers (`RESTServerMultiProcess`): each imports `kserve.model_server`
    afresh (a new FastAPI app) and receives the registered models pickled; `RiskService` pickles
    as its settings. Building a service takes seconds (model, Feast), and a worker answers KServe's
    liveness ping (5 s timeout, then the worker is killed and respawned) only after unpickling, so
    this registers the guards and routes on the worker's app at once and builds the service on a
    thread. Until then the model is not ready: KServe answers 503, so do our routes. Each worker
    has its own model, Feast push child and prediction log segment (the pid is in its name).
    """

    def __init__(self, config: ServingConfig, home: Paths) -> None:
        super().__init__(config.model_name)
        setup_logging()  # KServe configures only its own loggers in a worker
        self.config, self.home = config, home
        self.ready = False
        self.service: RiskService | None = None
        install_guards(config.max_body_bytes)
        install_routes(self)
        if any(os.environ.get(name) for name in PROMETHEUS_DIR_VARIABLES):
            install_multiprocess_metrics()  # before KServe's own /metrics: the first match answers
        threading.Thread(target=self._build, name="riskops-worker-build", daemon=True).start()

    def _build(self) -> None:
        service = build_service(self.config, self.home)
        GcController(freeze=self.config.gc_freeze).start()  # after loading: see serving/gc_control.py
        # spawned workers leave through os._exit: multiprocessing's finalizers run, atexit does not
        multiprocessing_util.Finalize(self, service.close, exitpriority=10)
        self.service = service
        self.ready = True
        log.info("worker %d: serving %s %s", os.getpid(), self.name, service.predictor.holder.current.version)

    def load(self) -> bool:
        return self.ready  # KServe calls load() on a model that is not ready: it gets ready by itself

    def _built(self) -> RiskService:
        if self.service is None:
            raise ModelNotReady(self.name)
        return self.service

    @property
    def canary(self) -> CanaryController | None:
        return self.service.canary if self.service is not None else None

    async def __call__(
        self, body: Any, headers: dict[str, str] | None = None, verb: InferenceVerb = InferenceVerb.PREDICT
    ) -> tuple[Any, dict[str, str]]:
        return await self._built()(body, headers, verb)

    async def add_catalogue_texts(self, texts: list[str]) -> dict[str, int]:
        return await self._built().add_catalogue_texts(texts)

    def catalogue_state(self) -> dict[str, Any]:
        return self._built().catalogue_state()
