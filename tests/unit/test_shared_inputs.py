"""A file the tests read from ../shared that is missing fails the test that needs it, naming the path."""

from __future__ import annotations

import pytest
from k8s_checks.custom_resources import CRD_FILE, SCHEMAS_ENV
from support.k8s import kserve_crd_schemas


def test_a_missing_crd_folder_fails_naming_the_missing_file(tmp_path, monkeypatch):
    missing = tmp_path / "no-k8s-schemas"
    monkeypatch.setenv(SCHEMAS_ENV, str(missing))
    with pytest.raises(pytest.fail.Exception) as failed:
        kserve_crd_schemas()
    assert str(missing / CRD_FILE) in str(failed.value) and SCHEMAS_ENV in str(failed.value)


def test_a_present_crd_is_loaded_strict(tmp_path, monkeypatch):
    folder = tmp_path / "schemas"
    folder.mkdir()
    (folder / CRD_FILE).write_text(
        "spec:\n  group: serving.kserve.io\n  versions:\n  - name: v1beta1\n    served: true\n"
        "    schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n"
        "          spec: {type: object}\n"
    )
    monkeypatch.setenv(SCHEMAS_ENV, str(folder))
    schemas = kserve_crd_schemas()
    assert list(schemas) == ["serving.kserve.io/v1beta1"]
    assert schemas["serving.kserve.io/v1beta1"]["additionalProperties"] is False  # made strict
