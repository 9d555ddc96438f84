"""Shared helpers: broadcasting, input validation, random draws.

Every function in the package is rank-agnostic: data has shape ``[B, ...]`` (``[B]``,
``[B, D]``, ``[B, C, H, W]``) and per-sample scalars such as times have shape ``[B]``.
:func:`bcast` is the one place where a ``[B]`` vector is lifted to the rank of the data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

Generator = torch.Generator | Sequence[torch.Generator] | None


def bcast(v: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector ``v`` of shape ``[B]`` (or a scalar) to ``[B, 1, ..., 1]``.

    The result broadcasts against ``x`` of shape ``[B, ...]`` whatever the rank of ``x``.
    """
    if not torch.is_tensor(v):
        return torch.as_tensor(v, dtype=x.dtype, device=x.device)
    if v.ndim == 0:
        return v
    return v.reshape(v.shape[0], *([1] * (x.ndim - 1)))


def as_time(t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Return times as a ``[B]`` tensor in the dtype/device of ``x`` (a scalar is expanded).

    Raises ``ValueError`` when a vector of times has a batch size different from ``x``.
    """
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t.expand(x.shape[0])
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"t must be a scalar or have shape [B] = [{x.shape[0]}] to match x of shape "
            f"{tuple(x.shape)}; got t of shape {tuple(t.shape)}"
        )
    return t


def check_time(t: torch.Tensor | float, T: float, name: str = "t", lo: float = 0.0) -> None:
    """Raise ``ValueError`` naming the offending value when any time lies outside ``[lo, T]``."""
    tt = torch.as_tensor(t)
    if tt.numel() == 0:
        return
    if not torch.isfinite(tt).all():
        raise ValueError(f"{name} must be finite; got {tt.flatten()[~torch.isfinite(tt.flatten())][0].item()}")
    tmin, tmax = tt.min().item(), tt.max().item()
    if tmin < lo - 1e-12 or tmax > T + 1e-12:
        bad = tmin if tmin < lo - 1e-12 else tmax
        raise ValueError(f"{name} must lie in [{lo}, {T}]; got {name} = {bad!r}")


def check_finite(x: torch.Tensor, name: str = "x") -> None:
    """Raise ``ValueError`` when ``x`` holds NaN or infinity, naming one offending entry."""
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if not torch.isfinite(x).all():
        idx = (~torch.isfinite(x)).nonzero()[0].tolist()
        raise ValueError(f"{name} must be finite; {name}{idx} = {x[tuple(idx)].item()}")


def check_same_batch(**tensors: torch.Tensor) -> None:
    """Raise ``ValueError`` when the given tensors do not share their first (batch) dimension."""
    sizes = {k: v.shape[0] for k, v in tensors.items() if torch.is_tensor(v) and v.ndim > 0}
    if len(set(sizes.values())) > 1:
        desc = ", ".join(f"{k} has batch size {b}" for k, b in sizes.items())
        raise ValueError(f"batch sizes differ: {desc}")


def flat_dim(x: torch.Tensor) -> int:
    """Number of non-batch entries D of ``x`` of shape ``[B, ...]``."""
    return int(math.prod(x.shape[1:]))


def randn_like(x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Standard normal draws shaped like ``x``.

    ``generator`` may be ``None`` (torch's global RNG), one ``torch.Generator``, or a sequence of
    ``B`` generators, one per sample, so that a sample's noise does not depend on the batch around
    it (per-sample seeds).
    """
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    gens = list(generator)
    if len(gens) != x.shape[0]:
        raise ValueError(f"got {len(gens)} per-sample generators for a batch of {x.shape[0]}")
    return torch.cat([torch.randn((1, *x.shape[1:]), generator=g, dtype=x.dtype, device=x.device) for g in gens])


def randn(shape: Sequence[int], generator: Generator = None, dtype=None, device=None) -> torch.Tensor:
    """Standard normal draws of ``shape``; see :func:`randn_like` for ``generator``."""
    ref = torch.empty(tuple(shape), dtype=dtype or torch.get_default_dtype(), device=device)
    return randn_like(ref, generator)


def per_sample_generators(seeds: Sequence[int], device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One seeded ``torch.Generator`` per sample (pass as ``generator=`` for batch-invariant noise)."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
