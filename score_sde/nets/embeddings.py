"""Noise-level (time) embeddings: sinusoidal positional features and Gaussian Fourier features.

Both map a label vector of shape ``[B]`` (a continuous time, a scaled time, a discrete index or
ln sigma) to features of shape ``[B, dim]`` that a network turns into its conditioning vector.

* :class:`SinusoidalEmbedding` -- the transformer positional encoding used by DDPM (its
  "sinusoidal timestep embeddings"; Vaswani et al. 2017):

      PE(t, 2i) = sin(t / P^{2i/d}),   PE(t, 2i+1) = cos(t / P^{2i/d}),   i = 0 .. d/2 - 1,

  with P = ``max_period`` = 10000 and d = ``dim``. ``layout="interleaved"`` (default) returns exactly
  this ordering (sin and cos of one frequency side by side). ``layout="concat"`` returns the
  ordering and frequencies of the official DDPM / score_sde code (``get_timestep_embedding``):
  ``[sin(t w_0), ..., sin(t w_{h-1}), cos(t w_0), ..., cos(t w_{h-1})]`` with h = d/2 and
  ``w_i = P^{-i/(h-1)}`` -- use it to load official checkpoints. An odd ``dim`` is padded with one
  zero feature at the end.
* :class:`GaussianFourierProjection` -- random Fourier features with fixed frequencies
  W ~ N(0, scale^2) (Tancik et al. 2020; Song et al. 2021, NCSN++ embeds ln sigma with scale 16):

      gamma(s) = [sin(2 pi W s), cos(2 pi W s)],   W in R^{d/2} (a buffer, never trained).
"""

from __future__ import annotations

import math

import torch
from torch import nn

LAYOUTS = ("interleaved", "concat")


def _check_dim(dim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"embedding dim must be an integer >= 2; got dim = {dim!r}")
    return dim


