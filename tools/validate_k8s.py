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
   InferenceService goes to (4), PrometheusRule / ServiceMonitor / PodMonitor to (5), PyTorchJob
   to a structural check (its pod templates are validated strictly as core PodTemplates), and
   any other kind is an error.
4. Every InferenceService is validated with jsonschema against the KServe CRD's
   openAPIV3Schema (../shared/k8s-schemas or $RISKOPS_K8S_SCHEMAS), made strict: wherever the
   schema lists `properties` and neither `additionalProperties` nor
   `x-kubernetes-preserve-unknown-fields` is set, unknown fields are rejected (the API server
   would silently prune them). Without the CRD, a schema derived from kserve's Python models
   (kserve.V1beta1InferenceService, recursively, closed objects) is used instead, and the
   report says which one ran. metadata is checked as a strict core ObjectMeta.
5. Every PrometheusRule, ServiceMonitor and PodMonitor (monitoring.coreos.com/v1) is validated the
   same way against the Prometheus Operator's CRD in the same folder
   (monitoring.coreos.com_{prometheusrules,servicemonitors,podmonitors}.yaml), strict. There is no
   fallback: a missing CRD file is a problem naming it. The report counts each kind.
6. Invariants: no Secret carries data/stringData (rendered or anywhere under k8s/); every
   container has cpu/memory requests and a memory limit, runs as non-root with no privilege
   escalation, all capabilities dropped, a RuntimeDefault seccomp profile and a read-only root
   filesystem (the "restricted" Pod Security Standard and then some); images are pinned
   (a tag other than `latest`, or a digest); serving workloads have readiness and liveness
   probes; ConfigMap/ServiceAccount/Role references resolve; Secret references name only the
   out-of-band secret and its known keys; everything lives in the riskops namespace; RBAC has
   no cluster-wide or wildcard grants; the predictor's first env entry is STORAGE_URI (the
   path the deploy step patches); a default-deny ingress NetworkPolicy exists.

The checks live in tools/k8s_checks/ (one module per kind of check); this script renders the
overlays and routes every object. Tests call `validate(...)` (tests/integration/test_k8s_manifests.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from k8s_checks.core import KUBE_VERSION, validate_core
from k8s_checks.custom_resources import (
    CRD_FILE,
    MONITORING_CRD_FILES,
    MONITORING_GROUP,
    SCHEMAS_ENV,
    kserve_model_schema,
    load_crd_schemas,
    schemas_dir,
    validate_isvc,
    validate_monitoring,
    validate_pytorchjob,
)
from k8s_checks.invariants import check_invariants, scan_source_secrets
from k8s_checks.render import discover_overlays, find_kubectl, render_overlay, run_yamllint
from k8s_checks.report import Report, object_id

REPO_ROOT = Path(__file__).resolve().parent.parent


def validate(
    root: Path | str = REPO_ROOT,
    k8s_dir: Path | str | None = None,
    schemas: Path | str | None = None,
    overlays: list[str] | None = None,
    lint: bool = True,
) -> Report:
    """Run every check over `k8s_dir` (default `<root>/k8s`): lint, secret scan, render each overlay
    (all, or only `overlays`), validate every object, check the invariants. Never raises on findings."""
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
        try:
            objs = render_overlay(kubectl, overlay)
        except Exception as e:  # noqa: BLE001 - any render failure is a finding, not a crash
            report.problem(f"[{overlay.name}] kubectl kustomize", str(e))
            continue
        validate_rendered(objs, overlay.name, crd, report, crd_dir)
    return report


def validate_rendered(
    objs: list[dict],
    label: str,
    crd: dict[str, dict] | None,
    report: Report,
    crd_dir: Path | None = None,
) -> None:
    """Route each rendered object of one overlay to its check (core kind, InferenceService, Prometheus
    Operator kinds against the CRDs in `crd_dir` (default: this checkout's schemas folder),
    PyTorchJob; any other kind is a problem), then check the overlay's invariants."""
    crd_dir = Path(crd_dir) if crd_dir is not None else schemas_dir(REPO_ROOT)
    n_monitoring = dict.fromkeys(sorted(MONITORING_CRD_FILES), 0)
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
        where = f"[{label}] {object_id(o)}"
        kind = o.get("kind")
        if not isinstance(o, dict) or not kind or not o.get("apiVersion"):
            report.problem(where, "object without apiVersion/kind")
            continue
        if kind == "InferenceService" and str(o["apiVersion"]).startswith("serving.kserve.io/"):
            validate_isvc(o, where, crd, report)
            n_isvc += 1
        elif kind in MONITORING_CRD_FILES and str(o["apiVersion"]).startswith(f"{MONITORING_GROUP}/"):
            validate_monitoring(o, where, crd_dir, report)
            n_monitoring[kind] += 1
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
    report.check(
        f"[{label}] Prometheus Operator CRDs (strict, {crd_dir}): "
        + ", ".join(f"{k} {n}" for k, n in n_monitoring.items())
    )
    report.check(f"[{label}] PyTorchJob structural check (+ strict PodTemplate): {n_ptj} object(s)")
    check_invariants(objs, label, report)


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
