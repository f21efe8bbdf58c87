"""serving/config.py: defaults <- YAML file <- keyword overrides; bad values and unknown keys fail loudly."""

from __future__ import annotations

import pytest

from serving.config import ServingConfig, load_config


def test_the_file_overrides_defaults_and_keywords_override_the_file(tmp_path):
    path = tmp_path / "serving.yaml"
    path.write_text("reasons_top_k: 5\nfail_mode: block\n")
    config = load_config(path, fail_mode="approve", model_version=None)
    assert config.reasons_top_k == 5  # from the file
    assert config.fail_mode == "approve"  # the keyword wins
    assert config.model_version is None and config.push_interval_s == ServingConfig().push_interval_s


def test_an_unknown_key_in_the_file_is_named(tmp_path):
    path = tmp_path / "serving.yaml"
    path.write_text("reasons_top: 5\n")
    with pytest.raises(ValueError, match="reasons_top"):
        load_config(path)


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("default_review", 0.95, "default_review <= default_block"),
        ("fail_mode", "allow", "fail_mode must be one of"),
        ("workers", 0, "workers must be >= 1"),
        ("reasons_for", "some", "reasons_for must be"),
    ],
)
def test_an_invalid_value_is_refused_with_the_setting_named(setting, value, message):
    with pytest.raises(ValueError, match=message):
        ServingConfig(**{setting: value})
