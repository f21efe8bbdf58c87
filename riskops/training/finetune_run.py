"""One fine-tuning run in named steps (riskops.training.finetune.train_model drives it).

:class:`Placement` says where this process trains (rank, device, bf16); :class:`FineTuningRun`
prepares the model, the row tensors and the frozen-layer cache, then :meth:`FineTuningRun.fit`
trains epoch by epoch with early stopping and :meth:`FineTuningRun.finish` sets the explanation
baseline, fits the calibration and checks that every DDP rank ended with the same weights.
The loss, optimiser groups and regularisation are described in riskops.training.finetune.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from sklearn.metrics import average_precision_score, roc_auc_score
from tqdm.auto import tqdm

from riskops.features.contract import TEXT_COLUMN
from riskops.features.sequences import has_sequence_columns
from riskops.training.distributed import DistInfo, comm_device, current_dist, shard_batch, state_digest
from riskops.training.model import (
    ModelConfig,
    RiskModel,
    base_tokenizer,
    categorical_indices,
    resolve_device,
    sequence_matrix,
)
from riskops.training.scaling import Normalizer, fit_temperature
from riskops.training.text_cache import (
    LowerStateCache,
    RowLogits,
    eval_logits_sharded,
    forward_rows,
    length_bucketed_batches,
    pooled_table,
)

log = logging.getLogger(__name__)


def loss_function(pos_weight: float, gamma: float):
    """The training loss of [B] or [B, members] logits against [B] labels: each member's own
    loss, averaged (members learn independently, as in a deep ensemble)."""

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if logits.dim() == 2:
            y = y.unsqueeze(-1).expand_as(logits)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
        if gamma > 0:
            p = torch.sigmoid(logits)
            p_t = p * y + (1 - p) * (1 - y)
            bce = bce * (1 - p_t).pow(gamma)
        weight = 1.0 + (pos_weight - 1.0) * y
        return (weight * bce).mean()

    return loss


def param_groups(model: RiskModel, config) -> list[dict]:
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


def safe_metric(fn, y: np.ndarray, s: np.ndarray) -> float:
    if len(y) == 0 or y.min() == y.max():
        return float("nan")
    return float(fn(y, s))


def log_progress(config, line: str) -> None:
    """Log a progress line; only rank 0 logs in a distributed run."""
    if not current_dist().is_main:
        return
    log.info(line)
    if config.progress and not log.isEnabledFor(logging.INFO):
        tqdm.write(line)


@dataclass(frozen=True)
class Placement:
    """Where this process trains: its rank in the process group, its device, bf16 or not."""

    dinfo: DistInfo
    device: torch.device
    comm: torch.device  # where tensors go for collectives (NCCL: the GPU; gloo: the CPU)
    bf16: bool
    progress: bool

    @classmethod
    def current(cls, config) -> Placement:
        """Where this process trains ``config`` (a riskops.training.finetune.TrainConfig)."""
        dinfo = current_dist()
        device = resolve_device(config.device)
        if dinfo.active and device.type == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())  # cuda:LOCAL_RANK (init_distributed)
        if dinfo.backend == "nccl" and device.type != "cuda":
            raise RuntimeError("the process group uses NCCL but training runs on CPU: use gloo for CPU")
        bf16 = device.type == "cuda" or config.cpu_bf16
        return cls(dinfo, device, comm_device(dinfo, device), bf16, config.progress and dinfo.is_main)


class FineTuningRun:
    """One fine-tuning run in named steps: prepare (model, row tensors, frozen-layer cache), then
    :meth:`fit` (epochs with early stopping) and :meth:`finish` (explanation baseline, calibration,
    weights checked equal across ranks). The steps run in this order on every rank."""

    def __init__(self, config, place: Placement, train_frame, val_frame, y_tr, y_va) -> None:
        self.config, self.place = config, place
        self.y_va = y_va
        n_pos = float(y_tr.sum())
        n_neg = float(len(y_tr) - n_pos)
        self.pos_weight = (
            float(config.pos_weight) if config.pos_weight else min(n_neg / n_pos, config.pos_weight_cap)
        )
        self._build_model(train_frame)
        uniques = self._encode_rows(train_frame, val_frame, y_tr)
        # start from the (weighted) base rate: the first steps need not learn it
        with torch.no_grad():
            prior = n_pos * self.pos_weight / (n_pos * self.pos_weight + n_neg)
            for member in self.model.members:
                member.mlp[-1].bias.fill_(math.log(prior / (1 - prior)))
        self.step_module = self._step_module()
        t_cache = time.perf_counter()
        self.cache = LowerStateCache.build(
            self.model,
            self.tokenizer,
            [str(u) for u in uniques],
            config.max_length,
            place.device,
            progress=place.progress,
            dinfo=place.dinfo,
        )
        self.cache_seconds = time.perf_counter() - t_cache
        world = place.dinfo.world_size
        dist_note = (
            f"; DDP {world} ranks ({place.dinfo.backend}), global batch {config.batch_size * world}"
            if place.dinfo.active
            else ""
        )
        log_progress(
            config,
            f"train rows {len(train_frame):,} ({int(n_pos):,} fraud), val rows {len(val_frame):,} "
            f"({int(y_va.sum()):,} fraud); {len(self.cache):,} unique texts; frozen-layer states "
            f"({self.model.n_frozen} of {len(self.model.encoder_layers)} layers) cached in "
            f"{self.cache_seconds:.1f}s, {self.cache.nbytes / 2**20:.0f} MiB; device {place.device}; "
            f"pos_weight {self.pos_weight:.2f}{dist_note}",
        )
        self.final_val_logits = np.zeros(0)

    def _build_model(self, train_frame: pd.DataFrame) -> None:
        config = self.config
        byod_columns = {  # bring-your-own-data: the dataset's own columns instead of the schema's
            k: v for k, v in (("numeric_features", config.numeric_features),
                              ("categorical_vocabs", config.categorical_vocabs)) if v is not None
        }  # fmt: skip
        # a frame without history tokens (data with no user entity) trains the tabular + text model
        sequence = bool(config.sequence) and has_sequence_columns(train_frame.columns)
        if config.sequence and not sequence:
            log_progress(config, "no behaviour-sequence columns in the training frame: the model reads no history")
        self.mcfg = ModelConfig(
            encoder=config.encoder, finetune_layers=config.finetune_layers, max_length=config.max_length,
            numeric_embedding=config.numeric_embedding, sequence=sequence, tabular=config.tabular,
            members=config.members,
            **byod_columns, **config.model,
        )  # fmt: skip
        self.model = RiskModel.build(self.mcfg).to(self.place.device)
        self.tokenizer = base_tokenizer()
        self.normalizer = Normalizer.fit(train_frame, self.mcfg.numeric_features)

    def _encode_rows(
        self, train_frame: pd.DataFrame, val_frame: pd.DataFrame, y_tr: np.ndarray
    ) -> np.ndarray:
        """Numeric, categorical and text-id tensors of both parts; returns the distinct texts."""
        vocabs = self.mcfg.categorical_vocabs
        self.num_tr = torch.from_numpy(self.normalizer.transform(train_frame))
        self.num_va = torch.from_numpy(self.normalizer.transform(val_frame))
        self.cat_tr = torch.from_numpy(categorical_indices(train_frame, vocabs))
        self.cat_va = torch.from_numpy(categorical_indices(val_frame, vocabs))
        self.seq_tr = self.seq_va = None
        if self.mcfg.sequence:
            self.seq_tr = torch.from_numpy(sequence_matrix(train_frame))
            self.seq_va = torch.from_numpy(sequence_matrix(val_frame))
        texts = np.concatenate(
            [train_frame[TEXT_COLUMN].to_numpy(dtype=object), val_frame[TEXT_COLUMN].to_numpy(dtype=object)]
        )
        codes, uniques = pd.factorize(texts, use_na_sentinel=False)
        self.tid_tr = torch.from_numpy(codes[: len(train_frame)].astype(np.int64))
        self.tid_va = torch.from_numpy(codes[len(train_frame) :].astype(np.int64))
        self.yt_tr = torch.from_numpy(y_tr)
        return uniques

    def _step_module(self) -> torch.nn.Module:
        step_module: torch.nn.Module = RowLogits(self.model, self.place.bf16)
        if self.place.dinfo.active:
            # DDP broadcasts rank 0's parameters and buffers (frozen ones included) on wrapping,
            # then all-reduces (averages) the gradients of the trainable ones in backward
            device = self.place.device
            step_module = torch.nn.parallel.DistributedDataParallel(
                step_module,
                device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False,  # no buffer changes during training
            )
        return step_module

    def fit(self) -> tuple[list[dict], int]:
        """Train epoch by epoch until ``config.epochs``, ``max_steps`` or early stopping; load the
        best epoch's weights. Returns (history, best epoch)."""
        config = self.config
        optimizer = torch.optim.AdamW(param_groups(self.model, config))
        self.global_batch = config.batch_size * self.place.dinfo.world_size
        self.steps_per_epoch = math.ceil(len(self.tid_tr) / self.global_batch)
        total_steps = config.epochs * self.steps_per_epoch
        if config.max_steps:
            total_steps = min(total_steps, config.max_steps)
        warmup = max(1, int(config.warmup_fraction * total_steps))

        def lr_factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.1, 1.0 - 0.9 * (step - warmup) / max(1, total_steps - warmup))

        self.optimizer, self.lr_factor = optimizer, lr_factor
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        self.loss_fn = loss_function(self.pos_weight, config.focal_gamma)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        history: list[dict] = []
        best_score, best_epoch, best_state, stale = -math.inf, 0, None, 0
        for epoch in range(1, config.epochs + 1):
            record = self._train_epoch(epoch)
            history.append(record)
            # early stopping on PR-AUC; without validation frauds fall back to the validation loss.
            # Rank 0 decides and broadcasts, so every rank keeps the same best epoch and stops together.
            score = record["val_pr_auc"] if math.isfinite(record["val_pr_auc"]) else -record["val_loss"]
            improved = score > best_score + 1e-6 or best_state is None
            stop = not improved and stale + 1 >= config.patience
            if self.place.dinfo.active:
                decision = torch.tensor([int(improved), int(stop)], dtype=torch.int64, device=self.place.comm)
                dist.broadcast(decision, src=0)
                improved, stop = bool(decision[0]), bool(decision[1])
            if improved:
                best_score, best_epoch, stale = score, epoch, 0
                best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            else:
                stale += 1
                if stop:
                    log_progress(config, f"early stop: no better validation PR-AUC for {stale} epochs")
                    break
            if config.max_steps and self.step >= config.max_steps:
                break
        self.model.load_state_dict(best_state)
        self.model.eval()
        return history, best_epoch

    def _train_epoch(self, epoch: int) -> dict:
        """One pass over the training rows (or up to ``max_steps``), then validation; the epoch's record."""
        config, place = self.config, self.place
        rank, world = place.dinfo.rank, place.dinfo.world_size
        t_epoch, cpu_epoch = time.perf_counter(), time.process_time()
        self.step_module.train()
        # the same global batches on every rank (same generator state); each takes its rows
        batches = length_bucketed_batches(self.cache.lengths[self.tid_tr], self.global_batch, self.generator)
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {epoch}/{config.epochs}",
            unit="step",
            disable=not place.progress,
            leave=False,
        )
        loss_sum, loss_n, ema = 0.0, 0, None
        for batch in batches:
            if config.max_steps and self.step >= config.max_steps:
                break
            idx = shard_batch(batch, rank, world)
            logits = forward_rows(
                self.step_module,
                self.cache,
                self.tid_tr[idx],
                self.num_tr[idx],
                self.cat_tr[idx],
                place.device,
                None if self.seq_tr is None else self.seq_tr[idx],
            )
            loss = self.loss_fn(logits, self.yt_tr[idx].to(place.device))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # DDP: gradients averaged over the ranks here
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            value = float(loss.detach())
            loss_sum += value * len(idx)
            loss_n += len(idx)
            ema = value if ema is None else 0.95 * ema + 0.05 * value
            bar.set_postfix(loss=f"{ema:.4f}")
            bar.update()
        bar.close()
        if place.dinfo.active:  # the epoch's training loss over every rank's rows
            totals = torch.tensor([loss_sum, float(loss_n)], dtype=torch.float64, device=place.comm)
            dist.all_reduce(totals)
            loss_sum, loss_n = float(totals[0]), int(totals[1])
        train_seconds_epoch = time.perf_counter() - t_epoch
        train_cpu_seconds = time.process_time() - cpu_epoch
        return self._validate(
            epoch, loss_sum / max(loss_n, 1), t_epoch, train_seconds_epoch, train_cpu_seconds
        )

    def _validate(self, epoch: int, train_loss: float, t_epoch: float, train_s: float, cpu_s: float) -> dict:
        config, y_va = self.config, self.y_va
        val_logits = self._val_logits(self.place.bf16)
        val_loss = float(
            torch.nn.functional.binary_cross_entropy_with_logits(
                torch.from_numpy(val_logits), torch.from_numpy(y_va.astype(np.float64))
            )
        )
        val_pr = safe_metric(average_precision_score, y_va, val_logits)
        record = {
            "epoch": epoch,
            "steps": self.step,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_pr_auc": val_pr,
            "val_roc_auc": safe_metric(roc_auc_score, y_va, val_logits),
            "lr_factor": self.lr_factor(max(self.step - 1, 0)),
            "train_seconds": train_s,
            "train_cpu_seconds": cpu_s,  # all threads; wall >> cpu/threads = a busy machine
            "seconds": time.perf_counter() - t_epoch,
        }
        log_progress(
            config,
            f"epoch {epoch}/{config.epochs}: train_loss {train_loss:.4f} val_loss {val_loss:.4f} "
            f"val_pr_auc {val_pr:.4f} val_roc_auc {record['val_roc_auc']:.4f} "
            f"({train_s:.1f}s train, {record['seconds']:.1f}s total, {self.step} steps)",
        )
        return record

    def _val_logits(self, bf16: bool) -> np.ndarray:
        return eval_logits_sharded(
            self.model, self.cache, self.tid_va, self.num_va, self.cat_va, self.place.device,
            self.config.eval_batch_size, bf16, self.place.dinfo, self.seq_va,
        )  # fmt: skip

    def finish(self):
        """Explanation baseline, calibration on validation, and every rank's weight digest.

        Returns:
            (calibration, SHA-256 of the final state_dict per rank, rank order); raises when
            the ranks' weights differ.
        """
        model, cache, place = self.model, self.cache, self.place
        rank, world = place.dinfo.rank, place.dinfo.world_size
        # explanation baseline: the mean pooled text embedding over the training rows
        serve_bf16 = place.device.type == "cuda"  # calibrate in the precision RiskScorer scores in
        counts_all = torch.bincount(self.tid_tr, minlength=len(cache))
        mine = torch.unique(self.tid_tr)[rank::world]  # each rank pools a share of the distinct texts
        uniq, pooled = pooled_table(model, cache, mine, place.device, self.config.eval_batch_size, serve_bf16)
        counts = counts_all[uniq].to(pooled.device, pooled.dtype)
        totals = torch.cat([(pooled * counts.unsqueeze(1)).sum(0), counts.sum().reshape(1)])
        if place.dinfo.active:
            totals = totals.to(place.comm)
            dist.all_reduce(totals)
            dist.broadcast(totals, src=0)  # bit-identical on every rank, whatever the reduction order
            totals = totals.to(place.device)
        model.text_baseline.copy_(totals[:-1] / totals[-1])

        self.final_val_logits = self._val_logits(serve_bf16)
        calibration = fit_temperature(self.final_val_logits, self.y_va)

        digests = [state_digest(model.state_dict())]
        if place.dinfo.active:
            gathered: list = [None] * world
            dist.all_gather_object(gathered, digests[0])
            digests = [str(d) for d in gathered]
            if len(set(digests)) != 1:
                raise RuntimeError(
                    f"DDP ranks ended with different weights (state_dict SHA-256 by rank: {digests})"
                )
        return calibration, digests
