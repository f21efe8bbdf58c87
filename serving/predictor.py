"""KServe predictor: the risk model, the decision policy and the reasons.

Input: model frames (the output of riskops.features.contract.build_model_frame, made by the transformer).
Output per row: ``risk_score`` (calibrated probability), ``decision`` (approve/review/block from
the policy), ``reasons`` (top contributing features from the model's integrated-gradients
explanation, described for a person, e.g. ``user_txn_count_1h=7 (high)``), ``model_version``
and ``degraded``.

Standalone (the predictor of a split InferenceService)::

    python -m serving.predictor --model_name risk-model --model_dir /mnt/models --http_port 8080

v1 ``POST /v1/models/risk-model:predict`` with ``{"instances": [<model frame row>, ...]}``
(a row may carry ``"_degraded": true``) and ``:explain`` for raw attributions.

Hot swap: `ModelHolder` holds the served (scorer, version, policy.json) as one immutable bundle;
`RegistryWatcher` polls the registry alias in a background thread, loads and warms a new
champion off the request path and swaps the reference under a lock. A batch reads the reference
once, so in-flight requests finish on the model they started with.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kserve import Model, ModelServer, model_server

from riskops.features.contract import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    TEXT_COLUMN,
    ColumnFrame,
    build_model_frame,
)
from riskops.features.sequences import SEQUENCE_COLUMNS, add_sequence_columns, has_sequence_columns
from riskops.pii import hash_record
from riskops.registry.store import ModelRegistry, RegistryError
from riskops.settings import MODEL_NAME
from serving import prometheus_metrics
from serving.batching import MicroBatcher
from serving.catalogue import Catalogue
from serving.config import ServingConfig, apply_runtime_settings, load_config, setup_logging
from serving.cpus import pin_server
from serving.environment import prepare_process_environment
from serving.examples import example_transaction
from serving.fast_path import fast_rest_server
from serving.gc_control import GcController
from serving.handoff import WorkerThread, run_on
from serving.http import install_guards
from serving.policy import PolicySource, read_model_policy, top_reasons
from serving.validation import RequestError
from serving.wire import WIRE_KEY, concat_frames, from_wire

log = logging.getLogger(__name__)

FRAME_COLUMNS: tuple[str, ...] = (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES, TEXT_COLUMN)
DEGRADED_KEY = "_degraded"


@dataclass(frozen=True)
class LoadedModel:
    scorer: Any  # riskops.training.scorer.RiskScorer
    version: str
    path: Path
    policy: dict[str, float] = field(default_factory=dict)  # the version's policy.json
    loaded_at: float = field(default_factory=time.time)


def load_model(
    path: Path | str,
    version: str | None = None,
    loader: Callable[..., Any] | None = None,
    extra_texts: Sequence[str] = (),
) -> LoadedModel:
    """Load a model folder, read its policy.json and warm it up (first request not slower).

    extra_texts: texts to pre-encode besides the model's own warm texts (the product catalogue).
    """
    if loader is None:
        # torch and transformers (seconds to import) only where a model is loaded: the split
        # transformer imports this module for DEGRADED_KEY and never loads one
        from riskops.training.scorer import RiskScorer

        loader = RiskScorer.load
    path = Path(path)
    started = time.perf_counter()
    scorer = loader(path)
    lm = LoadedModel(scorer, version or path.name, path, read_model_policy(path))
    warm_up(lm, extra_texts)
    log.info("loaded model %s from %s in %.2fs", lm.version, path, time.perf_counter() - started)
    return lm


def warm_up(lm: LoadedModel, extra_texts: Sequence[str] = ()) -> None:
    warm_cache = getattr(lm.scorer, "warm_cache", None)
    if warm_cache is not None:  # catalogue + frequent training texts, encoded before the first request
        started = time.perf_counter()
        n = warm_cache([*extra_texts, *getattr(lm.scorer, "warm_texts", [])])
        log.info(
            "text cache warmed with %d texts (%d from the catalogue) in %.2fs",
            n,
            len(extra_texts),
            time.perf_counter() - started,
        )
    rec = hash_record(example_transaction())
    frame = build_model_frame(add_sequence_columns(pd.DataFrame([rec])))  # a first-time customer
    lm.scorer.predict_proba(frame)
    lm.scorer.explain(frame)


class ModelHolder:
    """The served model bundle; replaced atomically (a single reference assignment under a lock)."""

    def __init__(self, initial: LoadedModel | None = None) -> None:
        self._lock = threading.Lock()
        # held by whoever decides *which* model to swap in (registry watcher, canary promotion),
        # so a promotion and a registry poll never race each other into a flap
        self.update_lock = threading.Lock()
        self._current = initial
        self.swaps = 0
        # the product catalogue: every model loaded later encodes it (build_service gives it a file)
        self.catalogue = Catalogue(None)
        if initial is not None:
            prometheus_metrics.MODEL_INFO.labels(initial.version).set(1)

    @property
    def current(self) -> LoadedModel:
        cur = self._current
        if cur is None:
            raise RuntimeError("no model loaded")
        return cur

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def catalogue_texts(self) -> list[str]:
        return self.catalogue.texts()

    def swap(self, new: LoadedModel) -> LoadedModel | None:
        with self._lock:
            old, self._current = self._current, new
            self.swaps += 1
        if old is not None:
            prometheus_metrics.MODEL_INFO.labels(old.version).set(0)
            prometheus_metrics.MODEL_SWAPS.inc()
            log.info("hot swap: now serving %s (was %s)", new.version, old.version)
        prometheus_metrics.MODEL_INFO.labels(new.version).set(1)
        return old


class RegistryWatcher:
    """Follows a registry alias: loads a new version off the request path, then swaps it in."""

    def __init__(
        self,
        holder: ModelHolder,
        registry_root: Path | str,
        ref: str = "champion",
        poll_s: float = 2.0,
        model_name: str = MODEL_NAME,
        loader: Callable[..., Any] | None = None,
    ) -> None:
        self.holder = holder
        self.registry_root = Path(registry_root)
        self.ref = ref
        self.poll_s = poll_s
        self.model_name = model_name
        self.loader = loader
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def start(self) -> None:
        if self.poll_s <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="riskops-registry-watch", daemon=True)
        self._thread.start()

    def check_once(self) -> bool:
        """Swap if the alias points elsewhere; True when a swap happened."""

        with self.holder.update_lock:
            try:
                mv = ModelRegistry(self.registry_root, self.model_name).resolve(self.ref)
            except RegistryError:
                return False
            cur = self.holder._current  # noqa: SLF001 - read-only peek
            if cur is not None and cur.version == mv.version:
                return False
            lm = load_model(mv.path, mv.version, self.loader, self.holder.catalogue_texts())
            self.holder.swap(lm)
            return True

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check_once()
            except Exception as exc:  # noqa: BLE001 - a broken new version must not stop serving
                self.errors += 1
                log.error("registry watch: could not load the new %s: %s", self.ref, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


class FrameRow(Mapping):
    """Row `i` of a model frame (DataFrame or ColumnFrame) as a read-only mapping, read one cell at a
    time: a reason reads k cells of its row, where ``DataFrame.to_dict("records")`` built every cell
    of every flagged row (~1 ms a batch)."""

    __slots__ = ("frame", "i")

    def __init__(self, frame: pd.DataFrame | ColumnFrame, i: int) -> None:
        self.frame, self.i = frame, i

    def __getitem__(self, name: str) -> Any:
        if name not in self.frame.columns:
            raise KeyError(name)
        column = self.frame[name]
        return column.iat[self.i] if isinstance(column, pd.Series) else column[self.i]

    def __iter__(self) -> Iterator[str]:
        return iter(self.frame.columns)

    def __len__(self) -> int:
        return len(self.frame.columns)


class RiskPredictor(Model):
    """Model frames -> scores, decisions and reasons."""

    def __init__(
        self,
        name: str,
        holder: ModelHolder,
        policy: PolicySource,
        config: ServingConfig | None = None,
        executor: cf.Executor | None = None,
    ) -> None:
        super().__init__(name)
        self.holder = holder
        self.policy = policy
        self.config = config or ServingConfig()
        # all model calls run on this one thread: RiskScorer's text cache is not thread-safe
        self.executor = executor or WorkerThread("riskops-model")
        self._batcher: MicroBatcher | None = None
        self.ready = holder.loaded

    def load(self) -> bool:
        self.ready = self.holder.loaded
        return self.ready

    @property
    def batcher(self) -> MicroBatcher:
        if self._batcher is None:
            self._batcher = MicroBatcher(
                self._score_jobs, self.executor, self.config.max_batch_rows, self.config.batch_wait_ms / 1000
            )
        return self._batcher

    # -- core (runs on the model thread) -----------------------------------------------------
    def score_frame(
        self,
        frame: pd.DataFrame | ColumnFrame,
        degraded: Sequence[bool] | None = None,
        bundle: LoadedModel | None = None,
        numeric: np.ndarray | None = None,
    ) -> list[dict[str, Any]]:
        """Score a model frame. Uses `bundle` (default: the current model) for every row.

        numeric: the frame's NUMERIC_FEATURES matrix, if the caller built it with the frame.
        """
        lm = bundle or self.holder.current
        thresholds = self.policy.thresholds(lm.policy)
        n = len(frame)
        degraded = list(degraded) if degraded is not None else [False] * n
        started = time.perf_counter()
        hits0, misses0 = getattr(lm.scorer, "cache_hits", 0), getattr(lm.scorer, "cache_misses", 0)
        inputs = lm.scorer.inputs(frame, numeric)  # read the frame once: scores and reasons use it
        scores = np.asarray(lm.scorer.predict_proba(inputs), dtype=np.float64)
        prometheus_metrics.TEXT_CACHE.labels("hit").inc(getattr(lm.scorer, "cache_hits", 0) - hits0)
        prometheus_metrics.TEXT_CACHE.labels("miss").inc(getattr(lm.scorer, "cache_misses", 0) - misses0)
        decisions = [thresholds.decide(float(s), d) for s, d in zip(scores, degraded, strict=True)]
        above = scores >= thresholds.review
        reasons: list[list[str]] = [
            [f"online features unavailable (fail mode: {thresholds.fail_mode})"] if d else []
            for d in degraded
        ]
        k = self.config.reasons_top_k
        if k > 0:
            # reasons explain a score: rows whose *score* crossed the review threshold (not rows
            # that are under review only because their features were unavailable)
            need = [i for i in range(n) if self.config.reasons_for == "all" or above[i]]
            if need:
                attributions = lm.scorer.explain(inputs.take(need), steps=self.config.reasons_ig_steps)
                normalizer = getattr(lm.scorer, "normalizer", None)
                for i, attr in zip(need, attributions, strict=True):
                    reasons[i] = top_reasons(attr, FrameRow(frame, i), normalizer, k) + reasons[i]
        prometheus_metrics.MODEL_SECONDS.observe(time.perf_counter() - started)
        prometheus_metrics.BATCH_ROWS.observe(n)
        out = []
        for i in range(n):
            prometheus_metrics.labelled(prometheus_metrics.DECISIONS, decisions[i]).inc()
            prometheus_metrics.RISK_SCORE.observe(float(scores[i]))
            if degraded[i]:
                prometheus_metrics.DEGRADED.inc()
            out.append(
                {
                    "risk_score": float(scores[i]),
                    "decision": decisions[i],
                    "reasons": reasons[i],
                    "model_version": lm.version,
                    "degraded": bool(degraded[i]),
                    "above_review": bool(above[i]),
                }
            )
        return out

    def explain_frame(self, frame: pd.DataFrame, bundle: LoadedModel | None = None) -> list[dict[str, Any]]:
        lm = bundle or self.holder.current
        inputs = lm.scorer.inputs(frame)
        scores = lm.scorer.predict_proba(inputs)
        attributions = lm.scorer.explain(inputs)
        return [
            {"risk_score": float(s), "attributions": a, "model_version": lm.version}
            for s, a in zip(scores, attributions, strict=True)
        ]

    def _score_jobs(self, jobs: list[tuple[pd.DataFrame | ColumnFrame, list[bool]]]) -> list[list[dict]]:
        """Batcher callback: several requests' frames scored as one frame, on one model."""
        lm = self.holder.current
        frame = concat_frames([f for f, _ in jobs])
        flags = [d for _, ds in jobs for d in ds]
        scored = self.score_frame(frame, flags, lm)
        out, i = [], 0
        for f, _ in jobs:
            out.append(scored[i : i + len(f)])
            i += len(f)
        return out

    # -- KServe handlers (standalone predictor) ----------------------------------------------
    @staticmethod
    def frame_from_instances(instances: Any) -> tuple[pd.DataFrame, list[bool]]:
        if not isinstance(instances, list) or not instances:
            raise RequestError("'instances' must be a non-empty list of model frame rows")
        if not all(isinstance(r, dict) for r in instances):
            raise RequestError("every instance must be a JSON object (a model frame row)")
        missing = sorted({c for c in FRAME_COLUMNS for r in instances if c not in r})
        if missing:
            raise RequestError(
                f"model frame rows lack columns {missing[:10]}{' ...' if len(missing) > 10 else ''}; "
                "send transactions to the transformer, not to the predictor"
            )
        degraded = [bool(r.get(DEGRADED_KEY, False)) for r in instances]
        # the behaviour-sequence tokens come along when the transformer built them (every row or none)
        tokens = list(SEQUENCE_COLUMNS) if all(has_sequence_columns(r) for r in instances) else []
        frame = pd.DataFrame.from_records(instances, columns=[*FRAME_COLUMNS, *tokens])
        try:
            frame[list(NUMERIC_FEATURES) + tokens] = frame[list(NUMERIC_FEATURES) + tokens].astype("float64")
        except (TypeError, ValueError) as exc:
            raise RequestError(f"numeric model inputs must be numbers: {exc}") from None
        for c in (*CATEGORICAL_FEATURES, TEXT_COLUMN):
            frame[c] = frame[c].astype(str)
        return frame, degraded

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        if isinstance(payload, bytes | str):
            raise RequestError("request body must be JSON with Content-Type: application/json", status=415)
        if isinstance(payload, dict) and WIRE_KEY in payload:  # the transformer's columns (serving/wire.py)
            frame, _, degraded = from_wire(payload)
            return frame, degraded
        if not isinstance(payload, dict) or "instances" not in payload:
            raise RequestError("expected a JSON object with an 'instances' list of model frame rows")
        return self.frame_from_instances(payload["instances"])

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers=None
    ) -> dict:
        frame, degraded = payload
        scored = await self.batcher.submit((frame, degraded), len(frame))
        return {"predictions": scored}

    async def explain(self, payload: Any, headers: dict[str, str] | None = None) -> dict:
        frame, _ = payload
        return {"explanations": await run_on(self.executor, self.explain_frame, frame)}


