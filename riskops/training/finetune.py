"""Fine-tuning the transformer risk model (riskops.training.model.RiskModel): the training loop.

Objective: class-weighted binary cross-entropy on the fraud logit (weight ``pos_weight`` on
frauds; by default n_legit / n_fraud of the training rows, capped at ``pos_weight_cap``), or the
focal loss (1 - p_t)^gamma * weighted BCE when ``focal_gamma > 0``. Regularisation: AdamW's
decoupled weight decay with lambda = ``weight_decay`` (0.01) on all weight matrices and
embeddings (not on biases or LayerNorm parameters): each step shrinks w <- w - lr * lambda * w.
For plain SGD that is an L2 penalty (lambda/2)||w||^2; with Adam it is the decoupled variant
(Loshchilov & Hutter, 2019), not an L2 term added to the loss. Plus dropout in the trained
encoder layers and in the MLP, and early stopping on validation PR-AUC (average precision,
sklearn) with ``patience`` epochs; the best epoch's weights are kept.

Devices: ``device="auto"`` trains on CUDA with bf16 autocast when available, else on CPU in fp32;
the code path is the same (``riskops.training.model.autocast``). ``cpu_bf16=True`` opts in to bf16 autocast
for the trained layers on CPU too (~1.7x faster steps on CPUs with AVX512-BF16/AMX; off by
default). The frozen-layer cache is always computed in fp32.

After training: the calibration (temperature + bias) is fitted on the validation logits, the
text baseline for explanations is set to the mean training text embedding, and the model folder
is written with ``RiskScorer.save`` plus ``training.json`` (config, history, timings).

The run itself, in named steps, is riskops.training.finetune_run. Speed: the frozen lower encoder
layers run once per unique text (riskops.training.text_cache).
Inside an initialised torch.distributed process group the loop runs as one DDP rank
(riskops.training.distributed); ``python -m riskops.training.train_job`` is the command-line job.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score

from riskops.features.contract import TEXT_COLUMN
from riskops.training.finetune_run import FineTuningRun, Placement, log_progress, safe_metric
from riskops.training.params import TRAINING, TrainingParams
from riskops.training.scorer import RiskScorer

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """The training loop's knobs; what a run is asked to do defaults to riskops.training.params.TRAINING."""

    epochs: int = TRAINING.epochs
    batch_size: int = 256  # rows per step per process (DDP: the global batch is batch_size * world_size)
    lr_encoder: float = 3e-5  # the fine-tuned top encoder layers
    lr_head: float = 3e-3  # projections, embeddings, sequence encoder, MLP
    weight_decay: float = 0.01  # AdamW decoupled weight decay lambda (see module docstring)
    pos_weight: float | None = None  # None: n_legit / n_fraud of the training rows, capped
    focal_gamma: float = 0.0  # > 0: focal loss instead of weighted BCE
    # epochs without a better validation PR-AUC before stopping. Long, because with ~100 validation
    # frauds the PR-AUC moves by a few hundredths from epoch to epoch: patience 3 stopped runs in
    # their first dip (best epoch 2 of 5 run) that went on to improve until epoch 9 when let run.
    patience: int = 5
    seed: int = TRAINING.seed
    max_steps: int | None = None  # stop after this many optimiser steps in total (smoke runs)
    encoder: str = TRAINING.encoder  # "minilm" (packaged all-MiniLM-L6-v2) or "tiny" (random, tests)
    finetune_layers: int = (
        TRAINING.finetune_layers
    )  # top encoder layers trained; the rest and the embeddings frozen
    device: str = "auto"  # "auto" = CUDA (bf16 autocast) if available else CPU (fp32)
    # Speed: keep every fraud and a random sample of at most this many legit rows (None = all).
    # Validation is never down-sampled, and the calibration bias fitted on it undoes the changed
    # class prior, so scores stay calibrated.
    max_train_rows: int | None = None
    pos_weight_cap: float = 10.0
    max_length: int = 48  # tokens per text
    warmup_fraction: float = 0.05  # linear warm-up, then linear decay to 10% of the peak lr
    grad_clip: float = 1.0
    eval_batch_size: int = 512
    num_threads: int | None = None  # CPU threads; None = 1 with a frozen encoder, else all cores available
    progress: bool = True  # tqdm bar per epoch
    cpu_bf16: bool = False  # opt-in bf16 autocast on CPU (speed); CUDA always uses bf16 autocast
    numeric_embedding: str = "periodic"  # riskops.training.model.NUMERIC_EMBEDDINGS
    sequence: bool = TRAINING.sequence  # read each transaction's behaviour sequence (riskops.features.sequences)
    tabular: bool = True  # False: the history alone (an ablation of the benchmark)
    members: int = TRAINING.members  # fused heads trained side by side, logits averaged (RiskModel)
    model: dict = field(default_factory=dict)  # further ModelConfig fields (sizes, dropout, text), e.g. ablations
    # bring-your-own-data (riskops.byod): the model frame's own columns; None = the built-in schema's
    numeric_features: tuple[str, ...] | None = None
    categorical_vocabs: dict[str, tuple[str, ...]] | None = None

    @classmethod
    def from_params(cls, params: TrainingParams, **overrides: Any) -> TrainConfig:
        """The loop's config for a run's parameters (their 0 = "no limit" becomes None).

        Args:
            params: what the run is asked to do (riskops.training.params).
            **overrides: further TrainConfig fields (e.g. ``progress=False``, ``max_length=64``).
        """
        return cls(
            epochs=params.epochs,
            encoder=params.encoder,
            max_steps=params.max_steps or None,
            finetune_layers=params.finetune_layers,
            seed=params.seed,
            max_train_rows=params.max_train_rows or None,
            sequence=params.sequence,
            members=params.members,
            **overrides,
        )


