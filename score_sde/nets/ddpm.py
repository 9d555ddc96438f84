"""The original DDPM U-Net (Ho et al. 2020, App. B), as the score_sde code base trains it.

Structure (``L = len(ch_mult)`` levels, ``nf`` base width)::

    temb = Dense_1(act(Dense_0(PE(labels))))                       (PE: sinusoidal, nf features)
    x -> 2x - 1 unless centered;  h = conv3x3(x)
    down, level l: num_res_blocks x [ResBlock(nf ch_mult[l]) (+ Attn at attn_resolutions)],
        then (l < L-1) Downsample (stride-2 conv3x3, or 2x2 average)
    middle: ResBlock, Attn, ResBlock
    up, level l = L-1..0: (num_res_blocks + 1) x ResBlock(cat(h, skip)) (+ Attn), then (l > 0) Upsample
    out = conv3x3(act(GroupNorm(h)))          (/ sigmas[labels] with scale_by_sigma)

ResBlock: ``h = Conv_1(Dropout(act(GN_1(Conv_0(act(GN_0(x))) + Dense_0(act(temb))))))``, the
input mapped by ``NIN_0`` when the width changes, ``x + h`` (no rescaling). Attn: single-head
self-attention with 1x1 maps ``NIN_0..3``, ``x + h``. Every GroupNorm has 32 groups, eps 1e-6
(so widths must be multiples of 32). Differences from NCSN++/DDPM++ (:class:`score_sde.nets.NCSNpp`):
fixed 32 groups, no skip rescaling, no BigGAN blocks.

Module names and order follow the official score_sde PyTorch ``DDPM`` (``all_modules``), so its
state dicts load unchanged. Labels: the time step (t * 999 or t * (N - 1) for VP, the index of the
SMLD chain for VE).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import NIN, conv3x3, dense
from .mlp import make_activation
from .ncsnpp import geometric_sigmas
from .ncsnpp_layers import positional_embedding


def _gn(ch: int) -> nn.GroupNorm:
    if ch % 32:
        raise ValueError(f"the DDPM net normalises with 32 groups, so every width must be a multiple of 32; got {ch}")
    return nn.GroupNorm(32, ch, eps=1e-6)


class DDPMResBlock(nn.Module):
    """DDPM residual block (see the module docstring); [B, in_ch, H, W] -> [B, out_ch, H, W]."""

    def __init__(self, act, in_ch, out_ch=None, temb_dim=None, dropout=0.1):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = _gn(in_ch)
        self.act = act
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = _gn(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=0.0)
        if in_ch != out_ch:
            self.NIN_0 = NIN(in_ch, out_ch)
        self.in_ch, self.out_ch = in_ch, out_ch

    def forward(self, x, temb=None):
        h = self.Conv_0(self.act(self.GroupNorm_0(x)))
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.in_ch != self.out_ch:
            x = self.NIN_0(x)
        return x + h


class DDPMAttnBlock(nn.Module):
    """Single-head self-attention over the H W positions with a plain residual; [B, C, H, W] -> same."""

    def __init__(self, channels: int):
        super().__init__()
        self.GroupNorm_0 = _gn(channels)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=0.0)

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.GroupNorm_0(x)
        q, k, v = (m(h).reshape(B, C, H * W) for m in (self.NIN_0, self.NIN_1, self.NIN_2))
        w = torch.softmax(torch.einsum("bci,bcj->bij", q, k) * C**-0.5, dim=-1)
        return x + self.NIN_3(torch.einsum("bij,bcj->bci", w, v).reshape(B, C, H, W))


class DDPMUpsample(nn.Module):
    """2x nearest up-sampling (+ ``Conv_0``, a conv3x3)."""

    def __init__(self, channels: int, with_conv: bool = True):
        super().__init__()
        if with_conv:
            self.Conv_0 = conv3x3(channels, channels)
        self.with_conv = with_conv

    def forward(self, x):
        h = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.Conv_0(h) if self.with_conv else h


class DDPMDownsample(nn.Module):
    """2x down-sampling: ``Conv_0`` (stride-2 conv3x3 after (0, 1, 0, 1) padding, TF "SAME"), or 2x2 average."""

    def __init__(self, channels: int, with_conv: bool = True):
        super().__init__()
        if with_conv:
            self.Conv_0 = conv3x3(channels, channels, stride=2, padding=0)
        self.with_conv = with_conv

    def forward(self, x):
        return self.Conv_0(F.pad(x, (0, 1, 0, 1))) if self.with_conv else F.avg_pool2d(x, 2, stride=2)


class DDPM(nn.Module):
    """DDPM U-Net ``net(x, labels) -> [B, num_channels, H, W]`` (official option names).

    Args:
        num_channels: 3. image_size: 32 (reference of ``attn_resolutions``, (16,)). nf: 128.
        ch_mult: (1, 2, 2, 2). num_res_blocks: 2. dropout: 0.1. resamp_with_conv: True.
        conditional: embed the labels (True; False gives a net that ignores them).
        centered: inputs on [-1, 1] (else [0, 1], mapped to 2x - 1 inside). nonlinearity: ``swish``.
        scale_by_sigma: divide the output by ``sigmas[labels]`` (VE / SMLD training).
        sigma_min, sigma_max, num_scales: the ``sigmas`` buffer (geometric, sigma_max first).
    """

    def __init__(
        self,
        num_channels: int = 3,
        image_size: int = 32,
        nf: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        resamp_with_conv: bool = True,
        conditional: bool = True,
        centered: bool = True,
        nonlinearity: str = "swish",
        scale_by_sigma: bool = False,
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        num_scales: int = 1000,
    ):
        super().__init__()
        self.act = act = make_activation("silu" if nonlinearity == "swish" else nonlinearity)
        self.register_buffer("sigmas", geometric_sigmas(sigma_min, sigma_max, num_scales))
        self.nf, self.num_res_blocks, self.conditional, self.centered = nf, num_res_blocks, conditional, centered
        self.scale_by_sigma, self.num_channels = scale_by_sigma, num_channels
        self.ch_mult = tuple(ch_mult)
        self.attn_resolutions = tuple(int(r) for r in attn_resolutions)
        L = self.num_resolutions = len(self.ch_mult)
        res = [image_size // 2**i for i in range(L)]
        temb_dim = 4 * nf
        m: list[nn.Module] = []
        if conditional:
            m += [dense(nf, temb_dim), dense(temb_dim, temb_dim)]
        m.append(conv3x3(num_channels, nf))
        hs_c, in_ch = [nf], nf
        for lvl in range(L):
            for _ in range(num_res_blocks):
                out_ch = nf * self.ch_mult[lvl]
                m.append(DDPMResBlock(act, in_ch, out_ch, temb_dim, dropout))
                in_ch = out_ch
                if res[lvl] in self.attn_resolutions:
                    m.append(DDPMAttnBlock(in_ch))
                hs_c.append(in_ch)
            if lvl != L - 1:
                m.append(DDPMDownsample(in_ch, resamp_with_conv))
                hs_c.append(in_ch)
        in_ch = hs_c[-1]
        m += [DDPMResBlock(act, in_ch, None, temb_dim, dropout), DDPMAttnBlock(in_ch),
              DDPMResBlock(act, in_ch, None, temb_dim, dropout)]  # fmt: skip
        for lvl in reversed(range(L)):
            for _ in range(num_res_blocks + 1):
                out_ch = nf * self.ch_mult[lvl]
                m.append(DDPMResBlock(act, in_ch + hs_c.pop(), out_ch, temb_dim, dropout))
                in_ch = out_ch
            if res[lvl] in self.attn_resolutions:
                m.append(DDPMAttnBlock(in_ch))
            if lvl != 0:
                m.append(DDPMUpsample(in_ch, resamp_with_conv))
        m += [_gn(in_ch), conv3x3(in_ch, num_channels, init_scale=0.0)]
        self.all_modules = nn.ModuleList(m)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """x: [B, num_channels, H, W]; labels: [B] time steps (float or integer)."""
        if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != self.num_channels:
            raise ValueError(f"x must have shape [B, {self.num_channels}, H, W]; got "
                             f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")  # fmt: skip
        labels = torch.as_tensor(labels, device=x.device)
        if labels.ndim == 0:
            labels = labels.expand(x.shape[0])
        mods, i = self.all_modules, 0
        temb = None
        if self.conditional:
            temb = mods[1](self.act(mods[0](positional_embedding(labels, self.nf, x.dtype))))
            i = 2
        h = x if self.centered else 2 * x - 1.0
        hs = [mods[i](h)]
        i += 1
        L = self.num_resolutions
        for lvl in range(L):
            for _ in range(self.num_res_blocks):
                h = mods[i](hs[-1], temb)
                i += 1
                if h.shape[-1] in self.attn_resolutions:
                    h = mods[i](h)
                    i += 1
                hs.append(h)
            if lvl != L - 1:
                hs.append(mods[i](hs[-1]))
                i += 1
        h = mods[i + 2](mods[i + 1](mods[i](hs[-1], temb)), temb)
        i += 3
        for lvl in reversed(range(L)):
            for _ in range(self.num_res_blocks + 1):
                h = mods[i](torch.cat([h, hs.pop()], dim=1), temb)
                i += 1
            if h.shape[-1] in self.attn_resolutions:
                h = mods[i](h)
                i += 1
            if lvl != 0:
                h = mods[i](h)
                i += 1
        h = mods[i + 1](self.act(mods[i](h)))
        if self.scale_by_sigma:
            h = h / self.sigmas[labels.long()].to(h).reshape(-1, 1, 1, 1)
        return h


__all__ = ["DDPM", "DDPMResBlock", "DDPMAttnBlock", "DDPMUpsample", "DDPMDownsample"]
