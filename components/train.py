"""Pipeline step 3: fine-tune the transformer risk model (riskops.model.RiskModel).

``train_model`` is a plain function (unit-tested); ``train_model_op`` is the thin KFP adapter.

Objective: class-weighted binary cross-entropy on the fraud logit (weight ``pos_weight`` on
frauds; by default n_legit / n_fraud of the training rows, capped at ``pos_weight_cap``), or the
focal loss (1 - p_t)^gamma * weighted BCE when ``focal_gamma > 0``. Regularisation: AdamW's
decoupled weight decay with lambda = ``weight_decay`` (0.01) on all weight matrices and
embeddings (not on biases or LayerNorm parameters): each step shrinks w <- w - lr * lambda * w.
For plain SGD that is an L2 penalty (lambda/2)||w||^2; with Adam it is the decoupled variant
(Loshchilov & Hutter, 2019), not an L2 term added to the loss. Plus dropout in the trained
encoder layers and in the MLP, and early stopping on validation PR-AUC (average precision,
sklearn) with ``patience`` epochs; the best epoch's weights are kept.

Speed (2 CPU cores): the embeddings and the lower encoder layers are frozen, so their output
depends only on the text. ``LowerStateCache`` runs them once (no_grad) per *unique* text and
keeps the hidden states (instead of once per row per epoch); each training step looks the batch's
states up by index, runs only the top ``finetune_layers`` layers (once per distinct text in the
batch) and the head. Frozen layers never use dropout (RiskModel keeps them in eval mode), so this
is the same function as running the full encoder (checked in tests/test_train.py). Batches group
texts of similar length (``length_bucketed_batches``) to spend less compute on padding. The cache
holds unique_texts x longest_text x 384 fp32 values (~1.5 GB for 20k distinct ~45-token texts;
the training log prints its size). Cost on 2 cores is dominated by the top layers' forward and
backward (~0.7 CPU-seconds per 64-row step with 2 MiniLM layers): ``max_train_rows``,
``finetune_layers=1`` or ``cpu_bf16`` trade accuracy for time.

Devices: ``device="auto"`` trains on CUDA with bf16 autocast when available, else on CPU in fp32;
the code path is the same (``riskops.model.autocast``). ``cpu_bf16=True`` opts in to bf16 autocast
for the trained layers on CPU too (~1.7x faster steps on CPUs with AVX512-BF16/AMX; off by
default). The frozen-layer cache is always computed in fp32.

After training: the calibration (temperature + bias) is fitted on the validation logits, the
text baseline for explanations is set to the mean training text embedding, and the model folder
is written with ``RiskScorer.save`` plus ``training.json`` (config, history, timings).
"""

import json
import logging
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from kfp.dsl import Dataset, Input, Metrics, Model, Output
from sklearn.metrics import average_precision_score, roc_auc_score
from tqdm.auto import tqdm

from components.common import step_component
from riskops.features import TEXT_COLUMN
from riskops.model import (
    ModelConfig,
    Normalizer,
    RiskModel,
    RiskScorer,
    autocast,
    base_tokenizer,
    categorical_indices,
    fit_temperature,
    resolve_device,
)

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 64
    lr_encoder: float = 3e-5  # the fine-tuned top encoder layers
    lr_head: float = 1e-3  # projections, embeddings, MLP
    weight_decay: float = 0.01  # AdamW decoupled weight decay lambda (see module docstring)
    pos_weight: float | None = None  # None: n_legit / n_fraud of the training rows, capped
    focal_gamma: float = 0.0  # > 0: focal loss instead of weighted BCE
    patience: int = 2  # epochs without a better validation PR-AUC before stopping
    seed: int = 7
    max_steps: int | None = None  # stop after this many optimiser steps in total (smoke runs)
    encoder: str = "minilm"  # "minilm" (packaged all-MiniLM-L6-v2) or "tiny" (random, tests)
    finetune_layers: int = 2  # top encoder layers trained; the rest and the embeddings frozen
    device: str = "auto"  # "auto" = CUDA (bf16 autocast) if available else CPU (fp32)
    # Speed: keep every fraud and a random sample of legit rows so that the training part has at
    # most this many rows (None = all). Validation is never down-sampled, and the calibration
    # bias fitted on it undoes the changed class prior, so scores stay calibrated.
    max_train_rows: int | None = None
    pos_weight_cap: float = 10.0
    max_length: int = 48  # tokens per text
    warmup_fraction: float = 0.05  # linear warm-up, then linear decay to 10% of the peak lr
    grad_clip: float = 1.0
    eval_batch_size: int = 512
    num_threads: int | None = None  # CPU threads; None = all cores available to this process
    progress: bool = True  # tqdm bar per epoch
    cpu_bf16: bool = False  # opt-in bf16 autocast on CPU (speed); CUDA always uses bf16 autocast


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


