"""KServe transformer: request validation, PII hashing, Feast online features, model frames, logging.

    preprocess:  body -> validate (serving.validation) -> hash PII (riskops.pii.hash_record)
                 -> entity features and behaviour sequence (serving.state_backends: this process +
                    the Feast online store, or Redis shared by every replica)
                 -> model frame (riskops.features.contract.build_model_frame)
    predict:     the predictor (over REST v1 when split; in-process in serving.server)
    postprocess: prediction log (durable before the answer), alerts, response shaping (v1 / v2)

Standalone (the transformer of a split InferenceService; KServe passes --predictor_host)::

    python -m serving.transformer --model_name risk-model --predictor_host HOST \\
        --feature_repo DIR --http_port 8080

When the online store cannot be read the transaction is still scored, with default features
for the entities it could not look up, and answered ``degraded: true``; the predictor applies
the fail-mode decision floor (default ``review``).
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import itertools
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server
from kserve.model import InferenceVerb

from riskops.features.contract import (
    NUMERIC_FEATURES,
    ColumnFrame,
    build_model_frame_records,
    model_frame_and_numeric,
)
from riskops.features.sequences import SEQUENCE_KEY, logged_tokens
from riskops.pii import hash_record, pii_key
from riskops.settings import Paths, paths
from serving.alerts import AlertManager
from serving.config import ServingConfig, apply_runtime_settings, load_config, setup_logging
from serving.cpus import pin_server
from serving.environment import prepare_process_environment
from serving.fast_path import fast_rest_server
from serving.gc_control import GcController
from serving.http import install_guards
from serving.online import OnlineFeatureStore
from serving.predlog import PredictionLog
from serving.state_backends import EntityState, open_entity_state
from serving.validation import (
    MAX_BATCH,
    RequestError,
    V2Column,
    instances_of,
    v2_columns_to_instances,
    validate_instances,
)
from serving.wire import to_wire

log = logging.getLogger(__name__)

V2_OUTPUTS = ("transaction_id", "risk_score", "decision", "degraded")
# Set for the duration of an explain call: explaining a transaction must not count it as an event.
EXPLAINING: contextvars.ContextVar[bool] = contextvars.ContextVar("riskops_explaining", default=False)


@dataclass
class Prepared:
    """One request after preprocess: validated, hashed, with entity features."""

    request_id: str
    protocol: str  # "v1" or "v2"
    records: list[dict]  # validated, PII hashed; event_timestamp an aware datetime
    entity_features: list[dict]
    degraded: list[bool]
    explain: bool = False
    v2_request: InferRequest | None = None
    history_tokens: list[np.ndarray] | None = None  # per record: riskops.features.sequences tokens
    history_ids: list[list[str]] | None = None  # per record: the transaction ids those tokens describe

    def __len__(self) -> int:
        return len(self.records)

    def feature_rows(self) -> list[dict]:
        rows = [{**r, **f} for r, f in zip(self.records, self.entity_features, strict=True)]
        if self.history_tokens is not None:
            for row, tokens in zip(rows, self.history_tokens, strict=True):
                row[SEQUENCE_KEY] = tokens
        return rows


@dataclass
class Scored:
    prepared: Prepared
    results: list[dict]  # risk_score, decision, reasons, model_version, degraded
    numeric: np.ndarray | None = None  # [n, len(NUMERIC_FEATURES)] model inputs, for the log


@dataclass
class Explained:
    prepared: Prepared
    results: list[dict]  # risk_score, attributions, model_version


def _feature_rows(prepared: list[Prepared]) -> list[dict]:
    return [row for p in prepared for row in p.feature_rows()]


def model_frame(prepared: list[Prepared]) -> pd.DataFrame:
    """One model frame for several requests (rows in request order), straight from the dicts."""
    return build_model_frame_records(_feature_rows(prepared))


def model_batch(prepared: list[Prepared]) -> tuple[ColumnFrame, np.ndarray]:
    """`model_frame` as a ColumnFrame, and its NUMERIC_FEATURES matrix (the scoring batch's inputs,
    `riskops.features.contract.model_frame_and_numeric`)."""
    return model_frame_and_numeric(_feature_rows(prepared))


# A request without an x-request-id gets "<process prefix>-<counter>": unique like a uuid4, but
# without os.urandom per request, whose GIL release cost the event loop a GIL hand-back wait
# (up to the 5 ms switch interval) under load: 150 of 1,160 event-loop samples at concurrency 32.
_RID_PREFIX = uuid.uuid4().hex[:16]
_rid_counter = itertools.count(1)


def request_id_of(headers: Mapping[str, str] | None) -> str:
    rid = (headers or {}).get("x-request-id")
    return rid if rid and len(rid) <= 128 else f"{_RID_PREFIX}-{next(_rid_counter):x}"


def v2_columns(request: InferRequest) -> list[V2Column]:
    cols = []
    for inp in request.inputs:
        try:
            values = inp.as_numpy().reshape(-1).tolist()
        except Exception as exc:  # noqa: BLE001 - malformed tensor data is the client's problem
            raise RequestError(
                f"{inp.name}: cannot read {inp.datatype} tensor of shape {inp.shape}: {exc}"
            ) from None
        cols.append(V2Column(inp.name, inp.datatype, list(inp.shape), values))
    return cols


class RiskTransformer(Model):
    def __init__(
        self,
        name: str,
        online: OnlineFeatureStore | None,
        config: ServingConfig | None = None,
        state: EntityState | None = None,
        prediction_log: PredictionLog | None = None,
        alerts: AlertManager | None = None,
    ) -> None:
        super().__init__(name)
        self.online = online
        self.config = config or ServingConfig()
        # serving/state_backends.py: this process + Feast (embedded) or Redis shared by the replicas
        self.state = state if state is not None else open_entity_state(self.config, online)
        self.prediction_log = prediction_log
        self.alerts = alerts
        self.ready = True
        # read once: a new key needs a feature backfill and a restart anyway (riskops.pii)
        self._pii_key = pii_key()

    # -- preprocess --------------------------------------------------------------------------
    def instances(self, payload: Any) -> tuple[str, list]:
        """('v1'|'v2', raw instance dicts) from a decoded body."""
        if isinstance(payload, InferRequest):
            return "v2", v2_columns_to_instances(v2_columns(payload), self.config.max_batch)
        if isinstance(payload, bytes | bytearray | str):
            raise RequestError(
                "request body must be JSON sent with 'Content-Type: application/json'", status=415
            )
        return "v1", instances_of(payload, self.config.max_batch)

    async def prepare(
        self, payload: Any, headers: Mapping[str, str] | None = None, explain: bool = False
    ) -> Prepared:
        protocol, instances = self.instances(payload)
        records = [
            hash_record(r, self._pii_key)
            for r in validate_instances(instances, limit=self.config.max_batch or MAX_BATCH)
        ]
        feats, degraded, tokens = await self.entity_features(records, update=not explain)
        return Prepared(
            request_id=request_id_of(headers),
            protocol=protocol,
            records=records,
            entity_features=feats,
            degraded=degraded,
            explain=explain,
            v2_request=payload if isinstance(payload, InferRequest) else None,
            history_tokens=[t for t, _ in tokens],
            history_ids=[ids for _, ids in tokens],
        )

    async def entity_features(
        self, records: list[dict], update: bool = True
    ) -> tuple[list[dict], list[bool], list[tuple[np.ndarray, list[str]]]]:
        """Entity features (state before each record), degraded flags and behaviour-sequence tokens;
        `update` includes the records."""
        answer = await self.state.lookup(records, update)
        return answer.features, answer.degraded, answer.tokens

    # -- shutdown ------------------------------------------------------------------------------
    def stop(self) -> None:
        """KServe unloads the model on SIGTERM: ship and close what this process holds."""
        self.close()
        super().stop()

    def close(self) -> None:
        """Flush the online store's pushes, close (and ship) the prediction log; idempotent."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        if self.online is not None:
            self.online.flush(5)
            self.online.close()
        self.state.close()
        if self.prediction_log is not None:
            self.prediction_log.close()
        if self.alerts is not None:
            self.alerts.close()

    # -- postprocess -------------------------------------------------------------------------
    def log_records(self, scored: Scored) -> list[dict]:
        p = scored.prepared
        logged_at = datetime.now(UTC).isoformat()
        out = []
        for i, (rec, ents, res) in enumerate(zip(p.records, p.entity_features, scored.results, strict=True)):
            tx = {k: v for k, v in rec.items() if k not in ("event_timestamp", "transaction_id")}
            features = (
                dict(zip(NUMERIC_FEATURES, scored.numeric[i].tolist(), strict=True))
                if scored.numeric is not None
                else {}
            )
            out.append(
                {
                    "request_id": p.request_id,
                    "logged_at": logged_at,
                    "event_timestamp": rec["event_timestamp"].isoformat(),
                    "transaction_id": rec["transaction_id"],
                    "model_version": res["model_version"],
                    "arm": res.get("arm"),  # champion / challenger while a canary runs, else null
                    "risk_score": res["risk_score"],
                    "decision": res["decision"],
                    "degraded": res["degraded"],
                    "reasons": res["reasons"],
                    "protocol": p.protocol,
                    "transaction": tx,
                    # the record's own dict (keys: ALL_ENTITY_FEATURES, from EntityTracker), never
                    # mutated after the lookup: logged as is, not copied per request
                    "entity_features": ents,
                    "features": features,
                    # the earlier transactions the model read as this one's history (newest first) and
                    # their tokens as the model read them: a challenger is scored on the same inputs
                    "history": p.history_ids[i] if p.history_ids is not None else None,
                    "history_tokens": (
                        logged_tokens(p.history_tokens[i], len(p.history_ids[i]))
                        if p.history_tokens is not None and p.history_ids is not None
                        else None
                    ),
                }
            )
        return out

    async def finish(self, scored: Scored) -> dict | InferResponse:
        """Log durably, raise alerts, shape the response."""
        p = scored.prepared
        if self.prediction_log is not None:
            await self.prediction_log.append_async(self.log_records(scored))
        if self.alerts is not None:
            for rec, res in zip(p.records, scored.results, strict=True):
                if res["decision"] == "block" or res.get("above_review"):
                    self.alerts.observe({**res, "request_id": p.request_id}, rec)
        return self.response(scored)

    def response(self, scored: Scored) -> dict | InferResponse:
        p = scored.prepared
        if p.protocol == "v2":
            return self.v2_response(p, scored.results)
        return {
            "predictions": [
                {
                    "transaction_id": rec["transaction_id"],
                    "risk_score": res["risk_score"],
                    "decision": res["decision"],
                    "reasons": res["reasons"],
                    "model_version": res["model_version"],
                    "degraded": res["degraded"],
                }
                for rec, res in zip(p.records, scored.results, strict=True)
            ]
        }

    def v2_response(self, p: Prepared, results: list[dict]) -> InferResponse:
        n = len(results)
        arrays = {
            "transaction_id": np.array([r["transaction_id"] for r in p.records], dtype=object),
            "risk_score": np.array([r["risk_score"] for r in results], dtype=np.float32),
            "decision": np.array([r["decision"] for r in results], dtype=object),
            "degraded": np.array([r["degraded"] for r in results], dtype=bool),
        }
        types = {"transaction_id": "BYTES", "risk_score": "FP32", "decision": "BYTES", "degraded": "BOOL"}
        outputs = []
        for name in V2_OUTPUTS:
            out = InferOutput(name=name, shape=[n], datatype=types[name])
            out.set_data_from_numpy(arrays[name], binary_data=False)
            outputs.append(out)
        req = p.v2_request
        versions = sorted({r["model_version"] for r in results})
        return InferResponse(
            response_id=(req.id if req is not None and req.id else p.request_id),
            model_name=self.name,
            model_version=",".join(versions),
            parameters={"model_version": ",".join(versions)},
            infer_outputs=outputs,
            use_binary_outputs=bool(req is not None and req.use_binary_outputs),
            requested_outputs=req.request_outputs if req is not None else None,
        )

    # -- KServe handlers (split deployment: the predictor is remote) -------------------------
    async def __call__(
        self, body: Any, headers: dict[str, str] | None = None, verb: InferenceVerb = InferenceVerb.PREDICT
    ):
        token = EXPLAINING.set(verb == InferenceVerb.EXPLAIN)
        try:
            return await super().__call__(body, headers=headers, verb=verb)
        finally:
            EXPLAINING.reset(token)

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Prepared:
        return await self.prepare(payload, headers, explain=EXPLAINING.get())

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers=None
    ) -> Scored:
        prepared: Prepared = payload
        frame, numeric = model_batch([prepared])
        started = time.perf_counter()
        # the model inputs as columns (serving/wire.py): rows of 272 named values cost the predictor more
        resp = await super().predict(to_wire(frame, numeric, prepared.degraded), headers, response_headers)
        log.debug("predictor answered %d rows in %.1f ms", len(prepared), (time.perf_counter() - started) * 1000)
        results = resp["predictions"]
        if len(results) != len(prepared):
            raise RuntimeError(f"predictor returned {len(results)} predictions for {len(prepared)} rows")
        return Scored(prepared, results, numeric)

    async def postprocess(
        self, result: Any, headers: dict[str, str] | None = None, response_headers=None
    ) -> Any:
        if isinstance(result, Scored):
            return await self.finish(result)
        if isinstance(result, Explained):
            return explanation_response(result)
        return result

    async def explain(self, payload: Any, headers: dict[str, str] | None = None) -> Explained:
        prepared: Prepared = payload
        frame = model_frame([prepared])
        resp = await self._http_client.explain(
            self.predictor_config.predictor_base_url,
            model_name=self.name,
            data={"instances": frame.to_dict("records")},
            headers={"content-type": "application/json"},
        )
        return Explained(prepared, resp["explanations"])