@dataclass
class TrainResult:
    model_dir: Path
    best_epoch: int
    history: list[dict]
    val_pr_auc: float
    device: str
    train_seconds: float
    pos_weight: float = 1.0
    calibration: dict = field(default_factory=dict)
    n_train: int = 0
    n_val: int = 0
    unique_texts: int = 0
    cache_seconds: float = 0.0
    world_size: int = 1
    rank: int = 0
    backend: str = ""  # torch.distributed backend ("gloo", "nccl"); "" when not distributed
    state_sha256: str = ""  # SHA-256 of this rank's final state_dict (state_digest)
    rank_state_sha256: list[str] = field(default_factory=list)  # every rank's, rank order

    def metrics(self) -> dict[str, float | None]:
        """The figures a pipeline run logs; a non-finite one (e.g. the PR-AUC of a validation block
        with one class) is None, as KFP metrics and metadata cannot hold NaN."""
        values = {
            "val_pr_auc": self.val_pr_auc,
            "best_epoch": self.best_epoch,
            "train_seconds": self.train_seconds,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "temperature": self.calibration.get("temperature", 1.0),
            "calibration_bias": self.calibration.get("bias", 0.0),
        }
        return {k: (float(v) if math.isfinite(float(v)) else None) for k, v in values.items()}


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA
    torch.backends.cudnn.benchmark = False


def downsample_legit(
    frame: pd.DataFrame, labels: np.ndarray, max_legit: int | None, seed: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """Keep every fraud and a random (seeded) sample of at most `max_legit` legitimate rows.

    The budget counts legitimate rows only: a training period rich in frauds keeps all of them and
    still as many legitimate rows as a poor one (counting frauds too once left a real dataset with
    thousands of frauds 1,000 legitimate rows).
    """
    pos = np.flatnonzero(labels == 1)
    neg = np.flatnonzero(labels == 0)
    if max_legit is None or len(neg) <= max_legit:
        return frame, labels
    keep_neg = np.random.default_rng(seed).choice(neg, size=int(max_legit), replace=False)
    keep = np.sort(np.concatenate([pos, keep_neg]))
    return frame.iloc[keep], labels[keep]


def checked_labels(labels, n: int, name: str) -> np.ndarray:
    y = np.asarray(labels, dtype=np.float32).reshape(-1)
    if len(y) != n:
        raise ValueError(f"{name}: {len(y)} labels for {n} rows")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"{name}: labels must be 0/1")
    return y