# --------------------------------------------------------------------------- helpers
def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA
    torch.backends.cudnn.benchmark = False


def downsample_legit(
    frame: pd.DataFrame, labels: np.ndarray, max_rows: int | None, seed: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """Keep all frauds and a random (seeded) sample of legit rows, at most `max_rows` in all."""
    if max_rows is None or len(frame) <= max_rows:
        return frame, labels
    pos = np.flatnonzero(labels == 1)
    neg = np.flatnonzero(labels == 0)
    n_neg = max(int(max_rows) - len(pos), 0)
    keep_neg = np.random.default_rng(seed).choice(neg, size=min(n_neg, len(neg)), replace=False)
    keep = np.sort(np.concatenate([pos, keep_neg]))
    return frame.iloc[keep], labels[keep]


def _labels(labels, n: int, name: str) -> np.ndarray:
    y = np.asarray(labels, dtype=np.float32).reshape(-1)
    if len(y) != n:
        raise ValueError(f"{name}: {len(y)} labels for {n} rows")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"{name}: labels must be 0/1")
    return y


class LowerStateCache:
    """Hidden states after the frozen embeddings + lower layers, computed once per unique text.

    ``states[u, :lengths[u]]`` are text u's token states (float32, CPU); the padding tail is zero
    and masked. ``gather`` returns a batch trimmed to its longest text.
    """

    def __init__(self, states: torch.Tensor, lengths: torch.Tensor) -> None:
        self.states = states
        self.lengths = lengths
        width = states.shape[1]
        self.mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).long()

    def __len__(self) -> int:
        return self.states.shape[0]

    @property
    def nbytes(self) -> int:
        return self.states.numel() * self.states.element_size()

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        model: RiskModel,
        tokenizer,
        texts: Sequence[str],
        max_length: int,
        device: torch.device,
        batch_size: int = 256,
        progress: bool = False,
    ) -> "LowerStateCache":
        ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)
        width = int(lengths.max()) if len(ids) else 1
        hidden = model.encoder.config.hidden_size
        states = torch.zeros((len(ids), width, hidden), dtype=torch.float32)
        pad = tokenizer.pad_token_id or 0
        order = torch.argsort(lengths).tolist()
        was_training = model.training
        model.eval()
        starts = range(0, len(order), batch_size)
        for start in tqdm(
            starts, desc="caching frozen layers", unit="batch", disable=not progress, leave=False
        ):
            chunk = order[start : start + batch_size]
            w = max(len(ids[i]) for i in chunk)
            input_ids = torch.full((len(chunk), w), pad, dtype=torch.long)
            for r, i in enumerate(chunk):
                input_ids[r, : len(ids[i])] = torch.tensor(ids[i])
            mask = (torch.arange(w).unsqueeze(0) < lengths[chunk].unsqueeze(1)).long()
            # fp32 even on CUDA: the cached states are the exact frozen-layer outputs
            h = model.lower_states(input_ids.to(device), mask.to(device)).float().cpu()
            states[chunk, :w] = h * mask.unsqueeze(-1)
        model.train(was_training)
        return cls(states, lengths)

    def gather(self, text_ids: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        w = int(self.lengths[text_ids].max())
        hidden = self.states[text_ids, :w]
        mask = self.mask[text_ids, :w]
        return hidden.to(device, non_blocking=True), mask.to(device, non_blocking=True)


def length_bucketed_batches(
    lengths: torch.Tensor, batch_size: int, generator: torch.Generator, bucket_batches: int = 50
) -> list[torch.Tensor]:
    """One epoch of row-index batches: rows shuffled, then sorted by text length within windows of
    `bucket_batches` batches, and the batch order shuffled again. Every row appears once; batches
    hold texts of similar length, so less compute is spent on padding (texts are 20-45 tokens)."""
    perm = torch.randperm(len(lengths), generator=generator)
    window = batch_size * bucket_batches
    batches = []
    for start in range(0, len(perm), window):
        part = perm[start : start + window]
        part = part[torch.argsort(lengths[part], stable=True)]
        batches.extend(part.split(batch_size))
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in order]


