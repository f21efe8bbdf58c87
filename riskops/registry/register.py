"""Registration: store the evaluated model in the registry and decide whether it becomes the champion.

The decision here is deliberately simple (first model, or an explicit `always`); the
champion/challenger gate on a shared labelled window belongs to the retraining loop.

Never silently worse: the evaluation compares the transformer with the strongest baseline on
validation (riskops.training.evaluate.validation_comparison). When the transformer loses, the record,
the model card and the step's output say so, and `when_worse` decides: "register" (the default: it
takes its alias as usual, flagged) or "withhold" (it is stored for the record but gets no alias, so
it can neither serve nor be canaried; the serving model stays). riskops serves one model type, the
transformer, so "the better model" cannot be the LightGBM baseline itself.
"""

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from riskops.registry.store import CHALLENGER, CHAMPION, ModelRegistry

PROMOTION_POLICIES = ("if-none", "always", "never")
WHEN_WORSE_POLICIES = ("register", "withhold")
NO_ALIAS = "none"


@dataclass
class RegistrationResult:
    version: str
    path: str
    alias: str  # "champion", "challenger" or "none" (withheld)
    previous_champion: str | None
    reason: str
    baseline_check: dict | None = None  # the transformer vs the strongest baseline on validation

    def to_dict(self) -> dict:
        return asdict(self)


def write_record(record: dict, path: Path, reports_dir: Path | str | None = None) -> dict:
    """Write a registration record as JSON to ``path`` and, when given, ``reports_dir/registration.json``.

    Returns:
        ``record``, for chaining into artifact metadata.
    """
    text = json.dumps(record, indent=2)
    Path(path).write_text(text)
    if reports_dir:
        Path(reports_dir).mkdir(parents=True, exist_ok=True)
        (Path(reports_dir) / "registration.json").write_text(text)
    return record


def baseline_check(evaluation: dict) -> dict | None:
    """{strongest, transformer_pr_auc, baseline_pr_auc, ratio, loses, statement} from the evaluation's
    validation comparison; None when it has none (an older evaluation, or one class in validation)."""
    val = evaluation.get("validation") or {}
    strongest = val.get("strongest_baseline")
    models = val.get("models") or {}
    if not strongest or "transformer" not in models:
        return None
    ours, theirs = models["transformer"]["pr_auc"], models[strongest]["pr_auc"]
    loses = bool(val.get("transformer_loses", ours < theirs))
    verb = "LOSES to" if loses else "beats"
    statement = (
        f"the transformer {verb} the strongest baseline, {strongest}, on validation: "
        f"PR-AUC {ours:.4f} vs {theirs:.4f} (ratio {val.get('pr_auc_ratio', float('nan')):.3f})"
    )
    return {"strongest": strongest, "transformer_pr_auc": ours, "baseline_pr_auc": theirs,
            "ratio": val.get("pr_auc_ratio"), "loses": loses, "statement": statement}  # fmt: skip


def model_card(evaluation: dict, data_summary: dict, git_commit: str, version: str) -> str:
    """A short human-readable card written next to the weights."""
    rows = [f"# risk-model {version}", ""]
    check = baseline_check(evaluation)
    if check is not None:
        rows += ["## Against the strongest baseline (validation)", f"- {check['statement']}", ""]
    rows += [
        "## Data",
        f"- window: {data_summary.get('start', '?')} .. {data_summary.get('end', '?')}",
        f"- rows: {data_summary.get('rows', '?')} (train {data_summary.get('train_rows', '?')},"
        f" validation {data_summary.get('val_rows', '?')}, test {data_summary.get('test_rows', '?')})",
        f"- fraud rate: {data_summary.get('fraud_rate', float('nan')):.4f}",
        "",
        "## Test metrics (time-based split: trained on the past, tested on the future)",
        "| model | ROC-AUC | PR-AUC | recall@1%FPR | precision@budget |",
        "|---|---|---|---|---|",
    ]
    for name, m in evaluation.get("models", {}).items():
        rows.append(
            f"| {name} | {m.get('roc_auc', float('nan')):.4f} | {m.get('pr_auc', float('nan')):.4f} |"
            f" {m.get('recall_at_1pct_fpr', float('nan')):.4f} | {m.get('precision_at_review_budget', float('nan')):.4f} |"
        )
    thresholds = evaluation.get("policy_thresholds", {})
    rows += [
        "",
        "## Decision policy (set on validation data)",
        f"- review at score >= {thresholds.get('review', 'n/a')}",
        f"- block at score >= {thresholds.get('block', 'n/a')}",
        "",
        f"git commit: `{git_commit or 'unknown'}`",
        "",
    ]
    return "\n".join(rows)


def register_model(
    model_dir: Path,
    evaluation: dict,
    registry_root: Path,
    promotion: str = "if-none",
    git_commit: str = "",
    extra_files: dict[str, Path] | None = None,
    when_worse: str = "register",
) -> RegistrationResult:
    """Copy the model into the registry with its metrics, policy and card; set an alias.

    ``extra_files`` (name -> source file) are copied into the version folder under their names,
    e.g. the evaluate step's monitoring reference (riskops.monitoring.reference.REFERENCE_FILE).
    ``when_worse``: what a transformer that loses to the strongest baseline on validation gets
    (WHEN_WORSE_POLICIES; see the module docstring).
    """
    if promotion not in PROMOTION_POLICIES:
        raise ValueError(f"promotion must be one of {PROMOTION_POLICIES}, got {promotion!r}")
    if when_worse not in WHEN_WORSE_POLICIES:
        raise ValueError(f"when_worse must be one of {WHEN_WORSE_POLICIES}, got {when_worse!r}")
    model_dir = Path(model_dir)
    for name, source in (extra_files or {}).items():
        shutil.copyfile(source, model_dir / name)
    thresholds = evaluation.get("policy_thresholds")
    if thresholds:
        # serving reads the policy from the model folder; operators may override it in a config file
        (model_dir / "policy.json").write_text(json.dumps(thresholds, indent=2))
    (model_dir / "evaluation.json").write_text(json.dumps(evaluation, indent=2, default=float))

    registry = ModelRegistry(registry_root)
    champion = registry.champion()
    transformer_metrics = evaluation.get("models", {}).get("transformer", {})
    check = baseline_check(evaluation)
    mv = registry.register(
        model_dir,
        metrics=transformer_metrics,
        tags={"git_commit": git_commit, "data": evaluation.get("data", {}), "baseline_check": check},
    )
    (mv.path / "MODEL_CARD.md").write_text(
        model_card(evaluation, evaluation.get("data", {}), git_commit, mv.version)
    )

    if check is not None and check["loses"] and when_worse == "withhold":
        alias, reason = NO_ALIAS, f"withheld (when_worse=withhold): {check['statement']}"
    elif champion is None and promotion != "never":
        alias, reason = CHAMPION, "first model in the registry"
    elif promotion == "always":
        alias, reason = CHAMPION, "promotion policy 'always'"
    else:
        alias, reason = (
            CHALLENGER,
            (
                f"champion {champion.version} kept; the champion/challenger gate decides promotion"
                if champion
                else "promotion policy 'never'"
            ),
        )
    if alias != NO_ALIAS:
        registry.set_alias(alias, mv.version)
        if check is not None and check["loses"]:
            reason += f"; WARNING: {check['statement']}"
    return RegistrationResult(
        version=mv.version,
        path=str(mv.path),
        alias=alias,
        previous_champion=champion.version if champion else None,
        reason=reason,
        baseline_check=check,
    )
