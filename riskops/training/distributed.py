"""Distributed data parallel training with torch.distributed: the process group and its helpers.

Distributed data parallel (``python -m riskops.training.train_job --distributed ...`` under ``torchrun`` or
a Kubeflow PyTorchJob): ``init_distributed`` joins the process group from the standard
environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK), NCCL on CUDA and gloo on
CPU, and ``riskops.training.finetune.train_model`` sees the initialised group and runs as one of ``world_size`` ranks:

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

import hashlib
import math
import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from riskops.training.model import (
    resolve_device,
)


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
            "launch with torchrun (e.g. torchrun --nproc-per-node 2 -m riskops.training.train_job --distributed ...) "
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


def comm_device(dinfo: DistInfo, device: torch.device) -> torch.device:
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


def gather_rows(part: np.ndarray, dinfo: DistInfo) -> np.ndarray:
    """Concatenate every rank's `part`, in rank order (all ranks get the result)."""
    if dinfo.world_size == 1:
        return part
    parts: list = [None] * dinfo.world_size
    dist.all_gather_object(parts, part)
    return np.concatenate(parts)


def shard_bounds(n: int, dinfo: DistInfo) -> slice:
    edges = np.linspace(0, n, dinfo.world_size + 1).astype(int)
    return slice(int(edges[dinfo.rank]), int(edges[dinfo.rank + 1]))
