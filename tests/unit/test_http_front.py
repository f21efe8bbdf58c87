"""`serving.fast_path.V1PredictFront` / `DirectV1Predict`: v1 predict without FastAPI's app and
router answers as plain KServe's routed path does.

In process, over ASGI: two apps built by the same calls as KServe's `RESTServer.create_application`
(middlewares, endpoints, exception handlers), with a real KServe `Model`, a real `DataPlane` and
our `RequestGuard`; one inside `fast_rest_server` (the fast path), one plain KServe; each called as
uvicorn would call it (the REST server's ``config.app``). The same requests must get the same
status, body and content type. The real server is held to the same in
`tests/integration/test_serving_http.py::test_the_fast_path_answers_like_plain_kserve`.
"""

from __future__ import annotations

import asyncio
import contextlib
from unittest import mock

import httpx
import pytest

from serving.validation import RequestError


def _build(direct: bool, without_v1_routes: bool = False):
    from fastapi import FastAPI
    from kserve import Model, model_server
    from kserve.errors import InvalidInput
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.rest import server as rest_server

    from serving.fast_path import fast_rest_server
    from serving.http import install_guards

    class Echo(Model):
        def __init__(self, name: str, ready: bool = True) -> None:
            super().__init__(name)
            self.ready = ready

        async def predict(self, payload, headers=None, response_headers=None):
            fail = payload.get("fail")
            if fail == "invalid":
                raise InvalidInput("instances: not what this model takes")
            if fail == "request":
                raise RequestError("instances[0].amount: must be >= 0")
            if fail == "bug":
                raise ZeroDivisionError("a bug")
            return {"predictions": payload["instances"], "n": len(payload["instances"])}

    repo = ModelRepository()
    repo.update(Echo("echo"))
    repo.update(Echo("sleepy", ready=False))
    dataplane = DataPlane(model_registry=repo)
    app = FastAPI()
    install_guards(app=app)
    with fast_rest_server("127.0.0.1") if direct else contextlib.nullcontext():
        server = model_server.RESTServer(app, dataplane, None, http_port=0)
        # the three steps of RESTServer.create_application, on this app
        server._add_middlewares(app)
        with contextlib.ExitStack() as stack:
            if without_v1_routes:  # KServe's v1 router left out: nothing for FastAPI to route to
                stack.enter_context(mock.patch.object(rest_server, "register_v1_endpoints", lambda *a: None))
            server._register_endpoints(app)
        server._add_exception_handlers(app)
    return server.config.app  # what uvicorn serves


def _call(app, requests: list[tuple[str, str, bytes, dict]]) -> list[tuple[int, str, bytes]]:
    async def go():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://front") as client:
            out = []
            for method, path, body, headers in requests:
                r = await client.request(method, path, content=body, headers=headers)
                out.append((r.status_code, r.headers.get("content-type", ""), r.content))
            return out

    return asyncio.run(go())


JSON = {"Content-Type": "application/json"}
REQUESTS = [
    ("POST", "/v1/models/echo:predict", b'{"instances": [{"a": 1}, {"b": "x"}]}', JSON),
    (
        "POST",
        "/v1/models/echo:predict",
        b'{"instances": [1]}',
        {"Content-Type": "application/json; charset=utf-8"},
    ),
    ("POST", "/v1/models/nope:predict", b'{"instances": [1]}', JSON),  # ModelNotFound -> 404
    ("POST", "/v1/models/sleepy:predict", b'{"instances": [1]}', JSON),  # ModelNotReady -> 503
    ("POST", "/v1/models/echo:predict", b'{"instances": [], "fail": "invalid"}', JSON),  # InvalidInput -> 400
    ("POST", "/v1/models/echo:predict", b'{"instances": [], "fail": "request"}', JSON),  # RequestError -> 400
    ("POST", "/v1/models/echo:predict", b'{"instances": [], "fail": "bug"}', JSON),  # anything else -> 500
    ("POST", "/v1/models/echo:predict", b"{not json", JSON),  # RequestGuard, before either path
    ("POST", "/v1/models/echo:predict", b'{"instances": []}', {"Content-Type": "text/plain"}),  # 415
    # not POST: FastAPI answers (its GET route reads "echo:predict" as a model name: 404)
    ("GET", "/v1/models/echo:predict", b"", {}),
    ("GET", "/v1/models/echo", b"", {}),  # other routes untouched
    ("POST", "/v1/models/echo:explain", b'{"instances": [1]}', JSON),
]


