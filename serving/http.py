"""HTTP hardening and metrics for KServe's FastAPI app (pure ASGI middleware, no per-request threads).

KServe 0.21 answers some client mistakes obscurely or with a 500: a body sent as
``text/plain`` (or ``application/json; charset=utf-8``) reaches the model as raw bytes, a v2 body
without JSON content type gets "'inference-header-content-length' header is missing", and no
limit protects the server from a huge body. `RequestGuard` runs before KServe's routes for the
scoring routes (v1 predict/explain, v2 infer), ``POST /v1/feedback`` and ``POST /v1/catalogue``:

* Content-Type must be JSON (``application/json``, parameters allowed; v2 may also use the binary
  extension ``application/octet-stream`` + ``Inference-Header-Content-Length``), else **415**;
  the header is then normalised to exactly ``application/json`` for KServe.
* The body may not exceed `max_body_bytes` (Content-Length checked first, then while reading), else
  **413**, without reading the rest.
* A JSON body must parse, else **400** saying where it broke.
* `serving.validation.RequestError` raised anywhere becomes its status (400/413/415) with
  ``{"error": "...", "details": [...]}``; any other unexpected exception is logged with its
  traceback and answered 500 with a short message (it is a bug, and tests assert none happen).

It also counts requests by route and status and observes latency (``riskops_http_*``).

`install_guards` adds it to KServe's FastAPI app the supported way (``app.add_middleware``), with
the exception handlers for riskops' own errors. serving.fast_path serves the v1 predict route
through a second `RequestGuard` of the same limit.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve import model_server

from serving import prometheus_metrics
from serving.predlog import PredictionLogError
from serving.validation import MAX_BODY_BYTES, RequestError, check_body_size, check_content_type

log = logging.getLogger(__name__)

V1_PREDICT_PATH = re.compile(r"^/v1/models/([^/]+):predict$")  # group 1: the model name
_ROUTES: tuple[tuple[re.Pattern, str], ...] = (
    (V1_PREDICT_PATH, "v1_predict"),
    (re.compile(r"^/v1/models/[^/]+:explain$"), "v1_explain"),
    (re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$"), "v2_infer"),
    (re.compile(r"^/v2/health/"), "health"),
    (re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/ready$"), "health"),
    (re.compile(r"^/v1/models/[^/:]+$"), "health"),
    (re.compile(r"^/metrics$"), "metrics"),
    (re.compile(r"^/v1/feedback$"), "feedback"),
    (re.compile(r"^/v1/canary$"), "canary"),
    (re.compile(r"^/v1/catalogue$"), "catalogue"),
)
SCORING_ROUTES = frozenset({"v1_predict", "v1_explain", "v2_infer"})
# JSON bodies: content type, size and syntax checked
GUARDED_ROUTES = SCORING_ROUTES | {"feedback", "catalogue"}


def route_of(path: str) -> str:
    for pattern, name in _ROUTES:
        if pattern.match(path):
            return name
    return "other"


def _json_error(status: int, payload: dict) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = orjson.dumps(payload)
    return (
        status,
        [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        body,
    )


async def _send_response(send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    def __init__(self, app: Any, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_of(scope.get("path", ""))
        started = time.perf_counter()
        status_box = [500]
        response_started = [False]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                response_started[0] = True
            await send(message)

        try:
            if route in GUARDED_ROUTES and scope.get("method") == "POST":
                scope, receive = await self._guard(scope, receive, route)
            await self.app(scope, receive, send_wrapper)
        except RequestError as exc:
            if response_started[0]:
                raise
            status_box[0] = exc.status
            await _send_response(send, *_json_error(exc.status, exc.to_dict()))
        except Exception as exc:  # noqa: BLE001
            log.exception("unhandled error on %s", scope.get("path"))
            if response_started[0]:
                raise
            status_box[0] = 500
            await _send_response(
                send,
                *_json_error(500, {"error": f"internal error ({type(exc).__name__}); see the server log"}),
            )
        finally:
            prometheus_metrics.labelled(prometheus_metrics.REQUESTS, route, str(status_box[0])).inc()
            prometheus_metrics.labelled(prometheus_metrics.REQUEST_LATENCY, route).observe(
                time.perf_counter() - started
            )

    async def _guard(self, scope, receive, route: str):
        headers = scope.get("headers") or []
        content_type = None
        content_length = None
        has_binary_header = False
        for k, v in headers:
            if k == b"content-type":
                content_type = v.decode("latin-1")
            elif k == b"content-length":
                content_length = v
            elif k == b"inference-header-content-length":
                has_binary_header = True
        check_content_type(content_type, allow_binary=route == "v2_infer" and has_binary_header)
        if content_length is not None:
            try:
                n = int(content_length)
            except ValueError:
                raise RequestError("invalid Content-Length header") from None
            check_body_size(n, self.max_body_bytes)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError("client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            check_body_size(size, self.max_body_bytes)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        media = content_type.split(";", 1)[0].strip().lower() if content_type else ""
        if media != "application/octet-stream":
            if not body.strip():
                raise RequestError("request body is empty: expected a JSON object")
            try:
                orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise RequestError(f"malformed JSON body: {exc}") from None
            if content_type != "application/json":  # e.g. "application/json; charset=utf-8"
                new_headers = [(k, v) for k, v in headers if k != b"content-type"]
                new_headers.append((b"content-type", b"application/json"))
                scope = {**scope, "headers": new_headers}

        sent = [False]

        async def replay():
            if not sent[0]:
                sent[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return scope, replay


async def request_error_handler(_request, exc: RequestError):
    return JSONResponse(status_code=exc.status, content=exc.to_dict())


async def prediction_log_error_handler(_request, exc):
    """The record could not be made durable: do not acknowledge the prediction (503, retryable)."""
    log.error("prediction log unavailable: %s", exc)
    return JSONResponse(status_code=503, content={"error": f"prediction log unavailable, retry later: {exc}"})


async def validation_error_handler(_request, exc):
    """FastAPI's pydantic body validation (v2 bodies that are not an InferenceRequest): 400, not 422."""
    problems = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        problems.append(f"{loc or 'body'}: {err.get('msg')}")
    return JSONResponse(
        status_code=400,
        content={"error": "invalid v2 inference request: " + "; ".join(problems)},
    )


_installed: set[int] = set()


def install_guards(max_body_bytes: int = MAX_BODY_BYTES, app: Any = None) -> Any:
    """Add the guard middleware and error handlers to KServe's app (once; before the server starts)."""
    if app is None:
        app = model_server.app
    quiet_fastapi_warnings()
    if id(app) in _installed:
        return app
    app.add_middleware(RequestGuard, max_body_bytes=max_body_bytes)
    app.add_exception_handler(RequestError, request_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(PredictionLogError, prediction_log_error_handler)
    _installed.add(id(app))
    return app


def quiet_fastapi_warnings() -> None:
    """KServe 0.21 uses ORJSONResponse, which FastAPI deprecates: one warning per route, not actionable."""
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
