"""Train on a user's dataset: the config's time split, model frames, and the model it fits.

Text columns mapped: the text + tabular transformer (riskops.training.model.RiskModel fine-tuned by
riskops.training.finetune.train_model, with the dataset's own numeric/categorical columns). No text:
the FT-Transformer (riskops.training.tabular) with Platt / temperature calibration chosen on
validation (riskops.training.calibration). :class:`DatasetScorer` scores with either.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from riskops.byod.config import model_columns
from riskops.data.datasets import (
    DatasetConfig,
    fdb_split,
    train_val_split,
)
from riskops.features.contract import TEXT_COLUMN
from riskops.features.sequences import SEQUENCE_COLUMNS, has_sequence_columns
from riskops.training.params import QUICK_TRAINING, TrainingParams

MODEL_META = "byod_model.json"
CALIBRATION_NAME = "calibration.json"
MIN_CATEGORY_COUNT = 5
MAX_VOCAB = 500
log = logging.getLogger(__name__)


def split_frame(df: pd.DataFrame, config: DatasetConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(fit, val, test) in time order: the config's split (FDB test cut, validation at the end of train)."""
    train, test = fdb_split(df, config)
    fit, val = train_val_split(train, config)
    return fit, val, test


def joined_text(frame: pd.DataFrame, text_columns: list[str]) -> list[str]:
    """One string per row for the text encoder: ``col: value | col: value``."""
    parts = [frame[c].astype(str).to_numpy(dtype=object) for c in text_columns]
    return [
        " | ".join(f"{c}: {v}" for c, v in zip(text_columns, vals, strict=True))
        for vals in zip(*parts, strict=True)
    ]


def text_model_frame(
    frame: pd.DataFrame, numeric: list[str], categorical: list[str], text: list[str]
) -> pd.DataFrame:
    """The risk model's frame of a dataset: numerics, categoricals, the joined text ('' with no text
    column) and the behaviour-sequence columns when the frame has them."""
    out = {c: frame[c].to_numpy("float64") for c in numeric}
    out.update({c: frame[c].astype(str).to_numpy(dtype=object) for c in categorical})
    out[TEXT_COLUMN] = joined_text(frame, text) if text else [""] * len(frame)
    if has_sequence_columns(frame.columns):
        out.update({c: frame[c].to_numpy("float64") for c in SEQUENCE_COLUMNS})
    return pd.DataFrame(out, index=frame.index)


def vocabularies(frame: pd.DataFrame, categorical: list[str]) -> dict[str, tuple[str, ...]]:
    """Per categorical column: the training values seen >= MIN_CATEGORY_COUNT times (top MAX_VOCAB)."""
    out = {}
    for c in categorical:
        counts = frame[c].astype(str).value_counts()
        out[c] = tuple(sorted(counts[counts >= MIN_CATEGORY_COUNT].index[:MAX_VOCAB].tolist()))
    return out


def labels(frame: pd.DataFrame, config: DatasetConfig) -> np.ndarray:
    return frame[config.label].to_numpy(dtype="int64")


# --------------------------------------------------------------------------------------------
# Train
# --------------------------------------------------------------------------------------------


