"""Where things live and the knobs shared by the CLI, pipeline components and serving.

All run-time state lives under one home folder (default `.riskops/` in the current directory,
or $RISKOPS_HOME), so a fresh clone is clean and `rm -rf .riskops` resets everything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

HOME_ENV = "RISKOPS_HOME"
MODEL_NAME = "risk-model"  # the registry name and the KServe model name
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def home() -> Path:
    return Path(os.environ.get(HOME_ENV, Path.cwd() / ".riskops")).resolve()


# What every entry point (CLI, benchmarks, tests) sets before heavy imports: no model hub, no dataset
# download, no telemetry. setdefault, so a user's own setting wins.
OFFLINE_ENVIRONMENT: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "FEAST_USAGE": "False",
    "GX_ANALYTICS_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
}


def use_offline_environment(env: dict | None = None) -> None:
    """Set OFFLINE_ENVIRONMENT's variables in `env` (default: os.environ) where they are not set."""
    target = os.environ if env is None else env
    for key, value in OFFLINE_ENVIRONMENT.items():
        target.setdefault(key, value)

@dataclass(frozen=True)
class Paths:
    """The layout under the home folder."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def feature_repo(self) -> Path:
        # a working copy of feature_repo/ whose data/ holds parquet sources, registry and online store
        return self.root / "feature_repo"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def pipeline_root(self) -> Path:
        return self.root / "pipeline_root"

    @property
    def prediction_log(self) -> Path:
        return self.root / "prediction_log"

    @property
    def prediction_log_source(self) -> Path | str:
        """Where readers (monitor, promotion gate) read the prediction log: the shipped log's URI
        $RISKOPS_PREDICTION_LOG_URI (what serving ships closed segments to) when set, else the local
        folder `prediction_log`."""
        return os.environ.get("RISKOPS_PREDICTION_LOG_URI") or self.prediction_log


def paths(root: Path | str | None = None) -> Paths:
    return Paths(Path(root).resolve() if root else home())


def load_yaml(path: Path | str) -> dict:
    """Read a YAML config file; a missing file is an error that names it."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"config file not found: {p}")
    with p.open() as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def from_dict(cls: type[T], data: dict[str, Any] | None, section: str, **fixed: Any) -> T:
    """Build the config dataclass `cls` from a mapping, rejecting keys it does not know.

    Every strict config of riskops is read through here, so a typo in a YAML file fails loudly with
    the section's name and the keys it knows, instead of being ignored.

    Args:
        cls: a dataclass.
        data: the section as read from YAML (None or empty: the defaults).
        section: the name the error message gives the section (e.g. ``"drift"``).
        **fixed: values set by the caller (already parsed sub-sections); not counted as unknown.
    """
    data = dict(data or {})
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{section}: unknown keys {unknown} (known: {', '.join(sorted(known))})")
    return cls(**{**data, **fixed})
