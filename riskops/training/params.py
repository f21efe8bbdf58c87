"""The training parameters a run takes, with their defaults: one definition for every entry point.

The CLI (`riskops pipeline run`, `riskops train`), both KFP pipelines, their components, the
bring-your-own-data steps and ``python -m riskops.training.train_job`` read their defaults from
the profiles below. KFP reads a parameter's default from the function signature, so components and
pipelines keep plain typed parameters written as ``epochs: int = TRAINING.epochs``.

Integers use 0 for "no limit" (``max_steps``, ``max_train_rows``, ``max_train_seconds``), as a
pipeline parameter cannot be None; ``riskops.training.finetune.TrainConfig.from_params`` turns
them into the training loop's ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class TrainingParams:
    """What a training run is asked to do (the training loop's own knobs live in TrainConfig).

    Attributes:
        encoder: "minilm" (the packaged all-MiniLM-L6-v2) or "tiny" (a random BERT, for tests).
        epochs: passes over the training rows of the text + tabular transformer.
        max_steps: stop after this many optimiser steps in all (0 = no limit; smoke runs).
        finetune_layers: top encoder layers trained; the embeddings and the rest are frozen.
        max_train_rows: every fraud plus at most this many sampled legitimate rows (0 = all rows).
        seed: seeds the data generator, the legit sample, the batch order and the weights.
        test_fraction: the newest share of rows, held out for evaluation.
        val_fraction: the share before the test period, for early stopping and calibration.
        ft_max_epochs: FT-Transformer epochs at most (a dataset without text columns).
        ft_patience: FT-Transformer epochs without a better validation PR-AUC before stopping.
        max_train_seconds: FT-Transformer time budget, checked after each epoch (0 = none).
        sequence: read each transaction's recent events of its user, device and IP
            (riskops.features.sequences) through the model's sequence branch.
        members: fused heads trained side by side whose logits the model averages (a deep
            ensemble; riskops.training.model.RiskModel). 1 = a single network.
    """

    encoder: str = "minilm"
    epochs: int = 10
    max_steps: int = 0
    finetune_layers: int = 0
    max_train_rows: int = 50_000
    seed: int = 7
    test_fraction: float = 0.2
    val_fraction: float = 0.15
    ft_max_epochs: int = 30
    ft_patience: int = 4
    max_train_seconds: float = 0.0
    sequence: bool = True
    members: int = 3


# The built-in pipeline (`training_pipeline`) and its components: up to 10 epochs (early stopping on
# validation) over every fraud and up to 50,000 legitimate rows, three fused heads averaged; the
# pretrained text encoder is used as it is (finetune_layers 0), so its embeddings are computed once
# per distinct text.
TRAINING = TrainingParams()

# A run from the command line (`riskops pipeline run`, `riskops train`) and the bring-your-own-data
# pipeline: 6 epochs, so a first run on a 2-core laptop stays within minutes.
QUICK_TRAINING = replace(TRAINING, epochs=6)

# The training loop called directly (`python -m riskops.training.train_job`, TrainConfig()): every
# row trains unless a limit is asked for.
ALL_ROWS_TRAINING = replace(TRAINING, max_train_rows=0)