def explanation_response(e: Explained) -> dict:
    return {
        "explanations": [
            {"transaction_id": rec["transaction_id"], **res, "degraded": d}
            for rec, res, d in zip(e.prepared.records, e.results, e.prepared.degraded, strict=True)
        ]
    }


# ---------------------------------------------------------------------------------------------
# Standalone entry point
# ---------------------------------------------------------------------------------------------


def open_online_store(config: ServingConfig) -> OnlineFeatureStore | None:
    """The Feast online store of the embedded entity state (None with Redis, which holds the state
    itself, or without a feature repo). Opened now; a store that cannot be read answers degraded."""
    if config.feature_repo is None or config.state_backend == "redis":
        return None
    online = OnlineFeatureStore(
        config.feature_repo,
        config.feast_timeout_s,
        config.feast_retry_after_s,
        config.push_interval_s,
        push_process=config.push_process,
    )
    if not (Path(config.feature_repo) / "feature_store.yaml").exists():
        log.warning("no Feast repo at %s: every answer will be degraded", config.feature_repo)
    elif not online.open():
        log.warning("Feast online store unavailable at start (%s): answering degraded", online.last_error)
    return online


def prediction_log_for(config: ServingConfig, home: Paths) -> PredictionLog:
    """The durable prediction log under `home`, shipped to `config.log_ship_uri` when set."""
    return PredictionLog(
        home.prediction_log,
        config.log_segment_bytes,
        config.log_segment_seconds,
        config.log_fsync,
        ship_uri=config.log_ship_uri,
    )


