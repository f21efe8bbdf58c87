"""POST /v1/feedback over real HTTP: a real ModelServer subprocess, a tiny real model, real Feast SQLite.

Accepted feedback is durable and readable with `riskops.monitoring.feedback.load_feedback`; every bad body is
a 400 naming the row and field with nothing stored (all-or-nothing), and the server goes on.
The server is the shared `served` fixture (tests/integration/conftest.py).
"""

from __future__ import annotations

import concurrent.futures as cf

import httpx
import pytest
from support.servers import Served, logged, predict, tx

from riskops.monitoring.feedback import feedback_dir, labelled_window, load_feedback


def post(
    served: Served, body=None, content: bytes | None = None, headers: dict | None = None
) -> httpx.Response:
    if content is not None:
        return httpx.post(served.url + "/v1/feedback", content=content, headers=headers or {}, timeout=30)
    return httpx.post(served.url + "/v1/feedback", json=body, timeout=30)


def store_bytes(served: Served) -> dict[str, bytes]:
    d = feedback_dir(served.home)
    return {p.name: p.read_bytes() for p in sorted(d.glob("feedback-*.jsonl"))} if d.exists() else {}


def test_feedback_is_stored_and_readable(served):
    scored = tx()
    assert predict(served, [scored]).status_code == 200
    body = {
        "feedback": [
            {"transaction_id": scored["transaction_id"], "is_fraud": 1, "fraud_type": "card_testing",
             "source": "chargeback", "reported_at": "2026-01-10T08:00:00Z"},
            {"transaction_id": "fb-legit-1", "is_fraud": "legit"},
        ]
    }  # fmt: skip
    r = post(served, body)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 2}
    assert post(served, [{"transaction_id": "fb-list-1", "is_fraud": True}]).json() == {"accepted": 1}
    assert post(served, {"transaction_id": "fb-one-1", "is_fraud": 0}).json() == {"accepted": 1}

    fb = load_feedback(served.home).set_index("transaction_id")
    row = fb.loc[scored["transaction_id"]]
    assert row["is_fraud"] == 1 and row["fraud_type"] == "card_testing" and row["source"] == "chargeback"
    assert row["reported_at"].isoformat().startswith("2026-01-10T08:00:00")
    assert fb.loc["fb-legit-1", "is_fraud"] == 0 and fb.loc["fb-legit-1", "source"] == "api"
    assert fb.loc["fb-list-1", "is_fraud"] == 1 and fb.loc["fb-one-1", "is_fraud"] == 0
    # joins the prediction log on transaction_id: what the monitor and the promotion gate read
    window = labelled_window(logged(served), load_feedback(served.home))
    assert window.set_index("transaction_id").loc[scored["transaction_id"], "is_fraud"] == 1


BAD = [
    ({"feedback": [{"is_fraud": 1}]}, ["feedback[0]", "transaction_id"]),
    ({"feedback": [{"transaction_id": "  ", "is_fraud": 1}]}, ["feedback[0]", "transaction_id"]),
    ({"feedback": [{"transaction_id": ["x"], "is_fraud": 1}]}, ["feedback[0]", "transaction_id"]),
    ({"feedback": [{"transaction_id": "b-1"}]}, ["feedback[0]", "is_fraud"]),
    ({"feedback": [{"transaction_id": "b-1", "is_fraud": 2}]}, ["feedback[0]", "is_fraud"]),
    ({"feedback": [{"transaction_id": "b-1", "is_fraud": "maybe"}]}, ["feedback[0]", "is_fraud"]),
    ({"feedback": [{"transaction_id": "b-1", "is_fraud": 1, "reported_at": "yesterday"}]}, ["reported_at"]),
    ({"feedback": [{"transaction_id": "b-1", "is_fraud": 1, "amount": 5}]}, ["feedback[0]", "amount"]),
    # one bad record among good ones: nothing is stored
    ({"feedback": [{"transaction_id": "b-ok", "is_fraud": 1}, {"transaction_id": "b-2", "is_fraud": None}]},
     ["feedback[1]", "is_fraud"]),
    ({"feedback": [{"transaction_id": "b-ok", "is_fraud": 1}, "fraud"]}, ["feedback[1]", "object"]),
    ({"feedback": []}, ["feedback", "empty"]),
    ({"feedback": "t-1,1"}, ["feedback", "list"]),
    ({"feedback": [{"transaction_id": "b-1", "is_fraud": 1}], "extra": 1}, ["extra"]),
    ([], ["feedback", "empty"]),
    (5, ["feedback"]),
]  # fmt: skip


@pytest.mark.parametrize(("body", "words"), BAD)
def test_bad_feedback_is_a_400_naming_the_field_and_stores_nothing(served, body, words):
    before = store_bytes(served)
    r = post(served, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    for w in words:
        assert w in error, (w, error)
    assert store_bytes(served) == before
    ok = post(served, {"feedback": [{"transaction_id": "after-bad", "is_fraud": 0}]})
    assert ok.status_code == 200 and ok.json() == {"accepted": 1}


@pytest.mark.parametrize(
    ("content", "headers", "status", "words"),
    [
        (b'{"feedback": [', {"Content-Type": "application/json"}, 400, "malformed JSON"),
        (b"", {"Content-Type": "application/json"}, 400, "empty"),
        (b'{"feedback": []}', {"Content-Type": "text/csv"}, 415, "Content-Type"),
        (b'{"feedback": []}', {}, 415, "Content-Type"),
        (b'{"feedback": [' + b" " * (1 << 20) + b"]}", {"Content-Type": "application/json"}, 413, "limit"),
    ],
)
def test_malformed_feedback_bodies(served, content, headers, status, words):
    before = store_bytes(served)
    r = post(served, content=content, headers=headers)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]
    assert store_bytes(served) == before


def test_concurrent_feedback_all_durable_and_counted(served):
    ids = [f"conc-{i}" for i in range(80)]

    def send(chunk):
        with httpx.Client(timeout=30) as c:
            r = c.post(
                served.url + "/v1/feedback",
                json={"feedback": [{"transaction_id": t, "is_fraud": 1} for t in chunk]},
            )
            return r.status_code, r.json()

    with cf.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, [ids[i : i + 5] for i in range(0, len(ids), 5)]))
    assert all(s == 200 and b == {"accepted": 5} for s, b in results), results
    everything = load_feedback(served.home, latest_only=False)
    assert sorted(
        everything[everything["transaction_id"].str.startswith("conc-")]["transaction_id"]
    ) == sorted(ids)
    for name, data in store_bytes(served).items():
        assert data.endswith(b"\n"), name  # whole lines only

    text = httpx.get(served.url + "/metrics").text
    assert 'riskops_feedback_records_total{is_fraud="1"}' in text
    assert "riskops_feedback_rejected_total" in text
    assert 'riskops_http_requests_total{code="200",route="feedback"}' in text
    assert 'riskops_http_requests_total{code="400",route="feedback"}' in text


def test_canary_endpoint_when_off(served):
    r = httpx.get(served.url + "/v1/canary")
    assert r.status_code == 200 and r.json() == {"enabled": False, "status": "off"}
    assert predict(served, [tx()]).json()["predictions"][0]["model_version"] == "v0001"
