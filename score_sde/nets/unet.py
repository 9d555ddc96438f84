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

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import LabelEmbedding, batch_labels

# the blocks live in .layers and .resblocks; they stay importable from here (score_sde.nets.unet.<name>)
from .layers import NIN, AttnBlock, CrossAttnBlock, conv1x1, conv3x3, dense, group_norm, variance_scaling_  # noqa: F401
from .mlp import ClassConditioning, _check_int, make_activation
from .resblocks import Downsample, ResnetBlockBigGAN, ResnetBlockDDPM, Upsample

RESBLOCKS = ("ddpm", "biggan")


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
