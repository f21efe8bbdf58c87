"""Pipeline step 5 as a KFP component: register the evaluated model and decide whether it becomes the champion.

The logic lives in `riskops.registry.register`; this module only declares the component.
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
) -> None:
    import json
    from dataclasses import asdict
    from pathlib import Path

    from riskops.registry.register import register_model

    evaluation_doc = json.loads(Path(evaluation.path).read_text())
    result = register_model(
        Path(model.path),
        evaluation_doc,
        Path(registry_root),
        promotion,
        git_commit,
        reference_file=Path(reference.path),
    )
    Path(registration.path).write_text(json.dumps(asdict(result), indent=2))
    registration.metadata.update(asdict(result))
    if reports_dir:
        out = Path(reports_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "registration.json").write_text(json.dumps(asdict(result), indent=2))
    print(f"registered {result.version} as {result.alias}: {result.reason}")
