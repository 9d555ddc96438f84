"""An image U-Net of the DDPM++ / NCSN++ family (Song et al. 2021, App. H; Ho et al. 2020).

Structure (``L = len(ch_mult)`` levels, ``nf = ch``)::

    e = Dense(act(Dense(PE(label_scale * labels))))      or the Fourier features of ln sigma (NCSN++)
    e += ClassEmbed(cond)                                  optional (null class = num_classes)
    h = conv3x3(x)                                         down path, level l = 0..L-1:
        num_res_blocks x [ResBlock(nf ch_mult[l]) (+ SelfAttn (+ CrossAttn) at attn_resolutions)]
        then (l < L-1) a 2x down-sampling (a strided conv, or a BigGAN ResBlock(down=True))
    bottleneck: ResBlock, SelfAttn (+ CrossAttn), ResBlock
    up path, l = L-1..0: (num_res_blocks + 1) x ResBlock(concat(h, skip)) (+ attention once per level),
        then (l > 0) a 2x up-sampling (nearest + conv, or a BigGAN ResBlock(up=True))
    out = conv3x3(act(GroupNorm(h)))

ResBlock (``resblock="ddpm"``: DDPM++'s ``ResnetBlockDDPMpp``; ``"biggan"``: ``ResnetBlockBigGANpp``)::

    h = Conv_0(act(GroupNorm_0(x)))              (BigGAN: resample h and x here when up/down)
    h = h + Dense_0(act(e))[:, :, None, None]
    h = Conv_1(Dropout_0(act(GroupNorm_1(h))))   (Conv_1 starts at ~0: init_scale = 0)
    x = NIN_0(x) / Conv_2(x) when the channels (or resolution) change
    return (x + h) / sqrt(2)  if skip_rescale else  x + h

SelfAttn is the NIN-style single-head attention (``AttnBlockpp``): q, k, v, out are 1x1 maps
``NIN_0..NIN_3`` after a GroupNorm, softmax(q^T k / sqrt(C)) over all positions, residual (with
the same skip rescale). GroupNorm has min(C // 4, 32) groups and eps = 1e-6; weights use the
official ``variance_scaling(scale, "fan_avg", "uniform")`` init with zero biases and
scale = 1e-10 where ``init_scale = 0``.

Correspondence with the official PyTorch code (``models/ncsnpp.py``): ``self.all_modules`` is built
in the same order with the same sub-module names (``GroupNorm_0``, ``Conv_0``, ``Dense_0``,
``NIN_0``/``W``, ``b``, ...), so for an official config with ``progressive = progressive_input =
"none"``, ``fir = False`` (the DDPM++ configs) and for the DDPM net (``resblock="ddpm"``,
``skip_rescale=False``, widths >= 128) an official state dict loads after stripping its ``module.``
prefix (:meth:`UNet.load_official_state_dict`); build the net with ``sinusoidal_layout="concat"`` and
``label_scale=1`` (official nets get t * 999). The class embedding and the cross-attention blocks are
extras outside ``all_modules``. Every official network, with FIR resampling, progressive branches,
the exact official time labels and EMA weights, is built by :class:`score_sde.nets.NCSNpp` /
:class:`score_sde.nets.DDPM` and loaded by :func:`score_sde.pretrained.load_official`.

Sizes: any H, W work. Inputs are zero-padded on the bottom/right to a multiple of 2^(L-1) and the
output is cropped back, so 28 x 28 MNIST runs with ``ch_mult=(1, 2, 2, 2)`` (padded to 32). The
attention resolutions refer to ``resolution`` rounded up the same way (``resolution=28`` -> levels
32, 16, 8, 4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import LabelEmbedding, batch_labels
from .mlp import ClassConditioning, _check_int, make_activation

RESBLOCKS = ("ddpm", "biggan")


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


class UNet(nn.Module):
    """DDPM++ / NCSN++ U-Net ``net(x, labels, cond=None, context=None) -> [B, out_channels, H, W]``.

    Args:
        in_channels: C of the input (3).
        out_channels: C of the output (default ``in_channels``).
        ch: base width nf (128); level l has ``ch * ch_mult[l]`` channels.
        ch_mult: width multipliers per level ((1, 2, 2, 2)); ``len(ch_mult) - 1`` down-samplings.
        num_res_blocks: residual blocks per level on the way down (2; DDPM++ uses 4, deep 8).
        attn_resolutions: feature-map sizes with self-attention ((16,)).
        dropout: dropout rate inside the residual blocks (0.1).
        resolution: nominal input size, used to place attention (32).
        embedding: ``"sinusoidal"`` (PE(label_scale * labels), DDPM++) or ``"fourier"`` (Fourier
            features of ln sigma with std ``fourier_scale``, NCSN++; labels must be sigma).
        fourier_scale: 16.
        num_classes: class-conditional with K classes; ``cond`` [B] integers, K = null class.
        context_dim: adds cross-attention on ``context`` [B, L, context_dim] after every self-attention.
        resblock: ``"ddpm"`` (separate conv up/down-sampling) or ``"biggan"`` (resampling residual blocks).
        skip_rescale: divide every residual sum by sqrt(2) (True).
        label_scale: 1000 for continuous t in [0, 1]; 1 for ``"t999"`` / ``"discrete"`` labels.
        init_scale: scale of the init of each block's last layer (0 -> 1e-10, official).
        resamp_with_conv: conv in the ``"ddpm"`` up/down-sampling layers (True).
        act: activation (``"silu"`` = swish).
        sinusoidal_layout: ``"interleaved"`` (the transformer's PE) or ``"concat"`` (official layout).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        resolution: int = 32,
        embedding: str = "sinusoidal",
        fourier_scale: float = 16.0,
        num_classes: int | None = None,
        context_dim: int | None = None,
        resblock: str = "ddpm",
        skip_rescale: bool = True,
        label_scale: float = 1000.0,
        init_scale: float = 0.0,
        resamp_with_conv: bool = True,
        act: str = "silu",
        sinusoidal_layout: str = "interleaved",
    ):
        super().__init__()
        self.in_channels = _check_int("in_channels", in_channels)
        self.out_channels = self.in_channels if out_channels is None else _check_int("out_channels", out_channels)
        nf = _check_int("ch", ch)
        ch_mult = tuple(ch_mult)
        if not ch_mult or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in ch_mult):
            raise ValueError(f"ch_mult must be a non-empty sequence of positive integers; got ch_mult = {ch_mult!r}")
        _check_int("num_res_blocks", num_res_blocks)
        _check_int("resolution", resolution)
        if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
            raise ValueError(f"dropout must lie in [0, 1); got dropout = {dropout!r}")
        if resblock not in RESBLOCKS:
            raise ValueError(f"unknown resblock {resblock!r}; choose one of {RESBLOCKS}")
        if context_dim is not None:
            _check_int("context_dim", context_dim)
        self.ch, self.ch_mult, self.num_res_blocks = nf, ch_mult, num_res_blocks
        self.num_resolutions = L = len(ch_mult)
        self.factor = 2 ** (L - 1)
        padded = -(-resolution // self.factor) * self.factor
        self.resolution = resolution
        self.all_resolutions = [padded // 2**i for i in range(L)]
        self.attn_resolutions = tuple(int(r) for r in attn_resolutions)
        unused = [r for r in self.attn_resolutions if r not in self.all_resolutions]
        if unused:
            raise ValueError(
                f"attn_resolutions = {list(self.attn_resolutions)} has {unused}, which is not a feature-map size of "
                f"this UNet (resolution = {resolution}, ch_mult of length {L}: sizes {self.all_resolutions})"
            )
        self.resblock, self.embedding, self.context_dim = resblock, embedding, context_dim
        self.act = make_activation(act)
        temb_dim = 4 * nf

        self.embed = LabelEmbedding(
            2 * nf if embedding == "fourier" else nf,
            embedding,
            label_scale=label_scale,
            fourier_scale=fourier_scale,
            layout=sinusoidal_layout,
        )
        self.cond = ClassConditioning(temb_dim, num_classes=num_classes)
        self.num_classes = self.cond.num_classes

        def resnet(in_ch, out_ch=None, **kw):
            if resblock == "ddpm":
                return ResnetBlockDDPM(self.act, in_ch, out_ch, temb_dim, dropout, skip_rescale, init_scale)
            return ResnetBlockBigGAN(self.act, in_ch, out_ch, temb_dim, dropout=dropout, skip_rescale=skip_rescale,
                                     init_scale=init_scale, **kw)  # fmt: skip

        def attn(c):
            return AttnBlock(c, skip_rescale, init_scale)

        cross = []

        def add_cross(c):
            if context_dim is not None:
                cross.append(CrossAttnBlock(c, context_dim, skip_rescale, init_scale))

        modules: list[nn.Module] = []
        if embedding == "fourier":
            modules.append(self.embed.proj)  # official all_modules[0] is the Fourier projection
        modules += [dense(self.embed.dim, temb_dim), dense(temb_dim, temb_dim)]
        modules.append(conv3x3(self.in_channels, nf))
        hs_c, in_ch = [nf], nf
        for lvl in range(L):
            for _ in range(num_res_blocks):
                out_ch = nf * ch_mult[lvl]
                modules.append(resnet(in_ch, out_ch))
                in_ch = out_ch
                if self.all_resolutions[lvl] in self.attn_resolutions:
                    modules.append(attn(in_ch))
                    add_cross(in_ch)
                hs_c.append(in_ch)
            if lvl != L - 1:
                modules.append(Downsample(in_ch, resamp_with_conv) if resblock == "ddpm" else resnet(in_ch, down=True))
                hs_c.append(in_ch)
        in_ch = hs_c[-1]
        modules += [resnet(in_ch), attn(in_ch), resnet(in_ch)]
        add_cross(in_ch)
        for lvl in reversed(range(L)):
            for _ in range(num_res_blocks + 1):
                out_ch = nf * ch_mult[lvl]
                modules.append(resnet(in_ch + hs_c.pop(), out_ch))
                in_ch = out_ch
            if self.all_resolutions[lvl] in self.attn_resolutions:
                modules.append(attn(in_ch))
                add_cross(in_ch)
            if lvl != 0:
                modules.append(Upsample(in_ch, resamp_with_conv) if resblock == "ddpm" else resnet(in_ch, up=True))
        modules += [group_norm(in_ch), conv3x3(in_ch, self.out_channels, init_scale=init_scale)]
        self.all_modules = nn.ModuleList(modules)
        self.cross_modules = nn.ModuleList(cross)

    # ------------------------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        labels: torch.Tensor,
        cond: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: [B, in_channels, H, W]; labels: [B] (or a scalar); cond: [B] class indices (K = null)
        or None; context: [B, L, context_dim] or None; context_mask: [B, L] bool (True = attend)."""
        if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != self.in_channels:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x must have shape [B, {self.in_channels}, H, W]; got {shape}")
        B, _, H, W = x.shape
        labels = batch_labels(labels, B, x.device)
        if context is not None:
            if self.context_dim is None:
                raise ValueError("context was given but this UNet has context_dim=None (no cross-attention)")
            if context.ndim != 3 or context.shape[0] != B or context.shape[2] != self.context_dim:
                raise ValueError(
                    f"context must have shape [B, L, context_dim] = [{B}, L, {self.context_dim}]; "
                    f"got {tuple(context.shape)}"
                )
            context = context.to(x)
            if context_mask is not None and context_mask.shape != context.shape[:2]:
                raise ValueError(
                    f"context_mask must have shape {tuple(context.shape[:2])}; got {tuple(context_mask.shape)}"
                )
        ph, pw = (-H) % self.factor, (-W) % self.factor
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))

        mods, m = self.all_modules, 0
        cross = iter(self.cross_modules)

        def attend(h):
            nonlocal m
            h = mods[m](h)
            m += 1
            if self.context_dim is not None:
                h = next(cross)(h, context, context_mask)
            return h

        if self.embedding == "fourier":
            m += 1  # the projection is applied inside self.embed
        temb = self.embed(labels, x.dtype)
        temb = mods[m + 1](self.act(mods[m](temb)))
        m += 2
        temb = self.cond(temb, cond)

        hs = [mods[m](x)]
        m += 1
        L = self.num_resolutions
        for lvl in range(L):
            for _ in range(self.num_res_blocks):
                h = mods[m](hs[-1], temb)
                m += 1
                if self.all_resolutions[lvl] in self.attn_resolutions:
                    h = attend(h)
                hs.append(h)
            if lvl != L - 1:
                h = mods[m](hs[-1]) if self.resblock == "ddpm" else mods[m](hs[-1], temb)
                m += 1
                hs.append(h)
        h = mods[m](hs[-1], temb)
        m += 1
        h = attend(h)
        h = mods[m](h, temb)
        m += 1
        for lvl in reversed(range(L)):
            for _ in range(self.num_res_blocks + 1):
                h = mods[m](torch.cat([h, hs.pop()], dim=1), temb)
                m += 1
            if self.all_resolutions[lvl] in self.attn_resolutions:
                h = attend(h)
            if lvl != 0:
                h = mods[m](h) if self.resblock == "ddpm" else mods[m](h, temb)
                m += 1
        h = mods[m + 1](self.act(mods[m](h)))
        return h[:, :, :H, :W]

    # ------------------------------------------------------------------------------------------
    def load_official_state_dict(self, state_dict: dict, strict: bool = True):
        """Load an official score_sde (PyTorch) DDPM++ / DDPM state dict (keys ``[module.]all_modules.*``).

        Only the ``all_modules`` part is read (``sigmas`` buffers and EMA wrappers are ignored); with
        ``strict`` every ``all_modules`` key of this net must be present with the same shape.

        The loaded net matches the official one to ~1e-6 relative: this U-Net forms its sinusoidal
        features in float64, the official net in float32 (phases up to 999, so ~6e-5 apart). A larger
        difference of the *score* near t = 1e-3 (~1.2e-4 relative) is the official code's, not the net's:
        it computes sigma(t) = sqrt(1 - exp(-B(t))) in float32, which cancels for small t, while
        ``ScoreModel`` uses ``-expm1``. For the official networks with their exact features, labels
        and EMA weights use :func:`score_sde.pretrained.load_official`.
        """
        ours = {k: v for k, v in self.state_dict().items() if k.startswith("all_modules.")}
        theirs = {}
        for k, v in state_dict.items():
            k2 = k[len("module.") :] if k.startswith("module.") else k
            if k2.startswith("all_modules."):
                theirs[k2] = v
        missing = sorted(set(ours) - set(theirs))
        unexpected = sorted(set(theirs) - set(ours))
        if strict and (missing or unexpected):
            raise ValueError(
                f"official state dict does not match this UNet: missing {missing[:5]} ({len(missing)} in all), "
                f"unexpected {unexpected[:5]} ({len(unexpected)} in all)"
            )
        for k in set(ours) & set(theirs):
            if tuple(theirs[k].shape) != tuple(ours[k].shape):
                raise ValueError(
                    f"shape mismatch for {k}: official {tuple(theirs[k].shape)}, ours {tuple(ours[k].shape)}"
                )
        return self.load_state_dict({k: theirs[k] for k in set(ours) & set(theirs)}, strict=False)


__all__ = [
    "UNet",
    "AttnBlock",
    "CrossAttnBlock",
    "ResnetBlockDDPM",
    "ResnetBlockBigGAN",
    "Downsample",
    "Upsample",
    "NIN",
    "RESBLOCKS",
    "variance_scaling_",
]
