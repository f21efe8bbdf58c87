import json
import threading

import pytest

from riskops.registry.store import CHAMPION, ModelRegistry, RegistryError


def _model_dir(tmp_path, name="m", payload="w"):
    d = tmp_path / name
    d.mkdir()
    (d / "model.safetensors").write_text(payload)
    return d


def test_register_numbers_versions_and_keeps_files(tmp_path):
    reg = ModelRegistry(tmp_path / "reg")
    v1 = reg.register(_model_dir(tmp_path, "a", "one"), metrics={"pr_auc": 0.5})
    v2 = reg.register(_model_dir(tmp_path, "b", "two"), metrics={"pr_auc": 0.6})
    assert (v1.version, v2.version) == ("v0001", "v0002")
    assert (v2.path / "model.safetensors").read_text() == "two"
    assert [v.version for v in reg.list_versions()] == ["v0001", "v0002"]
    assert reg.get("v0001").metrics == {"pr_auc": 0.5}


def test_aliases_resolve_and_unknown_names_fail_clearly(tmp_path):
    reg = ModelRegistry(tmp_path / "reg")
    assert reg.champion() is None
    with pytest.raises(RegistryError, match="no 'champion' model"):
        reg.resolve(None)
    v1 = reg.register(_model_dir(tmp_path))
    reg.set_alias(CHAMPION, v1.version)
    assert reg.resolve(None).version == "v0001"
    assert reg.resolve("v0001").path == v1.path
    with pytest.raises(RegistryError, match="no version 'v0009'"):
        reg.set_alias(CHAMPION, "v0009")
    assert json.loads((reg.model_root / "aliases.json").read_text()) == {"champion": "v0001"}


def test_concurrent_registrations_get_distinct_versions(tmp_path):
    reg = ModelRegistry(tmp_path / "reg")
    dirs = [_model_dir(tmp_path, f"m{i}", str(i)) for i in range(6)]
    threads = [threading.Thread(target=reg.register, args=(d,)) for d in dirs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    versions = [v.version for v in reg.list_versions()]
    assert versions == [f"v{i:04d}" for i in range(1, 7)]
    payloads = sorted((v.path / "model.safetensors").read_text() for v in reg.list_versions())
    assert payloads == [str(i) for i in range(6)]