def train_dataset_model(
    df: pd.DataFrame,
    config: DatasetConfig,
    out_dir: Path,
    *,
    encoder: str = QUICK_TRAINING.encoder,
    epochs: int = QUICK_TRAINING.epochs,
    max_steps: int = QUICK_TRAINING.max_steps,
    finetune_layers: int = QUICK_TRAINING.finetune_layers,
    max_train_rows: int = QUICK_TRAINING.max_train_rows,
    ft_max_epochs: int = QUICK_TRAINING.ft_max_epochs,
    ft_patience: int = QUICK_TRAINING.ft_patience,
    max_train_seconds: float = QUICK_TRAINING.max_train_seconds,
    seed: int = QUICK_TRAINING.seed,
) -> dict:
    """Train on the fit part, stop early and calibrate on validation; write the model folder.

    The training budget adapts to the data (riskops.training.budget.epoch_sample): every fraud (up
    to 20,000) and legitimate rows numbering the largest of ``max_train_rows``, 20,000 and 20 per
    fraud, capped by the data (``max_train_rows`` 0: every row). No text: the FT-Transformer draws
    a fresh sample of that size every epoch. Text mapped: the text + tabular transformer trains
    on one such sample. One log line (and ``info["sampled"]``) says what was sampled.
    """
    from riskops.training.budget import epoch_sample

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fit, val, _test = split_frame(df, config)
    y_fit, y_val = labels(fit, config), labels(val, config)
    for part, y in (("training", y_fit), ("validation", y_val)):
        if y.sum() == 0 or y.sum() == len(y):
            raise ValueError(
                f"dataset {config.name!r}: the {part} period has {int(y.sum())} frauds in {len(y)} rows; "
                "both classes are needed (use more rows or change split.time_fraction / val_fraction)"
            )
    numeric, categorical, text = model_columns(config, df)
    meta = {"dataset": config.to_dict(), "numeric": numeric, "categorical": categorical, "text": text,
            "label": config.label}  # fmt: skip
    t0 = time.perf_counter()
    n_pos = int(y_fit.sum())
    sample = epoch_sample(n_pos, len(y_fit) - n_pos, max_train_rows)
    # a mapped user gives every row its recent events (riskops.byod.features): the fused model reads
    # them, with the text when text columns are mapped and an empty text otherwise
    sequences = has_sequence_columns(df.columns)
    if text or sequences:
        from riskops.training.finetune import TrainConfig, train_model

        vocabs = vocabularies(fit, categorical)
        fit, y_fit = sampled_rows(fit, y_fit, sample, seed)
        sampled = sample.describe("(one sample for every epoch)")
        params = TrainingParams(encoder=encoder, epochs=epochs, max_steps=max_steps,
                                finetune_layers=finetune_layers, max_train_rows=0, seed=seed)  # fmt: skip
        tc = TrainConfig.from_params(params, progress=False, max_length=64, numeric_features=tuple(numeric),
                                     categorical_vocabs=vocabs)  # fmt: skip
        result = train_model(
            text_model_frame(fit, numeric, categorical, text),
            text_model_frame(val, numeric, categorical, text),
            y_fit, y_val, tc, out_dir,
        )  # fmt: skip
        meta.update(kind="fused" if sequences else "text_tabular", encoder=encoder, sequences=sequences)
        info = {"val_pr_auc": result.val_pr_auc, "best_epoch": result.best_epoch, "n_train": result.n_train,
                "calibration": result.calibration.get("method", "temperature")}  # fmt: skip
    else:
        from riskops.training.calibration import choose_calibrator
        from riskops.training.tabular import FTTransformerConfig, fit_ft_transformer

        sampled = sample.describe("per epoch (fresh samples)")
        cfg = FTTransformerConfig(max_epochs=ft_max_epochs, patience=ft_patience, legit_per_epoch=sample.legit,
                                  fraud_per_epoch=sample.frauds, max_train_seconds=max_train_seconds or None,
                                  seed=seed, progress=False)  # fmt: skip
        cols = numeric + categorical
        model = fit_ft_transformer(fit[cols], y_fit, val[cols], y_val, cfg, numeric, categorical)
        model.save(out_dir)
        z_val = model.predict_logits(val[cols])
        # monotone calibrators only: the ranking (ROC/PR) of the raw model is kept exactly
        choice = choose_calibrator(z_val, y_val, scale="score", candidates=("temperature", "platt"))
        (out_dir / CALIBRATION_NAME).write_text(json.dumps(choice.to_dict(), indent=2))
        meta.update(kind="ft_transformer")
        info = {"val_pr_auc": model.info["best_val_pr_auc"], "best_epoch": model.info["best_epoch"],
                "epochs_run": model.info["epochs_run"], "n_train": int(len(fit)),
                "legit_rows_per_epoch": model.info["legit_rows_per_epoch"], "calibration": choice.name}  # fmt: skip
    log.info("%s: %s", config.name, sampled)
    info.update(sampled=sampled, frauds_per_epoch=sample.frauds, legit_per_epoch=sample.legit)
    info.update(kind=meta["kind"], n_val=int(len(val)), train_seconds=round(time.perf_counter() - t0, 2),
                n_numeric=len(numeric), n_categorical=len(categorical), n_text=len(text))  # fmt: skip
    meta["training"] = info
    (out_dir / MODEL_META).write_text(json.dumps(meta, indent=2, default=str))
    return info


def sampled_rows(frame: pd.DataFrame, y: np.ndarray, sample, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """One seeded draw of ``sample.frauds`` frauds and ``sample.legit`` legitimate rows, in time order."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    keep = np.sort(np.concatenate([rng.choice(pos, sample.frauds, replace=False),
                                   rng.choice(neg, sample.legit, replace=False)]))  # fmt: skip
    return frame.iloc[keep], y[keep]


class DatasetScorer:
    """Scores canonical dataset rows with a model folder written by :func:`train_dataset_model`."""

    def __init__(self, model_dir: Path | str):
        d = Path(model_dir)
        self.meta = json.loads((d / MODEL_META).read_text())
        self.kind = self.meta["kind"]
        self.numeric, self.categorical, self.text = (
            self.meta["numeric"],
            self.meta["categorical"],
            self.meta["text"],
        )
        if self.kind == "ft_transformer":
            from riskops.training.calibration import TemperatureCalibrator
            from riskops.training.tabular import FittedTabularModel

            self.model = FittedTabularModel.load(d)
            params = json.loads((d / CALIBRATION_NAME).read_text())["params"]
            self.calibrator = TemperatureCalibrator(params["temperature"], params["bias"], params["kind"])
        else:
            from riskops.training.scorer import RiskScorer

            self.model = RiskScorer.load(d, device="cpu")

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        if self.kind == "ft_transformer":
            z = self.model.predict_logits(frame[self.numeric + self.categorical])
            return self.calibrator.transform_logits(z)
        return self.model.predict_proba(text_model_frame(frame, self.numeric, self.categorical, self.text))
