"""A noise-conditional classifier p_t(y | x_t) for classifier guidance (Song et al. 2021, App. I).

``NoiseConditionalClassifier(shape, num_classes)(x, labels) -> logits [B, num_classes]``; the
guided score is s(x, t) + w grad_x log p_t(y | x) (see ``score_sde.guidance``). The network is an MLP
for vector data (``shape = (D,)``) and a small conv net for images (``shape = (C, H, W)``); both
add the noise-level embedding (same conventions as the score nets) inside every block.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .embeddings import LabelEmbedding, batch_labels
from .layers import group_norm
from .mlp import _check_int, make_activation


class _ConvBlock(nn.Module):
    def __init__(self, in_ch, out_ch, emb_dim, act, down):
        super().__init__()
        self.norm = group_norm(in_ch)
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.act, self.down = act, down

    def forward(self, x, e):
        h = self.conv(self.act(self.norm(x))) + self.emb(e)[:, :, None, None]
        h = h + self.skip(x)
        return nn.functional.avg_pool2d(h, 2, ceil_mode=True) if self.down else h


class NoiseConditionalClassifier(nn.Module):
    """Time-conditioned classifier; ``forward(x, labels)`` returns logits ``[B, num_classes]``.

    Args:
        shape: shape of one sample: ``(D,)`` -> MLP; ``(C, H, W)`` -> conv net.
        num_classes: number of classes K.
        hidden: MLP width / base conv channels (128 / used as ``ch`` for images if ``ch`` is None).
        depth: MLP hidden layers, or conv blocks (each but the last halves the resolution).
        emb_dim: label features (64).
        embedding, label_scale, fourier_scale: as in :class:`~score_sde.nets.MLPScoreNet`
            (labels are continuous t in [0, 1] by default, multiplied by 1000).
        ch: conv channels (default 32).
        act: activation.
    """

    def __init__(
        self,
        shape: Sequence[int] | int,
        num_classes: int,
        hidden: int = 128,
        depth: int = 2,
        emb_dim: int = 64,
        embedding: str = "sinusoidal",
        label_scale: float = 1000.0,
        fourier_scale: float = 16.0,
        ch: int = 32,
        act: str = "silu",
    ):
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if len(shape) not in (1, 3) or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
            raise ValueError(f"shape must be (D,) or (C, H, W) of positive integers; got shape = {shape!r}")
        self.shape = shape
        self.num_classes = _check_int("num_classes", num_classes, lo=2)
        _check_int("depth", depth)
        self.act = make_activation(act)
        self.embed = LabelEmbedding(emb_dim, embedding, label_scale=label_scale, fourier_scale=fourier_scale)
        if len(shape) == 1:
            self.temb = nn.Sequential(nn.Linear(emb_dim, hidden), make_activation(act), nn.Linear(hidden, hidden))
            self.inp = nn.Linear(shape[0], hidden)
            self.layers = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(depth)])
            self.head = nn.Linear(hidden, self.num_classes)
        else:
            ch = _check_int("ch", ch)
            self.temb = nn.Sequential(nn.Linear(emb_dim, ch * 2), make_activation(act), nn.Linear(ch * 2, ch * 2))
            self.inp = nn.Conv2d(shape[0], ch, 3, padding=1)
            chans = [ch * min(2**i, 4) for i in range(depth + 1)]
            self.layers = nn.ModuleList(
                [_ConvBlock(chans[i], chans[i + 1], ch * 2, self.act, down=i < depth - 1) for i in range(depth)]
            )
            self.norm = group_norm(chans[-1])
            self.head = nn.Linear(chans[-1], self.num_classes)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(x) or tuple(x.shape[1:]) != self.shape:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x must have shape [B, *{self.shape}]; got {shape}")
        B = x.shape[0]
        labels = batch_labels(labels, B, x.device)
        e = self.temb(self.embed(labels, x.dtype))
        if len(self.shape) == 1:
            h = self.inp(x)
            for layer in self.layers:
                h = h + layer(self.act(h + e))
            return self.head(self.act(h))
        h = self.inp(x)
        for layer in self.layers:
            h = layer(h, e)
        h = self.act(self.norm(h)).mean(dim=(2, 3))
        return self.head(h)


__all__ = ["NoiseConditionalClassifier"]
