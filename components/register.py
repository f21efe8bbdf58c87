"""KFP adapters of the registration step: a registry version, champion or challenger.

``register_model_op`` runs riskops.registry.register (the serving model, ``risk-model``, with its
monitoring reference); ``register_dataset_op`` runs riskops.byod.register (``risk-model-<dataset>``).
The registration record goes to ``registration`` and, when given, to ``reports_dir``.
"""

from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.common import step_component


@step_component()
def register_model_op(
    model: Input[Model],
    evaluation: Input[Artifact],
    reference: Input[Dataset],
    registration: Output[Artifact],
    registry_root: str,
    promotion: str = "if-none",
    git_commit: str = "",
    reports_dir: str = "",
    when_worse: str = "register",
) -> None:
    """Register the evaluated model; champion if the promotion policy says so. ``when_worse``: a
    transformer that loses to the strongest baseline on validation is "register"ed (flagged) or
    "withhold"-en (no alias)."""
    import json
    from pathlib import Path

    from riskops.monitoring.reference import REFERENCE_FILE
    from riskops.registry.register import register_model, write_record

    evaluation_doc = json.loads(Path(evaluation.path).read_text())
    result = register_model(Path(model.path), evaluation_doc, Path(registry_root), promotion, git_commit,
                            extra_files={REFERENCE_FILE: Path(reference.path)}, when_worse=when_worse)  # fmt: skip
    record = write_record(result.to_dict(), Path(registration.path), reports_dir)
    registration.metadata.update(record)
    if result.baseline_check is not None:
        print(result.baseline_check["statement"])
    print(f"registered {result.version} as {result.alias}: {result.reason}")


@step_component()
def register_dataset_op(
    model: Input[Model],
    evaluation: Input[Artifact],
    registration: Output[Artifact],
    dataset_config: str,
    registry_root: str,
    promotion: str = "if-none",
    git_commit: str = "",
    reports_dir: str = "",
) -> None:
    """Registry version under risk-model-<dataset>, with metrics, policy and model card."""
    import json
    from pathlib import Path

    from riskops.byod.config import parse_config, registry_name
    from riskops.byod.register import register_dataset_model
    from riskops.registry.register import write_record

    config = parse_config(dataset_config)
    doc = json.loads(Path(evaluation.path).read_text())
    result = register_dataset_model(Path(model.path), doc, Path(registry_root), config, promotion, git_commit)
    record = {**result.to_dict(), "model_name": registry_name(config), "dataset": config.name}
    registration.metadata.update(write_record(record, Path(registration.path), reports_dir))
    print(f"registered {record['model_name']} {result.version} as {result.alias}: {result.reason}")
