"""Invariants of the rendered objects: security context, resources, probes, pinned images, references,
namespace, RBAC, and no Secret values anywhere under k8s/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import yaml

from k8s_checks.render import yaml_files
from k8s_checks.report import Report, object_id

NAMESPACE = "riskops"
# Secrets are created out of band (docs/deploy.md); manifests may only reference these keys.
EXTERNAL_SECRETS: dict[str, set[str]] = {
    "riskops-secrets": {"pii-key", "redis-password", "s3-access-key", "s3-secret-key"},
}
CLUSTER_SCOPED_ALLOWED = {"Namespace"}
WORKLOAD_KINDS_WITH_PROBES = {"Deployment", "StatefulSet", "DaemonSet"}
ISVC_COMPONENTS = ("predictor", "transformer", "explainer")


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
    """Every invariant of one overlay's rendered objects (the list in tools/validate_k8s.py)."""
    by_kind: dict[str, set[str]] = {}
    for o in objs:
        by_kind.setdefault(o.get("kind", ""), set()).add((o.get("metadata") or {}).get("name", ""))
    n_containers = 0
    for o in objs:
        where = f"[{label}] {object_id(o)}"
        _check_namespace_rbac_and_secrets(o, where, by_kind, report)
        n_containers += _check_pods(o, where, by_kind, report)
        _check_storage_uri(o, where, report)
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


def _check_namespace_rbac_and_secrets(
    o: dict, where: str, by_kind: dict[str, set[str]], report: Report
) -> None:
    """No Secret values, everything in our namespace, namespaced least-privilege RBAC that resolves."""
    kind = o.get("kind")
    md = o.get("metadata") or {}
    if kind == "Secret" and _secret_has_values(o):
        report.problem(where, "Secret with data/stringData: secrets are created out of band, never in git")
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
            if s.get("name") not in EXTERNAL_SECRETS and s.get("name") not in by_kind.get("Secret", set()):
                report.problem(where, f"references unknown Secret {s.get('name')}")


def _check_pods(o: dict, where: str, by_kind: dict[str, set[str]], report: Report) -> int:
    """The pod templates of `o`: references resolve, every container passes `check_container`.
    Returns how many containers were checked."""
    n_containers = 0
    for pwhere, pod, serving in pod_specs(o):
        sa = pod.get("serviceAccountName")
        if sa and sa != "default" and sa not in by_kind.get("ServiceAccount", set()):
            report.problem(f"{where} {pwhere}", f"serviceAccountName {sa} is not defined")
        for rkind, name, key, optional in _refs(pod):
            if optional:
                continue
            if rkind == "ConfigMap" and name not in by_kind.get("ConfigMap", set()):
                report.problem(f"{where} {pwhere}", f"references ConfigMap {name!r}, which is not rendered")
            if rkind == "Secret":
                if name in EXTERNAL_SECRETS:
                    if key is not None and key not in EXTERNAL_SECRETS[name]:
                        report.problem(f"{where} {pwhere}", f"Secret {name} has no documented key {key!r}")
                elif name not in by_kind.get("Secret", set()):
                    report.problem(f"{where} {pwhere}", f"references unknown Secret {name!r}")
        containers = (pod.get("containers") or []) + (pod.get("initContainers") or [])
        if not containers:
            report.problem(f"{where} {pwhere}", "no containers")
        for c in containers:
            n_containers += 1
            check_container(c, pod, f"{where} {pwhere} container {c.get('name')!r}", serving, report)
    return n_containers


def _check_storage_uri(o: dict, where: str, report: Report) -> None:
    """The predictor's first env entry is its one STORAGE_URI (the path the deploy step patches)."""
    kind = o.get("kind")
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


def scan_source_secrets(k8s_dir: Path, report: Report) -> None:
    n = 0
    for path in yaml_files(k8s_dir):
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
