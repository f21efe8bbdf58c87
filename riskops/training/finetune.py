"""Pipeline step 3: fine-tune the transformer risk model (riskops.training.model.RiskModel).

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
the code path is the same (``riskops.training.model.autocast``). ``cpu_bf16=True`` opts in to bf16 autocast
for the trained layers on CPU too (~1.7x faster steps on CPUs with AVX512-BF16/AMX; off by
default). The frozen-layer cache is always computed in fp32.

After training: the calibration (temperature + bias) is fitted on the validation logits, the
text baseline for explanations is set to the mean training text embedding, and the model folder
is written with ``RiskScorer.save`` plus ``training.json`` (config, history, timings).

Distributed data parallel (``python -m riskops.training.finetune --distributed ...`` under ``torchrun`` or
a Kubeflow PyTorchJob): ``init_distributed`` joins the process group from the standard
environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK), NCCL on CUDA and gloo on
CPU, and ``train_model`` sees the initialised group and runs as one of ``world_size`` ranks:

- every rank seeds identically, so data preparation, the length-bucketed batch order and the
  initial weights agree; DDP also broadcasts rank 0's weights when it wraps the model;
- the frozen-layer cache is computed in shards (each rank encodes every world_size-th
  length-sorted chunk of the unique texts) and then broadcast chunk by chunk from the rank that
  computed it, so every rank holds bit-identical cached states;
- ``batch_size`` is per rank: each step takes one global length-bucketed batch of
  ``batch_size * world_size`` rows (padded by repetition to a multiple of world_size) and gives
  rank r rows r, r + world_size, ...; DDP averages the gradients, so the step is the one for the
  global batch (the learning rate is not rescaled);
- validation, the explanation baseline and the final logits are computed in shards and
  gathered; rank 0 takes the early-stopping decision and broadcasts it, so all ranks stop at the
  same epoch and keep the same best weights;
- only rank 0 logs and writes the model folder; before that the ranks exchange a SHA-256 of
  their final state_dict and training fails if any differs (``training.json`` lists them).
"""

import argparse
import hashlib
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from sklearn.metrics import average_precision_score, roc_auc_score
from tqdm.auto import tqdm

from riskops.features.contract import TEXT_COLUMN
from riskops.training.model import (
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
    batch_size: int = 64  # rows per step per process (DDP: the global batch is batch_size * world_size)
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
    # bring-your-own-data (riskops.byod): the model frame's own columns; None = the built-in schema's
    numeric_features: tuple[str, ...] | None = None
    categorical_vocabs: dict[str, tuple[str, ...]] | None = None

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

@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the torch.distributed process group (1 process when none)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str = ""

    @property
    def active(self) -> bool:
        return bool(self.backend)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

DIST_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

def current_dist() -> DistInfo:
    """The initialised default process group, or a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    world = dist.get_world_size()
    return DistInfo(
        rank=dist.get_rank(),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
        backend=str(dist.get_backend()),
    )

def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group from the standard environment (as torchrun and the Kubeflow
    Training Operator's PyTorchJob set it): RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, and
    LOCAL_RANK (default 0). Backend: NCCL when this process trains on CUDA (the GPU is
    cuda:LOCAL_RANK), gloo on CPU."""
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed")
    if dist.is_initialized():
        return current_dist()
    missing = [k for k in DIST_ENV if not os.environ.get(k)]
    if missing:
        raise RuntimeError(
            f"--distributed needs {', '.join(DIST_ENV)} in the environment (missing: {', '.join(missing)}); "
            "launch with torchrun (e.g. torchrun --nproc-per-node 2 -m riskops.training.finetune --distributed ...) "
            "or from a PyTorchJob"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    on_cuda = resolve_device(device).type == "cuda"
    if on_cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s)")
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend="nccl" if on_cuda else "gloo", init_method="env://", timeout=timedelta(seconds=timeout_s)
    )
    return current_dist()

def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over a state_dict: every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.flatten().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()

def _comm_device(dinfo: DistInfo, device: torch.device) -> torch.device:
    """NCCL moves CUDA tensors only; gloo works on CPU tensors."""
    return device if dinfo.backend == "nccl" else torch.device("cpu")

