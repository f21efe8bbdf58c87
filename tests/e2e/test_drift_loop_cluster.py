"""The closed loop through the cluster's topology (`riskops drift-demo --topology cluster`), small:
Redis, the predictor and two transformer replicas started from the rendered manifests; the replay
spreads requests over the replicas; after the gate a canary revision (a predictor of the challenger
and a transformer) takes the canary's share of the transactions and the canary's judge decides
(promote or roll back; either must then be served by every replica); the monitor reads only the prediction log they ship to the
object store (a file:// folder standing in for S3); the gate's promotion must reach every replica.
(The settling after the promotion is tests/e2e/test_drift_loop.py's; here the loop ends at the
decision.)"""

import pytest
import yaml
from support.loops import small_loop

from cli.drift_demo import build_timeline, run_loop, train_champion
from cli.drift_demo.monitoring import SERVING_SKEWED_INPUTS
from riskops.monitoring.prediction_log import read_prediction_log
from riskops.registry.store import ModelRegistry
from riskops.settings import paths

pytestmark = pytest.mark.slow


def test_the_loop_closes_through_the_cluster_topology(riskops_home):
    opts = small_loop(
        topology="cluster",
        canary=True,  # KServe's canary: a canary revision gets the router's share, its judge decides
        second_scenario="none",
    )
    home = paths()
    timeline = build_timeline(opts)
    train_champion(home, timeline, opts)

    result = run_loop(home, timeline, opts)
    f = result.figures
    assert f["false_alarms_before_onset"] == 0, result.events
    # the gate passes (the retrained model learned the ring); the canary then decides either way:
    # its flag-rate and score-shift bounds can roll back a challenger that flags the learned fraud
    # more than the champion (seen in this small world); either decision must be served everywhere
    assert f["gate"]["promote"], f["gate"]
    assert result.closed and result.outcome in ("promoted", "canary_rollback"), (result.outcome, result.events[-6:])
    events = [e["event"] for e in result.events]
    assert events.index("gate") < events.index("canary_start") < events.index("canary")
    decided = next(e["text"] for e in result.events if e["event"] == "canary")
    promoted = result.outcome == "promoted"
    assert ("promote" if promoted else "rollback") in decided
    challenger = f["gate"]["challenger_version"]
    champion = ModelRegistry(home.registry).champion().version
    assert champion == (challenger if promoted else f["gate"]["champion_version"])

    # exact shared state: every input was compared, the counters a lone server skews included
    config = yaml.safe_load((home.root / "drift-demo" / "monitor.yaml").read_text())
    assert not set(SERVING_SKEWED_INPUTS) & set(config["drift"].get("exclude") or [])
    # the monitor's input was the shipped log: both replicas' segments, every answer in it
    shipped = read_prediction_log((home.root / "topology" / "object-store" / "prediction-log").as_uri())
    assert shipped["transaction_id"].is_unique
    assert len(shipped) >= sum(f["served_rows_after_onset"].values())
    # both replicas and the canary revision's transformer answered (a request id starts with its
    # process's own prefix); the canary's is the first to answer with the challenger; the two
    # replicas' last answers came from the champion the decision left in charge
    shipped = shipped.assign(replica=shipped["request_id"].str.split("-").str[0]).sort_values("logged_at")
    assert shipped["replica"].nunique() == 3
    canary = shipped.loc[shipped["model_version"] == challenger, "replica"].iloc[0]
    last = shipped[shipped["replica"] != canary].groupby("replica").tail(5)
    assert set(last["model_version"]) == {champion}, last[["replica", "model_version"]]
