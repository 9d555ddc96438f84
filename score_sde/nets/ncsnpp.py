"""NCSN++ / DDPM++: the U-Net family of Song et al. 2021 (App. H), with every option of the paper.

One class covers both names: DDPM++ is the setting ``fir=False, progressive_input="none",
embedding_type="positional"``; NCSN++ adds FIR resampling (``fir``, ``fir_kernel``) and a
progressive input branch, and for VE embeds ln sigma with Gaussian Fourier features. Structure
(``L = len(ch_mult)`` levels)::

    temb = Dense(act(Dense(Fourier(ln sigma) or PE(t))))              (if conditional)
    x -> 2x - 1 unless centered;  h = conv3x3(x)
    down, level l: num_res_blocks x [ResBlock (+ Attn where the map is in attn_resolutions)],
        then (l < L-1) a 2x down-sampling (Downsample, or a ResBlock(down) for "biggan") and
        progressive_input: "input_skip" -- Combine(FIR-downsampled input, h) (sum or cat);
                           "residual"   -- pyramid = (Downsample_conv(pyramid) + h) / sqrt(2), h = pyramid
    middle: ResBlock, Attn, ResBlock
    up, level l = L-1..0: (num_res_blocks + 1) x ResBlock(cat(h, skip)) (+ Attn), then
        progressive: "output_skip" -- pyramid = up(pyramid) + conv3x3(act(GroupNorm(h))) (3 channels);
                     "residual"    -- pyramid = (Upsample_conv(pyramid) + h) / sqrt(2), h = pyramid
        and (l > 0) a 2x up-sampling (Upsample, or a ResBlock(up))
    out = conv3x3(act(GroupNorm(h)))  (or the output-skip pyramid);  / sigma if scale_by_sigma

Blocks: ``resblock_type="ddpm"`` (:class:`ResnetBlockDDPM`) or ``"biggan"``
(:class:`ResnetBlockBigGANpp`); residual sums divided by sqrt(2) with ``skip_rescale``; the last
layer of every block starts at ~0 (``init_scale = 0`` gives 1e-10). GroupNorm: min(C/4, 32) groups,
eps 1e-6.

Labels (``net(x, labels)``): ``embedding_type="fourier"`` takes sigma (> 0, embedded as ln sigma);
``"positional"`` takes a time step (t * 999 for continuous VP training, or the index of a discrete
chain). With ``scale_by_sigma`` the output is divided by sigma: the labels themselves for "fourier",
``sigmas[labels]`` (the net's geometric table from sigma_max down to sigma_min) for "positional".

Module names and order follow the official score_sde PyTorch ``NCSNpp`` (``all_modules``), so its
state dicts load unchanged (see :mod:`score_sde.pretrained.official`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .layers import AttnBlock, conv3x3, dense, group_norm
from .mlp import make_activation
from .ncsnpp_layers import (
    Combine,
    Downsample,
    FourierProjection,
    ResnetBlockBigGANpp,
    Upsample,
    positional_embedding,
)
from .resblocks import ResnetBlockDDPM

PROGRESSIVE = ("none", "output_skip", "residual")
PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
COMBINE = ("sum", "cat")
RESBLOCK_TYPES = ("ddpm", "biggan")
EMBEDDING_TYPES = ("fourier", "positional")


def _choice(name, value, options):
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; choose one of {options}")
    return value


def geometric_sigmas(sigma_min: float, sigma_max: float, num_scales: int) -> torch.Tensor:
    """exp(linspace(ln sigma_max, ln sigma_min, N)) in float64, then float32 (the official table)."""
    s = torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), num_scales, dtype=torch.float64))
    return s.to(torch.float32)


class NCSNpp(nn.Module):
    """NCSN++ / DDPM++ ``net(x, labels) -> [B, C, H, W]`` (official option names; see the module docstring).

    Args:
        num_channels: C of the data (3). image_size: nominal H = W (32), the reference for
            ``attn_resolutions`` (feature-map widths where self-attention is applied; (16,)).
        nf: base width (128); level l has ``nf * ch_mult[l]`` channels. ch_mult: (1, 2, 2, 2).
        num_res_blocks: per level (4; deep models 8). dropout: 0.1. resamp_with_conv: True.
        conditional: use the noise-level embedding (True). centered: inputs on [-1, 1] (else [0, 1],
            mapped to 2x - 1 inside). nonlinearity: ``swish`` (also elu, relu, ...).
        fir, fir_kernel: FIR resampling with this separable kernel ((1, 3, 3, 1)).
        skip_rescale: residual sums / sqrt(2). resblock_type: ``ddpm`` | ``biggan``.
        progressive: ``none`` | ``output_skip`` | ``residual``; progressive_input: ``none`` |
            ``input_skip`` | ``residual``; progressive_combine: ``sum`` | ``cat``.
        embedding_type: ``fourier`` (sigma labels) | ``positional`` (time-step labels); fourier_scale: 16.
        init_scale: scale of the init of each block's last layer (0 -> 1e-10).
        scale_by_sigma: divide the output by sigma (VE nets: the output is then the score).
        sigma_min, sigma_max, num_scales: the ``sigmas`` table (a buffer, as in the official net).
    """

    def __init__(
        self,
        num_channels: int = 3,
        image_size: int = 32,
        nf: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 4,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        resamp_with_conv: bool = True,
        conditional: bool = True,
        centered: bool = True,
        nonlinearity: str = "swish",
        fir: bool = True,
        fir_kernel: Sequence[int] = (1, 3, 3, 1),
        skip_rescale: bool = True,
        resblock_type: str = "biggan",
        progressive: str = "none",
        progressive_input: str = "residual",
        progressive_combine: str = "sum",
        embedding_type: str = "fourier",
        fourier_scale: float = 16.0,
        init_scale: float = 0.0,
        scale_by_sigma: bool = True,
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        num_scales: int = 1000,
    ):
        super().__init__()
        for name, v in (("nf", nf), ("num_res_blocks", num_res_blocks), ("num_channels", num_channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {name} = {v!r}")
        self.resblock_type = _choice("resblock_type", str(resblock_type).lower(), RESBLOCK_TYPES)
        self.progressive = _choice("progressive", str(progressive).lower(), PROGRESSIVE)
        self.progressive_input = _choice("progressive_input", str(progressive_input).lower(), PROGRESSIVE_INPUT)
        combine = _choice("progressive_combine", str(progressive_combine).lower(), COMBINE)
        self.embedding_type = _choice("embedding_type", str(embedding_type).lower(), EMBEDDING_TYPES)
        self.act = act = make_activation("silu" if nonlinearity == "swish" else nonlinearity)
        self.register_buffer("sigmas", geometric_sigmas(sigma_min, sigma_max, num_scales))
        self.nf, self.num_res_blocks, self.conditional, self.centered = nf, num_res_blocks, conditional, centered
        self.skip_rescale, self.scale_by_sigma, self.num_channels = skip_rescale, scale_by_sigma, num_channels
        self.ch_mult = tuple(ch_mult)
        self.attn_resolutions = tuple(int(r) for r in attn_resolutions)
        L = self.num_resolutions = len(self.ch_mult)
        res = [image_size // 2**i for i in range(L)]
        fir_kernel = tuple(fir_kernel)
        temb_dim = 4 * nf

        def resblock(in_ch, out_ch=None, up=False, down=False):
            if self.resblock_type == "ddpm":
                return ResnetBlockDDPM(act, in_ch, out_ch, temb_dim, dropout, skip_rescale, init_scale)
            return ResnetBlockBigGANpp(act, in_ch, out_ch, temb_dim, up=up, down=down, dropout=dropout, fir=fir,
                                       fir_kernel=fir_kernel, skip_rescale=skip_rescale,
                                       init_scale=init_scale)  # fmt: skip

        def attn(c):
            return AttnBlock(c, skip_rescale=skip_rescale, init_scale=init_scale)

        if self.progressive == "output_skip":
            self.pyramid_upsample = Upsample(fir=fir, fir_kernel=fir_kernel, with_conv=False)
        if self.progressive_input == "input_skip":
            self.pyramid_downsample = Downsample(fir=fir, fir_kernel=fir_kernel, with_conv=False)

        m: list[nn.Module] = []
        if self.embedding_type == "fourier":
            m.append(FourierProjection(nf, fourier_scale))
        embed_dim = 2 * nf if self.embedding_type == "fourier" else nf
        if conditional:
            m += [dense(embed_dim, temb_dim), dense(temb_dim, temb_dim)]
        m.append(conv3x3(num_channels, nf))
        hs_c, in_ch, pyr_ch = [nf], nf, num_channels
        for lvl in range(L):
            for _ in range(num_res_blocks):
                out_ch = nf * self.ch_mult[lvl]
                m.append(resblock(in_ch, out_ch))
                in_ch = out_ch
                if res[lvl] in self.attn_resolutions:
                    m.append(attn(in_ch))
                hs_c.append(in_ch)
            if lvl != L - 1:
                if self.resblock_type == "ddpm":
                    m.append(Downsample(in_ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel))
                else:
                    m.append(resblock(in_ch, down=True))
                if self.progressive_input == "input_skip":
                    m.append(Combine(pyr_ch, in_ch, method=combine))
                    if combine == "cat":
                        in_ch *= 2
                elif self.progressive_input == "residual":
                    m.append(Downsample(pyr_ch, in_ch, with_conv=True, fir=fir, fir_kernel=fir_kernel))
                    pyr_ch = in_ch
                hs_c.append(in_ch)
        in_ch = hs_c[-1]
        m += [resblock(in_ch), attn(in_ch), resblock(in_ch)]
        pyr_ch = 0
        for lvl in reversed(range(L)):
            for _ in range(num_res_blocks + 1):
                out_ch = nf * self.ch_mult[lvl]
                m.append(resblock(in_ch + hs_c.pop(), out_ch))
                in_ch = out_ch
            if res[lvl] in self.attn_resolutions:
                m.append(attn(in_ch))
            if self.progressive == "output_skip":
                m.append(group_norm(in_ch))
                m.append(conv3x3(in_ch, num_channels, init_scale=init_scale))
                pyr_ch = num_channels
            elif self.progressive == "residual":
                if lvl == L - 1:
                    m += [group_norm(in_ch), conv3x3(in_ch, in_ch)]
                else:
                    m.append(Upsample(pyr_ch, in_ch, with_conv=True, fir=fir, fir_kernel=fir_kernel))
                pyr_ch = in_ch
            if lvl != 0:
                if self.resblock_type == "ddpm":
                    m.append(Upsample(in_ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel))
                else:
                    m.append(resblock(in_ch, up=True))
        if self.progressive != "output_skip":
            m += [group_norm(in_ch), conv3x3(in_ch, num_channels, init_scale=init_scale)]
        self.all_modules = nn.ModuleList(m)

    def _embed(self, labels, dtype):
        """(temb or None, sigmas used by scale_by_sigma, index of the next module)."""
        mods, i = self.all_modules, 0
        if self.embedding_type == "fourier":
            used_sigmas = labels
            temb = mods[0](torch.log(labels))
            i = 1
        else:
            used_sigmas = self.sigmas[labels.long()] if self.scale_by_sigma else None
            temb = positional_embedding(labels, self.nf, dtype)
        if self.conditional:
            temb = mods[i + 1](self.act(mods[i](temb)))
            i += 2
        else:
            temb = None
        return temb, used_sigmas, i

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """x: [B, num_channels, H, W]; labels: [B] sigma (fourier) or time steps (positional)."""
        if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != self.num_channels:
            raise ValueError(f"x must have shape [B, {self.num_channels}, H, W]; got "
                             f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")  # fmt: skip
        labels = torch.as_tensor(labels, device=x.device)
        if labels.ndim == 0:
            labels = labels.expand(x.shape[0])
        if labels.shape != (x.shape[0],):
            raise ValueError(f"labels must have shape [B] = [{x.shape[0]}]; got {tuple(labels.shape)}")
        if self.embedding_type == "fourier":
            labels = labels.to(x.dtype)
        mods = self.all_modules
        temb, used_sigmas, i = self._embed(labels, x.dtype)
        rescale = (lambda a, b: (a + b) / math.sqrt(2.0)) if self.skip_rescale else (lambda a, b: a + b)
        if not self.centered:
            x = 2 * x - 1.0
        pyramid = x if self.progressive_input != "none" else None
        hs = [mods[i](x)]
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
                h = mods[i](hs[-1]) if self.resblock_type == "ddpm" else mods[i](hs[-1], temb)
                i += 1
                if self.progressive_input == "input_skip":
                    pyramid = self.pyramid_downsample(pyramid)
                    h = mods[i](pyramid, h)
                    i += 1
                elif self.progressive_input == "residual":
                    pyramid = rescale(mods[i](pyramid), h)
                    i += 1
                    h = pyramid
                hs.append(h)
        h = mods[i](hs[-1], temb)
        h = mods[i + 1](h)
        h = mods[i + 2](h, temb)
        i += 3
        pyramid = None
        for lvl in reversed(range(L)):
            for _ in range(self.num_res_blocks + 1):
                h = mods[i](torch.cat([h, hs.pop()], dim=1), temb)
                i += 1
            if h.shape[-1] in self.attn_resolutions:
                h = mods[i](h)
                i += 1
            if self.progressive == "output_skip":
                p = mods[i + 1](self.act(mods[i](h)))
                i += 2
                pyramid = p if lvl == L - 1 else self.pyramid_upsample(pyramid) + p
            elif self.progressive == "residual":
                if lvl == L - 1:
                    pyramid = mods[i + 1](self.act(mods[i](h)))
                    i += 2
                else:
                    pyramid = rescale(mods[i](pyramid), h)
                    i += 1
                    h = pyramid
            if lvl != 0:
                h = mods[i](h) if self.resblock_type == "ddpm" else mods[i](h, temb)
                i += 1
        if self.progressive == "output_skip":
            h = pyramid
        else:
            h = mods[i + 1](self.act(mods[i](h)))
            i += 2
        if self.scale_by_sigma:
            h = h / used_sigmas.to(h).reshape(-1, *([1] * (h.ndim - 1)))
        return h


__all__ = ["NCSNpp", "geometric_sigmas", "PROGRESSIVE", "PROGRESSIVE_INPUT", "COMBINE", "RESBLOCK_TYPES",
           "EMBEDDING_TYPES"]  # fmt: skip
