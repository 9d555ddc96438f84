"""The explicit map between discrete data and the model's continuous space, for bits/dim.

Discrete data takes one of ``K`` levels ``n in {0, ..., K-1}`` per dimension (K = 256 for 8-bit
images). Uniform dequantization (Theis et al. 2016; Song et al. 2021, App. D.2) turns it into
continuous data on the unit cube,

    y = (n + u) / K,        u ~ U[0, 1)^D,

and an affine map puts it into the space the score model was trained on,

    x = a y + b          (a = 2, b = -1: [-1, 1], "centered"; a = 1, b = 0: [0, 1]).

By Jensen's inequality the discrete log-likelihood is bounded below by the continuous one,
``log P(n) >= E_u[log p_y(y)] - D log K``, and ``p_y(y) = a^D p_x(x)``. In bits per dimension

    bpd = -log p_x(x) / (D ln 2) - log2 a + log2 K,                                 (1)

an upper bound on -log2 P(n) / D. For K = 256 the constant ``log2 K - log2 a`` is 7 on [-1, 1] and 8
on [0, 1]: the official code's "offset" of 7 (or 8), written out here instead of hard-coded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .utils import Generator


@dataclass(frozen=True)
class DataScaling:
    """``K`` quantization levels and the affine map ``x = scale * y + shift`` from ``y in [0, 1]``.

    Args:
        levels: number of levels K per dimension (256 for 8-bit data).
        scale: a > 0, the width of the model-space interval.
        shift: b, the model-space image of y = 0.

    Use :meth:`centered` for data on [-1, 1] and :meth:`unit` for data on [0, 1].
    """

    levels: int
    scale: float
    shift: float

    def __post_init__(self):
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 2:
            raise ValueError(f"levels must be an integer >= 2; got levels = {self.levels!r}")
        if not (isinstance(self.scale, (int, float)) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a positive finite number; got scale = {self.scale!r}")
        if not (isinstance(self.shift, (int, float)) and math.isfinite(self.shift)):
            raise ValueError(f"shift must be a finite number; got shift = {self.shift!r}")

    @classmethod
    def centered(cls, levels: int = 256) -> DataScaling:
        """Data on [-1, 1]: x = 2 y - 1 (the official "centered" setting)."""
        return cls(levels, 2.0, -1.0)

    @classmethod
    def unit(cls, levels: int = 256) -> DataScaling:
        """Data on [0, 1]: x = y."""
        return cls(levels, 1.0, 0.0)

    @classmethod
    def from_range(cls, low: float, high: float, levels: int = 256) -> DataScaling:
        """Data on [low, high]: x = (high - low) y + low."""
        return cls(levels, float(high) - float(low), float(low))

    # ---- maps ---------------------------------------------------------------------------------
    def to_model(self, y: torch.Tensor) -> torch.Tensor:
        """x = a y + b."""
        return self.scale * y + self.shift

    def from_model(self, x: torch.Tensor) -> torch.Tensor:
        """y = (x - b) / a."""
        return (x - self.shift) / self.scale

    def quantize(self, y: torch.Tensor) -> torch.Tensor:
        """Levels n = round(y (K - 1)) of data stored as ``n / (K - 1)`` on [0, 1] (e.g. torchvision's
        ``ToTensor``), as int64; shape like ``y``."""
        if not torch.is_tensor(y):
            raise TypeError(f"y must be a torch.Tensor; got {type(y).__name__}")
        if not torch.isfinite(y).all() or y.min() < 0 or y.max() > 1:
            raise ValueError(f"y must lie in [0, 1]; got values in [{y.min().item()}, {y.max().item()}]")
        return torch.round(y * (self.levels - 1)).long()

    def check_levels(self, n: torch.Tensor, name: str = "data") -> None:
        """Raise ``ValueError`` unless ``n`` holds integers in ``{0, ..., K-1}``."""
        if not torch.is_tensor(n):
            raise TypeError(f"{name} must be a torch.Tensor of integer levels; got {type(n).__name__}")
        if n.is_floating_point():
            if not torch.isfinite(n).all() or not (n == torch.round(n)).all():
                raise ValueError(
                    f"{name} must hold integer levels in {{0, ..., {self.levels - 1}}}; got non-integer values "
                    "(use DataScaling.quantize for data stored on [0, 1])"
                )
        elif n.is_complex() or n.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer levels; got dtype {n.dtype}")
        lo, hi = n.min().item(), n.max().item()
        if lo < 0 or hi > self.levels - 1:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} must hold levels in {{0, ..., {self.levels - 1}}}; got level {bad!r}")

    def dequantize(self, n: torch.Tensor, generator: Generator = None, dtype=None) -> torch.Tensor:
        """Uniform dequantization into model space: x = a (n + u) / K + b, u ~ U[0, 1).

        Args:
            n: integer levels, shape [B, ...].
            generator: a ``torch.Generator`` (None: torch's global RNG).
            dtype: floating dtype of the result (default: torch's default dtype).
        """
        self.check_levels(n)
        dtype = dtype or torch.get_default_dtype()
        u = torch.rand(n.shape, generator=generator, dtype=dtype, device=n.device)
        return self.to_model((n.to(dtype) + u) / self.levels)

    # ---- eq. (1) --------------------------------------------------------------------------------
    def bits_per_dim(self, logp: torch.Tensor, dim: int) -> torch.Tensor:
        """bpd = -log p_x(x) / (D ln 2) - log2 a + log2 K for ``logp`` in nats (any shape), D = ``dim``."""
        return -logp / (dim * math.log(2)) - math.log2(self.scale) + math.log2(self.levels)


__all__ = ["DataScaling"]
