"""Shared test setup: offline switches, an isolated RISKOPS_HOME per test."""

from __future__ import annotations

import os

import pytest

# No network at run time, in tests too.
for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "FEAST_USAGE": "False",
    "GX_ANALYTICS_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)


@pytest.fixture(autouse=True)
def riskops_home(tmp_path, monkeypatch):
    """Every test gets its own home folder, so runs never share registry/feature state."""
    home = tmp_path / "riskops-home"
    monkeypatch.setenv("RISKOPS_HOME", str(home))
    return home
