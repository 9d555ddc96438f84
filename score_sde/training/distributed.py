"""Multi-process training and evaluation under ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node=N -m score_sde train ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`init_distributed` joins the process group
(``gloo`` on CPU, ``nccl`` on GPU). Training: each global batch is cut into contiguous shards, one
per rank (and accumulation step), and DDP averages the gradients, so every rank holds identical
parameters after every step. Only rank 0 writes checkpoints, metrics and images. ``sample`` and
``likelihood`` give each rank a contiguous slice of the work (:func:`shard_range`) and
:func:`gather_cat` puts the slices back together in order.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto", timeout_s: float = 600.0) -> DistContext:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); else a single process.

    The backend is ``nccl`` when the run uses CUDA and ``gloo`` otherwise. On GPU each process
    takes the device ``cuda:LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(rank=rank, world_size=world, local_rank=local, backend=backend)


def cleanup(ctx: DistContext) -> None:
    """Leave the process group (no-op for a single process)."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def shard_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous slice [start, end) of n items that ``rank`` handles (sizes differ by <= 1)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard_indices(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """DistributedSampler-style interleaved shard ``indices[rank::world_size]``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    return indices[rank::world_size]


def all_reduce_mean(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The mean of ``x`` over ranks (returned on every rank)."""
    if not ctx.distributed:
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / ctx.world_size


def gather_cat(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate every rank's ``x`` (shape [n_rank, ...], n_rank may differ) in rank order.

    Every rank receives the whole result.
    """
    if not ctx.distributed:
        return x
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.int64)
    sizes = [torch.zeros_like(n) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, n)
    sizes = torch.cat(sizes).tolist()  # one device sync, not one per rank
    m = max(sizes)
    padded = torch.zeros((m, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])


def wrap_ddp(module: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """Wrap ``module`` in DistributedDataParallel (identity for a single process)."""
    if not ctx.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    dev = next(module.parameters()).device
    return DDP(module, device_ids=[dev.index] if dev.type == "cuda" else None, broadcast_buffers=False)


__all__ = [
    "DistContext",
    "init_distributed",
    "cleanup",
    "barrier",
    "shard_range",
    "shard_indices",
    "all_reduce_mean",
    "gather_cat",
    "wrap_ddp",
]
