"""Pipeline steps for a user's own dataset (bring your own data): thin KFP adapters over riskops.byod.

Every step receives the dataset config as one JSON/YAML string (``dataset_config``), so the same
compiled pipeline runs any mapping; the work itself is done by the plain functions in
``riskops/byod.py`` (unit-tested without KFP):

    ingest_dataset_op      source -> mapping check (MappingError names bad columns) -> canonical Parquet
    validate_dataset_op    GX suite generated from the mapping; a failure stops the run
    dataset_features_op    windowed aggregates of the mapped entities via Feast (none mapped: skipped)
    train_dataset_op       text mapped: text + tabular transformer; no text: FT-Transformer
    evaluate_dataset_op    vs LightGBM and logistic regression on the config's time split
    register_dataset_op    registry version under risk-model-<dataset>
"""

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.common import step_component


@step_component()
def ingest_dataset_op(dataset: Output[Dataset], dataset_config: str, max_rows: int = 0) -> None:
    """Load the configured source, check the mapping, hash PII, keep mapped columns (newest max_rows)."""
    from riskops.byod import load_canonical, parse_config
    from riskops.data.datasets import summary

    config = parse_config(dataset_config)
    df = load_canonical(config, max_rows=max_rows)
    df.to_parquet(dataset.path, index=False)
    info = summary(df, config)
    dataset.metadata.update({"dataset": config.name, **info})
    print(f"dataset {config.name}: {info}")


@step_component()
def validate_dataset_op(
    dataset: Input[Dataset],
    report: Output[HTML],
    metrics: Output[Metrics],
    dataset_config: str,
    fraud_rate_min: float = 0.0001,
    fraud_rate_max: float = 0.5,
    max_future_skew_hours: float = 1.0,
    reports_dir: str = "",
) -> None:
    """The GX gate generated from the mapping; a failed gate fails the task (nothing later runs)."""
    import shutil
    import tempfile
    from pathlib import Path

    import pandas as pd

    from riskops.byod import parse_config, validate_dataset
    from riskops.data.validation import DataValidationError, ValidationConfig

    config = parse_config(dataset_config)
    validation = ValidationConfig(
        fraud_rate_min=fraud_rate_min,
        fraud_rate_max=fraud_rate_max,
        max_future_skew_hours=max_future_skew_hours,
    )
    out_dir = Path(reports_dir) if reports_dir else Path(tempfile.mkdtemp(prefix="riskops-validate-"))
    result = validate_dataset(pd.read_parquet(dataset.path), config, validation, out_dir)
    shutil.copyfile(result.report_html, report.path)
    for key in ("evaluated_expectations", "successful_expectations", "unsuccessful_expectations", "rows"):
        metrics.log_metric(key, float(result.statistics.get(key, 0)))
    metrics.log_metric("passed", 1.0 if result.success else 0.0)
    print(result.summary())
    if not result.success:
        raise DataValidationError(result)


@step_component()
def dataset_features_op(
    dataset: Input[Dataset], training_set: Output[Dataset], dataset_config: str, feature_repo_dir: str = ""
) -> None:
    """Windowed aggregates for the mapped entities through Feast; no entities: the rows as they are."""
    from pathlib import Path

    import pandas as pd

    from riskops.byod import build_dataset_features, parse_config

    config = parse_config(dataset_config)
    out, info = build_dataset_features(
        pd.read_parquet(dataset.path), config, Path(feature_repo_dir) if feature_repo_dir else None
    )
    out.to_parquet(training_set.path, index=False)
    training_set.metadata.update({"rows": len(out), **{k: v for k, v in info.items() if k != "aggregates"},
                                  "aggregates": len(info["aggregates"])})  # fmt: skip
    print(f"aggregates ({len(info['aggregates'])}): {info['aggregates'] or info.get('note')}")


@step_component()
def train_dataset_op(
    training_set: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    dataset_config: str,
    encoder: str = "minilm",
    epochs: int = 2,
    max_steps: int = 0,
    finetune_layers: int = 2,
    max_train_rows: int = 6000,
    ft_max_epochs: int = 30,
    max_train_seconds: float = 0.0,
    seed: int = 7,
) -> None:
    """Text columns mapped: fine-tune the text + tabular transformer; none: train the FT-Transformer."""
    import logging
    from pathlib import Path

    import pandas as pd

    from riskops.byod import parse_config, train_dataset_model

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = parse_config(dataset_config)
    info = train_dataset_model(
        pd.read_parquet(training_set.path), config, Path(model.path), encoder=encoder, epochs=epochs,
        max_steps=max_steps, finetune_layers=finetune_layers, max_train_rows=max_train_rows,
        ft_max_epochs=ft_max_epochs, max_train_seconds=max_train_seconds, seed=seed,
    )  # fmt: skip
    for key in ("val_pr_auc", "best_epoch", "train_seconds", "n_train", "n_val"):
        if info.get(key) is not None:
            metrics.log_metric(key, float(info[key]))
    model.metadata.update({"dataset": config.name, "kind": info["kind"], "framework": "pytorch"})
    print(f"trained {info['kind']}: {info}")


@step_component()
def evaluate_dataset_op(
    training_set: Input[Dataset],
    model: Input[Model],
    metrics: Output[Metrics],
    report: Output[HTML],
    evaluation: Output[Artifact],
    dataset_config: str,
    review_budget: float = 0.01,
    reports_dir: str = "",
) -> None:
    """The model vs LightGBM / logistic regression on the test period; policy set on validation."""
    import math
    import shutil
    import tempfile
    from pathlib import Path

    import pandas as pd

    from riskops.byod import evaluate_dataset, parse_config
    from riskops.training.evaluate import HTML_NAME, render_html

    config = parse_config(dataset_config)
    with tempfile.TemporaryDirectory(prefix="riskops-eval-") as tmp:
        result = evaluate_dataset(pd.read_parquet(training_set.path), config, Path(model.path), Path(tmp),
                                  review_budget=review_budget)  # fmt: skip
        page = render_html(result)
        (Path(tmp) / HTML_NAME).write_text(page)
        Path(report.path).write_text(page)
        shutil.copyfile(result.files["json"], evaluation.path)
        if reports_dir:
            out = Path(reports_dir)
            out.mkdir(parents=True, exist_ok=True)
            for f in Path(tmp).iterdir():
                shutil.copyfile(f, out / f.name)
    doc = result.document
    for name, m in doc["models"].items():
        for key in ("roc_auc", "pr_auc", "recall_at_1pct_fpr"):
            value = m.get(key)
            if value is not None and math.isfinite(value):
                metrics.log_metric(f"{name}_{key}", float(value))
    evaluation.metadata.update({"model_kind": doc["model_kind"], "n_test": doc["n"]})


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
    from dataclasses import asdict
    from pathlib import Path

    from riskops.byod import parse_config, register_dataset_model, registry_name

    config = parse_config(dataset_config)
    doc = json.loads(Path(evaluation.path).read_text())
    result = register_dataset_model(Path(model.path), doc, Path(registry_root), config, promotion, git_commit)
    record = {**asdict(result), "model_name": registry_name(config), "dataset": config.name}
    Path(registration.path).write_text(json.dumps(record, indent=2))
    registration.metadata.update(record)
    if reports_dir:
        Path(reports_dir).mkdir(parents=True, exist_ok=True)
        (Path(reports_dir) / "registration.json").write_text(json.dumps(record, indent=2))
    print(f"registered {record['model_name']} {result.version} as {result.alias}: {result.reason}")