def train_model(
    train_frame: pd.DataFrame,
    val_frame: pd.DataFrame,
    labels_train,
    labels_val,
    config: TrainConfig,
    out_dir: Path,
) -> TrainResult:
    """Fine-tune on `train_frame`, early-stop on `val_frame`, calibrate, save to `out_dir`.

    Frames are outputs of riskops.features.contract.build_model_frame; labels are 0/1 (1 = fraud).
    Inside an initialised torch.distributed process group (``init_distributed``) this process
    is one DDP rank (see riskops.training.distributed): every rank passes the same data and
    config, and only rank 0 writes `out_dir`.
    """
    t_start = time.perf_counter()
    y_tr = checked_labels(labels_train, len(train_frame), "labels_train")
    y_va = checked_labels(labels_val, len(val_frame), "labels_val")
    if y_tr.min() == y_tr.max():
        raise ValueError("training labels hold a single class; need frauds and legit rows")
    if len(val_frame) == 0:
        raise ValueError("validation frame is empty")
    place = Placement.current(config)
    prev_threads = torch.get_num_threads()
    if place.device.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        # ranks on one machine share its cores. With the encoder frozen the network's operations are
        # small: a second thread gained nothing measurable (13,000 rows: ~8 s an epoch either way) and,
        # on a machine busy with a server or other jobs, OpenMP threads waiting on each other made
        # epochs up to 10x slower; so one thread unless the encoder is fine-tuned or asked otherwise.
        default = 1 if config.finetune_layers == 0 else max(1, cores // max(place.dinfo.local_world_size, 1))
        torch.set_num_threads(config.num_threads or default)
    try:
        set_seed(config.seed)  # the same on every rank: same data sample, batch order, initial weights
        # the served catalogue: every text of the data, before legit rows are sampled away
        catalogue_texts = [*train_frame[TEXT_COLUMN].tolist(), *val_frame[TEXT_COLUMN].tolist()]
        n_legit = int((y_tr == 0).sum())
        train_frame, y_tr = downsample_legit(train_frame, y_tr, config.max_train_rows, config.seed)
        log_progress(
            config,
            f"training on {int(y_tr.sum()):,} frauds + {int((y_tr == 0).sum()):,} of {n_legit:,} legitimate rows"
            + (f" (max_train_rows {config.max_train_rows:,} legitimate)" if config.max_train_rows else ""),
        )
        loop = FineTuningRun(config, place, train_frame, val_frame, y_tr, y_va)
        history, best_epoch = loop.fit()
        calibration, digests = loop.finish()
        if place.dinfo.is_main:
            scorer = RiskScorer(loop.model, loop.tokenizer, loop.normalizer, calibration, device=place.device)
            scorer.remember_frequent_texts(catalogue_texts)
            scorer.save(Path(out_dir))
        result = TrainResult(
            model_dir=Path(out_dir),
            best_epoch=best_epoch,
            history=history,
            val_pr_auc=safe_metric(average_precision_score, y_va, loop.final_val_logits),
            device=str(place.device),
            train_seconds=time.perf_counter() - t_start,
            pos_weight=loop.pos_weight,
            calibration=asdict(calibration),
            n_train=len(train_frame),
            n_val=len(val_frame),
            unique_texts=len(loop.cache),
            cache_seconds=loop.cache_seconds,
            world_size=place.dinfo.world_size,
            rank=place.dinfo.rank,
            backend=place.dinfo.backend,
            state_sha256=digests[place.dinfo.rank] if place.dinfo.active else digests[0],
            rank_state_sha256=digests,
        )
        if place.dinfo.is_main:
            summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
            (Path(out_dir) / "training.json").write_text(
                json.dumps({"train_config": asdict(config), "result": summary}, indent=2, default=str)
            )
        log_progress(
            config,
            f"best epoch {best_epoch}: val PR-AUC {result.val_pr_auc:.4f}; calibration "
            f"T={calibration.temperature:.3f} b={calibration.bias:.3f}; {result.train_seconds:.1f}s; "
            f"model -> {out_dir}",
        )
        return result
    finally:
        torch.set_num_threads(prev_threads)


def train_from_training_set(
    df: pd.DataFrame,
    out_dir: Path,
    config: TrainConfig,
    test_fraction: float = 0.2,
    val_fraction: float = 0.15,
    recent_from: str = "",
) -> TrainResult:
    """The step as the pipeline runs it: time split, model frames, train on train, stop on val.

    `df` = transactions (schema columns incl. is_fraud, event_timestamp) + entity feature columns.
    The newest `test_fraction` is left untouched for the evaluate step (which re-splits with
    riskops.data.splits.time_split). `recent_from`: rows at or after this time all train (retraining's
    recent window; see riskops.data.splits).
    """
    from riskops.data.splits import time_split
    from riskops.features.contract import build_model_frame
    from riskops.features.sequences import add_sequence_columns
    from riskops.schema import LABEL_COLUMN

    if LABEL_COLUMN not in df.columns:
        raise KeyError(f"training set lacks the label column {LABEL_COLUMN!r}")
    if config.sequence and "user_id" in df.columns:  # histories come from every earlier row, whichever split
        df = add_sequence_columns(df)
    train, val, _test = time_split(df, test_fraction, val_fraction, recent_from=recent_from or None)
    return train_model(
        build_model_frame(train),
        build_model_frame(val),
        train[LABEL_COLUMN].to_numpy(),
        val[LABEL_COLUMN].to_numpy(),
        config,
        Path(out_dir),
    )
