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

`V1PredictFront` (`rest_front(direct_v1_predict=True)`) is the ASGI app uvicorn serves: it hands
``POST /v1/models/<name>:predict`` through `RequestGuard` to KServe's own endpoint function
(`DirectV1Predict`) without FastAPI's application, middleware stack and router, and everything else
to KServe's FastAPI app unchanged; `rest_front` adjusts the rest of the REST server KServe builds
(event loop, log lines).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import time
import warnings
from collections.abc import Iterator
from typing import Any

import orjson

from serving import metrics
from serving.config import EVENT_LOOPS
from serving.validation import MAX_BODY_BYTES, RequestError, check_body_size, check_content_type

log = logging.getLogger(__name__)

_V1_PREDICT = re.compile(r"^/v1/models/([^/]+):predict$")  # group 1: the model name (DirectV1Predict)
_ROUTES: tuple[tuple[re.Pattern, str], ...] = (
    (_V1_PREDICT, "v1_predict"),
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
            metrics.labelled(metrics.REQUESTS, route, str(status_box[0])).inc()
            metrics.labelled(metrics.REQUEST_LATENCY, route).observe(time.perf_counter() - started)

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


class V1PredictFront:
    """The ASGI app uvicorn serves: v1 predict past FastAPI's layers, every other request to FastAPI.

    For ``POST /v1/models/<name>:predict`` KServe's FastAPI app first checks on every request
    whether OpenTelemetry is configured (FastAPI's native telemetry: three provider look-ups, each
    reading ``os.environ``), then runs Starlette's ``ServerErrorMiddleware``, FastAPI's
    ``ExceptionTelemetryMiddleware`` and ``AppBodyLimitMiddleware`` around our `RequestGuard`: ~4% of
    the event loop's GIL time at concurrency 32, with nothing to do for this route (`RequestGuard`
    limits the body and answers every exception itself). Here the route goes straight to
    ``RequestGuard(DirectV1Predict)`` (scope ``app`` set to the FastAPI app, as Starlette would);
    every other request, method and scope type (lifespan included) goes to the FastAPI app, whose
    own `RequestGuard` (`install_guards`) guards the other routes. `tests/test_http_front.py`.
    """

    def __init__(self, fastapi_app: Any, dataplane: Any, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = fastapi_app
        self.v1_predict = RequestGuard(DirectV1Predict(fastapi_app, dataplane, fastapi_app), max_body_bytes)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST" and _V1_PREDICT.match(scope["path"]):
            scope["app"] = self.app
            await self.v1_predict(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class DirectV1Predict:
    """``POST /v1/models/<name>:predict`` handed straight to KServe's own endpoint function.

    For every request FastAPI matches the path against each of KServe's routes in turn, solves the
    endpoint's dependencies (path parameter, Request) and wraps the call in its exception and
    exit-stack layers: at concurrency 32 that was ~30% of the event loop's GIL time, more than the
    model (py-spy, docs/serving.md "v1 predict without FastAPI's router"). This layer (inside
    `RequestGuard`, in `V1PredictFront`) recognises the one hot
    path and calls the same ``V1Endpoints.predict`` of KServe's v1 router (model readiness, decode,
    ``DataPlane.infer``, encode, ORJSONResponse) with a Starlette ``Request`` on the same scope; an
    exception gets the app's handler for its class, as Starlette's ExceptionMiddleware would give it
    (KServe's for InvalidInput, ModelNotFound ..., ours for RequestError, PredictionLogError).
    ``Exception`` itself is left to `RequestGuard` (500), as on the routed path. Anything else
    (other routes, methods) goes to `app`. Inside `RequestGuard`, so content type, size and JSON
    syntax are still checked first. `tests/test_http_front.py` and `tests/test_serving_http.py`
    hold both paths to the same answers.
    """

    def __init__(self, app: Any, dataplane: Any, fastapi_app: Any) -> None:
        from kserve.protocol.rest.v1_endpoints import V1Endpoints
        from starlette.requests import Request

        self.app = app
        self.endpoints = V1Endpoints(dataplane)
        self.fastapi_app = fastapi_app
        self._request = Request

    async def __call__(self, scope, receive, send) -> None:
        match = _V1_PREDICT.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        request = self._request(scope, receive)
        try:
            response = await self.endpoints.predict(match.group(1), request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
        await response(scope, receive, send)  # KServe 0.21's predict always answers a Response

    def _handler_for(self, exc: Exception):
        handlers = self.fastapi_app.exception_handlers
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if cls in handlers:
                return handlers[cls]
        return None


async def request_error_handler(_request, exc: RequestError):
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=exc.status, content=exc.to_dict())


async def prediction_log_error_handler(_request, exc):
    """The record could not be made durable: do not acknowledge the prediction (503, retryable)."""
    from fastapi.responses import JSONResponse

    log.error("prediction log unavailable: %s", exc)
    return JSONResponse(status_code=503, content={"error": f"prediction log unavailable, retry later: {exc}"})


async def validation_error_handler(_request, exc):
    """FastAPI's pydantic body validation (v2 bodies that are not an InferenceRequest): 400, not 422."""
    from fastapi.responses import JSONResponse

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
    from fastapi.exceptions import RequestValidationError

    from serving.predlog import PredictionLogError

    if app is None:
        from kserve.model_server import app as kserve_app

        app = kserve_app
    quiet_fastapi_warnings()
    if id(app) in _installed:
        return app
    app.add_middleware(RequestGuard, max_body_bytes=max_body_bytes)
    app.add_exception_handler(RequestError, request_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(PredictionLogError, prediction_log_error_handler)
    _installed.add(id(app))
    return app


@contextlib.contextmanager
def rest_front(
    host: str | None = None,
    *,
    event_loop: str = "asyncio",
    access_log: bool = True,
    kserve_timing_log: bool = True,
    direct_v1_predict: bool = False,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Iterator[None]:
    """Adjust the REST server that `ModelServer.start()` builds (KServe 0.21 exposes none of these).

    For the duration of the context, KServe instantiates a subclass of its RESTServer, and
    `asyncio.run` inside start() uses the chosen event loop. The defaults are KServe's own.

    host: bind address; None keeps KServe's hard-coded 0.0.0.0 (a pod).
    event_loop: "uvloop" (libuv's loop and transports) or "asyncio". KServe passes
      ``event_loop="auto"`` to uvicorn, but runs uvicorn inside its own ``asyncio.run``, so the
      setting never applies and the server runs on the default asyncio loop.
    access_log: uvicorn's access log line per request.
    kserve_timing_log: KServe's TimingMiddleware, added whatever ``enable_latency_logging`` says:
      per request two log lines (wall and CPU time) and two ``getrusage`` calls.
    direct_v1_predict: uvicorn serves `V1PredictFront` around KServe's app: v1 predict through
      `RequestGuard` (limit `max_body_bytes`) and `DirectV1Predict`, not FastAPI's app and router.
    """
    if event_loop not in EVENT_LOOPS:
        raise ValueError(f"event_loop must be one of {EVENT_LOOPS}, got {event_loop!r}")
    import asyncio

    from kserve import model_server
    from kserve.protocol.rest.server import RESTServer
    from timing_asgi import TimingMiddleware

    class _FrontRESTServer(RESTServer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if host:
                self.config.host = host
            if direct_v1_predict:  # uvicorn loads config.app when it starts: the front wraps KServe's app
                from uvicorn.importer import import_from_string

                self.config.app = V1PredictFront(
                    import_from_string(self.config.app), self.dataplane, max_body_bytes
                )

        def _add_middlewares(self, app) -> None:
            super()._add_middlewares(app)
            if not kserve_timing_log:
                app.user_middleware = [m for m in app.user_middleware if m.cls is not TimingMiddleware]

    original_server, original_policy = model_server.RESTServer, asyncio.get_event_loop_policy()
    model_server.RESTServer = _FrontRESTServer
    # uvicorn's HTTP protocol logs access when the "uvicorn.access" logger has handlers (KServe's
    # logging config gives it one); its own access_log flag only acts when uvicorn sets up logging
    access_logger = logging.getLogger("uvicorn.access")
    original_access = access_logger.handlers, access_logger.propagate
    if not access_log:
        access_logger.handlers, access_logger.propagate = [], False
    if event_loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        # start() calls asyncio.get_event_loop() first, which uvloop's policy does not create
        asyncio.set_event_loop(asyncio.new_event_loop())
    log.info(
        "REST front: %s event loop, access log %s, KServe timing log %s, v1 predict %s",
        event_loop,
        "on" if access_log else "off",
        "on" if kserve_timing_log else "off",
        "direct" if direct_v1_predict else "through FastAPI's router",
    )
    try:
        yield
    finally:
        model_server.RESTServer = original_server
        access_logger.handlers, access_logger.propagate = original_access
        if event_loop == "uvloop":
            asyncio.get_event_loop_policy().get_event_loop().close()
        asyncio.set_event_loop_policy(original_policy)


def front_options(config: Any) -> dict[str, Any]:
    """`rest_front` keyword arguments from a ServingConfig."""
    return {
        "event_loop": config.event_loop,
        "access_log": config.access_log,
        "kserve_timing_log": config.kserve_timing_log,
        "direct_v1_predict": config.direct_v1_predict,
        "max_body_bytes": config.max_body_bytes,
    }


def quiet_fastapi_warnings() -> None:
    """KServe 0.21 uses ORJSONResponse, which FastAPI deprecates: one warning per route, not actionable."""
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
