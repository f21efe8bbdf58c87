"""The online canary over real HTTP: share and routing, a challenger that cannot load, rollback, promotion.

One module-scoped server (`canary: true`) over a home with a tiny real model; each test registers
its own challenger version and writes the canary knobs (`promotion.canary`, re-read whenever a
canary starts) to the monitor config the server was given. The promotion test changes the
champion, so it runs last.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml
from support.servers import MODEL, Served, logged, predict, tx

from riskops.lifecycle.canary import CanaryRouter
from riskops.registry.store import ModelRegistry

CHAMPION_VERSION = "v0001"


@pytest.fixture(scope="module")
def server_settings(served_home) -> tuple[str, ...]:
    """The canary on, reading its knobs from a monitor config in the served home."""
    write_canary_config(served_home.root, share=0.2)
    return ("canary=true", f"canary_config={canary_config(served_home.root)}", "reasons_top_k=0")


def canary_config(home_root: Path) -> Path:
    return home_root / "monitor.yaml"


def write_canary_config(home_root: Path, **canary) -> None:
    canary_config(home_root).write_text(yaml.safe_dump({"promotion": {"canary": canary}}))


def wait_for(check: Callable[[], object], timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def canary(served: Served) -> dict:
    return httpx.get(served.url + "/v1/canary", timeout=10).json()


def start_challenger(served: Served, model_dir: Path, **settings) -> str:
    write_canary_config(served.home.root, **settings)
    registry = ModelRegistry(served.home.registry)
    version = registry.register(model_dir).version
    registry.set_alias("challenger", version)
    return version


def wait_active(served: Served, version: str) -> dict:
    return wait_for(
        lambda: (c := canary(served))["status"] == "active" and c["challenger_version"] == version and c,
        what=f"canary of {version}",
    )


def end_canary(served: Served) -> None:
    ModelRegistry(served.home.registry).delete_alias("challenger")
    wait_for(lambda: canary(served)["status"] == "idle", what="canary end")


def jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_share_and_arms_match_the_served_version(served):
    version = start_challenger(
        served, served.model_dir, share=0.2, seed=3, min_requests=100_000, min_requests_for_errors=100_000
    )
    state = wait_active(served, version)
    assert state["share"] == 0.2 and state["champion_version"] == CHAMPION_VERSION

    items = [tx() for _ in range(2000)]
    preds = []
    for i in range(0, len(items), 250):
        r = predict(served, items[i : i + 250])
        assert r.status_code == 200, r.text
        preds += r.json()["predictions"]
    router = CanaryRouter(0.2, seed=3)
    expected = {t["transaction_id"]: router.arm(t["transaction_id"]) for t in items}
    served_by = {p["transaction_id"]: p["model_version"] for p in preds}
    to_challenger = [t for t, arm in expected.items() if arm == "challenger"]
    assert abs(len(to_challenger) / len(items) - 0.2) <= 0.04
    for tid, arm in expected.items():
        assert served_by[tid] == (version if arm == "challenger" else CHAMPION_VERSION), tid

    log = logged(served).set_index("transaction_id")
    assert (log.loc[list(expected), "arm"] == list(expected.values())).all()
    assert (log.loc[to_challenger, "model_version"] == version).all()

    arms = canary(served)["arms"]
    assert arms["challenger"]["requests"] == len(to_challenger)
    assert arms["champion"]["requests"] == len(items) - len(to_challenger)
    assert arms["challenger"]["errors"] == 0

    # labelled outcomes of recently served transactions feed the arms
    champs = [t for t, arm in expected.items() if arm == "champion"][:7]
    fb = [{"transaction_id": t, "is_fraud": 1} for t in to_challenger[:5]] + [
        {"transaction_id": t, "is_fraud": 0} for t in champs
    ]
    fb.append({"transaction_id": "never-served", "is_fraud": 1})
    r = httpx.post(served.url + "/v1/feedback", json={"feedback": fb}, timeout=30)
    assert r.status_code == 200 and r.json() == {"accepted": 13}
    arms = canary(served)["arms"]
    assert (arms["challenger"]["labelled"], arms["challenger"]["frauds"]) == (5, 5)
    assert (arms["champion"]["labelled"], arms["champion"]["frauds"]) == (7, 0)

    text = httpx.get(served.url + "/metrics").text
    assert "riskops_canary_active 1.0" in text
    assert 'riskops_canary_requests_total{arm="challenger",outcome="ok"}' in text
    assert f'riskops_canary_challenger_info{{version="{version}"}} 1.0' in text
    assert 'riskops_canary_outcomes_total{arm="challenger"} 5.0' in text

    end_canary(served)
    p = predict(served, [tx() for _ in range(20)]).json()["predictions"]
    assert {x["model_version"] for x in p} == {CHAMPION_VERSION}
    assert "riskops_canary_active 0.0" in httpx.get(served.url + "/metrics").text


def test_challenger_that_fails_to_load_never_disturbs_the_champion(served, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(served.model_dir, broken)
    (broken / "model.safetensors").unlink()
    version = start_challenger(served, broken, share=0.5, seed=0)
    state = wait_for(lambda: (c := canary(served))["status"] == "failed" and c, what="load failure")
    assert state["failed_version"] == version and state["load_error"] and state["active"] is False
    preds = predict(served, [tx() for _ in range(40)]).json()["predictions"]
    assert {p["model_version"] for p in preds} == {CHAMPION_VERSION}
    assert ModelRegistry(served.home.registry).aliases()["champion"] == CHAMPION_VERSION
    alerts = jsonl(served.home.root / "alerts.jsonl")
    assert any(
        a["kind"] == "canary" and a["event"] == "load_failed" and a["challenger_version"] == version
        for a in alerts
    )
    assert "riskops_canary_load_failures_total 1.0" in httpx.get(served.url + "/metrics").text
    end_canary(served)


def test_rollback_of_a_challenger_that_scores_nan(served, tmp_path):
    nan_model = tmp_path / "nan-model"
    shutil.copytree(served.model_dir, nan_model)
    calibration = json.loads((nan_model / "calibration.json").read_text())
    (nan_model / "calibration.json").write_text(json.dumps({**calibration, "bias": float("nan")}))
    version = start_challenger(
        served, nan_model, share=0.5, seed=1, min_requests=100_000, min_requests_for_errors=20
    )
    wait_active(served, version)
    seen = []
    deadline = time.monotonic() + 60
    while (
        canary(served)["last_decision"] is None
        or canary(served)["last_decision"]["challenger_version"] != version
    ):
        assert time.monotonic() < deadline, "no rollback"
        r = predict(served, [tx() for _ in range(10)])
        assert r.status_code == 200, r.text
        seen += r.json()["predictions"]
    # every answer came from the champion: the broken challenger's rows fell back to it
    assert {p["model_version"] for p in seen} == {CHAMPION_VERSION}
    assert all(0.0 <= p["risk_score"] <= 1.0 for p in seen)
    state = canary(served)
    assert (
        state["last_decision"]["action"] == "rollback"
        and "error rate" in state["last_decision"]["reasons"][0]
    )
    assert state["status"] == "idle" and state["active"] is False
    aliases = ModelRegistry(served.home.registry).aliases()
    assert "challenger" not in aliases and aliases["champion"] == CHAMPION_VERSION
    decisions = jsonl(served.home.root / "promotion" / "decisions.jsonl")
    assert decisions[-1]["kind"] == "canary" and decisions[-1]["action"] == "rollback"
    assert decisions[-1]["challenger_version"] == version
    alerts = jsonl(served.home.root / "alerts.jsonl")
    assert any(
        a["kind"] == "canary" and a["event"] == "rollback" and a["challenger_version"] == version
        for a in alerts
    )
    assert 'riskops_canary_decisions_total{action="rollback"} 1.0' in httpx.get(served.url + "/metrics").text
    assert {p["model_version"] for p in predict(served, [tx() for _ in range(10)]).json()["predictions"]} == {
        CHAMPION_VERSION
    }


# --------------------------------------------------------------------------- promotion (changes the champion: last)
def test_promotion_under_concurrent_load_has_no_failures(served):
    router = CanaryRouter(0.5, seed=2)
    version = start_challenger(
        served, served.model_dir, share=0.5, seed=2, min_requests=150, min_requests_for_errors=50
    )
    wait_active(served, version)
    registry = ModelRegistry(served.home.registry)
    results: list[tuple[float, float, int, list[tuple[str, str]]]] = []
    promoted_at: list[float] = []
    stop_at = time.monotonic() + 90

    def worker():
        after = 0
        with httpx.Client(timeout=60) as client:
            while time.monotonic() < stop_at and after < 15:
                items = [tx() for _ in range(4)]
                started = time.monotonic()
                r = client.post(f"{served.url}/v1/models/{MODEL}:predict", json={"instances": items})
                rows = (
                    [(p["transaction_id"], p["model_version"]) for p in r.json()["predictions"]]
                    if r.status_code == 200
                    else []
                )
                results.append((started, time.monotonic(), r.status_code, rows))
                if promoted_at:
                    after += 1
                elif registry.aliases().get("champion") == version:
                    promoted_at.append(time.monotonic())

    with cf.ThreadPoolExecutor(4) as pool:
        for f in [pool.submit(worker) for _ in range(4)]:
            f.result()
    assert promoted_at, "the canary did not promote"
    assert {s for _, _, s, _ in results} == {200}
    rows = [(start, end, tid, v) for start, end, _, got in results for tid, v in got]
    for _, _, tid, v in rows:  # the challenger arm was always answered by the challenger
        if router.arm(tid) == "challenger":
            assert v == version
    versions = {v for *_, v in rows}
    assert versions == {CHAMPION_VERSION, version}
    # the switch: once a champion-arm row was answered by the new version, nothing is old again
    switch = min(end for _, end, tid, v in rows if v == version and router.arm(tid) == "champion")
    assert {v for start, _, _, v in rows if start > switch} == {version}
    assert [v for *_, v in sorted(rows)][-20:] == [version] * 20

    state = canary(served)
    assert state["last_decision"]["action"] == "promote" and state["status"] == "idle"
    assert state["champion_version"] == version
    aliases = registry.aliases()
    assert aliases["champion"] == version and aliases["previous_champion"] == CHAMPION_VERSION
    assert "challenger" not in aliases
    decisions = jsonl(served.home.root / "promotion" / "decisions.jsonl")
    assert decisions[-1]["kind"] == "canary" and decisions[-1]["action"] == "promote"
    assert decisions[-1]["challenger_version"] == version
    assert f"hot swap: now serving {version}" in served.log.read_text()
    assert any(
        a["kind"] == "canary" and a["event"] == "promote" for a in jsonl(served.home.root / "alerts.jsonl")
    )
