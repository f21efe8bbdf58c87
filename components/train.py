"""KFP adapters of the training step: the model folder -> ``model``, the training figures -> ``metrics``.

``train_model_op`` fine-tunes the text + tabular transformer (riskops.training.finetune);
``train_dataset_op`` trains on a user's dataset (riskops.byod.train: the transformer when text is
mapped, else the FT-Transformer). Training parameters have no defaults here: the pipeline passes
them (riskops.training.params holds the defaults, and KFP runs this function from its own source,
where a default could not name them).
"""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.common import step_component


@step_component()
def train_model_op(
    training_set: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    epochs: int,
    encoder: str,
    max_steps: int,
    finetune_layers: int,
    seed: int,
    test_fraction: float,
    val_fraction: float,
    max_train_rows: int,
    recent_from: str = "",
) -> None:
    """Fine-tune the risk model on the training set's oldest part; the model folder -> `model`."""
    import logging
    from pathlib import Path

    import pandas as pd

    from riskops.training.finetune import TrainConfig, train_from_training_set
    from riskops.training.params import TrainingParams

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    params = TrainingParams(encoder=encoder, epochs=epochs, max_steps=max_steps, finetune_layers=finetune_layers,
                            max_train_rows=max_train_rows, seed=seed)  # fmt: skip
    result = train_from_training_set(
        pd.read_parquet(training_set.path), Path(model.path), TrainConfig.from_params(params, progress=False),
        test_fraction, val_fraction, recent_from,
    )  # fmt: skip
    values = result.metrics()
    for name, value in values.items():
        if value is not None:
            metrics.log_metric(name, value)
    model.metadata.update({**values, "encoder": encoder, "device": result.device, "framework": "pytorch"})


@step_component()
def train_dataset_op(
    training_set: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    dataset_config: str,
    encoder: str,
    epochs: int,
    max_steps: int,
    finetune_layers: int,
    max_train_rows: int,
    ft_max_epochs: int,
    max_train_seconds: float,
    seed: int,
) -> None:
    """Text columns mapped: fine-tune the text + tabular transformer; none: train the FT-Transformer."""
    import logging
    from pathlib import Path

    import pandas as pd

    from riskops.byod.config import parse_config
    from riskops.byod.train import train_dataset_model

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
