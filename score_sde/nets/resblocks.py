"""Residual blocks and 2x resamplers of the image U-Nets (DDPM++'s ``ResnetBlockDDPMpp`` and
``ResnetBlockBigGANpp`` without FIR, Song et al. 2021, App. H)::

    h = Conv_0(act(GroupNorm_0(x)))              (BigGAN: resample h and x here when up/down)
    h = h + Dense_0(act(e))[:, :, None, None]
    h = Conv_1(Dropout_0(act(GroupNorm_1(h))))   (Conv_1 starts at ~0: init_scale = 0)
    x = NIN_0(x) / Conv_2(x) when the channels (or resolution) change
    return (x + h) / sqrt(2)  if skip_rescale else  x + h
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn

from .layers import NIN, conv1x1, conv3x3, dense, group_norm


class ResnetBlockDDPM(nn.Module):
    """DDPM++ residual block (official ``ResnetBlockDDPMpp``); see the module docstring."""

    def __init__(self, act, in_ch, out_ch=None, temb_dim=None, dropout=0.1, skip_rescale=True, init_scale=0.0):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch:
            self.NIN_0 = NIN(in_ch, out_ch)
        self.act, self.out_ch, self.skip_rescale = act, out_ch, skip_rescale

    def forward(self, x, temb=None):
        h = self.Conv_0(self.act(self.GroupNorm_0(x)))
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if x.shape[1] != self.out_ch:
            x = self.NIN_0(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


def _upsample2(x):
    return F.interpolate(x, scale_factor=2, mode="nearest")


def _downsample2(x):
    return F.avg_pool2d(x, 2, stride=2)


class ResnetBlockBigGAN(nn.Module):
    """BigGAN-style residual block (official ``ResnetBlockBigGANpp`` without FIR): optional 2x
    nearest up-sampling or 2x average-pool down-sampling of both branches after the first norm."""

    def __init__(
        self, act, in_ch, out_ch=None, temb_dim=None, up=False, down=False, dropout=0.1, skip_rescale=True,
        init_scale=0.0,
    ):  # fmt: skip
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.up, self.down = up, down
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch or up or down:
            self.Conv_2 = conv1x1(in_ch, out_ch)
        self.act, self.in_ch, self.out_ch, self.skip_rescale = act, in_ch, out_ch, skip_rescale

    def forward(self, x, temb=None):
        h = self.act(self.GroupNorm_0(x))
        if self.up:
            h, x = _upsample2(h), _upsample2(x)
        elif self.down:
            h, x = _downsample2(h), _downsample2(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.in_ch != self.out_ch or self.up or self.down:
            x = self.Conv_2(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class Downsample(nn.Module):
    """2x down-sampling: pad (0, 1, 0, 1) then a stride-2 conv3x3 (or a 2x2 average pool)."""

    def __init__(self, in_ch: int, with_conv: bool = True):
        super().__init__()
        if with_conv:
            self.Conv_0 = conv3x3(in_ch, in_ch, stride=2, padding=0)
        self.with_conv = with_conv

    def forward(self, x):
        if self.with_conv:
            return self.Conv_0(F.pad(x, (0, 1, 0, 1)))
        return _downsample2(x)


class Upsample(nn.Module):
    """2x nearest up-sampling, then a conv3x3 when ``with_conv``."""

    def __init__(self, in_ch: int, with_conv: bool = True):
        super().__init__()
        if with_conv:
            self.Conv_0 = conv3x3(in_ch, in_ch)
        self.with_conv = with_conv

    def forward(self, x):
        h = _upsample2(x)
        return self.Conv_0(h) if self.with_conv else h
