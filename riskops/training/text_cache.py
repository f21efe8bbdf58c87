"""The frozen-layer cache of the text encoder and the forward passes that read it.

Speed (2 CPU cores): the embeddings and the lower encoder layers are frozen, so their output
depends only on the text. ``LowerStateCache`` runs them once (no_grad) per *unique* text and
keeps the hidden states (instead of once per row per epoch); each training step looks the batch's
states up by index, runs only the top ``finetune_layers`` layers (once per distinct text in the
batch) and the head. Frozen layers never use dropout (RiskModel keeps them in eval mode), so this
is the same function as running the full encoder (checked in tests/unit/test_train.py). Batches group
texts of similar length (``length_bucketed_batches``) to spend less compute on padding. The cache
holds unique_texts x longest_text x 384 fp32 values (~1.5 GB for 20k distinct ~45-token texts;
the training log prints its size). Cost on 2 cores is dominated by the top layers' forward and
backward (~0.7 CPU-seconds per 64-row step with 2 MiniLM layers): ``max_train_rows``,
``finetune_layers=1`` or ``cpu_bf16`` trade accuracy for time.
"""

from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from riskops.training.distributed import DistInfo, comm_device, gather_rows, shard_bounds
from riskops.training.model import (
    RiskModel,
    autocast,
)


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
            comm = comm_device(dinfo, device)
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


def pooled_embeddings(
    model: RiskModel, cache: LowerStateCache, text_ids: torch.Tensor, device: torch.device, bf16: bool
) -> torch.Tensor:
    hidden, mask = cache.gather(text_ids, device)
    with autocast(device, bf16):
        return model.pooled_from_lower(hidden, mask)


class RowLogits(torch.nn.Module):
    """The training forward as one module (what DDP wraps): cached lower states of a batch's
    distinct texts -> trainable top layers + mean pooling -> head, [rows, members] logits (float32)."""

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
        sequence: torch.Tensor | None = None,
    ) -> torch.Tensor:
        with autocast(hidden.device, self.bf16):
            pooled = self.model.pooled_from_lower(hidden, mask)
            return self.model.member_logits(pooled[inverse], numeric, categorical, sequence).float()


def forward_rows(
    step: torch.nn.Module,
    cache: LowerStateCache,
    text_ids: torch.Tensor,
    numeric: torch.Tensor,
    categorical: torch.Tensor,
    device: torch.device,
    sequence: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits for a batch of rows through `step` (RowLogits, or DDP around it); the top encoder
    layers run once per distinct text in the batch."""
    uniq, inverse = torch.unique(text_ids, return_inverse=True)
    hidden, mask = cache.gather(uniq, device)
    seq = None if sequence is None else sequence.to(device)
    return step(hidden, mask, inverse.to(device), numeric.to(device), categorical.to(device), seq)


@torch.no_grad()
def pooled_table(
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
        pooled_embeddings(model, cache, uniq[s : s + batch_size], device, bf16).float()
        for s in range(0, len(uniq), batch_size)
    ]
    hidden = model.encoder.config.hidden_size
    pooled = torch.cat(parts) if parts else torch.zeros((0, hidden), device=device)
    return uniq, pooled


@torch.no_grad()
def eval_logits(
    model: RiskModel,
    cache: LowerStateCache,
    text_ids: torch.Tensor,
    numeric: torch.Tensor,
    categorical: torch.Tensor,
    device: torch.device,
    batch_size: int,
    bf16: bool,
    sequence: torch.Tensor | None = None,
) -> np.ndarray:
    was_training = model.training
    model.eval()
    uniq, pooled = pooled_table(model, cache, text_ids, device, batch_size, bf16)
    lookup = torch.full((len(cache),), -1, dtype=torch.long)
    lookup[uniq] = torch.arange(len(uniq))
    rows = lookup[text_ids]
    out = []
    for s in range(0, len(text_ids), batch_size):
        sl = slice(s, s + batch_size)
        seq = None if sequence is None else sequence[sl].to(device)
        with autocast(device, bf16):
            z = model.head(pooled[rows[sl].to(device)], numeric[sl].to(device), categorical[sl].to(device), seq)
        out.append(z.float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def eval_logits_sharded(
    model: RiskModel,
    cache: LowerStateCache,
    text_ids: torch.Tensor,
    numeric: torch.Tensor,
    categorical: torch.Tensor,
    device: torch.device,
    batch_size: int,
    bf16: bool,
    dinfo: DistInfo,
    sequence: torch.Tensor | None = None,
) -> np.ndarray:
    """``_eval_logits`` on this rank's contiguous share of the rows, gathered in row order."""
    sl = shard_bounds(len(text_ids), dinfo)
    seq = None if sequence is None else sequence[sl]
    part = eval_logits(model, cache, text_ids[sl], numeric[sl], categorical[sl], device, batch_size, bf16, seq)
    return gather_rows(part, dinfo)
