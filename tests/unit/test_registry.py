import json
import threading

import numpy as np
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


# --------------------------------------------------------------------------- never silently worse
def _evaluation(transformer: float, lightgbm: float) -> dict:
    from riskops.training.evaluate import validation_comparison

    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.1).astype(int)

    def scores(quality: float) -> np.ndarray:  # higher quality: frauds ranked higher
        return y * quality + rng.random(400)

    val = validation_comparison(y, scores(transformer), {"lightgbm": scores(lightgbm), "rules": scores(0.0)})
    return {"models": {"transformer": {"pr_auc": 0.5}}, "validation": val}


def test_a_transformer_that_loses_on_validation_is_flagged_everywhere(tmp_path):
    from riskops.registry.register import register_model

    evaluation = _evaluation(transformer=0.2, lightgbm=2.0)
    assert evaluation["validation"]["strongest_baseline"] == "lightgbm"
    assert evaluation["validation"]["transformer_loses"] is True
    result = register_model(_model_dir(tmp_path), evaluation, tmp_path / "reg")
    assert result.alias == CHAMPION  # the default policy registers it, flagged
    assert "WARNING" in result.reason and "LOSES to" in result.reason
    card = (tmp_path / "reg" / "risk-model" / result.version / "MODEL_CARD.md").read_text()
    assert "LOSES to the strongest baseline, lightgbm" in card


def test_withhold_keeps_a_losing_transformer_away_from_serving(tmp_path):
    from riskops.registry.register import NO_ALIAS, register_model

    first = register_model(_model_dir(tmp_path, "a"), _evaluation(2.0, 0.2), tmp_path / "reg", when_worse="withhold")
    assert first.alias == CHAMPION and first.baseline_check["loses"] is False
    worse = register_model(_model_dir(tmp_path, "b"), _evaluation(0.2, 2.0), tmp_path / "reg", when_worse="withhold")
    assert worse.alias == NO_ALIAS and worse.reason.startswith("withheld")
    registry = ModelRegistry(tmp_path / "reg")
    assert registry.champion().version == first.version  # the serving model stays
    with pytest.raises(ValueError, match="when_worse"):
        register_model(_model_dir(tmp_path, "c"), _evaluation(1, 1), tmp_path / "reg", when_worse="maybe")
