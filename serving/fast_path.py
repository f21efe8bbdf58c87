"""The fast path: what riskops changes inside KServe 0.21 for speed, behind the `fast_path` setting.

Everything here patches or re-implements a KServe internal, and stays only because `make
bench-serving` shows it pays (docs/serving.md, "Benchmark"). With ``fast_path: false`` none of it
runs and the server is plain KServe: `kserve.ModelServer`, `kserve.Model` stages, the guards as
ordinary middleware (serving.http) and routes (serving.routes).

* `fast_rest_server`: for the duration of the context `ModelServer.start()` builds a subclass of
  KServe's single-process `RESTServer` that binds the given host, runs on uvloop (KServe passes
  ``event_loop="auto"`` to uvicorn but runs it inside its own ``asyncio.run``, so the default
  asyncio loop runs whatever the flag says), writes no per-request log lines (uvicorn's access log;
  KServe's TimingMiddleware: two log lines and two ``getrusage`` per request) and serves
  `V1PredictFront` around KServe's app.
* `V1PredictFront` / `DirectV1Predict`: ``POST /v1/models/<name>:predict`` handed to KServe's own
  endpoint function without FastAPI's application, middleware stack and router.
* `run_stages`: KServe's ``Model.__call__`` stages (preprocess -> predict | explain -> postprocess,
  each timed into KServe's ``request_*_seconds{model_name}`` histograms) without its per-request
  costs: ``labels()`` resolved for every stage, ``inspect.iscoroutinefunction`` per handler,
  ``time.time()`` pairs, ``validate`` of a payload that is ours.

Not with KServe's ``--workers N > 1``: KServe then builds `RESTServerMultiProcess`, whose spawned
worker processes import their own `RESTServer` and event loop, so the server turns the fast path
off by itself and logs it (serving.server.serve).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Iterator
from time import perf_counter
from typing import Any, NamedTuple

import uvloop
from kserve import model_server
from kserve.metrics import EXPLAIN_HIST_TIME, POST_HIST_TIME, PRE_HIST_TIME, PREDICT_HIST_TIME, get_labels
from kserve.model import InferenceVerb
from kserve.protocol.rest.server import RESTServer
from kserve.protocol.rest.v1_endpoints import V1Endpoints
from starlette.requests import Request
from timing_asgi import TimingMiddleware
from uvicorn.importer import import_from_string

from serving.http import V1_PREDICT_PATH, RequestGuard
from serving.validation import MAX_BODY_BYTES

log = logging.getLogger(__name__)



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
    own `RequestGuard` (`install_guards`) guards the other routes. `tests/unit/test_http_front.py`.
    """

    def __init__(self, fastapi_app: Any, dataplane: Any, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = fastapi_app
        self.v1_predict = RequestGuard(DirectV1Predict(fastapi_app, dataplane, fastapi_app), max_body_bytes)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST" and V1_PREDICT_PATH.match(scope["path"]):
            scope["app"] = self.app
            await self.v1_predict(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class DirectV1Predict:
    """``POST /v1/models/<name>:predict`` handed straight to KServe's own endpoint function.

    For every request FastAPI matches the path against each of KServe's routes in turn, solves the
    endpoint's dependencies (path parameter, Request) and wraps the call in its exception and
    exit-stack layers: at concurrency 32 that was ~30% of the event loop's GIL time, more than the
    model (py-spy). This layer (inside
    `RequestGuard`, in `V1PredictFront`) recognises the one hot
    path and calls the same ``V1Endpoints.predict`` of KServe's v1 router (model readiness, decode,
    ``DataPlane.infer``, encode, ORJSONResponse) with a Starlette ``Request`` on the same scope; an
    exception gets the app's handler for its class, as Starlette's ExceptionMiddleware would give it
    (KServe's for InvalidInput, ModelNotFound ..., ours for RequestError, PredictionLogError).
    ``Exception`` itself is left to `RequestGuard` (500), as on the routed path. Anything else
    (other routes, methods) goes to `app`. Inside `RequestGuard`, so content type, size and JSON
    syntax are still checked first. `tests/unit/test_http_front.py` and `tests/integration/test_serving_http.py`
    hold both paths to the same answers.
    """

    def __init__(self, app: Any, dataplane: Any, fastapi_app: Any) -> None:
        self.app = app
        self.endpoints = V1Endpoints(dataplane)
        self.fastapi_app = fastapi_app
        self._request = Request

    async def __call__(self, scope, receive, send) -> None:
        match = V1_PREDICT_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
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


@contextlib.contextmanager
def fast_rest_server(host: str | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> Iterator[None]:
    """Build the fast REST server when `ModelServer.start()` runs inside this context (module doc).

    Args:
        host: bind address; None keeps KServe's hard-coded 0.0.0.0 (a pod).
        max_body_bytes: the body limit of the direct v1 predict path's own `RequestGuard`.
    """
    class _FastRESTServer(RESTServer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if host:
                self.config.host = host
            # uvicorn loads config.app when it starts: the front wraps KServe's app
            self.config.app = V1PredictFront(
                import_from_string(self.config.app), self.dataplane, max_body_bytes
            )

        def _add_middlewares(self, app) -> None:
            super()._add_middlewares(app)
            app.user_middleware = [m for m in app.user_middleware if m.cls is not TimingMiddleware]

    original_server, original_policy = model_server.RESTServer, asyncio.get_event_loop_policy()
    model_server.RESTServer = _FastRESTServer
    # uvicorn's HTTP protocol logs access when the "uvicorn.access" logger has handlers (KServe's
    # logging config gives it one); its own access_log flag only acts when uvicorn sets up logging
    access_logger = logging.getLogger("uvicorn.access")
    original_access = access_logger.handlers, access_logger.propagate
    access_logger.handlers, access_logger.propagate = [], False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # start() calls asyncio.get_event_loop() first, which uvloop's policy does not create
    asyncio.set_event_loop(asyncio.new_event_loop())
    log.info("fast path on: uvloop event loop, no per-request log lines, v1 predict direct")
    try:
        yield
    finally:
        model_server.RESTServer = original_server
        access_logger.handlers, access_logger.propagate = original_access
        asyncio.get_event_loop_policy().get_event_loop().close()
        asyncio.set_event_loop_policy(original_policy)


class StageTimers(NamedTuple):
    """KServe's per-stage latency histograms (``request_{preprocess,predict,explain,postprocess}_seconds``)
    for one model, children resolved once."""

    preprocess: Any
    predict: Any
    explain: Any
    postprocess: Any


def stage_timers(model_name: str) -> StageTimers:
    labels = get_labels(model_name)
    return StageTimers(
        *(h.labels(**labels) for h in (PRE_HIST_TIME, PREDICT_HIST_TIME, EXPLAIN_HIST_TIME, POST_HIST_TIME))
    )


async def run_stages(
    model: Any, timers: StageTimers, body: Any, headers: dict[str, str] | None, verb: InferenceVerb
) -> tuple[Any, dict[str, str]]:
    """``Model.__call__`` of KServe for a model whose handlers are all coroutines (module doc).

    At concurrency 32 KServe's per-request costs were ~7% of the event loop's GIL time;
    `tests/integration/test_serving_http.py::test_kserve_stage_histograms_are_observed` holds the
    histograms to KServe's counts.
    """
    explain = verb == InferenceVerb.EXPLAIN
    if not explain and verb != InferenceVerb.PREDICT:
        raise NotImplementedError(f"{verb} is not supported by {model.name}")
    t0 = perf_counter()
    try:
        payload = await model.preprocess(body, headers)
    finally:
        t1 = perf_counter()
        timers.preprocess.observe(t1 - t0)
    try:
        result = await (model.explain(payload, headers) if explain else model.predict(payload, headers))
    finally:
        t2 = perf_counter()
        (timers.explain if explain else timers.predict).observe(t2 - t1)
    try:
        response = await model.postprocess(result, headers)
    finally:
        timers.postprocess.observe(perf_counter() - t2)
    return response, {}
