"""Pipeline step 3 as a KFP component: fine-tune the transformer risk model (riskops.training.model.RiskModel).

The logic lives in `riskops.training.finetune`; this module only declares the component.
"""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.common import step_component


@step_component()
def train_model_op(
    training_set: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    epochs: int = 3,
    encoder: str = "minilm",
    max_steps: int = 0,
    finetune_layers: int = 2,
    seed: int = 7,
    test_fraction: float = 0.2,
    val_fraction: float = 0.15,
    max_train_rows: int = 0,
    recent_from: str = "",
) -> None:
    """Fine-tune the risk model on the training set's oldest part; the model folder -> `model`."""
    import logging
    from pathlib import Path

    import pandas as pd

    from riskops.training.finetune import TrainConfig, train_from_training_set

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = TrainConfig(
        epochs=epochs,
        encoder=encoder,
        max_steps=max_steps or None,
        finetune_layers=finetune_layers,
        seed=seed,
        max_train_rows=max_train_rows or None,
        progress=False,
    )
    result = train_from_training_set(
        pd.read_parquet(training_set.path), Path(model.path), config, test_fraction, val_fraction, recent_from
    )
    values = {
        "val_pr_auc": result.val_pr_auc,
        "best_epoch": result.best_epoch,
        "train_seconds": result.train_seconds,
        "n_train": result.n_train,
        "n_val": result.n_val,
        "temperature": result.calibration.get("temperature", 1.0),
        "calibration_bias": result.calibration.get("bias", 0.0),
    }
    # KFP stores metrics and metadata as protobuf Values, which cannot hold NaN (e.g. a validation
    # block with one class has no PR-AUC): such a value is left out of the metrics and null in metadata
    import math  # a KFP component runs from its own source: module-level imports are not there

    values = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in values.items()}
    for name, value in values.items():
        if value is not None:
            metrics.log_metric(name, value)
    model.metadata.update({**values, "encoder": encoder, "device": result.device, "framework": "pytorch"})
