"""A residual MLP score network for low-dimensional data (toy 2-D sets, vectors).

Architecture (``depth`` residual blocks of width ``hidden``)::

    e   = Dense(act(Dense(PE(labels))))                 noise-level embedding, [B, hidden]
    e  += Embed(cond)  or  Dense(cond)                  optional class / vector conditioning
    h   = Dense(x)                                      [B, hidden]
    h  += Dense(act(Dense(act(h)) + Dense_e(e)))        x depth (each block has its own Dense_e)
    out = Dense(act(h))                                 [B, dim]

Inputs of shape ``[B, *shape]`` are flattened to ``[B, dim]`` and the output is reshaped back.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .embeddings import LabelEmbedding, batch_labels

ACTIVATIONS = {"silu": nn.SiLU, "swish": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "elu": nn.ELU}


def make_activation(act: str) -> nn.Module:
    """``act`` name -> activation module (silu/swish, relu, gelu, tanh, elu)."""
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation act={act!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[act]()


def _check_int(name: str, value, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}; got {name} = {value!r}")
    return value


class ClassConditioning(nn.Module):
    """Adds a conditioning vector to the embedding ``e`` [B, dim].

    * ``num_classes = K``: an ``nn.Embedding(K + 1, dim)``; index K is the *null* class, used when
      ``cond is None`` or ``cond == K`` (classifier-free guidance trains with dropped labels set to K).
    * ``cond_dim = C``: a Dense(C, dim) of a float vector ``cond`` [B, C]; a learned null vector
      replaces it when ``cond is None``.
    """

    def __init__(self, dim: int, num_classes: int | None = None, cond_dim: int | None = None):
        super().__init__()
        if num_classes is not None and cond_dim is not None:
            raise ValueError(
                f"give either num_classes or cond_dim, not both; got num_classes = {num_classes!r}, "
                f"cond_dim = {cond_dim!r}"
            )
        self.num_classes = None if num_classes is None else _check_int("num_classes", num_classes)
        self.cond_dim = None if cond_dim is None else _check_int("cond_dim", cond_dim)
        if self.num_classes is not None:
            self.class_embed = nn.Embedding(self.num_classes + 1, dim)
        elif self.cond_dim is not None:
            self.cond_proj = nn.Linear(self.cond_dim, dim)
            self.null_cond = nn.Parameter(torch.zeros(dim))

    @property
    def active(self) -> bool:
        return self.num_classes is not None or self.cond_dim is not None

    def forward(self, e: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        B = e.shape[0]
        if not self.active:
            if cond is not None:
                raise ValueError("this network is unconditional (num_classes and cond_dim are None) but cond was given")
            return e
        if self.num_classes is not None:
            if cond is None:
                cond = torch.full((B,), self.num_classes, dtype=torch.long, device=e.device)
            cond = torch.as_tensor(cond, device=e.device)
            if cond.is_floating_point() or cond.shape != (B,):
                raise ValueError(
                    f"cond must be integer class labels of shape [B] = [{B}]; got dtype {cond.dtype}, "
                    f"shape {tuple(cond.shape)}"
                )
            if ((cond < 0) | (cond > self.num_classes)).any():
                bad = cond[(cond < 0) | (cond > self.num_classes)][0].item()
                raise ValueError(
                    f"class labels must lie in 0..{self.num_classes} ({self.num_classes} = null class); got {bad}"
                )
            return e + self.class_embed(cond.long())
        if cond is None:
            return e + self.null_cond.to(e)[None]
        if cond.shape != (B, self.cond_dim):
            raise ValueError(f"cond must have shape [B, cond_dim] = [{B}, {self.cond_dim}]; got {tuple(cond.shape)}")
        return e + self.cond_proj(cond.to(e))


class _ResBlock(nn.Module):
    def __init__(self, hidden: int, act: str):
        super().__init__()
        self.act = make_activation(act)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h, e):
        return h + self.fc2(self.act(self.fc1(self.act(h)) + self.emb(e)))


class MLPScoreNet(nn.Module):
    """Residual MLP ``net(x, labels, cond=None) -> [B, *shape]`` for data of shape [B, dim] or [B, *shape].

    Args:
        dim: number of data entries D per sample (the product of the event shape).
        hidden: width of the residual stream (256).
        depth: number of residual blocks (3).
        emb_dim: number of sinusoidal / Fourier features of the label (128).
        embedding: ``"sinusoidal"`` (PE(label_scale * labels)) or ``"fourier"`` (Fourier features of
            ln labels; use with sigma labels).
        num_classes: class-conditional with K classes (null class index K, see :class:`ClassConditioning`).
        cond_dim: conditional on a float vector of this size instead.
        act: activation (``"silu"``).
        label_scale: multiplies the labels before the sinusoidal embedding: 1000 (default) for
            continuous t in [0, 1] (``ScoreModel(time_labels="continuous")``), 1 for ``"t999"`` or
            ``"discrete"`` labels.
        fourier_scale: std of the Fourier frequencies (16).
        sinusoidal_layout: ``"interleaved"`` (the transformer's PE) or ``"concat"`` (official layout).

    The output is whatever the :class:`~score_sde.score.ScoreModel` says it predicts (eps by default).
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        depth: int = 3,
        emb_dim: int = 128,
        embedding: str = "sinusoidal",
        num_classes: int | None = None,
        cond_dim: int | None = None,
        act: str = "silu",
        label_scale: float = 1000.0,
        fourier_scale: float = 16.0,
        sinusoidal_layout: str = "interleaved",
    ):
        super().__init__()
        self.dim = _check_int("dim", dim)
        self.hidden = _check_int("hidden", hidden)
        self.depth = _check_int("depth", depth, lo=0)
        make_activation(act)
        self.embed = LabelEmbedding(
            _check_int("emb_dim", emb_dim, lo=2),
            embedding,
            label_scale=label_scale,
            fourier_scale=fourier_scale,
            layout=sinusoidal_layout,
        )
        self.temb = nn.Sequential(nn.Linear(emb_dim, hidden), make_activation(act), nn.Linear(hidden, hidden))
        self.cond = ClassConditioning(hidden, num_classes, cond_dim)
        self.num_classes, self.cond_dim = self.cond.num_classes, self.cond.cond_dim
        self.inp = nn.Linear(self.dim, hidden)
        self.blocks = nn.ModuleList([_ResBlock(hidden, act) for _ in range(depth)])
        self.out = nn.Sequential(make_activation(act), nn.Linear(hidden, self.dim))

    def forward(self, x: torch.Tensor, labels: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, dim] or [B, *shape] with prod(shape) = dim; labels: [B] (or a scalar); cond: see class doc."""
        if not torch.is_tensor(x) or x.ndim < 2 or math.prod(x.shape[1:]) != self.dim:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x must have shape [B, {self.dim}] (or [B, ...] holding {self.dim} entries); got {shape}")
        B = x.shape[0]
        labels = batch_labels(labels, B, x.device)
        e = self.temb(self.embed(labels, x.dtype))
        e = self.cond(e, cond)
        h = self.inp(x.reshape(B, self.dim))
        for block in self.blocks:
            h = block(h, e)
        return self.out(h).reshape(x.shape)


__all__ = ["MLPScoreNet", "ClassConditioning", "make_activation", "ACTIVATIONS"]
