"""Promotion decisions on a cluster: the InferenceService patches (riskops/lifecycle/rollout.py).

No Kubernetes API server runs here, so `FakeKubeApi` stands in for it: it holds the InferenceService
from our own manifest (k8s/base/inferenceservice.yaml) and applies RFC 6902 patches the way the API
server does (a failed ``test`` op refuses the whole patch). Every patched object is validated against
KServe's CRD schema (../shared/k8s-schemas, the `kserve_crd` fixture), so a patch that KServe would reject fails here too.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from k8s_checks.custom_resources import validate_isvc
from k8s_checks.report import Report

from riskops.lifecycle.canary import CanaryDecision, CanaryState
from riskops.lifecycle.promotion import apply_canary_decision, run_promotion_gate
from riskops.lifecycle.rollout import (
    KServeRollout,
    RolloutError,
    RolloutSettings,
    canary_patch,
    storage_uri_location,
)
from riskops.registry.store import ModelRegistry
from riskops.settings import paths as home_paths

REPO = Path(__file__).resolve().parents[2]


def _isvc() -> dict:
    obj = yaml.safe_load((REPO / "k8s/base/inferenceservice.yaml").read_text())
    obj.setdefault("metadata", {})["namespace"] = "riskops"
    return obj


def _pointer(doc, path: str):
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]
    for p in parts[:-1]:
        doc = doc[int(p)] if isinstance(doc, list) else doc[p]
    return doc, parts[-1]


class FakeKubeApi:
    """Stand-in for kubernetes.client.CustomObjectsApi (get + JSON Patch), one object."""

    def __init__(self, obj: dict, crd: dict[str, dict]) -> None:
        self.obj = obj
        self.crd = crd
        self.patches: list[list[dict]] = []

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        assert (group, version, plural) == ("serving.kserve.io", "v1beta1", "inferenceservices")
        assert (namespace, name) == (self.obj["metadata"]["namespace"], self.obj["metadata"]["name"])
        return copy.deepcopy(self.obj)

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        assert isinstance(body, list), "custom resources take JSON Patch lists here"
        new = copy.deepcopy(self.obj)
        for op in body:
            parent, key = _pointer(new, op["path"])
            here = parent[int(key)] if isinstance(parent, list) else parent.get(key)
            if op["op"] == "test":
                if here != op["value"]:
                    raise RuntimeError(f"422 Unprocessable Entity: test failed at {op['path']}")
            elif op["op"] in ("add", "replace"):
                if op["op"] == "replace" and here is None:
                    raise RuntimeError(f"422: replace of a missing path {op['path']}")
                parent[int(key) if isinstance(parent, list) else key] = op["value"]
            else:
                raise AssertionError(f"unexpected op {op}")
        report = Report()
        validate_isvc(new, "patched", self.crd, report)
        assert report.ok, report.problems  # what KServe's admission would refuse
        self.obj = new
        self.patches.append(body)
        return copy.deepcopy(new)

    @property
    def predictor(self) -> dict:
        return self.obj["spec"]["predictor"]

    @property
    def storage_uri(self) -> str:
        return storage_uri_location(self.obj)[1]


SETTINGS = {"mode": "kserve", "storage_uri": "s3://riskops-models/risk-model/{version}", "canary_percent": 10}


def test_storage_uri_is_found_in_our_manifest_and_in_a_standard_predictor():
    pointer, value = storage_uri_location(_isvc())
    assert pointer.startswith("/spec/predictor/containers/0/env/") and value.endswith("/v0001")
    std = {"spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "gs://m/1"}}}}
    assert storage_uri_location(std) == ("/spec/predictor/model/storageUri", "gs://m/1")
    ops = canary_patch(std, "predictor", "gs://m/2", 20)
    assert ops[0] == {"op": "test", "path": "/spec/predictor/model/storageUri", "value": "gs://m/1"}
    assert ops[-1] == {"op": "add", "path": "/spec/predictor/canaryTrafficPercent", "value": 20}
    with pytest.raises(RolloutError, match="STORAGE_URI"):
        storage_uri_location({"spec": {"predictor": {"containers": [{"name": "x"}]}}})


def test_settings_are_validated():
    assert RolloutSettings.from_dict(None).mode == "none"
    for bad, msg in (({"mode": "argo"}, "mode"), ({"canary_percent": 120}, "canary_percent"),
                     ({"storage_uri": "s3://x/latest"}, "{version}"), ({"nam": "x"}, "unknown keys")):
        with pytest.raises(ValueError, match=msg):
            RolloutSettings.from_dict(bad)


def test_canary_start_promote_and_rollback_patch_the_inference_service(kserve_crd):
    api = FakeKubeApi(_isvc(), kserve_crd)
    rollout = KServeRollout(SETTINGS, api=api)
    rollout.start("v0002")
    assert api.storage_uri == "s3://riskops-models/risk-model/v0002" and api.predictor["canaryTrafficPercent"] == 10
    rollout.promote()
    assert api.predictor["canaryTrafficPercent"] == 100 and api.storage_uri.endswith("/v0002")
    rollout.start("v0003")
    rollout.rollback()
    assert api.predictor["canaryTrafficPercent"] == 0  # KServe pins traffic to the last rolled-out revision
    assert len(api.patches) == 4


def test_a_concurrent_edit_refuses_the_patch(kserve_crd):
    api = FakeKubeApi(_isvc(), kserve_crd)
    rollout = KServeRollout(SETTINGS, api=api)
    seen = api.get_namespaced_custom_object("serving.kserve.io", "v1beta1", "riskops", "inferenceservices",
                                            "risk-model")
    ops = canary_patch(seen, "predictor", rollout.storage_uri("v0002"), 10)
    rollout.start("v0009")  # someone else moved the model in between
    with pytest.raises(RuntimeError, match="test failed"):
        api.patch_namespaced_custom_object("serving.kserve.io", "v1beta1", "riskops", "inferenceservices",
                                           "risk-model", ops)
    assert api.storage_uri.endswith("/v0009")


# ---------------------------------------------------------------------------- with the gate
class _Toy:
    def __init__(self, w: float) -> None:
        self.w = w

    def predict_proba(self, frame):
        return 1.0 / (1.0 + np.exp(-(self.w * frame["signal"].to_numpy() - 4.0)))


def _gate_setup(paths, tmp_path):
    import pandas as pd

    reg = ModelRegistry(paths.registry)
    versions = []
    for name in ("champ", "chall"):
        d = tmp_path / name
        d.mkdir()
        (d / "weights.bin").write_text(name)
        versions.append(reg.register(d).version)
    reg.set_alias("champion", versions[0])
    reg.set_alias("challenger", versions[1])
    rng = np.random.default_rng(3)
    y = (rng.random(4000) < 0.03).astype(int)
    noise = rng.normal(size=4000)
    w = pd.DataFrame({"transaction_id": [f"t{i}" for i in range(4000)], "is_fraud": y,
                      "signal": noise + 2.2 * y})
    w["risk_score"] = 1.0 / (1.0 + np.exp(-(0.3 * w["signal"] + 1.2 * rng.normal(size=4000) - 4.0)))  # weak
    models = {versions[0]: _Toy(0.3), versions[1]: _Toy(1.5)}
    return reg, versions, w, (lambda p: models[p.name])


@pytest.mark.parametrize("percent", [10, 0])
def test_a_passed_gate_patches_the_cluster(riskops_home, tmp_path, percent, kserve_crd):
    paths = home_paths(riskops_home)
    reg, (v1, v2), window, loader = _gate_setup(paths, tmp_path)
    api = FakeKubeApi(_isvc(), kserve_crd)
    config = {"bootstrap": 0, "rollout": {**SETTINGS, "canary_percent": percent}}
    d = run_promotion_gate(paths, config, labelled=window, loader=loader, frame_fn=lambda w: w, rollout_api=api)
    assert d.promote and api.storage_uri.endswith(f"/{v2}")
    assert api.predictor["canaryTrafficPercent"] == (percent or 100)
    if percent:  # a canary in progress: the registry keeps champion + challenger until it decides
        assert not d.applied and reg.aliases() == {"champion": v1, "challenger": v2}
        state = CanaryState({"min_requests": 1}, champion_version=v1, challenger_version=v2)
        rollout = KServeRollout(config["rollout"], api=api)
        assert apply_canary_decision(reg, state, CanaryDecision("promote", ["ok"], {}), paths, rollout=rollout)
        assert api.predictor["canaryTrafficPercent"] == 100 and reg.aliases()["champion"] == v2
    else:
        assert d.applied and reg.aliases()["champion"] == v2
    rec = json.loads((paths.root / "promotion" / "decisions.jsonl").read_text().splitlines()[0])
    assert rec["rollout"]["patch"][-1]["value"] == (percent or 100)


def test_a_failed_patch_keeps_the_registry_and_alerts(riskops_home, tmp_path, kserve_crd):
    paths = home_paths(riskops_home)
    reg, (v1, v2), window, loader = _gate_setup(paths, tmp_path)
    broken = _isvc()
    del broken["spec"]["predictor"]["containers"][0]["env"]  # no model location to patch
    api = FakeKubeApi(broken, kserve_crd)
    config = {"bootstrap": 0, "rollout": {**SETTINGS, "canary_percent": 0}}
    d = run_promotion_gate(paths, config, labelled=window, loader=loader, frame_fn=lambda w: w, rollout_api=api)
    assert d.promote and not d.applied and "error" in d.rollout and api.patches == []
    assert reg.aliases() == {"champion": v1, "challenger": v2}
    alert = json.loads((paths.root / "alerts.jsonl").read_text().splitlines()[-1])
    assert alert["type"] == "rollout_failed" and "STORAGE_URI" in alert["reasons"][0]
    # a canary rollback that cannot reach the cluster leaves the registry alone as well
    state = CanaryState({"min_requests": 1}, champion_version=v1, challenger_version=v2)
    with pytest.raises(RolloutError):
        apply_canary_decision(reg, state, CanaryDecision("rollback", ["bad"], {}), paths,
                              rollout=KServeRollout(config["rollout"], api=api))
    assert reg.aliases() == {"champion": v1, "challenger": v2}


def _served_log(v1: str, v2: str, challenger_scores: np.ndarray) -> pd.DataFrame:
    """A shipped log while KServe splits traffic: the champion answers all rows, then the canary
    revision answers 10% of them (its scores given)."""
    rng = np.random.default_rng(5)
    n = 2000
    version = np.where(np.arange(n) >= 200, np.where(rng.random(n) < 0.1, v2, v1), v1)
    scores = rng.beta(1, 30, n)
    challenger = version == v2
    scores[challenger] = challenger_scores[: challenger.sum()]
    return pd.DataFrame({
        "transaction_id": [f"c{i}" for i in range(n)], "model_version": version, "risk_score": scores,
        "logged_at": pd.date_range("2026-03-01", periods=n, freq="s", tz="UTC").astype(str),
    })  # fmt: skip


@pytest.mark.parametrize("healthy", [True, False])
def test_the_monitor_decides_a_cluster_canary_from_the_shipped_log(riskops_home, tmp_path, kserve_crd, healthy):
    """On a cluster no process sees both arms: each pass rebuilds them from the log and applies the
    decision to the InferenceService (100 % or 0 %) and the registry."""
    from riskops.lifecycle.promotion import PromotionSettings, judge_cluster_canary

    paths = home_paths(riskops_home)
    reg, (v1, v2), window, loader = _gate_setup(paths, tmp_path)
    api = FakeKubeApi(_isvc(), kserve_crd)
    config = {"bootstrap": 0, "rollout": {**SETTINGS, "canary_percent": 10},
              "canary": {"min_requests": 100, "min_requests_for_errors": 20}}  # fmt: skip
    assert run_promotion_gate(paths, config, labelled=window, loader=loader, frame_fn=lambda w: w, rollout_api=api).promote
    assert api.predictor["canaryTrafficPercent"] == 10 and reg.aliases()["challenger"] == v2
    settings = PromotionSettings.from_dict(config)
    early = _served_log(v1, v2, np.random.default_rng(1).beta(1, 30, 2000)).iloc[:300]
    assert judge_cluster_canary(paths, settings, early, rollout_api=api).action == "continue"  # < 100 requests
    scores = np.random.default_rng(1).beta(1, 30, 2000) if healthy else np.full(2000, 0.97)
    decision = judge_cluster_canary(paths, settings, _served_log(v1, v2, scores), rollout_api=api)
    assert decision.action == ("promote" if healthy else "rollback"), decision.reasons
    assert api.predictor["canaryTrafficPercent"] == (100 if healthy else 0)
    assert reg.aliases().get("champion") == (v2 if healthy else v1)
    assert "challenger" not in reg.aliases()
    assert judge_cluster_canary(paths, settings, _served_log(v1, v2, scores), rollout_api=api) is None  # over
