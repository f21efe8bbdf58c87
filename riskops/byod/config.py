"""A dataset config in and out of the pipeline, and the columns its mapping gives each role.

The config travels between pipeline steps as one JSON string (:func:`config_text` /
:func:`parse_config`). Derived names: the windowed aggregates a mapping supports
(:func:`aggregate_feature_names`) and the model inputs (:func:`model_columns`).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import yaml

from riskops.data.datasets import (
    ENTITY_ROLES,
    DatasetConfig,
    builtin_config,
    read_source,
    validate_mapping,
)
from riskops.features.contract import ENTITY_FEATURES, TEXT_COLUMN
from riskops.settings import MODEL_NAME, PROJECT_ROOT

SINCE_LAST = "user_seconds_since_last_log"  # replaces user_last_event_epoch (raw epochs leak time)
_DISTINCT_ROLE = {"users": "user", "devices": "device", "ips": "ip"}  # feature plural -> entity role


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "dataset"


def registry_name(config: DatasetConfig) -> str:
    """The registry model name of a dataset's models (never the serving champion's name)."""
    return f"{MODEL_NAME}-{slug(config.name)}"


def resolve_config(dataset: str | Path) -> DatasetConfig:
    """A config path or built-in name, with a relative ``source.path`` made absolute.

    A relative path is taken relative to the config file first, then to the project root, then to
    the current directory, so pipeline steps (which run elsewhere) find the file.
    """
    p = Path(dataset)
    config = builtin_config(str(dataset))
    src = config.source
    if src.path and not Path(src.path).is_absolute():
        base = p.resolve().parent if p.suffix in (".yaml", ".yml") and p.exists() else PROJECT_ROOT
        for cand in (base / src.path, PROJECT_ROOT / src.path, Path.cwd() / src.path):
            if cand.exists():
                config = replace(config, source=replace(src, path=str(cand.resolve())))
                break
    return config


def config_text(config: DatasetConfig) -> str:
    """The config as one JSON string: what the pipeline passes to every step."""
    return json.dumps(config.to_dict(), sort_keys=True)


def parse_config(text: str) -> DatasetConfig:
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError("dataset_config must be a YAML/JSON mapping")
    return DatasetConfig.from_dict(data)


def check_source(config: DatasetConfig) -> None:
    """Read the source and check the mapping: fails fast with a MappingError naming the columns."""
    check_reserved(config)
    validate_mapping(read_source(config), config)


# --------------------------------------------------------------------------------------------
# Columns
# --------------------------------------------------------------------------------------------


def amount_column(config: DatasetConfig) -> str | None:
    """``amount`` from the config, else a numeric column called amount (any case), else None."""
    if config.amount:
        return config.amount
    return next((c for c in config.numeric if c.lower() == "amount"), None)


def mapped_columns(config: DatasetConfig) -> list[str]:
    """Every column with a role, in a fixed order (PII-only columns are hashed, then dropped)."""
    cols = [config.event_time.column, config.label, *config.entities.values(), *config.numeric]
    amount = amount_column(config)
    cols += [amount] if amount else []
    cols += [*config.categorical, *config.text]
    return list(dict.fromkeys(cols))


def aggregate_feature_names(config: DatasetConfig) -> list[str]:
    """The windowed aggregates the mapping supports (riskops.features.contract.ENTITY_FEATURES names).

    Only mapped entities; amount sums/means/stds only with an amount column; distinct counts only
    of mapped entities; refund rates and shipping-country counts never (no such roles). The raw
    ``user_last_event_epoch`` becomes ``user_seconds_since_last_log``.
    """
    amount = amount_column(config)
    out: list[str] = []
    for role in ENTITY_ROLES:
        if role not in config.entities:
            continue
        for f in ENTITY_FEATURES[role]:
            if "_refund_rate_" in f or ("_amount_" in f and not amount):
                continue
            if "_distinct_" in f:
                plural = f.split("_distinct_", 1)[1].rsplit("_", 1)[0]
                if _DISTINCT_ROLE.get(plural) not in config.entities:
                    continue
            out.append(SINCE_LAST if f == "user_last_event_epoch" else f)
    return out


def _all_derived() -> set[str]:
    return {f for fs in ENTITY_FEATURES.values() for f in fs} | {SINCE_LAST, TEXT_COLUMN}


def check_reserved(config: DatasetConfig) -> None:
    """Mapped columns must not carry the names of derived features (they would be overwritten)."""
    clash = sorted(set(mapped_columns(config)) & _all_derived())
    if clash:
        raise ValueError(
            f"dataset {config.name!r}: column(s) {clash} clash with derived feature names; rename them"
        )


def model_columns(config: DatasetConfig, frame: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    """(numeric, categorical, text) model inputs: mapped numerics (+ the amount column) and the
    aggregates present in ``frame``; entity keys are never inputs (ids do not generalise)."""
    amount = amount_column(config)
    numeric = list(dict.fromkeys([*config.numeric, *([amount] if amount else [])]))
    numeric += [f for f in aggregate_feature_names(config) if f in frame.columns]
    return numeric, list(config.categorical), list(config.text)
