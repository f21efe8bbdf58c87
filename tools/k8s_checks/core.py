"""Core kinds (Deployment, Service, ...) validated strictly by kubernetes-validate, offline."""

from __future__ import annotations

import functools
from typing import Any

from k8s_checks.report import Report

KUBE_VERSION = "1.32"


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
