"""Building blocks of the image U-Nets (DDPM++ / NCSN++, Song et al. 2021, App. H; Ho et al. 2020): the official
initialisation, the 1x1 ``NIN`` map and the attention blocks.

Weights use the official ``variance_scaling(scale, "fan_avg", "uniform")`` init with zero biases and scale = 1e-10
where ``init_scale = 0``; GroupNorm has min(C // 4, 32) groups and eps = 1e-6. Sub-module and parameter names
(``GroupNorm_0``, ``NIN_0``/``W``, ``b``, ...) follow the official code so that its state dicts load.
"""

from __future__ import annotations

import math

import torch
from torch import nn


# ---- initialisation (official DDPM init: variance scaling, fan_avg, uniform) -----------------
def variance_scaling_(w: torch.Tensor, scale: float = 1.0, in_axis: int = 1, out_axis: int = 0) -> torch.Tensor:
    """Fill ``w`` in place with U(-a, a), a = sqrt(3 scale / fan_avg); scale 0 means 1e-10."""
    scale = 1e-10 if scale == 0 else scale
    shape = w.shape
    receptive = math.prod(shape) / (shape[in_axis] * shape[out_axis])
    fan_avg = 0.5 * (shape[in_axis] + shape[out_axis]) * receptive
    bound = math.sqrt(3.0 * scale / fan_avg)
    with torch.no_grad():
        w.uniform_(-bound, bound)
    return w


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, padding: int = 1, init_scale: float = 1.0) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding)
    variance_scaling_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def conv1x1(in_ch: int, out_ch: int, init_scale: float = 1.0) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, 1)
    variance_scaling_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def dense(in_dim: int, out_dim: int, init_scale: float = 1.0) -> nn.Linear:
    lin = nn.Linear(in_dim, out_dim)
    variance_scaling_(lin.weight, init_scale)
    nn.init.zeros_(lin.bias)
    return lin


def group_norm(ch: int) -> nn.GroupNorm:
    """GroupNorm with min(C // 4, 32) groups (lowered until it divides C), eps = 1e-6."""
    g = max(1, min(ch // 4, 32))
    while ch % g:
        g -= 1
    return nn.GroupNorm(g, ch, eps=1e-6)


class NIN(nn.Module):
    """A 1x1 map over the channel dim ("network in network"): y[b, :, h, w] = W^T x[b, :, h, w] + b.

    Parameters ``W`` [in, out] and ``b`` [out] as in the official code.
    """

    def __init__(self, in_dim: int, out_dim: int, init_scale: float = 0.1):
        super().__init__()
        self.W = nn.Parameter(variance_scaling_(torch.empty(in_dim, out_dim), init_scale))
        self.b = nn.Parameter(torch.zeros(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,cd->bdhw", x, self.W) + self.b[None, :, None, None]


class AttnBlock(nn.Module):
    """Single-head self-attention over all H W positions (official ``AttnBlockpp``); [B, C, H, W] -> same."""

    def __init__(self, channels: int, skip_rescale: bool = True, init_scale: float = 0.0):
        super().__init__()
        self.GroupNorm_0 = group_norm(channels)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.GroupNorm_0(x)
        q, k, v = (m(h).reshape(B, C, H * W) for m in (self.NIN_0, self.NIN_1, self.NIN_2))
        w = torch.softmax(torch.einsum("bci,bcj->bij", q, k) * C**-0.5, dim=-1)  # [B, HW, HW]
        h = torch.einsum("bij,bcj->bci", w, v).reshape(B, C, H, W)
        h = self.NIN_3(h)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class CrossAttnBlock(nn.Module):
    """Single-head cross-attention of the image on a context [B, L, context_dim]; [B, C, H, W] -> same.

    q = NIN_0(GroupNorm(x)), k = Dense_k(context), v = Dense_v(context); softmax(q^T k / sqrt(C)) over
    the L context tokens (masked where ``mask`` [B, L] is False); out = NIN_3 (starts at ~0); residual
    with the same skip rescale. With ``context=None`` the block is the identity (unconditional).
    """

    def __init__(self, channels: int, context_dim: int, skip_rescale: bool = True, init_scale: float = 0.0):
        super().__init__()
        self.GroupNorm_0 = group_norm(channels)
        self.NIN_0 = NIN(channels, channels)
        self.Dense_k = dense(context_dim, channels)
        self.Dense_v = dense(context_dim, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor, context: torch.Tensor | None, mask: torch.Tensor | None = None):
        if context is None:
            return x
        B, C, H, W = x.shape
        q = self.NIN_0(self.GroupNorm_0(x)).reshape(B, C, H * W)
        k, v = self.Dense_k(context), self.Dense_v(context)  # [B, L, C]
        logits = torch.einsum("bci,blc->bil", q, k) * C**-0.5
        if mask is not None:
            logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
        w = torch.softmax(logits, dim=-1)
        h = torch.einsum("bil,blc->bci", w, v).reshape(B, C, H, W)
        h = self.NIN_3(h)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h