def _as_labels(labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Labels as a float vector [B] (integers become floats; a scalar becomes [1])."""
    labels = torch.as_tensor(labels)
    if labels.ndim == 0:
        labels = labels[None]
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape [B]; got shape {tuple(labels.shape)}")
    if not labels.is_floating_point():
        labels = labels.to(dtype)
    return labels


def batch_labels(labels, B: int, device) -> torch.Tensor:
    """Labels as a [B] tensor on ``device``: a scalar is expanded to [B]; any other shape but [B] raises."""
    labels = torch.as_tensor(labels, device=device)
    if labels.ndim == 0:
        labels = labels.expand(B)
    if labels.shape != (B,):
        raise ValueError(f"labels must have shape [B] = [{B}]; got {tuple(labels.shape)}")
    return labels


class SinusoidalEmbedding(nn.Module):
    """Sinusoidal features of a label vector: ``[B] -> [B, dim]`` (see the module docstring).

    Args:
        dim: number of output features d (>= 2).
        max_period: P, the longest period is about 2 pi P (10000 as in DDPM).
        layout: ``"interleaved"`` (the transformer's PE(t, 2i), PE(t, 2i+1)) or ``"concat"`` (the
            official code's [sin | cos] with w_i = P^{-i/(h-1)}).
    """

    def __init__(self, dim: int, max_period: float = 10000.0, layout: str = "interleaved"):
        super().__init__()
        self.dim = _check_dim(dim)
        if not (isinstance(max_period, (int, float)) and math.isfinite(max_period) and max_period > 1):
            raise ValueError(f"max_period must be a finite number > 1; got max_period = {max_period!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
        self.max_period, self.layout = float(max_period), layout

    def frequencies(self, device=None) -> torch.Tensor:
        """The d/2 angular frequencies w_i (float64), in the order of the sin features."""
        half = self.dim // 2
        i = torch.arange(half, dtype=torch.float64, device=device)
        expo = 2.0 * i / self.dim if self.layout == "interleaved" else i / max(half - 1, 1)
        return torch.exp(-math.log(self.max_period) * expo)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        labels = _as_labels(labels, torch.get_default_dtype())
        dtype = labels.dtype
        # computed in float64 (labels reach ~1000, where float32 phases lose ~1e-4), returned in labels' dtype
        arg = labels[:, None].to(torch.float64) * self.frequencies(labels.device)[None]
        s, c = torch.sin(arg), torch.cos(arg)
        if self.layout == "interleaved":
            emb = torch.stack([s, c], dim=-1).reshape(labels.shape[0], -1)
        else:
            emb = torch.cat([s, c], dim=-1)
        if self.dim % 2:
            emb = nn.functional.pad(emb, (0, 1))
        return emb.to(dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_period={self.max_period:g}, layout={self.layout!r}"


class GaussianFourierProjection(nn.Module):
    """Fixed random Fourier features ``[B] -> [B, dim]``: [sin(2 pi W s), cos(2 pi W s)].

    Args:
        dim: number of output features (even; W holds dim/2 frequencies).
        scale: standard deviation of the frequencies W ~ N(0, scale^2) (16 for NCSN++ on ln sigma).
        generator: optional ``torch.Generator`` for W (default: torch's global RNG).

    W is a persistent buffer called ``W`` (the official name), so it is saved with the model but
    never seen by an optimizer.
    """

    def __init__(self, dim: int, scale: float = 16.0, generator: torch.Generator | None = None):
        super().__init__()
        self.dim = _check_dim(dim)
        if dim % 2:
            raise ValueError(f"GaussianFourierProjection needs an even dim; got dim = {dim!r}")
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number; got scale = {scale!r}")
        self.scale = float(scale)
        self.register_buffer("W", torch.randn(dim // 2, generator=generator) * self.scale)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        labels = _as_labels(labels, self.W.dtype)
        arg = 2 * math.pi * labels[:, None] * self.W.to(labels)[None]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scale={self.scale:g}"


EMBEDDINGS = ("sinusoidal", "fourier")


class LabelEmbedding(nn.Module):
    """A noise-level label ``[B]`` mapped to features ``[B, dim]``, with the conventions of the nets.

    * ``"sinusoidal"``: PE(label_scale * labels). ``label_scale`` turns the label into a
      "timestep": 1000 for continuous t in [0, 1] (the default ``time_labels="continuous"``), 1 for
      ``"t999"`` or ``"discrete"`` labels (already 0..N-1).
    * ``"fourier"``: Gaussian Fourier features of ln(labels) (NCSN++: the labels are sigma, so
      pair it with ``time_labels="sigma"``); labels must be positive.
    """

    def __init__(
        self,
        dim: int,
        embedding: str = "sinusoidal",
        label_scale: float = 1000.0,
        fourier_scale: float = 16.0,
        max_period: float = 10000.0,
        layout: str = "interleaved",
    ):
        super().__init__()
        if embedding not in EMBEDDINGS:
            raise ValueError(f"unknown embedding {embedding!r}; choose one of {EMBEDDINGS}")
        if not (isinstance(label_scale, (int, float)) and math.isfinite(label_scale) and label_scale > 0):
            raise ValueError(f"label_scale must be a positive finite number; got label_scale = {label_scale!r}")
        self.embedding, self.label_scale, self.dim = embedding, float(label_scale), dim
        if embedding == "sinusoidal":
            self.proj = SinusoidalEmbedding(dim, max_period=max_period, layout=layout)
        else:
            self.proj = GaussianFourierProjection(dim, scale=fourier_scale)

    def forward(self, labels: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        labels = _as_labels(labels, dtype or torch.get_default_dtype())
        if dtype is not None:
            labels = labels.to(dtype)
        if self.embedding == "fourier":
            if (labels <= 0).any():
                raise ValueError(
                    "the fourier embedding takes ln(labels), so labels must be positive noise levels "
                    f"(use time_labels='sigma'); got min label {labels.min().item()!r}"
                )
            return self.proj(torch.log(labels))
        return self.proj(labels * self.label_scale)


__all__ = ["SinusoidalEmbedding", "GaussianFourierProjection", "LabelEmbedding", "EMBEDDINGS", "LAYOUTS"]