def shard_batch(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank `rank`'s rows of a global batch: rows rank, rank + world_size, ... after padding the
    batch (by repeating its rows) to a multiple of world_size, so every rank gets the same count
    (DDP's gradient average is then the mean over the padded global batch)."""
    if world_size == 1:
        return batch
    pad = (-len(batch)) % world_size
    if pad:
        batch = torch.cat([batch, batch.repeat(math.ceil(pad / len(batch)))[:pad]])
    return batch[rank::world_size]

def _gather_rows(part: np.ndarray, dinfo: DistInfo) -> np.ndarray:
    """Concatenate every rank's `part`, in rank order (all ranks get the result)."""
    if dinfo.world_size == 1:
        return part
    parts: list = [None] * dinfo.world_size
    dist.all_gather_object(parts, part)
    return np.concatenate(parts)

def _shard_bounds(n: int, dinfo: DistInfo) -> slice:
    edges = np.linspace(0, n, dinfo.world_size + 1).astype(int)
    return slice(int(edges[dinfo.rank]), int(edges[dinfo.rank + 1]))

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
        dinfo: DistInfo | None = None,
    ) -> "LowerStateCache":
        """With an active process group (`dinfo`), rank r encodes the length-sorted chunks
        r, r + world_size, ... and each chunk is then broadcast from the rank that encoded it,
        so every rank ends with the same states for a 1/world_size share of the work."""
        dinfo = dinfo or DistInfo()
        ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)
        width = int(lengths.max()) if len(ids) else 1
        hidden = model.encoder.config.hidden_size
        states = torch.zeros((len(ids), width, hidden), dtype=torch.float32)
        pad = tokenizer.pad_token_id or 0
        order = torch.argsort(lengths).tolist()
        chunks = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
        was_training = model.training
        model.eval()
        mine = [c for k, c in enumerate(chunks) if k % dinfo.world_size == dinfo.rank]
        for chunk in tqdm(
            mine, desc="caching frozen layers", unit="batch", disable=not progress, leave=False
        ):
            w = max(len(ids[i]) for i in chunk)
            input_ids = torch.full((len(chunk), w), pad, dtype=torch.long)
            for r, i in enumerate(chunk):
                input_ids[r, : len(ids[i])] = torch.tensor(ids[i])
            mask = (torch.arange(w).unsqueeze(0) < lengths[chunk].unsqueeze(1)).long()
            # fp32 even on CUDA: the cached states are the exact frozen-layer outputs
            h = model.lower_states(input_ids.to(device), mask.to(device)).float().cpu()
            states[chunk, :w] = h * mask.unsqueeze(-1)
        if dinfo.world_size > 1:
            comm = _comm_device(dinfo, device)
            for k, chunk in enumerate(chunks):
                w = int(lengths[chunk].max())
                buf = states[chunk, :w].to(comm)  # the owner's states; a receive buffer elsewhere
                dist.broadcast(buf, src=k % dinfo.world_size)
                states[chunk, :w] = buf.cpu()
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

class RowLogits(torch.nn.Module):
    """The training forward as one module (what DDP wraps): cached lower states of a batch's
    distinct texts -> trainable top layers + mean pooling -> head, logits per row (float32)."""

    def __init__(self, model: RiskModel, bf16: bool) -> None:
        super().__init__()
        self.model = model
        self.bf16 = bf16

    def forward(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor,
        inverse: torch.Tensor,
        numeric: torch.Tensor,
        categorical: torch.Tensor,
    ) -> torch.Tensor:
        with autocast(hidden.device, self.bf16):
            pooled = self.model.pooled_from_lower(hidden, mask)
            return self.model.head(pooled[inverse], numeric, categorical).float()

def _forward_rows(
    step: torch.nn.Module,
    cache: LowerStateCache,
    text_ids: torch.Tensor,
    numeric: torch.Tensor,
    categorical: torch.Tensor,
    device: torch.device,
) -> torch.Tensor:
    """Logits for a batch of rows through `step` (RowLogits, or DDP around it); the top encoder
    layers run once per distinct text in the batch."""
    uniq, inverse = torch.unique(text_ids, return_inverse=True)
    hidden, mask = cache.gather(uniq, device)
    return step(hidden, mask, inverse.to(device), numeric.to(device), categorical.to(device))

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