def test_direct_v1_predict_answers_like_the_router():
    routed = _call(_build(direct=False), REQUESTS)
    direct = _call(_build(direct=True), REQUESTS)
    statuses = [int(s) for s, _, _ in routed]
    assert statuses == [200, 200, 404, 503, 400, 400, 500, 400, 415, 404, 200, 501], statuses
    for req, a, b in zip(REQUESTS, routed, direct, strict=True):
        assert a == b, (req, a, b)
    assert b'"n":2' in direct[0][2] and direct[0][1] == "application/json"
    assert b"must be >= 0" in direct[5][2] and b"ZeroDivisionError" in direct[6][2]


def test_direct_v1_predict_needs_no_route():
    """Proof the direct path answers: without KServe's v1 routes the router has nothing to match."""
    good = REQUESTS[:1]
    assert _call(_build(direct=False, without_v1_routes=True), good)[0][0] == 404
    status, ctype, body = _call(_build(direct=True, without_v1_routes=True), good)[0]
    assert (status, ctype) == (200, "application/json") and b'"n":2' in body


@pytest.mark.parametrize("direct", [False, True])
def test_the_front_serves_the_direct_path_only_with_the_fast_path(direct):
    from fastapi import FastAPI

    from serving.fast_path import DirectV1Predict, V1PredictFront
    from serving.http import RequestGuard

    served = _build(direct=direct)
    fastapi_app = served.app if direct else served
    assert isinstance(fastapi_app, FastAPI)
    # the other routes keep their guard inside FastAPI's stack
    assert RequestGuard in [m.cls for m in fastapi_app.user_middleware]
    assert DirectV1Predict not in [m.cls for m in fastapi_app.user_middleware]
    assert isinstance(served, V1PredictFront) is direct
    if direct:  # the guard first: its checks come before KServe's endpoint
        assert isinstance(served.v1_predict, RequestGuard)
        assert isinstance(served.v1_predict.app, DirectV1Predict)


def test_the_direct_path_keeps_the_configured_body_limit():
    """The guard of the direct path is built by `fast_rest_server`, apart from `install_guards`' one: same limit."""
    from kserve import model_server
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane

    from serving.fast_path import fast_rest_server

    with fast_rest_server("127.0.0.1", max_body_bytes=64):
        server = model_server.RESTServer(
            _build(direct=False), DataPlane(model_registry=ModelRepository()), None, http_port=0
        )
    body = b'{"instances": [' + b"1, " * 40 + b"1]}"
    (status, _, answer) = _call(server.config.app, [("POST", "/v1/models/echo:predict", body, JSON)])[0]
    assert status == 413 and b"exceeds the limit of 64 bytes" in answer, answer


def test_the_fast_path_is_undone_when_its_context_ends():
    """Outside `fast_rest_server` KServe builds its own RESTServer again, on the default event loop."""
    import asyncio

    from kserve import model_server
    from kserve.protocol.rest.server import RESTServer

    from serving.fast_path import fast_rest_server

    policy = asyncio.get_event_loop_policy()
    with fast_rest_server("127.0.0.1"):
        assert model_server.RESTServer is not RESTServer
        assert type(asyncio.get_event_loop_policy()).__module__.startswith("uvloop")
    assert model_server.RESTServer is RESTServer
    assert asyncio.get_event_loop_policy() is policy
