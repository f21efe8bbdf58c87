"""riskops' own routes on KServe's FastAPI app: feedback in, canary state out.

``POST /v1/feedback`` — confirmed outcomes (chargebacks, review results) keyed by transaction_id::

    {"feedback": [{"transaction_id": "t-1", "is_fraud": 1, "fraud_type": "card_testing",
                   "source": "chargeback", "reported_at": "2026-01-09T10:00:00Z"}, ...]}

(a bare list of records or one record object are accepted too). Records are validated by
`riskops.monitoring.feedback.validate_records`; one bad record answers **400** naming it and its field
(``feedback[1]: is_fraud ...``) and stores nothing. Otherwise they are appended to the feedback
store with ``fsync`` before **200** ``{"accepted": n}``. The body goes through serving.http's guard
like a scoring request (JSON Content-Type else 415, ``max_body_bytes`` else 413, parseable JSON
else 400). While a canary runs, outcomes of transactions it recently served feed its per-arm labels.

``GET /v1/canary`` — `serving.canary.CanaryController.to_dict` (``{"enabled": false}`` when off).

``POST /v1/catalogue`` — product texts to pre-encode (`serving.catalogue`): ``{"products": [{"product_title",
"product_category", "merchant_category"}, ...]}``; **200** ``{"received", "new", "encoded",
"catalogue_texts"}`` once the new texts are encoded into the served model(s); a bad product answers
**400** naming ``products[i].field`` and stores nothing. ``GET /v1/catalogue`` — how many catalogue
texts there are and how many the served model has cached.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Protocol

import orjson
from fastapi import Request  # module level: FastAPI resolves the handler's annotation from here
from fastapi.responses import ORJSONResponse, Response
from kserve import model_server
from prometheus_client import CollectorRegistry, exposition, multiprocess

from riskops.monitoring.feedback import FeedbackError, append_feedback, validate_records
from serving import prometheus_metrics
from serving.catalogue import catalogue_products, product_texts
from serving.validation import Problem, RequestError

log = logging.getLogger(__name__)

FEEDBACK_PATH = "/v1/feedback"
CANARY_PATH = "/v1/canary"
CATALOGUE_PATH = "/v1/catalogue"
_ROW = re.compile(r"^feedback (\d+): ")
_installed: set[int] = set()


class RoutedService(Protocol):
    """What the routes need of the service (serving.service.RiskService or its worker stand-in)."""

    @property
    def home(self) -> Any: ...  # riskops.settings.Paths: the feedback store lives there

    @property
    def canary(self) -> Any: ...  # serving.canary.CanaryController or None

    async def add_catalogue_texts(self, texts: list[str]) -> dict[str, int]: ...

    def catalogue_state(self) -> dict[str, Any]: ...


def feedback_records(payload: Any) -> list:
    """The records of a feedback body: {"feedback": [...]}, a bare list, or one record."""
    if isinstance(payload, dict) and "feedback" in payload:
        extra = sorted(set(payload) - {"feedback"})
        if extra:
            raise RequestError(Problem(None, f"unknown top-level key(s) {extra}: send {{'feedback': [...]}}"))
        records = payload["feedback"]
        if isinstance(records, dict):
            records = [records]
        if not isinstance(records, list):
            raise RequestError(
                Problem("feedback", f"must be a list of records, got {type(records).__name__}")
            )
    elif isinstance(payload, list):
        records = payload
    elif isinstance(payload, dict):
        records = [payload]
    else:
        raise RequestError(
            "expected {'feedback': [{'transaction_id': ..., 'is_fraud': 0|1}, ...]}, "
            f"got a JSON {type(payload).__name__}"
        )
    if not records:
        raise RequestError(Problem("feedback", "is empty: send at least one record"))
    return records


def validated_feedback(records: list) -> list[dict]:
    """Normalised records, or RequestError (400) with one problem per bad field, rows 0-based."""
    try:
        return validate_records(records, default_source="api", row_offset=0, row_label="feedback")
    except FeedbackError as exc:
        problems = [Problem(None, _ROW.sub(lambda m: f"feedback[{m.group(1)}]: ", e)) for e in exc.errors]
        raise RequestError(problems or [Problem(None, str(exc))]) from None


def install_routes(service: RoutedService, app: Any = None) -> Any:
    """Add the feedback, catalogue and canary routes (once per app; before the server starts).

    Args:
        service: answers the routes (serving.service.RiskService, or WorkerRiskService).
        app: a FastAPI app; default KServe's (``kserve.model_server.app``).
    """
    if app is None:
        app = model_server.app
    if id(app) in _installed:
        return app

    async def post_feedback(request: Request):
        try:
            try:
                payload = orjson.loads(await request.body())
            except orjson.JSONDecodeError as exc:  # the guard parsed it already; defensive
                raise RequestError(f"malformed JSON body: {exc}") from None
            records = feedback_records(payload)
            good = validated_feedback(records)
        except RequestError:
            prometheus_metrics.FEEDBACK_REJECTED.inc()
            raise
        # all-or-nothing and durable (lock + fsync) before the answer; off the event loop
        try:
            n = await asyncio.to_thread(append_feedback, service.home, good, "api")
        except OSError as exc:
            log.error("feedback store unavailable: %s", exc)
            raise RequestError(f"feedback store unavailable, retry later: {exc}", status=503) from None
        for r in good:
            prometheus_metrics.FEEDBACK_RECORDS.labels(str(r["is_fraud"])).inc()
        joined = service.canary.record_outcomes(good) if service.canary is not None else 0
        if joined:
            log.debug("feedback: %d outcome(s) joined to canary arms", joined)
        return ORJSONResponse({"accepted": n})

    async def get_canary():
        if service.canary is None:
            return ORJSONResponse({"enabled": False, "status": "off"})
        return ORJSONResponse(service.canary.to_dict())

    async def post_catalogue(request: Request):
        try:
            payload = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:  # the guard parsed it already; defensive
            raise RequestError(f"malformed JSON body: {exc}") from None
        texts = product_texts(catalogue_products(payload))
        try:
            result = await service.add_catalogue_texts(texts)
        except OSError as exc:
            log.error("catalogue file unavailable: %s", exc)
            raise RequestError(f"catalogue store unavailable, retry later: {exc}", status=503) from None
        return ORJSONResponse(result)

    async def get_catalogue():
        return ORJSONResponse(service.catalogue_state())

    app.add_api_route(FEEDBACK_PATH, post_feedback, methods=["POST"])
    app.add_api_route(CATALOGUE_PATH, post_catalogue, methods=["POST"])
    app.add_api_route(CATALOGUE_PATH, get_catalogue, methods=["GET"])
    app.add_api_route(CANARY_PATH, get_canary, methods=["GET"])
    _installed.add(id(app))
    return app


def install_multiprocess_metrics(app: Any = None) -> Any:
    """Serve ``GET /metrics`` summed over KServe's worker processes (prometheus_client multiprocess mode).

    With ``workers > 1`` each worker keeps its metrics in mmap files under
    ``PROMETHEUS_MULTIPROC_DIR`` (serving.server sets it before the workers start); KServe's own
    /metrics would answer one worker's values. Install before KServe registers its routes: the
    first route that matches answers.
    """
    if app is None:
        app = model_server.app

    async def get_metrics(request: Request):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        encoder, content_type = exposition.choose_encoder(request.headers.get("accept"))
        return Response(content=encoder(registry), headers={"content-type": content_type})

    app.add_api_route("/metrics", get_metrics, methods=["GET"])
    return app
