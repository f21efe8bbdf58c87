"""Inputs the Kubernetes tests read from outside this repository (../shared/k8s-schemas).

They are loaded when a test asks for them, never at import: a missing file fails the tests that
need it with a message naming the path, and every other test still runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from k8s_checks.custom_resources import CRD_FILE, SCHEMAS_ENV, load_crd_schemas, schemas_dir

ROOT = Path(__file__).resolve().parents[2]


def kserve_crd_schemas(root: Path = ROOT) -> dict[str, dict]:
    """apiVersion -> strict schema of KServe's InferenceService CRD, from `schemas_dir(root)`
    (`$RISKOPS_K8S_SCHEMAS` or `<root>/../shared/k8s-schemas`); fails the calling test if missing."""
    path = schemas_dir(root) / CRD_FILE
    if not path.is_file():
        pytest.fail(
            f"missing shared file {path}: KServe's InferenceService CRD (put the k8s-schemas folder "
            f"next to the repository, or point ${SCHEMAS_ENV} at a folder holding {CRD_FILE})",
            pytrace=False,
        )
    return load_crd_schemas(str(path.resolve()))
