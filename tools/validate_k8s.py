#!/usr/bin/env python3
"""Offline validation of the riskops Kubernetes manifests (what CI runs; no cluster needed).

    .venv/bin/python tools/validate_k8s.py            # exit 0 = all good, 1 = problems found

Checks, in order (each one prints what it looked at):

1. yamllint with the repository's .yamllint.yaml on every YAML file under k8s/, and on the
   compiled pipeline YAML (pipelines/*.yaml) with line-length off.
2. `kubectl kustomize` renders every overlay under k8s/overlays/ (kubectl >= 1.27 bundles
   kustomize v5; set KUBECTL to use another binary). A missing kubectl is a failure.
3. Every rendered object of a core kind is validated by kubernetes-validate in strict mode
   (unknown fields rejected) against Kubernetes 1.32. Custom resources never pass silently:
   InferenceService goes to (4), PyTorchJob to a structural check written here (its pod
   templates are validated strictly as core PodTemplates), and any other kind is an error.
4. Every InferenceService is validated with jsonschema against the KServe CRD's
   openAPIV3Schema (../shared/k8s-schemas or $RISKOPS_K8S_SCHEMAS), made strict: wherever the
   schema lists `properties` and neither `additionalProperties` nor
   `x-kubernetes-preserve-unknown-fields` is set, unknown fields are rejected (the API server
   would silently prune them). Without the CRD, a schema derived from kserve's Python models
   (kserve.V1beta1InferenceService, recursively, closed objects) is used instead, and the
   report says which one ran. metadata is checked as a strict core ObjectMeta.
5. Invariants: no Secret carries data/stringData (rendered or anywhere under k8s/); every
   container has cpu/memory requests and a memory limit, runs as non-root with no privilege
   escalation, all capabilities dropped, a RuntimeDefault seccomp profile and a read-only root
   filesystem (the "restricted" Pod Security Standard and then some); images are pinned
   (a tag other than `latest`, or a digest); serving workloads have readiness and liveness
   probes; ConfigMap/ServiceAccount/Role references resolve; Secret references name only the
   out-of-band secret and its known keys; everything lives in the riskops namespace; RBAC has
   no cluster-wide or wildcard grants; the predictor's first env entry is STORAGE_URI (the
   path the deploy step patches); a default-deny ingress NetworkPolicy exists.

Tests import this file and call `validate(...)` (see tests/test_k8s_manifests.py).
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KUBE_VERSION = "1.32"
NAMESPACE = "riskops"
CRD_FILE = "serving.kserve.io_inferenceservices.yaml"
SCHEMAS_ENV = "RISKOPS_K8S_SCHEMAS"
# Secrets are created out of band (docs/deploy.md); manifests may only reference these keys.
EXTERNAL_SECRETS: dict[str, set[str]] = {
    "riskops-secrets": {"pii-key", "redis-password", "s3-access-key", "s3-secret-key"},
}
CLUSTER_SCOPED_ALLOWED = {"Namespace"}
WORKLOAD_KINDS_WITH_PROBES = {"Deployment", "StatefulSet", "DaemonSet"}
ISVC_COMPONENTS = ("predictor", "transformer", "explainer")

REPO_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# report


@dataclass
class Report:
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    isvc_schema_source: str | None = None
    rendered: dict[str, list[dict]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def check(self, line: str) -> None:
        self.checked.append(line)

    def problem(self, where: str, msg: str) -> None:
        self.problems.append(f"{where}: {msg}")


def _obj_id(obj: dict) -> str:
    md = obj.get("metadata") or {}
    return f"{obj.get('kind', '?')}/{md.get('name', '?')}"


# --------------------------------------------------------------------------------------------
# 1. yamllint


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml"))


def run_yamllint(root: Path, k8s_dir: Path, report: Report) -> None:
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    conf_file = root / ".yamllint.yaml"
    if not conf_file.exists():
        report.problem("yamllint", f"config {conf_file} is missing")
        return
    strict_conf = YamlLintConfig(file=str(conf_file))
    relaxed_conf = YamlLintConfig(content=f"extends: {conf_file}\nrules:\n  line-length: disable\n")
    groups = [(_yaml_files(k8s_dir), strict_conf, "k8s")]
    pipeline_yaml = sorted((root / "pipelines").glob("*.yaml")) if (root / "pipelines").is_dir() else []
    groups.append((pipeline_yaml, relaxed_conf, "pipelines (line-length off)"))
    for files, conf, label in groups:
        n_problems = 0
        for path in files:
            text = path.read_text()
            for p in linter.run(text, conf, str(path)):
                # strict: warnings count as failures too
                n_problems += 1
                report.problem(
                    f"yamllint {path.relative_to(root)}:{p.line}:{p.column}",
                    f"[{p.level}] {p.desc} ({p.rule})",
                )
        report.check(f"yamllint: {len(files)} file(s) under {label}, {n_problems} problem(s)")


# --------------------------------------------------------------------------------------------
# 2. kustomize


def find_kubectl() -> str | None:
    exe = os.environ.get("KUBECTL") or shutil.which("kubectl")
    return exe if exe and (Path(exe).exists() or shutil.which(exe)) else None


def render_overlay(kubectl: str, overlay: Path) -> list[dict]:
    proc = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr or proc.stdout).strip())
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def discover_overlays(k8s_dir: Path) -> list[Path]:
    base = k8s_dir / "overlays"
    return sorted(p.parent for p in base.glob("*/kustomization.yaml")) if base.is_dir() else []


# --------------------------------------------------------------------------------------------
# 3. core kinds: kubernetes-validate


@functools.lru_cache(maxsize=1)
def _kubernetes_validate():
    """Import kubernetes-validate, caching its JSON schema files in memory.

    kubernetes_validate.validate() re-reads the 1.3 MB _definitions.json on every call; the
    schemas are never mutated, so memoising utils.schema_contents saves ~15 ms per object.
    """
    import kubernetes_validate
    import kubernetes_validate.utils as kv_utils

    if hasattr(kv_utils, "schema_contents") and not hasattr(kv_utils.schema_contents, "cache_info"):
        kv_utils.schema_contents = functools.lru_cache(maxsize=64)(kv_utils.schema_contents)
    return kubernetes_validate


def validate_core(obj: dict, where: str, report: Report) -> bool:
    """Strict schema validation of a core object. Returns False when no schema exists."""
    kubernetes_validate = _kubernetes_validate()
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except ValidationError as e:
        path = ".".join(str(p) for p in e.path) or "<root>"
        report.problem(where, f"kubernetes-validate (strict, {KUBE_VERSION}): {path}: {e.message}")
    except SchemaNotFoundError:
        return False
    except Exception as e:  # noqa: BLE001 - any other failure is a failed check, never a pass
        report.problem(where, f"kubernetes-validate could not validate: {e}")
    return True


def validate_object_meta(md: Any, where: str, report: Report) -> None:
    """A custom resource's metadata, checked as a strict core ObjectMeta."""
    if not isinstance(md, dict) or not md.get("name"):
        report.problem(where, "metadata.name is missing")
        return
    validate_core({"apiVersion": "v1", "kind": "ConfigMap", "metadata": md}, f"{where} metadata", report)


