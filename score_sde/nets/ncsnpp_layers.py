"""Layers of NCSN++ / DDPM++ that the plain U-Net lacks: FIR resampling layers, the BigGAN residual
block with FIR resampling, the skip combiner of the progressive input branch, and the time
embeddings computed with the same operations (so the same float32 rounding) as the networks were
trained with.

Sub-module and parameter names (``Conv_0``, ``Conv2d_0``, ``Dense_0``, ``GroupNorm_0``, ``W``, ...)
and their registration order follow the official score_sde PyTorch code, so its state dicts load
by name and its EMA ``shadow_params`` (a list in ``parameters()`` order) load by position.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import conv1x1, conv3x3, dense, group_norm, variance_scaling_
from .upfirdn import (
    conv_downsample_2d,
    downsample_2d,
    naive_downsample_2d,
    naive_upsample_2d,
    upsample_2d,
    upsample_conv_2d,
)


def positional_embedding(labels: torch.Tensor, dim: int, dtype: torch.dtype, max_positions: float = 10000.0):
    """Transformer sinusoidal features of ``labels`` [B] -> [B, dim] (DDPM's ``get_timestep_embedding``).

    ``[sin(l w_0) .. sin(l w_{h-1}), cos(l w_0) .. cos(l w_{h-1})]``, h = dim // 2,
    ``w_i = exp(-i ln(max_positions) / (h - 1))``; an odd ``dim`` gets a zero last feature.

    Computed in ``dtype`` with the frequencies formed in that dtype, as the official networks do:
    labels reach ~1000, where a float32 phase carries an error of ~6e-5; a checkpoint trained on
    those float32 features is reproduced to round-off only when they are formed the same way.
    """
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=dtype, device=labels.device) * -(math.log(max_positions) / (half - 1)))
    arg = labels.to(dtype)[:, None] * freq[None, :]
    emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class FourierProjection(nn.Module):
    """Gaussian Fourier features of a scalar per sample: ``[B] -> [B, 2 size]``,
    ``[sin(2 pi W s), cos(2 pi W s)]`` with fixed W ~ N(0, scale^2) of ``size`` entries (a buffer
    ``W``, never trained). NCSN++ feeds ``s = ln sigma`` (scale 16)."""

    def __init__(self, size: int = 256, scale: float = 16.0):
        super().__init__()
        self.register_buffer("W", torch.randn(size) * scale)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        arg = s[:, None] * self.W[None, :].to(s) * 2 * math.pi  # this operation order, as trained
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


class FIRConv2d(nn.Module):
    """A KxK convolution (``weight`` [C_out, C_in, K, K], ``bias``) fused with 2x FIR up- or
    down-sampling (:func:`upsample_conv_2d` / :func:`conv_downsample_2d`), or plain when neither."""

    def __init__(self, in_ch, out_ch, kernel=3, up=False, down=False, resample_kernel=(1, 3, 3, 1), bias=True):
        super().__init__()
        if up and down:
            raise ValueError("FIRConv2d can up-sample or down-sample, not both")
        self.weight = nn.Parameter(variance_scaling_(torch.empty(out_ch, in_ch, kernel, kernel), 1.0))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.up, self.down, self.resample_kernel, self.kernel = up, down, tuple(resample_kernel), kernel

    def forward(self, x):
        if self.up:
            x = upsample_conv_2d(x, self.weight, self.resample_kernel)
        elif self.down:
            x = conv_downsample_2d(x, self.weight, self.resample_kernel)
        else:
            x = F.conv2d(x, self.weight, padding=self.kernel // 2)
        return x if self.bias is None else x + self.bias.reshape(1, -1, 1, 1)


class Upsample(nn.Module):
    """2x up-sampling: nearest (+ conv3x3 ``Conv_0``) or FIR (+ fused conv ``Conv2d_0``); [B, C_in, H, W] ->
    [B, C_out, 2H, 2W]."""

    def __init__(self, in_ch=None, out_ch=None, with_conv=False, fir=False, fir_kernel=(1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv:
            if fir:
                self.Conv2d_0 = FIRConv2d(in_ch, out_ch, 3, up=True, resample_kernel=fir_kernel)
            else:
                self.Conv_0 = conv3x3(in_ch, out_ch)
        self.fir, self.with_conv, self.fir_kernel = fir, with_conv, tuple(fir_kernel)

    def forward(self, x):
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else upsample_2d(x, self.fir_kernel)
        h = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.Conv_0(h) if self.with_conv else h


class Downsample(nn.Module):
    """2x down-sampling: stride-2 conv3x3 after (0, 1, 0, 1) padding (``Conv_0``) or a 2x2 average,
    or FIR (+ fused conv ``Conv2d_0``); [B, C_in, H, W] -> [B, C_out, H/2, W/2]."""

    def __init__(self, in_ch=None, out_ch=None, with_conv=False, fir=False, fir_kernel=(1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv:
            if fir:
                self.Conv2d_0 = FIRConv2d(in_ch, out_ch, 3, down=True, resample_kernel=fir_kernel)
            else:
                self.Conv_0 = conv3x3(in_ch, out_ch, stride=2, padding=0)
        self.fir, self.with_conv, self.fir_kernel = fir, with_conv, tuple(fir_kernel)

    def forward(self, x):
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else downsample_2d(x, self.fir_kernel)
        if self.with_conv:
            return self.Conv_0(F.pad(x, (0, 1, 0, 1)))
        return F.avg_pool2d(x, 2, stride=2)


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN-style residual block of NCSN++, optionally resampling both branches 2x (FIR or naive)::

        h = act(GroupNorm_0(x));  h, x = resample(h), resample(x)   (when up / down)
        h = Conv_0(h) + Dense_0(act(temb))[:, :, None, None]
        h = Conv_1(Dropout_0(act(GroupNorm_1(h))))                    (Conv_1 starts at ~0)
        x = Conv_2(x)  (1x1) when the channels change or the block resamples
        out = (x + h) / sqrt(2) if skip_rescale else x + h
    """

    def __init__(self, act, in_ch, out_ch=None, temb_dim=None, up=False, down=False, dropout=0.1, fir=False,
                 fir_kernel=(1, 3, 3, 1), skip_rescale=True, init_scale=0.0):  # fmt: skip
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.up, self.down, self.fir, self.fir_kernel = up, down, fir, tuple(fir_kernel)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        self.shortcut = in_ch != out_ch or up or down
        if self.shortcut:
            self.Conv_2 = conv1x1(in_ch, out_ch)
        self.act, self.skip_rescale = act, skip_rescale

    def _resample(self, z):
        if self.up:
            return upsample_2d(z, self.fir_kernel) if self.fir else naive_upsample_2d(z)
        if self.down:
            return downsample_2d(z, self.fir_kernel) if self.fir else naive_downsample_2d(z)
        return z

    def forward(self, x, temb=None):
        h = self._resample(self.act(self.GroupNorm_0(x)))
        x = self._resample(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.shortcut:
            x = self.Conv_2(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class Combine(nn.Module):
    """Merge the progressive input branch x into the features y: ``Conv_0`` (1x1) of x, then
    concatenated (``"cat"``, channels add up) or summed (``"sum"``)."""

    def __init__(self, dim1, dim2, method="cat"):
        super().__init__()
        self.Conv_0 = conv1x1(dim1, dim2)
        self.method = method

    def forward(self, x, y):
        h = self.Conv_0(x)
        return torch.cat([h, y], dim=1) if self.method == "cat" else h + y


__all__ = [
    "positional_embedding",
    "FourierProjection",
    "FIRConv2d",
    "Upsample",
    "Downsample",
    "ResnetBlockBigGANpp",
    "Combine",
]
