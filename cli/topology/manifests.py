"""What `k8s/` deploys, read from the rendered manifests, as commands and environments to run here.

`riskops up` starts the cluster's topology as local processes. So that the manifests and the code
cannot drift apart, each process's command, arguments and environment come from the rendered
overlay (`kubectl kustomize`): the Redis StatefulSet, the InferenceService's predictor and
transformer, the monitor CronJob, and the ConfigMaps and Secret references they read. Only what
names the cluster is rewritten (`LocalSite`):

* container paths (the Feast config mount, the model volume, the policy and monitor ConfigMaps,
  each pod's ``RISKOPS_HOME`` emptyDir) become folders of the local home;
* Service names (``redis:6379``) become ``127.0.0.1:<port>``, and every ``--http_port`` a free port;
* the object store (``s3://...`` in ``RISKOPS_PREDICTION_LOG_URI``) becomes a ``file://`` folder — a
  stand-in for the S3 API the cluster's store speaks (the S3 path is tested against moto);
* Secret references get local values (the PII key this machine's features were built with, a fresh
  Redis password); ``$(VAR)`` references are expanded as the kubelet does.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@dataclass
class Workload:
    """One container of the rendered manifests: what a process of it runs."""

    name: str
    command: list[str]
    args: list[str]
    env: dict[str, str]  # resolved: envFrom ConfigMaps, then env (Secrets from the site), $(VAR) expanded
    files: dict[str, dict[str, str]] = field(default_factory=dict)  # mount path -> ConfigMap data
    schedule: str | None = None  # a CronJob's


def render(overlay: str = "dev", k8s_dir: Path | None = None) -> list[dict[str, Any]]:
    """`kubectl kustomize` of an overlay: the objects it deploys."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise RuntimeError("kubectl is needed to render k8s/ (`make install` installs a pinned one)")
    folder = (k8s_dir or REPO / "k8s") / "overlays" / overlay
    if not folder.is_dir():
        raise FileNotFoundError(f"no overlay {overlay!r} under {folder.parent}")
    out = subprocess.run([kubectl, "kustomize", str(folder)], check=True, capture_output=True, text=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: a defined variable is replaced, anything else kept."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), value)


def _container(docs: list[dict], kind: str, name: str, part: str | None = None) -> tuple[dict, dict]:
    """(container, pod spec) of the object `kind`/`name` (an InferenceService's `part`)."""
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            spec = doc["spec"]
            if kind == "InferenceService":
                pod = spec[part]
            elif kind == "CronJob":
                pod = spec["jobTemplate"]["spec"]["template"]["spec"]
            else:
                pod = spec["template"]["spec"]
            return pod["containers"][0], pod
    raise KeyError(f"the rendered manifests have no {kind} {name!r}")


def workload(
    docs: list[dict], kind: str, name: str, secrets: Mapping[str, str], part: str | None = None
) -> Workload:
    """The process a container runs: command, args and environment resolved like the kubelet does."""
    container, pod = _container(docs, kind, name, part)
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = _expand(str(item["value"]), env)
        elif "secretKeyRef" in item.get("valueFrom", {}):
            key = item["valueFrom"]["secretKeyRef"]["key"]
            if key not in secrets:
                raise KeyError(f"{name}: no local value for secret key {key!r}")
            env[item["name"]] = secrets[key]
    files: dict[str, dict[str, str]] = {}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        if "configMap" in volume:
            files[mount["mountPath"]] = configmaps[volume["configMap"]["name"]]
    command = [_expand(c, env) for c in container.get("command", [])]
    args = [_expand(a, env) for a in container.get("args", [])]
    schedule = next((d["spec"]["schedule"] for d in docs if d["kind"] == kind == "CronJob"), None)
    return Workload(f"{name}-{part}" if part else name, command, args, env, files, schedule)


def set_arg(args: list[str], flag: str, value: str) -> list[str]:
    """`args` with ``flag value`` replaced (or added)."""
    out = list(args)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return out


def arg(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None
