"""Promotion decisions on a cluster: patch the KServe InferenceService.

Locally a decision moves registry aliases and the server hot-swaps (riskops.lifecycle.promotion,
serving.canary). On a cluster the serving pods read their model from ``STORAGE_URI`` (k8s/base/
inferenceservice.yaml), so the same decisions become patches of the InferenceService, the way
KServe's canary rollout works (serverless mode): KServe keeps the last revision that had 100% of
the traffic and splits between it and the newest one by ``canaryTrafficPercent``.

    gate passed        -> new storage URI + canaryTrafficPercent = canary_percent (0: full rollout, 100)
    canary promote     -> canaryTrafficPercent 100 (the new revision takes all traffic)
    canary rollback    -> canaryTrafficPercent 0   (traffic pinned to the last rolled-out revision)

Patches are JSON Patch (RFC 6902) lists: the model location sits in a list (the container's env),
which a merge patch of a custom resource can only replace whole; each patch starts with a
``test`` of the value it read, so a concurrent edit makes the API server refuse it (422) instead of
being overwritten. Settings: ``promotion.rollout`` of the monitor config (``mode: kserve`` turns it
on; configs/monitor.yaml documents the keys). The Kubernetes client is created lazily (in-cluster
config, else the kubeconfig); tests pass a stand-in with the same two methods, since no API
server runs here.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from riskops.settings import from_dict

log = logging.getLogger(__name__)

GROUP, API_VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
STORAGE_ENV = "STORAGE_URI"
ROLLOUT_MODES = ("none", "kserve")


class RolloutError(RuntimeError):
    pass


@dataclass
class RolloutSettings:
    """The ``promotion.rollout`` section of the monitor config."""

    mode: str = "none"  # none: registry aliases only (local serving) | kserve: also patch the InferenceService
    name: str = "risk-model"
    namespace: str = "riskops"
    component: str = "predictor"
    storage_uri: str = "s3://riskops-models/risk-model/{version}"  # where a registered version is uploaded
    canary_percent: int = 10  # traffic share of a model that passed the gate; 0 = roll out fully at once

    @classmethod
    def from_dict(cls, d: dict | None) -> RolloutSettings:
        s = from_dict(cls, d, "promotion.rollout")
        if s.mode not in ROLLOUT_MODES:
            raise ValueError(f"promotion.rollout.mode must be one of {ROLLOUT_MODES}, got {s.mode!r}")
        if not 0 <= int(s.canary_percent) <= 100:
            raise ValueError(f"promotion.rollout.canary_percent must be in [0, 100], got {s.canary_percent}")
        if "{version}" not in s.storage_uri:
            raise ValueError("promotion.rollout.storage_uri must contain {version}")
        return s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")  # RFC 6901


def storage_uri_location(isvc: dict, component: str = "predictor") -> tuple[str, str]:
    """(JSON pointer, current value) of the model location of ``spec.<component>``.

    Either the predictor's own ``model.storageUri`` (a standard model format) or the
    ``STORAGE_URI`` env of its first container (a custom container, as ours)."""
    spec = (isvc.get("spec") or {}).get(component)
    if not isinstance(spec, dict):
        raise RolloutError(f"InferenceService has no spec.{component}")
    base = f"/spec/{_escape(component)}"
    model = spec.get("model")
    if isinstance(model, dict) and "storageUri" in model:
        return f"{base}/model/storageUri", str(model["storageUri"])
    for c_idx, container in enumerate(spec.get("containers") or []):
        for e_idx, env in enumerate(container.get("env") or []):
            if env.get("name") == STORAGE_ENV and "value" in env:
                return f"{base}/containers/{c_idx}/env/{e_idx}/value", str(env["value"])
    raise RolloutError(f"spec.{component} has neither model.storageUri nor a container env {STORAGE_ENV}")


def canary_patch(isvc: dict, component: str, storage_uri: str | None, percent: int) -> list[dict]:
    """JSON Patch: the newest revision gets ``percent`` % of the traffic (100 promote / full rollout,
    0 roll back); with ``storage_uri``, that revision first becomes the model at that URI. The
    leading ``test`` guards the model location read from ``isvc``."""
    pointer, current = storage_uri_location(isvc, component)
    ops: list[dict] = [{"op": "test", "path": pointer, "value": current}]
    if storage_uri is not None and current != storage_uri:
        ops.append({"op": "replace", "path": pointer, "value": storage_uri})
    ops.append({"op": "add", "path": f"/spec/{_escape(component)}/canaryTrafficPercent", "value": int(percent)})
    return ops


def kubernetes_api() -> Any:  # pragma: no cover - needs a cluster
    """A ``kubernetes.client.CustomObjectsApi`` (in-cluster service account, else the kubeconfig)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


class KServeRollout:
    """Applies promotion decisions to one InferenceService through the Kubernetes API."""

    def __init__(self, settings: RolloutSettings | dict | None = None, api: Any = None) -> None:
        self.settings = settings if isinstance(settings, RolloutSettings) else RolloutSettings.from_dict(settings)
        self._api = api

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = kubernetes_api()
        return self._api

    def get(self) -> dict:
        s = self.settings
        try:
            return self.api.get_namespaced_custom_object(GROUP, API_VERSION, s.namespace, PLURAL, s.name)
        except Exception as exc:
            raise RolloutError(f"reading InferenceService {s.namespace}/{s.name} failed: {exc}") from exc

    def _patch(self, ops: list[dict], what: str) -> dict:
        s = self.settings
        try:
            self.api.patch_namespaced_custom_object(GROUP, API_VERSION, s.namespace, PLURAL, s.name, ops)
        except Exception as exc:
            raise RolloutError(f"patching InferenceService {s.namespace}/{s.name} ({what}) failed: {exc}") from exc
        log.info("InferenceService %s/%s: %s", s.namespace, s.name, what)
        return {"inference_service": f"{s.namespace}/{s.name}", "action": what, "patch": ops}

    def storage_uri(self, version: str) -> str:
        return self.settings.storage_uri.format(version=version)

    def start(self, version: str) -> dict:
        """After a passed gate: serve ``version`` to ``canary_percent`` % (or all) of the traffic."""
        percent = self.settings.canary_percent or 100
        ops = canary_patch(self.get(), self.settings.component, self.storage_uri(version), percent)
        return self._patch(ops, f"serve {version} to {percent}% of traffic")

    def promote(self) -> dict:
        return self._patch(canary_patch(self.get(), self.settings.component, None, 100), "promote the canary (100%)")

    def rollback(self) -> dict:
        return self._patch(canary_patch(self.get(), self.settings.component, None, 0),
                           "roll back (0%: pinned to the last rolled-out revision)")


def rollout_from_config(rollout: dict | None, api: Any = None) -> KServeRollout | None:
    """The rollout of a ``promotion.rollout`` config section, or None when its mode is none."""
    settings = RolloutSettings.from_dict(rollout)
    return KServeRollout(settings, api=api) if settings.mode == "kserve" else None


__all__ = [
    "KServeRollout",
    "RolloutError",
    "RolloutSettings",
    "canary_patch",
    "rollout_from_config",
    "storage_uri_location",
]