def _eval_logits_sharded(
    model: RiskModel,
    cache: LowerStateCache,
    text_ids: torch.Tensor,
    numeric: torch.Tensor,
    categorical: torch.Tensor,
    device: torch.device,
    batch_size: int,
    bf16: bool,
    dinfo: DistInfo,
) -> np.ndarray:
    """``_eval_logits`` on this rank's contiguous share of the rows, gathered in row order."""
    sl = _shard_bounds(len(text_ids), dinfo)
    part = _eval_logits(model, cache, text_ids[sl], numeric[sl], categorical[sl], device, batch_size, bf16)
    return _gather_rows(part, dinfo)

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
    is one DDP rank (see the module docstring): every rank passes the same data and config, and
    only rank 0 writes `out_dir`.
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    y_tr = _labels(labels_train, len(train_frame), "labels_train")
    y_va = _labels(labels_val, len(val_frame), "labels_val")
    if y_tr.min() == y_tr.max():
        raise ValueError("training labels hold a single class; need frauds and legit rows")
    if len(val_frame) == 0:
        raise ValueError("validation frame is empty")

    dinfo = current_dist()
    world, rank = dinfo.world_size, dinfo.rank
    device = resolve_device(config.device)
    if dinfo.active and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())  # cuda:LOCAL_RANK (init_distributed)
    if dinfo.backend == "nccl" and device.type != "cuda":
        raise RuntimeError("the process group uses NCCL but training runs on CPU: use gloo for CPU")
    comm = _comm_device(dinfo, device)
    bf16 = device.type == "cuda" or config.cpu_bf16
    progress = config.progress and dinfo.is_main
    prev_threads = torch.get_num_threads()
    if device.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        # ranks on one machine share its cores
        torch.set_num_threads(config.num_threads or max(1, cores // max(dinfo.local_world_size, 1)))
    try:
        set_seed(config.seed)  # the same on every rank: same data sample, batch order, initial weights
        # the served catalogue: every text of the data, before legit rows are sampled away
        catalogue_texts = [*train_frame[TEXT_COLUMN].tolist(), *val_frame[TEXT_COLUMN].tolist()]
        train_frame, y_tr = downsample_legit(train_frame, y_tr, config.max_train_rows, config.seed)
        n_pos = float(y_tr.sum())
        n_neg = float(len(y_tr) - n_pos)
        pos_weight = (
            float(config.pos_weight) if config.pos_weight else min(n_neg / n_pos, config.pos_weight_cap)
        )

        byod_columns = {  # bring-your-own-data: the dataset's own columns instead of the schema's
            k: v for k, v in (("numeric_features", config.numeric_features),
                              ("categorical_vocabs", config.categorical_vocabs)) if v is not None
        }  # fmt: skip
        mcfg = ModelConfig(
            encoder=config.encoder, finetune_layers=config.finetune_layers, max_length=config.max_length,
            **byod_columns,
        )  # fmt: skip
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

        # start from the (weighted) base rate: the first steps need not learn it
        with torch.no_grad():
            prior = n_pos * pos_weight / (n_pos * pos_weight + n_neg)
            model.mlp[-1].bias.fill_(math.log(prior / (1 - prior)))

        step_module: torch.nn.Module = RowLogits(model, bf16)
        if dinfo.active:
            # DDP broadcasts rank 0's parameters and buffers (frozen ones included) on wrapping,
            # then all-reduces (averages) the gradients of the trainable ones in backward
            step_module = torch.nn.parallel.DistributedDataParallel(
                step_module,
                device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False,  # no buffer changes during training
            )

        t_cache = time.perf_counter()
        cache = LowerStateCache.build(
            model,
            tokenizer,
            [str(u) for u in uniques],
            config.max_length,
            device,
            progress=progress,
            dinfo=dinfo,
        )
        cache_seconds = time.perf_counter() - t_cache
        dist_note = (
            f"; DDP {world} ranks ({dinfo.backend}), global batch {config.batch_size * world}"
            if dinfo.active
            else ""
        )
        _info(
            config,
            f"train rows {len(train_frame):,} ({int(n_pos):,} fraud), val rows {len(val_frame):,} "
            f"({int(y_va.sum()):,} fraud); {len(cache):,} unique texts; frozen-layer states "
            f"({model.n_frozen} of {len(model.encoder_layers)} layers) cached in {cache_seconds:.1f}s, "
            f"{cache.nbytes / 2**20:.0f} MiB; device {device}; pos_weight {pos_weight:.2f}{dist_note}",
        )

        optimizer = torch.optim.AdamW(_param_groups(model, config))
        global_batch = config.batch_size * world
        steps_per_epoch = math.ceil(len(train_frame) / global_batch)
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
            step_module.train()
            # the same global batches on every rank (same generator state); each takes its rows
            batches = length_bucketed_batches(cache.lengths[tid_tr], global_batch, gen)
            bar = tqdm(
                total=steps_per_epoch,
                desc=f"epoch {epoch}/{config.epochs}",
                unit="step",
                disable=not progress,
                leave=False,
            )
            loss_sum, loss_n, ema = 0.0, 0, None
            for batch in batches:
                if config.max_steps and step >= config.max_steps:
                    break
                idx = shard_batch(batch, rank, world)
                logits = _forward_rows(step_module, cache, tid_tr[idx], num_tr[idx], cat_tr[idx], device)
                loss = loss_fn(logits, yt_tr[idx].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # DDP: gradients averaged over the ranks here
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
            if dinfo.active:  # the epoch's training loss over every rank's rows
                totals = torch.tensor([loss_sum, float(loss_n)], dtype=torch.float64, device=comm)
                dist.all_reduce(totals)
                loss_sum, loss_n = float(totals[0]), int(totals[1])
            train_seconds_epoch = time.perf_counter() - t_epoch
            train_cpu_seconds = time.process_time() - cpu_epoch

            val_logits = _eval_logits_sharded(
                model, cache, tid_va, num_va, cat_va, device, config.eval_batch_size, bf16, dinfo
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
            # early stopping on PR-AUC; without validation frauds fall back to the validation loss.
            # Rank 0 decides and broadcasts, so every rank keeps the same best epoch and stops together.
            score = val_pr if math.isfinite(val_pr) else -val_loss
            improved = score > best_score + 1e-6 or best_state is None
            stop = not improved and stale + 1 >= config.patience
            if dinfo.active:
                decision = torch.tensor([int(improved), int(stop)], dtype=torch.int64, device=comm)
                dist.broadcast(decision, src=0)
                improved, stop = bool(decision[0]), bool(decision[1])
            if improved:
                best_score, best_epoch, stale = score, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
                if stop:
                    _info(config, f"early stop: no better validation PR-AUC for {stale} epochs")
                    break
            if config.max_steps and step >= config.max_steps:
                break

        model.load_state_dict(best_state)
        model.eval()
        # explanation baseline: the mean pooled text embedding over the training rows
        serve_bf16 = device.type == "cuda"  # calibrate in the precision RiskScorer scores in
        counts_all = torch.bincount(tid_tr, minlength=len(cache))
        mine = torch.unique(tid_tr)[rank::world]  # each rank pools a share of the distinct texts
        uniq, pooled = _pooled_table(model, cache, mine, device, config.eval_batch_size, serve_bf16)
        counts = counts_all[uniq].to(pooled.device, pooled.dtype)
        totals = torch.cat([(pooled * counts.unsqueeze(1)).sum(0), counts.sum().reshape(1)])
        if dinfo.active:
            totals = totals.to(comm)
            dist.all_reduce(totals)
            dist.broadcast(totals, src=0)  # bit-identical on every rank, whatever the reduction order
            totals = totals.to(device)
        model.text_baseline.copy_(totals[:-1] / totals[-1])

        val_logits = _eval_logits_sharded(
            model, cache, tid_va, num_va, cat_va, device, config.eval_batch_size, serve_bf16, dinfo
        )
        calibration = fit_temperature(val_logits, y_va)

        digest = state_digest(model.state_dict())
        digests = [digest]
        if dinfo.active:
            gathered: list = [None] * world
            dist.all_gather_object(gathered, digest)
            digests = [str(d) for d in gathered]
            if len(set(digests)) != 1:
                raise RuntimeError(
                    f"DDP ranks ended with different weights (state_dict SHA-256 by rank: {digests})"
                )

        if dinfo.is_main:
            scorer = RiskScorer(model, tokenizer, normalizer, calibration, device=device)
            scorer.remember_frequent_texts(catalogue_texts)
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
            world_size=world,
            rank=rank,
            backend=dinfo.backend,
            state_sha256=digest,
            rank_state_sha256=digests,
        )
        if dinfo.is_main:
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
    """Log a progress line; only rank 0 logs in a distributed run."""
    if not current_dist().is_main:
        return
    log.info(line)
    if config.progress and not log.isEnabledFor(logging.INFO):
        tqdm.write(line)

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
    from riskops.schema import LABEL_COLUMN

    if LABEL_COLUMN not in df.columns:
        raise KeyError(f"training set lacks the label column {LABEL_COLUMN!r}")
    train, val, _test = time_split(df, test_fraction, val_fraction, recent_from=recent_from or None)
    return train_model(
        build_model_frame(train),
        build_model_frame(val),
        train[LABEL_COLUMN].to_numpy(),
        val[LABEL_COLUMN].to_numpy(),
        config,
        Path(out_dir),
    )

def resolve_uri(uri: str):
    """(pyarrow filesystem, path) for a local path or a URI (s3://, gs://, file://, ...).

    Credentials come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for S3).
    pyarrow's S3 client does not read AWS_ENDPOINT_URL(_S3) (apache/arrow#49643), so for an
    S3-compatible store such as MinIO the endpoint is passed on explicitly.
    """
    from pyarrow import fs as pafs

    if "://" not in uri:
        return pafs.LocalFileSystem(), str(Path(uri).resolve())
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if uri.startswith("s3://") and endpoint:
        scheme, _, host = endpoint.rstrip("/").partition("://")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        s3 = pafs.S3FileSystem(endpoint_override=host, scheme=scheme, region=region)
        return s3, uri[len("s3://") :]
    return pafs.FileSystem.from_uri(uri)

def read_training_set(uri: str) -> pd.DataFrame:
    filesystem, path = resolve_uri(uri)
    return pd.read_parquet(path, filesystem=filesystem)

def upload_model_dir(model_dir: Path, uri: str) -> str:
    """Copy the model folder's files under `uri` (see resolve_uri); returns `uri`."""
    from pyarrow import fs as pafs

    filesystem, path = resolve_uri(uri)
    filesystem.create_dir(path, recursive=True)
    pafs.copy_files(str(Path(model_dir).resolve()), path, destination_filesystem=filesystem)
    return uri

def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m riskops.training.finetune",
        description="Fine-tune the risk model on a training set (the pipeline's features step output). "
        "With --distributed, run one DDP rank per process under torchrun or a Kubeflow PyTorchJob "
        "(NCCL on GPU, gloo on CPU); only rank 0 writes the model.",
    )
    p.add_argument(
        "--training_set",
        required=True,
        help="parquet of transactions + entity features: a path or a URI pyarrow opens (s3://, gs://, file://)",
    )
    p.add_argument("--model_dir", required=True, help="local folder rank 0 writes the model to")
    p.add_argument(
        "--output_uri",
        default="",
        help="also copy the model folder there after training (rank 0), e.g. s3://bucket/prefix/",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="join the torch.distributed group from RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT",
    )
    p.add_argument(
        "--encoder",
        choices=("minilm", "tiny"),
        default=d.encoder,
        help="minilm (pretrained all-MiniLM-L6-v2) or tiny (random, tests)",
    )
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch_size", type=int, default=d.batch_size, help="rows per step per process")
    p.add_argument("--max_steps", type=int, default=0, help="stop after N optimiser steps (0 = no limit)")
    p.add_argument("--finetune_layers", type=int, default=d.finetune_layers)
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--max_train_rows",
        type=int,
        default=0,
        help="every fraud plus sampled legit rows up to N (0 = all rows)",
    )
    p.add_argument("--test_fraction", type=float, default=0.2, help="newest share left for evaluation")
    p.add_argument("--val_fraction", type=float, default=0.15, help="share before it for early stopping")
    p.add_argument("--recent_from", default="", help="rows at or after this time all train (retraining window)")
    p.add_argument("--device", default=d.device, help="auto (CUDA if available), cpu or cuda")
    p.add_argument(
        "--num_threads", type=int, default=0, help="CPU threads per process (0 = cores / local ranks)"
    )
    p.add_argument("--progress", action="store_true", help="tqdm bars (rank 0)")
    return p

def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dinfo = DistInfo()
    if args.distributed:
        try:
            dinfo = init_distributed(args.device)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    logging.basicConfig(
        level=logging.INFO if dinfo.is_main else logging.WARNING,
        format=f"%(asctime)s rank {dinfo.rank}/{dinfo.world_size} %(name)s %(message)s",
    )
    try:
        config = TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            encoder=args.encoder,
            max_steps=args.max_steps or None,
            finetune_layers=args.finetune_layers,
            patience=args.patience,
            seed=args.seed,
            max_train_rows=args.max_train_rows or None,
            device=args.device,
            num_threads=args.num_threads or None,
            progress=args.progress,
        )
        frame = read_training_set(args.training_set)
        result = train_from_training_set(
            frame, Path(args.model_dir), config, args.test_fraction, args.val_fraction, args.recent_from
        )
        if dinfo.is_main:
            uploaded = upload_model_dir(result.model_dir, args.output_uri) if args.output_uri else ""
            summary = {
                "model_dir": str(result.model_dir),
                "output_uri": uploaded,
                "world_size": result.world_size,
                "backend": result.backend,
                "device": result.device,
                "best_epoch": result.best_epoch,
                "val_pr_auc": result.val_pr_auc,
                "train_seconds": round(result.train_seconds, 2),
                "state_sha256": result.state_sha256,
            }
            print(json.dumps(summary), flush=True)
    finally:
        shutdown_distributed()
    return 0

if __name__ == "__main__":
    sys.exit(main())
