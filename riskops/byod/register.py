"""Register a user's model under ``risk-model-<dataset>``: the serving champion (``risk-model``,
built-in schema) is never replaced by a model that expects other columns."""

from __future__ import annotations

import json
from pathlib import Path

from riskops.byod.config import registry_name
from riskops.data.datasets import (
    DatasetConfig,
)


def register_dataset_model(
    model_dir: Path, evaluation: dict, registry_root: Path, config: DatasetConfig,
    promotion: str = "if-none", git_commit: str = "",
):  # fmt: skip
    """A registry version under ``risk-model-<dataset>`` with metrics, policy and model card."""
    from riskops.registry.register import PROMOTION_POLICIES, RegistrationResult, model_card
    from riskops.registry.store import CHALLENGER, CHAMPION, ModelRegistry

    if promotion not in PROMOTION_POLICIES:
        raise ValueError(f"promotion must be one of {PROMOTION_POLICIES}, got {promotion!r}")
    model_dir = Path(model_dir)
    if evaluation.get("policy_thresholds"):
        (model_dir / "policy.json").write_text(json.dumps(evaluation["policy_thresholds"], indent=2))
    (model_dir / "evaluation.json").write_text(json.dumps(evaluation, indent=2, default=float))
    registry = ModelRegistry(registry_root, name=registry_name(config))
    champion = registry.champion()
    mv = registry.register(
        model_dir,
        metrics=evaluation.get("models", {}).get("transformer", {}),
        tags={
            "git_commit": git_commit,
            "data": evaluation.get("data", {}),
            "dataset": config.name,
            "model_kind": evaluation.get("model_kind"),
        },  # fmt: skip
    )
    card = model_card(evaluation, evaluation.get("data", {}), git_commit, mv.version)
    card = card.replace("# risk-model", f"# {registry.name}", 1)
    card += f"\nDataset: `{config.name}`; model: {evaluation.get('model_kind')}.\n"
    (mv.path / "MODEL_CARD.md").write_text(card)
    if champion is None and promotion != "never":
        alias, reason = CHAMPION, "first model of this dataset in the registry"
    elif promotion == "always":
        alias, reason = CHAMPION, "promotion policy 'always'"
    else:
        alias = CHALLENGER
        reason = f"champion {champion.version} kept" if champion else "promotion policy 'never'"
    registry.set_alias(alias, mv.version)
    return RegistrationResult(mv.version, str(mv.path), alias, champion.version if champion else None, reason)
