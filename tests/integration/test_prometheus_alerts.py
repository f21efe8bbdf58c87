"""The operator's view against a real Prometheus: scraping, alert rules, the dashboard's queries.

Real parts: `prometheus` and `prometheus-pushgateway` (the OS packages), `python -m serving` over
HTTP with its entity state in a real `redis-server`, and a real monitor pass (Evidently, rules, the
loop) over a drifted world, pushing its verdict to the Pushgateway. Prometheus scrapes both every
second and evaluates the rules of k8s/base/monitoring/prometheusrule.yaml: the same expressions,
with every `for:` shortened to 5 s so an alert fires within the test (the `for:` durations
themselves are covered by the promtool unit tests, tools/alert_rules.py).

The induced fault: Redis (the shared entity state) goes away under traffic; the server answers
degraded and RiskopsDegradedAnswers must go to firing. The monitor's drift verdict must fire
RiskopsDriftDetected. Every query of the Grafana dashboard must return data.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from alert_rules import write_rules_file
from grafana_dashboard import dashboard_queries
from support.browser import chromium, save_screenshot
from support.monitoring import drifted_world, write_prediction_log
from support.prometheus import alerts, query, running_prometheus, running_pushgateway, wait_for
from support.redis_server import RedisServer
from support.servers import MODEL, Served, running_server, tx

from riskops.lifecycle.loop import run_loop_once
from riskops.monitoring.feedback import append_feedback
from riskops.registry.store import ModelRegistry
from riskops.settings import paths

pytestmark = pytest.mark.slow


class Traffic:
    """Scoring requests in a background thread (a few bad ones too) until stopped."""

    def __init__(self, served: Served) -> None:
        self.served, self.stop_event = served, threading.Event()
        self.codes: list[int] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            n = 0
            while not self.stop_event.is_set():
                n += 1
                body = {"instances": [tx()]} if n % 25 else {"instances": [{"amount": "lots"}]}
                r = client.post(f"{self.served.url}/v1/models/{MODEL}:predict", json=body)
                self.codes.append(r.status_code)
                self.stop_event.wait(0.05)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.thread.join(60)


@pytest.fixture(scope="module")
def redis(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("alerts-redis"))
    server.start()
    yield server
    server.stop()


def _monitor_pass(root, gateway: str) -> dict:
    """A real loop pass over a drifted world (champion + reference, 1,000 rows into the shift, labels
    for the window), pushing its verdict to `gateway`."""
    world = drifted_world(root / "world")
    home = paths(root / "monitor-home")
    registry = ModelRegistry(home.registry)
    mv = registry.register(world["ref_dir"])
    registry.set_alias("champion", mv.version)
    window = world["frame"].iloc[world["onset"] - 300 : world["onset"] + 1000]
    write_prediction_log(home.prediction_log, window, mv.version, world["thresholds"])
    labels = [{"transaction_id": str(t), "is_fraud": int(y)} for t, y in zip(window["transaction_id"], window["is_fraud"], strict=True)]  # fmt: skip
    append_feedback(home, labels)
    config = {
        "window": {"size": 1000, "min_rows": 500},
        "retrain": {"mode": "dry_run", "min_rows": 10, "min_frauds": 1},
        "metrics": {"pushgateway": gateway},
    }
    return run_loop_once(home, config).summary()


def _alerts_page(url: str, out: Path) -> str:
    """Prometheus' alerts page in headless Chromium: its text; a screenshot as prometheus-alerts.png
    (under the test's folder, and $RISKOPS_TEST_ARTIFACTS when set)."""
    with chromium(out / "chromium") as driver:
        for path in ("/alerts", "/classic/alerts"):  # upstream's UI; Debian's package serves the classic one
            driver.get(url + path)
            text = driver.find_element("tag name", "body").text
            if "404" not in text[:40]:
                break
        save_screenshot(driver, out / "prometheus-alerts.png")
        return text


def _firing(url: str, name: str) -> list[dict]:
    return [a for a in alerts(url) if a["labels"].get("alertname") == name and a["state"] == "firing"]


def test_scraped_metrics_fire_the_alerts_and_feed_every_dashboard_panel(
    served_home, built_home, redis, tmp_path
):
    with (
        running_pushgateway(tmp_path / "pgw") as gateway,
        running_server(
            tmp_path, served_home, built_home[1], "state_backend=redis", f"redis_url={redis.url}"
        ) as served,
    ):
        verdict = _monitor_pass(tmp_path, gateway)
        assert verdict["drift"] is True and verdict["exported"]["pushed_to"] == gateway, verdict
        rules = write_rules_file(tmp_path / "rules.yml", for_override="5s")
        targets = {"riskops-serving": [served.url.removeprefix("http://")],
                   "riskops-pushgateway": [gateway.removeprefix("http://")]}  # fmt: skip
        with (
            running_prometheus(tmp_path / "prom", targets, [rules], honor_labels=("riskops-pushgateway",)) as prom,
            Traffic(served) as traffic,
        ):
            # every dashboard panel's query returns data (rates need two scrapes inside their window)
            queries = dashboard_queries(rate_interval="1m")
            assert len(queries) >= 12, queries

            def empty_panels() -> list[str]:
                return [title for title, q in queries if not query(prom, q)]

            wait_for(lambda: not empty_panels(), 120, 2, "every panel with data")

            # healthy traffic: the degraded alert is quiet; the monitor's drift verdict fires its own
            assert not [a for a in alerts(prom) if a["labels"]["alertname"] == "RiskopsDegradedAnswers"]
            wait_for(lambda: _firing(prom, "RiskopsDriftDetected"), 60, 1, "RiskopsDriftDetected firing")
            # and the panels say what happened, not only that they have data
            panel = dict(queries)  # title -> its (last) query
            assert float(query(prom, panel["Drift share"])[0]["value"][1]) > 0
            assert {s["metric"]["version"] for s in query(prom, panel["Model version per replica"])} == {"v0001"}
            shown = wait_for(lambda: {s["metric"].get("alertname") for s in query(prom, panel["Riskops alerts"])}
                             & {"RiskopsDriftDetected"}, 30, 1, "the alerts panel")  # fmt: skip
            assert shown == {"RiskopsDriftDetected"}

            # the fault: the shared entity state goes away under traffic
            redis.stop()
            try:
                fired = wait_for(
                    lambda: _firing(prom, "RiskopsDegradedAnswers"), 120, 1, "RiskopsDegradedAnswers firing"
                )
                page = _alerts_page(prom, tmp_path)  # what the operator sees, in a real browser
                assert "RiskopsDegradedAnswers" in page and "firing" in page.lower()
            finally:
                redis.start()
            assert fired[0]["annotations"]["runbook_url"].endswith("#riskopsdegradedanswers")
            assert float(query(prom, panel["Degraded share"])[0]["value"][1]) > 0.05
            errors = query(prom, 'sum(riskops_state_errors_total{operation="lookup"})')
            assert float(errors[0]["value"][1]) > 0
        assert 200 in traffic.codes and 400 in traffic.codes  # the bad requests were refused, not dropped
    assert yaml.safe_load(rules.read_text())["groups"], "the rules file Prometheus evaluated"