# ---------------------------------------------------------------------------------------------
# Standalone entry point
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(parents=[model_server.parser], description="riskops KServe predictor")
    p.add_argument("--model_dir", default="/mnt/models", help="model folder (policy.json inside)")
    p.add_argument("--model_version", default=None, help="version label reported in responses")
    p.add_argument("--policy_file", default=None, help="operator policy.yaml (hot-reloaded)")
    p.add_argument("--registry", default=None, help="registry root to follow an alias (hot swap)")
    p.add_argument("--follow", default="champion", help="alias followed with --registry")
    p.add_argument("--serving_config", default=None, help="serving.yaml (ServingConfig fields)")
    p.add_argument("--bind_host", default=None, help="REST bind address (default KServe's 0.0.0.0)")
    return p


def main(argv: list[str] | None = None) -> None:
    prepare_process_environment()  # a no-op (or a warning) once KServe has loaded prometheus_client
    args, _ = build_parser().parse_known_args(argv)
    setup_logging()
    if args.workers > 1:
        # KServe would pickle this process's model into each worker; the split pods scale by replicas
        raise SystemExit(f"serving.predictor: --workers {args.workers}: scale the pods with replicas (docs/serving.md)")
    config = load_config(args.serving_config, model_name=args.model_name)
    apply_runtime_settings(config)
    pin_server(config.server_cpu)  # before threads start (serving/cpus.py: "auto" skips a shared pod)
    holder = ModelHolder()
    if args.registry:
        watcher = RegistryWatcher(
            holder, args.registry, args.follow, config.registry_poll_s, config.model_name
        )
        watcher.check_once()
        watcher.start()
    else:
        holder.swap(load_model(args.model_dir, args.model_version))
    policy = PolicySource(args.policy_file, config.default_review, config.default_block, config.fail_mode)
    model = RiskPredictor(args.model_name, holder, policy, config)
    model.load()
    install_guards(config.max_body_bytes)
    server = ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, enable_grpc=args.enable_grpc)
    GcController(freeze=config.gc_freeze).start()  # after loading: see serving/gc_control.py
    front = fast_rest_server(args.bind_host, config.max_body_bytes) if config.fast_path else contextlib.nullcontext()
    with front:
        server.start([model])


if __name__ == "__main__":
    main()
