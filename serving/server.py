"""One local ModelServer process serving the transformer and the predictor together.

`serve(port, model_version, home)` starts KServe's ModelServer with one model, ``risk-model``
(`RiskService`), which runs the transformer logic (serving.transformer.RiskTransformer) and the
predictor logic (serving.predictor.RiskPredictor) in-process: no HTTP hop, and concurrent
requests are scored together (dynamic batching: one model frame and one model call per batch).
On a cluster the same two classes run as the transformer and predictor of an InferenceService.

Routes (KServe's, plus the guards of serving.http)::

    POST /v1/models/risk-model:predict   {"instances": [transaction, ...]}
    POST /v1/models/risk-model:explain   {"instances": [transaction, ...]}
    POST /v2/models/risk-model/infer     one input per field, shape [batch]
    GET  /v2/health/ready, /v2/models/risk-model/ready, /v1/models/risk-model, /metrics
    POST /v1/feedback                    {"feedback": [{"transaction_id": ..., "is_fraud": 0|1}, ...]}
    GET  /v1/canary                      canary state (serving.canary; setting `canary: true`)

Run: ``python -m serving --port 8080 [--model-version v0003] [--home DIR] [--grpc]``
(the CLI's ``riskops serve`` calls `serve`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from time import perf_counter
from typing import Any

from kserve import Model
from kserve.model import InferenceVerb

from riskops.registry.store import CHAMPION
from riskops.settings import Paths, paths
from serving import metrics
from serving.alerts import AlertManager
from serving.batching import MicroBatcher
from serving.canary import CanaryController
from serving.catalogue import Catalogue
from serving.config import ServingConfig, apply_runtime_settings, load_config, setup_logging
from serving.handoff import run_on
from serving.online import OnlineFeatureStore
from serving.predictor import LoadedModel, ModelHolder, RegistryWatcher, RiskPredictor, load_model
from serving.predlog import PredictionLog
from serving.transformer import (
    Explained,
    Prepared,
    RiskTransformer,
    Scored,
    explanation_response,
    model_batch,
    model_frame,
)

log = logging.getLogger(__name__)

__all__ = ["RiskService", "build_service", "serve"]


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
        self._stage_timers = metrics.stage_timers(self.name)

    def load(self) -> bool:
        self.ready = self.predictor.holder.loaded
        return self.ready

    # -- the request path --------------------------------------------------------------------
    async def __call__(
        self, body: Any, headers: dict[str, str] | None = None, verb: InferenceVerb = InferenceVerb.PREDICT
    ) -> tuple[Any, dict[str, str]]:
        """KServe's `Model.__call__` pipeline (preprocess -> predict | explain -> postprocess, each
        stage timed into KServe's own `request_*_seconds{model_name}` histograms), without its
        per-request costs: `labels()` resolved for every stage, `inspect.iscoroutinefunction` per
        handler, wall-clock `time.time()` pairs, `validate` of a payload that is ours (`Prepared`).
        At concurrency 32 those were ~7% of the event loop's GIL time (docs/serving.md, "KServe's
        model call without its per-request overhead"); `test_kserve_stage_histograms_are_observed`.
        """
        timers = self._stage_timers
        explain = verb == InferenceVerb.EXPLAIN
        if not explain and verb != InferenceVerb.PREDICT:
            raise NotImplementedError(f"{verb} is not supported by {self.name}")
        t0 = perf_counter()
        try:
            prepared = await self.transformer.prepare(body, headers, explain=explain)
        finally:
            t1 = perf_counter()
            timers.preprocess.observe(t1 - t0)
        try:
            result = await (self.explain(prepared, headers) if explain else self.predict(prepared, headers))
        finally:
            t2 = perf_counter()
            (timers.explain if explain else timers.predict).observe(t2 - t1)
        try:
            response = await self.postprocess(result, headers)
        finally:
            timers.postprocess.observe(perf_counter() - t2)
        return response, {}

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
        metrics.CATALOGUE_TEXTS.set(len(catalogue))
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
        t = self.transformer
        if t.online is not None:
            t.online.flush(5)
            t.online.close()
        if t.prediction_log is not None:
            t.prediction_log.close()
        if t.alerts is not None:
            t.alerts.close()


def _initial_model(
    config: ServingConfig, home: Paths, catalogue: Catalogue
) -> tuple[ModelHolder, RegistryWatcher | None]:
    """Load the model named by config.model_version: a version (pinned), an alias (followed) or a folder."""
    from riskops.registry.store import ModelRegistry

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
    from serving.policy import PolicySource

    config = config.with_home(home)
    apply_runtime_settings(config)
    catalogue = Catalogue(config.catalogue_file)
    holder, watcher = _initial_model(config, home, catalogue)
    policy = PolicySource(config.policy_file, config.default_review, config.default_block, config.fail_mode)
    predictor = RiskPredictor(config.model_name, holder, policy, config)
    alerts = AlertManager(
        home.root / "alerts.jsonl",
        config.alert_webhook_url,
        config.alert_webhook_timeout_s,
        config.burst_count,
        config.burst_window_s,
    )
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
    online = None
    if config.feature_repo is not None:
        online = OnlineFeatureStore(
            config.feature_repo,
            config.feast_timeout_s,
            config.feast_retry_after_s,
            config.push_interval_s,
            push_process=config.push_process,
            read_process=config.read_process,
        )
        if not (Path(config.feature_repo) / "feature_store.yaml").exists():
            log.warning("no Feast repo at %s: every answer will be degraded", config.feature_repo)
        elif not online.open():
            log.warning("Feast online store unavailable at start (%s): answering degraded", online.last_error)
    transformer = RiskTransformer(
        config.model_name,
        online,
        config,
        prediction_log=PredictionLog(
            home.prediction_log, config.log_segment_bytes, config.log_segment_seconds, config.log_fsync
        ),
        alerts=alerts,
    )
    return RiskService(transformer, predictor, config, watcher, canary, home)


def serve(
    port: int = 8080,
    model_version: str | None = None,
    home: Paths | None = None,
    grpc: bool = False,
    grpc_port: int | None = None,
    config_file: Path | str | None = None,
    host: str | None = "127.0.0.1",
    **overrides: Any,
) -> None:
    """Serve ``risk-model`` on `port` until SIGTERM/SIGINT (blocking).

    model_version: "v0003" (pinned), an alias such as "champion" or "challenger" (followed: a
    new version behind the alias is hot-swapped in), a model folder path, or None (= champion).
    home: the riskops home (registry, feature repo, prediction log, alerts; default $RISKOPS_HOME).
    grpc: also serve the v2 gRPC protocol on `grpc_port` (default port + 1; gRPC binds all interfaces).
    host: the REST bind address: 127.0.0.1 by default (local use); "0.0.0.0" (or None) in a container.
    config_file: serving settings (default <home>/serving.yaml if it exists); `overrides` are
    ServingConfig fields (e.g. fail_mode="block", alert_webhook_url=...).
    """
    from kserve import ModelServer

    from serving.cpus import pin_server
    from serving.gc_control import GcController
    from serving.http import front_options, install_guards, rest_front
    from serving.routes import install_routes

    setup_logging()
    home = home or paths()
    config = load_config(
        config_file if config_file is not None else home.root / "serving.yaml",
        model_version=model_version,
        **overrides,
    ).with_home(home)
    pin_server(config.server_cpu)  # before build_service starts threads and the Feast child: they inherit it
    service = build_service(config, home)
    install_guards(config.max_body_bytes)
    install_routes(service)
    server = ModelServer(
        http_port=port,
        grpc_port=grpc_port or port + 1,
        enable_grpc=grpc,
        enable_latency_logging=False,
    )
    log.info(
        "serving %s %s on http://%s:%d (home %s)",
        config.model_name,
        service.predictor.holder.current.version,
        host or "0.0.0.0",
        port,
        home.root,
    )
    # last, once the model is loaded and warmed: what exists now lives as long as the process
    gc_control = GcController(freeze=config.gc_freeze).start()
    try:
        with rest_front(host, **front_options(config)):
            server.start([service])
    finally:
        gc_control.close()
        service.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving", description="Serve the riskops risk model (KServe)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1", help="REST bind address (0.0.0.0 in a container)")
    p.add_argument(
        "--model-version", default=None, help="v0003, an alias (champion), a model folder; default champion"
    )
    p.add_argument("--home", default=None, help="riskops home (default $RISKOPS_HOME or ./.riskops)")
    p.add_argument("--grpc", action="store_true", help="also serve gRPC (v2) on --grpc-port")
    p.add_argument("--grpc-port", type=int, default=None)
    p.add_argument("--config", default=None, help="serving.yaml (default <home>/serving.yaml)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a ServingConfig field (YAML value), e.g. --set fail_mode=block",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    import yaml

    args = build_parser().parse_args(argv)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    serve(
        port=args.port,
        model_version=args.model_version,
        home=paths(args.home),
        grpc=args.grpc,
        grpc_port=args.grpc_port,
        config_file=args.config,
        host=args.host,
        **overrides,
    )


if __name__ == "__main__":
    main()