def validate_pod_template(template: Any, where: str, report: Report) -> None:
    """A pod template embedded in a custom resource, checked as a strict core PodTemplate."""
    if not isinstance(template, dict):
        report.problem(where, "template must be a mapping")
        return
    validate_core(
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "embedded"}, "template": template},
        where,
        report,
    )


# --------------------------------------------------------------------------------------------
# 4. InferenceService: CRD schema (strict) or kserve models


def _strictify(node: Any) -> Any:
    """Reject unknown fields wherever the CRD schema enumerates properties."""
    if isinstance(node, list):
        return [_strictify(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strictify(v) for k, v in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def schemas_dir(root: Path, override: Path | str | None = None) -> Path:
    if override:
        return Path(override)
    if os.environ.get(SCHEMAS_ENV):
        return Path(os.environ[SCHEMAS_ENV])
    return root.parent / "shared" / "k8s-schemas"


@functools.lru_cache(maxsize=4)
def load_crd_schemas(crd_path: str) -> dict[str, dict]:
    """apiVersion -> strict openAPIV3Schema, for every served version of the CRD."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(crd_path) as fh:
        crd = yaml.load(fh, Loader=loader)  # noqa: S506 - safe loader
    group = crd["spec"]["group"]
    out = {}
    for v in crd["spec"]["versions"]:
        if v.get("served", True):
            out[f"{group}/{v['name']}"] = _strictify(v["schema"]["openAPIV3Schema"])
    return out


_PRIMITIVES = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "date": {"type": "string"},
    "datetime": {"type": "string"},
    "object": {},  # int-or-string, quantities, raw extensions
}


@functools.lru_cache(maxsize=1)
def kserve_model_schema() -> dict:
    """A strict JSON schema for InferenceService built from kserve's generated Python models.

    Every model class becomes a closed object (additionalProperties: false) keyed by its JSON
    attribute names. Types the installed clients do not define (fields newer than the
    kubernetes client kserve pins) stay open and are listed in the schema's "x-open-types".
    """
    import kserve
    import kserve.models as kmodels
    import kubernetes.client.models as kcmodels

    definitions: dict[str, dict] = {}
    open_types: set[str] = set()
    quantity = {"type": ["string", "integer", "number"]}
    aliases = {"ResourceQuantity": quantity, "V1beta1MetricQuantity": quantity, "V1Time": {"type": "string"}}

    def resolve(name: str):
        candidates = [name]
        # kserve names some upstream types by their Go package: K8sIoApiAppsV1DeploymentStrategy
        m = re.fullmatch(r"K8sIoApi[A-Z][a-z]+(V\d+(?:alpha\d+|beta\d+)?)(\w+)", name)
        if m:
            candidates.append(m.group(1) + m.group(2))
        for cand in candidates:
            for mod in (kmodels, kcmodels):
                cls = getattr(mod, cand, None)
                if cls is not None and hasattr(cls, "openapi_types"):
                    return cls
        return None

    def type_schema(t: str, skip: tuple[str, ...] = ()) -> dict:
        t = t.strip()
        if t in _PRIMITIVES:
            return dict(_PRIMITIVES[t])
        if t in aliases:
            return dict(aliases[t])
        m = re.fullmatch(r"list\[(.+)\]", t)
        if m:
            return {"type": "array", "items": type_schema(m.group(1))}
        m = re.fullmatch(r"dict\((\w+),\s*(.+)\)", t)
        if m:
            return {"type": "object", "additionalProperties": type_schema(m.group(2))}
        if t not in definitions:
            cls = resolve(t)
            if cls is None:
                open_types.add(t)
                return {}
            definitions[t] = {}  # placeholder against recursion
            props = {
                cls.attribute_map[attr]: type_schema(attr_type)
                for attr, attr_type in cls.openapi_types.items()
                if attr not in skip
            }
            definitions[t] = {"type": "object", "properties": props, "additionalProperties": False}
        return {"$ref": f"#/definitions/{t}"}

    # status is written by the controller, never by a manifest
    root = type_schema("V1beta1InferenceService", skip=("status",))
    # Quantities are int-or-string in Kubernetes; the Python client types them as str.
    rr = definitions.get("V1ResourceRequirements")
    if rr:
        for key in ("limits", "requests"):
            rr["properties"][key] = {"type": "object", "additionalProperties": quantity}
    schema = dict(root)
    schema["definitions"] = definitions
    schema["x-open-types"] = sorted(open_types)
    schema["$comment"] = f"derived from kserve {getattr(kserve, '__version__', '?')} Python models"
    return schema


def validate_isvc(obj: dict, where: str, crd: dict[str, dict] | None, report: Report) -> None:
    import jsonschema

    validate_object_meta(obj.get("metadata"), where, report)
    if crd is not None:
        schema = crd.get(obj.get("apiVersion", ""))
        if schema is None:
            report.problem(
                where, f"apiVersion {obj.get('apiVersion')} is not served by the CRD ({sorted(crd)})"
            )
            return
        doc = obj
    else:
        schema = kserve_model_schema()
        doc = {k: v for k, v in obj.items() if k != "metadata"}  # metadata checked above
        if obj.get("apiVersion") != "serving.kserve.io/v1beta1":
            report.problem(where, f"unexpected apiVersion {obj.get('apiVersion')}")
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    for e in errors[:20]:
        path = ".".join(str(p) for p in e.absolute_path) or "<root>"
        report.problem(where, f"InferenceService schema: {path}: {e.message}")
    if len(errors) > 20:
        report.problem(where, f"... and {len(errors) - 20} more schema errors")


# --------------------------------------------------------------------------------------------
# PyTorchJob (Kubeflow Training Operator v1): no schema ships offline, so a structural check


PTJ_SPEC_KEYS = {"pytorchReplicaSpecs", "runPolicy", "elasticPolicy", "nprocPerNode"}
PTJ_RUN_POLICY_KEYS = {
    "cleanPodPolicy",
    "ttlSecondsAfterFinished",
    "activeDeadlineSeconds",
    "backoffLimit",
    "schedulingPolicy",
    "suspend",
    "managedBy",
}
PTJ_REPLICA_KEYS = {"replicas", "template", "restartPolicy"}
PTJ_RESTART = {"Always", "OnFailure", "Never", "ExitCode"}


def validate_pytorchjob(obj: dict, where: str, report: Report) -> None:
    if obj.get("apiVersion") != "kubeflow.org/v1":
        report.problem(where, f"PyTorchJob apiVersion must be kubeflow.org/v1, got {obj.get('apiVersion')}")
    unknown_top = set(obj) - {"apiVersion", "kind", "metadata", "spec"}
    if unknown_top:
        report.problem(where, f"unknown top-level fields {sorted(unknown_top)}")
    validate_object_meta(obj.get("metadata"), where, report)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        report.problem(where, "spec is missing")
        return
    if set(spec) - PTJ_SPEC_KEYS:
        report.problem(where, f"unknown spec fields {sorted(set(spec) - PTJ_SPEC_KEYS)}")
    npn = spec.get("nprocPerNode")
    if npn is not None and not (isinstance(npn, str) and (npn in ("auto", "cpu", "gpu") or npn.isdigit())):
        report.problem(where, f"spec.nprocPerNode must be a string: auto|cpu|gpu|<int>, got {npn!r}")
    rp = spec.get("runPolicy", {})
    if not isinstance(rp, dict) or set(rp) - PTJ_RUN_POLICY_KEYS:
        report.problem(where, f"spec.runPolicy has unknown fields {sorted(set(rp) - PTJ_RUN_POLICY_KEYS)}")
    elif rp.get("cleanPodPolicy", "None") not in ("All", "Running", "None"):
        report.problem(where, f"spec.runPolicy.cleanPodPolicy invalid: {rp.get('cleanPodPolicy')}")
    replicas = spec.get("pytorchReplicaSpecs")
    if not isinstance(replicas, dict) or not replicas:
        report.problem(where, "spec.pytorchReplicaSpecs is missing or empty")
        return
    if set(replicas) - {"Master", "Worker"}:
        report.problem(where, f"unknown replica types {sorted(set(replicas) - {'Master', 'Worker'})}")
    if "Master" not in replicas and "elasticPolicy" not in spec:
        report.problem(where, "a Master replica spec is required (or an elasticPolicy)")
    for rtype, rspec in replicas.items():
        rwhere = f"{where} pytorchReplicaSpecs.{rtype}"
        if not isinstance(rspec, dict):
            report.problem(rwhere, "must be a mapping")
            continue
        if set(rspec) - PTJ_REPLICA_KEYS:
            report.problem(rwhere, f"unknown fields {sorted(set(rspec) - PTJ_REPLICA_KEYS)}")
        n = rspec.get("replicas")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            report.problem(rwhere, f"replicas must be an integer >= 1, got {n!r}")
        elif rtype == "Master" and n != 1:
            report.problem(rwhere, "Master must have exactly 1 replica")
        if rspec.get("restartPolicy", "OnFailure") not in PTJ_RESTART:
            report.problem(rwhere, f"restartPolicy must be one of {sorted(PTJ_RESTART)}")
        template = rspec.get("template")
        if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
            report.problem(rwhere, "template.spec is missing")
            continue
        validate_pod_template(template, rwhere, report)
        containers = template["spec"].get("containers") or []
        main = [c for c in containers if isinstance(c, dict) and c.get("name") == "pytorch"]
        if not main:
            report.problem(rwhere, "no container named 'pytorch' (the operator's default container)")
            continue
        if not main[0].get("image"):
            report.problem(rwhere, "container 'pytorch' has no image")
        if not (main[0].get("command") or main[0].get("args")):
            report.problem(rwhere, "container 'pytorch' has no command")


# --------------------------------------------------------------------------------------------
# 5. invariants


def pod_specs(obj: dict) -> Iterator[tuple[str, dict, bool]]:
    """(where, pod spec, is_serving) for every pod spec inside an object."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        yield "spec", spec, False
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield (
            "spec.template.spec",
            (spec.get("template") or {}).get("spec") or {},
            kind in WORKLOAD_KINDS_WITH_PROBES,
        )
    elif kind == "CronJob":
        jt = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
        yield "spec.jobTemplate.spec.template.spec", jt.get("spec") or {}, False
    elif kind == "InferenceService":
        for comp in ISVC_COMPONENTS:
            if isinstance(spec.get(comp), dict):
                yield f"spec.{comp}", spec[comp], True
    elif kind == "PyTorchJob":
        for rtype, rspec in (spec.get("pytorchReplicaSpecs") or {}).items():
            if isinstance(rspec, dict):
                yield (
                    f"spec.pytorchReplicaSpecs.{rtype}.template.spec",
                    (rspec.get("template") or {}).get("spec") or {},
                    False,
                )


def _image_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    return last.rsplit(":", 1)[1] not in ("", "latest")


def check_container(c: dict, pod: dict, where: str, serving: bool, report: Report) -> None:
    res = c.get("resources") or {}
    req, lim = res.get("requests") or {}, res.get("limits") or {}
    missing = [f"requests.{k}" for k in ("cpu", "memory") if k not in req]
    missing += ["limits.memory"] if "memory" not in lim else []
    if missing:
        report.problem(where, f"resources missing {', '.join(missing)}")
    for ext in ("nvidia.com/gpu",):
        if ext in req and str(req.get(ext)) != str(lim.get(ext)):
            report.problem(where, f"{ext} requests must equal limits")
    psc, csc = pod.get("securityContext") or {}, c.get("securityContext") or {}
    non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
    if non_root is not True:
        report.problem(where, "securityContext.runAsNonRoot must be true (container or pod)")
    if csc.get("runAsUser", psc.get("runAsUser")) == 0:
        report.problem(where, "runs as uid 0")
    if csc.get("privileged"):
        report.problem(where, "privileged container")
    if csc.get("allowPrivilegeEscalation") is not False:
        report.problem(where, "securityContext.allowPrivilegeEscalation must be false")
    if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
        report.problem(where, "securityContext.capabilities.drop must include ALL")
    if csc.get("readOnlyRootFilesystem") is not True:
        report.problem(where, "securityContext.readOnlyRootFilesystem must be true")
    seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        report.problem(where, "seccompProfile must be RuntimeDefault (container or pod)")
    image = c.get("image") or ""
    if not image:
        report.problem(where, "no image")
    elif not _image_pinned(image):
        report.problem(where, f"image {image!r} is not pinned (use a version tag or a digest, never latest)")
    if serving:
        for probe in ("readinessProbe", "livenessProbe"):
            if not c.get(probe):
                report.problem(where, f"serving container has no {probe}")


def _refs(pod: dict) -> Iterator[tuple[str, str, str | None, bool]]:
    """(kind, name, key, optional) for every ConfigMap / Secret a pod spec references."""
    for v in pod.get("volumes") or []:
        if v.get("configMap"):
            yield "ConfigMap", v["configMap"].get("name", ""), None, bool(v["configMap"].get("optional"))
        if v.get("secret"):
            yield "Secret", v["secret"].get("secretName", ""), None, bool(v["secret"].get("optional"))
        for src in (v.get("projected") or {}).get("sources") or []:
            for kind, key in (("ConfigMap", "configMap"), ("Secret", "secret")):
                if src.get(key):
                    yield kind, src[key].get("name", ""), None, bool(src[key].get("optional"))
    for c in (pod.get("containers") or []) + (pod.get("initContainers") or []):
        for ef in c.get("envFrom") or []:
            if ef.get("configMapRef"):
                yield (
                    "ConfigMap",
                    ef["configMapRef"].get("name", ""),
                    None,
                    bool(ef["configMapRef"].get("optional")),
                )
            if ef.get("secretRef"):
                yield "Secret", ef["secretRef"].get("name", ""), None, bool(ef["secretRef"].get("optional"))
        for e in c.get("env") or []:
            vf = e.get("valueFrom") or {}
            if vf.get("configMapKeyRef"):
                r = vf["configMapKeyRef"]
                yield "ConfigMap", r.get("name", ""), r.get("key"), bool(r.get("optional"))
            if vf.get("secretKeyRef"):
                r = vf["secretKeyRef"]
                yield "Secret", r.get("name", ""), r.get("key"), bool(r.get("optional"))


def _secret_has_values(doc: dict) -> bool:
    return bool(doc.get("data") or doc.get("stringData"))


def check_invariants(objs: list[dict], label: str, report: Report) -> None:
    by_kind: dict[str, set[str]] = {}
    for o in objs:
        by_kind.setdefault(o.get("kind", ""), set()).add((o.get("metadata") or {}).get("name", ""))
    n_containers = 0
    for o in objs:
        where = f"[{label}] {_obj_id(o)}"
        kind = o.get("kind")
        md = o.get("metadata") or {}
        if kind == "Secret" and _secret_has_values(o):
            report.problem(
                where, "Secret with data/stringData: secrets are created out of band, never in git"
            )
        if kind in CLUSTER_SCOPED_ALLOWED:
            if kind == "Namespace" and md.get("name") != NAMESPACE:
                report.problem(where, f"only the {NAMESPACE} namespace may be created")
        elif kind in ("ClusterRole", "ClusterRoleBinding"):
            report.problem(where, "cluster-wide RBAC is not allowed (least privilege: namespaced Role only)")
        elif md.get("namespace") != NAMESPACE:
            report.problem(where, f"metadata.namespace must be {NAMESPACE}, got {md.get('namespace')!r}")
        if kind == "Role":
            for i, rule in enumerate(o.get("rules") or []):
                for k in ("apiGroups", "resources", "verbs"):
                    if "*" in (rule.get(k) or []):
                        report.problem(where, f"rules[{i}].{k} uses a wildcard")
                if {"escalate", "bind", "impersonate"} & set(rule.get("verbs") or []):
                    report.problem(where, f"rules[{i}] grants escalate/bind/impersonate")
                if "secrets" in (rule.get("resources") or []):
                    report.problem(where, f"rules[{i}] grants access to secrets")
        if kind == "RoleBinding":
            ref = o.get("roleRef") or {}
            if ref.get("kind") != "Role" or ref.get("name") not in by_kind.get("Role", set()):
                report.problem(
                    where, f"roleRef {ref.get('kind')}/{ref.get('name')} does not resolve to a Role here"
                )
            for s in o.get("subjects") or []:
                if s.get("kind") == "ServiceAccount" and s.get("name") not in by_kind.get(
                    "ServiceAccount", set()
                ):
                    report.problem(where, f"subject ServiceAccount {s.get('name')} is not defined")
        if kind == "ServiceAccount":
            for s in o.get("secrets") or []:
                if s.get("name") not in EXTERNAL_SECRETS and s.get("name") not in by_kind.get(
                    "Secret", set()
                ):
                    report.problem(where, f"references unknown Secret {s.get('name')}")
        for pwhere, pod, serving in pod_specs(o):
            sa = pod.get("serviceAccountName")
            if sa and sa != "default" and sa not in by_kind.get("ServiceAccount", set()):
                report.problem(f"{where} {pwhere}", f"serviceAccountName {sa} is not defined")
            for rkind, name, key, optional in _refs(pod):
                if optional:
                    continue
                if rkind == "ConfigMap" and name not in by_kind.get("ConfigMap", set()):
                    report.problem(
                        f"{where} {pwhere}", f"references ConfigMap {name!r}, which is not rendered"
                    )
                if rkind == "Secret":
                    if name in EXTERNAL_SECRETS:
                        if key is not None and key not in EXTERNAL_SECRETS[name]:
                            report.problem(
                                f"{where} {pwhere}", f"Secret {name} has no documented key {key!r}"
                            )
                    elif name not in by_kind.get("Secret", set()):
                        report.problem(f"{where} {pwhere}", f"references unknown Secret {name!r}")
            containers = (pod.get("containers") or []) + (pod.get("initContainers") or [])
            if not containers:
                report.problem(f"{where} {pwhere}", "no containers")
            for c in containers:
                n_containers += 1
                check_container(c, pod, f"{where} {pwhere} container {c.get('name')!r}", serving, report)
        if kind == "InferenceService":
            pred = ((o.get("spec") or {}).get("predictor") or {}).get("containers") or []
            kc = [c for c in pred if c.get("name") == "kserve-container"]
            env = (kc[0].get("env") or []) if kc else []
            n_uri = sum(1 for e in env if e.get("name") == "STORAGE_URI")
            if not kc:
                report.problem(where, "predictor has no 'kserve-container'")
            elif not env or env[0].get("name") != "STORAGE_URI" or n_uri != 1:
                report.problem(
                    where,
                    "predictor kserve-container must have exactly one STORAGE_URI, as its first env entry "
                    "(overlays and the deploy step patch /spec/predictor/containers/0/env/0/value)",
                )
    deny = [
        o
        for o in objs
        if o.get("kind") == "NetworkPolicy"
        and (o.get("spec") or {}).get("podSelector") in ({}, None)
        and "Ingress" in ((o.get("spec") or {}).get("policyTypes") or [])
        and not (o.get("spec") or {}).get("ingress")
    ]
    if not deny:
        report.problem(
            f"[{label}]", "no default-deny ingress NetworkPolicy (podSelector: {}, no ingress rules)"
        )
    report.check(f"[{label}] invariants on {len(objs)} objects / {n_containers} containers")


def scan_source_secrets(k8s_dir: Path, report: Report) -> None:
    n = 0
    for path in _yaml_files(k8s_dir):
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError:
            continue  # yamllint reports syntax errors
        for d in docs:
            n += 1
            if isinstance(d, dict) and d.get("kind") == "Secret" and _secret_has_values(d):
                report.problem(
                    f"{path}", f"Secret {(d.get('metadata') or {}).get('name')} has data/stringData in git"
                )
            if isinstance(d, dict) and d.get("secretGenerator"):
                report.problem(
                    f"{path}", "secretGenerator puts secret values in git; create the Secret out of band"
                )
    report.check(f"secret scan: {n} YAML document(s) under {k8s_dir.name}/, no Secret values allowed")


# --------------------------------------------------------------------------------------------
# driver


def validate(
    root: Path | str = REPO_ROOT,
    k8s_dir: Path | str | None = None,
    schemas: Path | str | None = None,
    overlays: list[str] | None = None,
    lint: bool = True,
) -> Report:
    root = Path(root).resolve()
    k8s = Path(k8s_dir).resolve() if k8s_dir else root / "k8s"
    report = Report()
    if not k8s.is_dir():
        report.problem("k8s", f"{k8s} does not exist")
        return report

    if lint:
        run_yamllint(root, k8s, report)
    scan_source_secrets(k8s, report)

    kubectl = find_kubectl()
    if kubectl is None:
        report.problem(
            "kustomize",
            "kubectl not found on PATH (or $KUBECTL): install kubectl v1.32 (it bundles kustomize v5.5), "
            "e.g. the distribution package `kubectl` or the release binary, then re-run",
        )
        return report
    overlay_dirs = discover_overlays(k8s)
    if overlays:
        overlay_dirs = [d for d in overlay_dirs if d.name in overlays]
    if not overlay_dirs:
        report.problem("kustomize", f"no overlays found under {k8s / 'overlays'}")
        return report

    crd_dir = schemas_dir(root, schemas)
    crd_path = crd_dir / CRD_FILE
    crd: dict[str, dict] | None = None
    if crd_path.is_file():
        crd = load_crd_schemas(str(crd_path.resolve()))
        report.isvc_schema_source = f"KServe CRD {crd_path} (served: {', '.join(sorted(crd))}), strict"
    else:
        open_types = ", ".join(kserve_model_schema()["x-open-types"]) or "none"
        report.isvc_schema_source = (
            f"kserve Python models (kserve.V1beta1InferenceService, closed objects; types the "
            f"installed clients lack, left open: {open_types}) because the CRD is not at {crd_path}"
        )

    for overlay in overlay_dirs:
        label = overlay.name
        try:
            objs = render_overlay(kubectl, overlay)
        except Exception as e:  # noqa: BLE001
            report.problem(f"[{label}] kubectl kustomize", str(e))
            continue
        report.rendered[label] = objs
        kinds: dict[str, int] = {}
        for o in objs:
            kinds[o.get("kind", "?")] = kinds.get(o.get("kind", "?"), 0) + 1
        report.check(
            f"[{label}] kubectl kustomize: {len(objs)} objects ("
            + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
            + ")"
        )
        n_core = n_isvc = n_ptj = 0
        for o in objs:
            where = f"[{label}] {_obj_id(o)}"
            kind = o.get("kind")
            if not isinstance(o, dict) or not kind or not o.get("apiVersion"):
                report.problem(where, "object without apiVersion/kind")
                continue
            if kind == "InferenceService" and str(o["apiVersion"]).startswith("serving.kserve.io/"):
                validate_isvc(o, where, crd, report)
                n_isvc += 1
            elif kind == "PyTorchJob" and str(o["apiVersion"]).startswith("kubeflow.org/"):
                validate_pytorchjob(o, where, report)
                n_ptj += 1
            elif validate_core(o, where, report):
                n_core += 1
            else:
                report.problem(
                    where,
                    f"unknown kind {kind} ({o['apiVersion']}): kubernetes-validate has no schema for it and "
                    "tools/validate_k8s.py has no check; add one before shipping it",
                )
        report.check(f"[{label}] kubernetes-validate --strict {KUBE_VERSION}: {n_core} core objects")
        report.check(f"[{label}] InferenceService schema: {n_isvc} object(s) via {report.isvc_schema_source}")
        report.check(f"[{label}] PyTorchJob structural check (+ strict PodTemplate): {n_ptj} object(s)")
        check_invariants(objs, label, report)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=str(REPO_ROOT), help="repository root (default: this checkout)")
    ap.add_argument("--k8s-dir", default=None, help="manifest folder (default: <root>/k8s)")
    ap.add_argument(
        "--schemas",
        default=None,
        help=f"CRD folder (default: ${SCHEMAS_ENV} or <root>/../shared/k8s-schemas)",
    )
    ap.add_argument("--overlay", action="append", help="only this overlay (repeatable)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    report = validate(args.root, args.k8s_dir, args.schemas, args.overlay)
    print("riskops Kubernetes manifest validation")
    for line in report.checked:
        print(f"  checked  {line}")
    for line in report.problems:
        print(f"  PROBLEM  {line}")
    took = time.perf_counter() - t0
    if report.ok:
        print(f"OK: no problems ({took:.1f} s)")
        return 0
    print(f"FAILED: {len(report.problems)} problem(s) ({took:.1f} s)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