def alert_manager_for(config: ServingConfig, home: Paths) -> AlertManager:
    return AlertManager(
        home.root / "alerts.jsonl",
        config.alert_webhook_url,
        config.alert_webhook_timeout_s,
        config.burst_count,
        config.burst_window_s,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(parents=[model_server.parser], description="riskops KServe transformer")
    p.add_argument("--feature_repo", required=True, help="Feast repo (feature_store.yaml)")
    p.add_argument(
        "--home", default=None, help="riskops home (prediction log, alerts); default $RISKOPS_HOME"
    )
    p.add_argument("--serving_config", default=None, help="serving.yaml (ServingConfig fields)")
    p.add_argument("--bind_host", default=None, help="REST bind address (default KServe's 0.0.0.0)")
    return p


def main(argv: list[str] | None = None) -> None:
    prepare_process_environment()  # a no-op (or a warning) once KServe has loaded prometheus_client
    args, _ = build_parser().parse_known_args(argv)
    setup_logging()
    if args.workers > 1:
        # KServe would pickle this process's model into each worker; the split pods scale by replicas
        raise SystemExit(f"serving.transformer: --workers {args.workers}: scale the pods with replicas (docs/serving.md)")
    if args.predictor_protocol != "v1":
        raise SystemExit(
            "serving.transformer talks to the riskops predictor over REST v1 (--predictor_protocol v1)"
        )
    home = paths(args.home)
    config = load_config(
        args.serving_config, model_name=args.model_name, feature_repo=args.feature_repo
    ).with_home(home)
    apply_runtime_settings(config, model=False)
    pin_server(config.server_cpu)  # before threads start (serving/cpus.py: "auto" skips a shared pod)
    model = RiskTransformer(
        args.model_name,
        open_online_store(config),
        config,
        prediction_log=prediction_log_for(config, home),
        alerts=alert_manager_for(config, home),
    )
    install_guards(config.max_body_bytes)
    server = ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, enable_grpc=args.enable_grpc)
    GcController(freeze=config.gc_freeze).start()  # after loading: see serving/gc_control.py
    front = fast_rest_server(args.bind_host, config.max_body_bytes) if config.fast_path else contextlib.nullcontext()
    with front:
        server.start([model])


if __name__ == "__main__":
    main()