def _pooled(
    model: RiskModel, cache: LowerStateCache, text_ids: torch.Tensor, device: torch.device, bf16: bool
) -> torch.Tensor:
    hidden, mask = cache.gather(text_ids, device)
    with autocast(device, bf16):
        return model.pooled_from_lower(hidden, mask)


def _forward_rows(
    model: RiskModel,
    cache: LowerStateCache,
    text_ids: torch.Tensor,
    numeric: torch.Tensor,
    categorical: torch.Tensor,
    device: torch.device,
    bf16: bool,
) -> torch.Tensor:
    """Logits for a batch of rows; the top encoder layers run once per distinct text in it."""
    uniq, inverse = torch.unique(text_ids, return_inverse=True)
    pooled = _pooled(model, cache, uniq, device, bf16)
    with autocast(device, bf16):
        return model.head(pooled[inverse.to(device)], numeric.to(device), categorical.to(device)).float()


@torch.no_grad()
def _pooled_table(
    model: RiskModel,
    cache: LowerStateCache,
    text_ids: torch.Tensor,
    device: torch.device,
    batch_size: int,
    bf16: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(distinct text ids, their pooled embeddings) in eval mode."""
    uniq = torch.unique(text_ids)
    # batch texts of similar length together: less padding
    uniq = uniq[torch.argsort(cache.lengths[uniq], stable=True)]
    parts = [
        _pooled(model, cache, uniq[s : s + batch_size], device, bf16).float()
        for s in range(0, len(uniq), batch_size)
    ]
    hidden = model.encoder.config.hidden_size
    pooled = torch.cat(parts) if parts else torch.zeros((0, hidden), device=device)
    return uniq, pooled


@torch.no_grad()
def _eval_logits(
    model: RiskModel,
    cache: LowerStateCache,
    text_ids: torch.Tensor,
    numeric: torch.Tensor,
    categorical: torch.Tensor,
    device: torch.device,
    batch_size: int,
    bf16: bool,
) -> np.ndarray:
    was_training = model.training
    model.eval()
    uniq, pooled = _pooled_table(model, cache, text_ids, device, batch_size, bf16)
    lookup = torch.full((len(cache),), -1, dtype=torch.long)
    lookup[uniq] = torch.arange(len(uniq))
    rows = lookup[text_ids]
    out = []
    for s in range(0, len(text_ids), batch_size):
        sl = slice(s, s + batch_size)
        with autocast(device, bf16):
            z = model.head(pooled[rows[sl].to(device)], numeric[sl].to(device), categorical[sl].to(device))
        out.append(z.float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def _loss_fn(pos_weight: float, gamma: float):
    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
        if gamma > 0:
            p = torch.sigmoid(logits)
            p_t = p * y + (1 - p) * (1 - y)
            bce = bce * (1 - p_t).pow(gamma)
        weight = 1.0 + (pos_weight - 1.0) * y
        return (weight * bce).mean()

    return loss


def _param_groups(model: RiskModel, config: TrainConfig) -> list[dict]:
    groups = {(enc, decay): [] for enc in (True, False) for decay in (True, False)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        enc = name.startswith("encoder.")
        decay = p.ndim >= 2  # weight matrices and embeddings; not biases / LayerNorm
        groups[(enc, decay)].append(p)
    out = []
    for (enc, decay), params in groups.items():
        if params:
            out.append(
                {
                    "params": params,
                    "lr": config.lr_encoder if enc else config.lr_head,
                    "weight_decay": config.weight_decay if decay else 0.0,
                }
            )
    return out


def _safe_metric(fn, y: np.ndarray, s: np.ndarray) -> float:
    if len(y) == 0 or y.min() == y.max():
        return float("nan")
    return float(fn(y, s))


# --------------------------------------------------------------------------- training
def train_model(
    train_frame: pd.DataFrame,
    val_frame: pd.DataFrame,
    labels_train,
    labels_val,
    config: TrainConfig,
    out_dir: Path,
) -> TrainResult:
    """Fine-tune on `train_frame`, early-stop on `val_frame`, calibrate, save to `out_dir`.

    Frames are outputs of riskops.features.build_model_frame; labels are 0/1 (1 = fraud).
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    y_tr = _labels(labels_train, len(train_frame), "labels_train")
    y_va = _labels(labels_val, len(val_frame), "labels_val")
    if y_tr.min() == y_tr.max():
        raise ValueError("training labels hold a single class; need frauds and legit rows")
    if len(val_frame) == 0:
        raise ValueError("validation frame is empty")

    device = resolve_device(config.device)
    bf16 = device.type == "cuda" or config.cpu_bf16
    prev_threads = torch.get_num_threads()
    if device.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(config.num_threads or cores)
    try:
        set_seed(config.seed)
        train_frame, y_tr = downsample_legit(train_frame, y_tr, config.max_train_rows, config.seed)
        n_pos = float(y_tr.sum())
        n_neg = float(len(y_tr) - n_pos)
        pos_weight = (
            float(config.pos_weight) if config.pos_weight else min(n_neg / n_pos, config.pos_weight_cap)
        )

        mcfg = ModelConfig(
            encoder=config.encoder, finetune_layers=config.finetune_layers, max_length=config.max_length
        )
        model = RiskModel.build(mcfg).to(device)
        tokenizer = base_tokenizer()
        normalizer = Normalizer.fit(train_frame, mcfg.numeric_features)

        num_tr = torch.from_numpy(normalizer.transform(train_frame))
        num_va = torch.from_numpy(normalizer.transform(val_frame))
        cat_tr = torch.from_numpy(categorical_indices(train_frame, mcfg.categorical_vocabs))
        cat_va = torch.from_numpy(categorical_indices(val_frame, mcfg.categorical_vocabs))
        texts = np.concatenate(
            [train_frame[TEXT_COLUMN].to_numpy(dtype=object), val_frame[TEXT_COLUMN].to_numpy(dtype=object)]
        )
        codes, uniques = pd.factorize(texts, use_na_sentinel=False)
        tid_tr = torch.from_numpy(codes[: len(train_frame)].astype(np.int64))
        tid_va = torch.from_numpy(codes[len(train_frame) :].astype(np.int64))
        yt_tr = torch.from_numpy(y_tr)

        t_cache = time.perf_counter()
        cache = LowerStateCache.build(
            model, tokenizer, [str(u) for u in uniques], config.max_length, device, progress=config.progress
        )
        cache_seconds = time.perf_counter() - t_cache
        _info(
            config,
            f"train rows {len(train_frame):,} ({int(n_pos):,} fraud), val rows {len(val_frame):,} "
            f"({int(y_va.sum()):,} fraud); {len(cache):,} unique texts; frozen-layer states "
            f"({model.n_frozen} of {len(model.encoder_layers)} layers) cached in {cache_seconds:.1f}s, "
            f"{cache.nbytes / 2**20:.0f} MiB; device {device}; pos_weight {pos_weight:.2f}",
        )

        # start from the (weighted) base rate: the first steps need not learn it
        with torch.no_grad():
            prior = n_pos * pos_weight / (n_pos * pos_weight + n_neg)
            model.mlp[-1].bias.fill_(math.log(prior / (1 - prior)))

        optimizer = torch.optim.AdamW(_param_groups(model, config))
        steps_per_epoch = math.ceil(len(train_frame) / config.batch_size)
        total_steps = config.epochs * steps_per_epoch
        if config.max_steps:
            total_steps = min(total_steps, config.max_steps)
        warmup = max(1, int(config.warmup_fraction * total_steps))

        def lr_factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.1, 1.0 - 0.9 * (step - warmup) / max(1, total_steps - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        loss_fn = _loss_fn(pos_weight, config.focal_gamma)
        gen = torch.Generator().manual_seed(config.seed)

        history: list[dict] = []
        best_score, best_epoch, best_state, stale, step = -math.inf, 0, None, 0, 0
        for epoch in range(1, config.epochs + 1):
            t_epoch, cpu_epoch = time.perf_counter(), time.process_time()
            model.train()
            batches = length_bucketed_batches(cache.lengths[tid_tr], config.batch_size, gen)
            bar = tqdm(
                total=steps_per_epoch,
                desc=f"epoch {epoch}/{config.epochs}",
                unit="step",
                disable=not config.progress,
                leave=False,
            )
            loss_sum, loss_n, ema = 0.0, 0, None
            for idx in batches:
                if config.max_steps and step >= config.max_steps:
                    break
                logits = _forward_rows(model, cache, tid_tr[idx], num_tr[idx], cat_tr[idx], device, bf16)
                loss = loss_fn(logits, yt_tr[idx].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                value = float(loss.detach())
                loss_sum += value * len(idx)
                loss_n += len(idx)
                ema = value if ema is None else 0.95 * ema + 0.05 * value
                bar.set_postfix(loss=f"{ema:.4f}")
                bar.update()
            bar.close()
            train_seconds_epoch = time.perf_counter() - t_epoch
            train_cpu_seconds = time.process_time() - cpu_epoch

            val_logits = _eval_logits(
                model, cache, tid_va, num_va, cat_va, device, config.eval_batch_size, bf16
            )
            val_loss = float(
                torch.nn.functional.binary_cross_entropy_with_logits(
                    torch.from_numpy(val_logits), torch.from_numpy(y_va.astype(np.float64))
                )
            )
            val_pr = _safe_metric(average_precision_score, y_va, val_logits)
            record = {
                "epoch": epoch,
                "steps": step,
                "train_loss": loss_sum / max(loss_n, 1),
                "val_loss": val_loss,
                "val_pr_auc": val_pr,
                "val_roc_auc": _safe_metric(roc_auc_score, y_va, val_logits),
                "lr_factor": lr_factor(max(step - 1, 0)),
                "train_seconds": train_seconds_epoch,
                "train_cpu_seconds": train_cpu_seconds,  # all threads; wall >> cpu/threads = a busy machine
                "seconds": time.perf_counter() - t_epoch,
            }
            history.append(record)
            _info(
                config,
                f"epoch {epoch}/{config.epochs}: train_loss {record['train_loss']:.4f} val_loss {val_loss:.4f} "
                f"val_pr_auc {val_pr:.4f} val_roc_auc {record['val_roc_auc']:.4f} "
                f"({train_seconds_epoch:.1f}s train, {record['seconds']:.1f}s total, {step} steps)",
            )
            # early stopping on PR-AUC; without validation frauds fall back to the validation loss
            score = val_pr if math.isfinite(val_pr) else -val_loss
            if score > best_score + 1e-6 or best_state is None:
                best_score, best_epoch, stale = score, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
                if stale >= config.patience:
                    _info(config, f"early stop: no better validation PR-AUC for {stale} epochs")
                    break
            if config.max_steps and step >= config.max_steps:
                break

        model.load_state_dict(best_state)
        model.eval()
        # explanation baseline: the mean pooled text embedding over the training rows
        serve_bf16 = device.type == "cuda"  # calibrate in the precision RiskScorer scores in
        uniq, pooled = _pooled_table(model, cache, tid_tr, device, config.eval_batch_size, serve_bf16)
        counts = torch.bincount(tid_tr, minlength=len(cache))[uniq].to(pooled.device, pooled.dtype)
        model.text_baseline.copy_((pooled * counts.unsqueeze(1)).sum(0) / counts.sum())

        val_logits = _eval_logits(
            model, cache, tid_va, num_va, cat_va, device, config.eval_batch_size, serve_bf16
        )
        calibration = fit_temperature(val_logits, y_va)
        scorer = RiskScorer(model, tokenizer, normalizer, calibration, device=device)
        scorer.save(out_dir)
        train_seconds = time.perf_counter() - t_start
        val_pr_auc = _safe_metric(average_precision_score, y_va, val_logits)
        result = TrainResult(
            model_dir=out_dir,
            best_epoch=best_epoch,
            history=history,
            val_pr_auc=val_pr_auc,
            device=str(device),
            train_seconds=train_seconds,
            pos_weight=pos_weight,
            calibration=asdict(calibration),
            n_train=len(train_frame),
            n_val=len(val_frame),
            unique_texts=len(cache),
            cache_seconds=cache_seconds,
        )
        summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
        (out_dir / "training.json").write_text(
            json.dumps({"train_config": asdict(config), "result": summary}, indent=2, default=str)
        )
        _info(
            config,
            f"best epoch {best_epoch}: val PR-AUC {val_pr_auc:.4f}; calibration T={calibration.temperature:.3f} "
            f"b={calibration.bias:.3f}; {train_seconds:.1f}s; model -> {out_dir}",
        )
        return result
    finally:
        torch.set_num_threads(prev_threads)


def _info(config: TrainConfig, line: str) -> None:
    log.info(line)
    if config.progress and not log.isEnabledFor(logging.INFO):
        tqdm.write(line)


def train_from_training_set(
    df: pd.DataFrame,
    out_dir: Path,
    config: TrainConfig,
    test_fraction: float = 0.2,
    val_fraction: float = 0.15,
) -> TrainResult:
    """The step as the pipeline runs it: time split, model frames, train on train, stop on val.

    `df` = transactions (schema columns incl. is_fraud, event_timestamp) + entity feature columns.
    The newest `test_fraction` is left untouched for the evaluate step (which re-splits with
    riskops.splits.time_split).
    """
    from riskops.features import build_model_frame
    from riskops.schema import LABEL_COLUMN
    from riskops.splits import time_split

    if LABEL_COLUMN not in df.columns:
        raise KeyError(f"training set lacks the label column {LABEL_COLUMN!r}")
    train, val, _test = time_split(df, test_fraction, val_fraction)
    return train_model(
        build_model_frame(train),
        build_model_frame(val),
        train[LABEL_COLUMN].to_numpy(),
        val[LABEL_COLUMN].to_numpy(),
        config,
        Path(out_dir),
    )


# --------------------------------------------------------------------------- KFP adapter
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
) -> None:
    """Fine-tune the risk model on the training set's oldest part; the model folder -> `model`."""
    import logging
    from pathlib import Path

    import pandas as pd

    from components.train import TrainConfig, train_from_training_set

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
        pd.read_parquet(training_set.path), Path(model.path), config, test_fraction, val_fraction
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
    for name, value in values.items():
        metrics.log_metric(name, float(value))
    model.metadata.update({**values, "encoder": encoder, "device": result.device, "framework": "pytorch"})
