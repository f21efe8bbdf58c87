"""Custom resources, which kubernetes-validate has no schema for: InferenceService against KServe's
CRD (strict) or, without it, a schema derived from kserve's Python models; the Prometheus Operator's
PrometheusRule, ServiceMonitor and PodMonitor against their CRDs (strict, no fallback); PyTorchJob
structurally.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import yaml

from k8s_checks.core import validate_object_meta, validate_pod_template
from k8s_checks.report import Report

CRD_FILE = "serving.kserve.io_inferenceservices.yaml"
SCHEMAS_ENV = "RISKOPS_K8S_SCHEMAS"
MONITORING_GROUP = "monitoring.coreos.com"
# Prometheus Operator kind -> its CRD in the schemas folder (operator 0.93, see its README)
MONITORING_CRD_FILES = {
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PodMonitor": "monitoring.coreos.com_podmonitors.yaml",
}


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


@functools.lru_cache(maxsize=8)
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
    _schema_problems(schema, doc, "InferenceService", where, report)


def _schema_problems(schema: dict, doc: dict, kind: str, where: str, report: Report) -> None:
    """Every jsonschema error of `doc` (the first 20) as a problem naming the field's path."""
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    for e in errors[:20]:
        path = ".".join(str(p) for p in e.absolute_path) or "<root>"
        report.problem(where, f"{kind} schema: {path}: {e.message}")
    if len(errors) > 20:
        report.problem(where, f"... and {len(errors) - 20} more schema errors")


def validate_monitoring(obj: dict, where: str, crd_dir: Path, report: Report) -> None:
    """A PrometheusRule / ServiceMonitor / PodMonitor against its Prometheus Operator CRD, made strict
    like the InferenceService's (unknown fields rejected). metadata is checked as a strict core
    ObjectMeta. No fallback: without the CRD file the object is a problem, never a pass."""
    kind = obj.get("kind", "")
    path = Path(crd_dir) / MONITORING_CRD_FILES[kind]
    if not path.is_file():
        report.problem(
            where,
            f"{kind} CRD {path} is missing: put the Prometheus Operator CRDs in the schemas folder "
            f"(--schemas, ${SCHEMAS_ENV} or ../shared/k8s-schemas); there is no fallback check",
        )
        return
    validate_object_meta(obj.get("metadata"), where, report)
    crd = load_crd_schemas(str(path.resolve()))
    schema = crd.get(obj.get("apiVersion", ""))
    if schema is None:
        report.problem(
            where, f"apiVersion {obj.get('apiVersion')} is not served by {path.name} ({sorted(crd)})"
        )
        return
    _schema_problems(schema, obj, kind, where, report)


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
