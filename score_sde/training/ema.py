"""Exponential moving average of the parameters (Polyak averaging), as in the official score_sde code.

After every optimiser step: ``shadow <- decay * shadow + (1 - decay) * param``, with the decay
warmed up as ``min(decay, (1 + n) / (10 + n))`` over the first updates n (``use_num_updates``).
Official defaults: 0.9999 for VP / sub-VP models, 0.999 for VE models (:func:`default_ema_rate`).
Sampling and evaluation use the averaged weights (``copy_to`` / ``average_parameters``).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def default_ema_rate(sde_kind: str) -> float:
    """The official EMA decay: 0.999 for VE, 0.9999 otherwise (VP, sub-VP)."""
    return 0.999 if sde_kind in ("vesde", "ve") else 0.9999


class ExponentialMovingAverage:
    """EMA of a module's floating-point parameters.

    Args:
        model: the module whose parameters are averaged (a DDP wrapper's ``.module`` works too).
        decay: the target decay in [0, 1).
        use_num_updates: warm the decay up as ``min(decay, (1 + n) / (10 + n))``.
    """

    def __init__(self, model: nn.Module, decay: float, use_num_updates: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1); got decay = {decay!r}")
        self.decay = float(decay)
        self.num_updates = 0 if use_num_updates else None
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._views = [p.detach() for p in self._params]  # share storage: see in-place optimiser updates
        self.shadow = [p.detach().clone() for p in self._params]
        self._backup: list[torch.Tensor] | None = None

    def current_decay(self) -> float:
        if self.num_updates is None:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self) -> None:
        """One EMA step toward the current parameters (call after ``optimizer.step()``)."""
        decay = self.current_decay()
        if self.num_updates is not None:
            self.num_updates += 1
        torch._foreach_lerp_(self.shadow, self._views, 1.0 - decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module | None = None) -> None:
        """Write the averaged weights into ``model`` (default: the tracked module)."""
        params = self._params if model is None else [p for p in model.parameters() if p.requires_grad]
        for p, s in zip(params, self.shadow, strict=True):
            p.copy_(s)

    @torch.no_grad()
    def store(self) -> None:
        """Save the current (raw) parameters, to be put back by :meth:`restore`."""
        self._backup = [p.detach().clone() for p in self._params]

    @torch.no_grad()
    def restore(self) -> None:
        if self._backup is None:
            raise RuntimeError("restore() called without a matching store()")
        for p, b in zip(self._params, self._backup, strict=True):
            p.copy_(b)
        self._backup = None

    @contextlib.contextmanager
    def average_parameters(self):
        """Context manager: the tracked module holds the averaged weights inside the block."""
        self.store()
        self.copy_to()
        try:
            yield
        finally:
            self.restore()

    def state_dict(self) -> dict:
        """Tensors and plain numbers only (loadable with ``torch.load(weights_only=True)``)."""
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": [s.clone() for s in self.shadow]}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        shadow = state["shadow"]
        if len(shadow) != len(self.shadow):
            raise ValueError(f"EMA state holds {len(shadow)} tensors; the model has {len(self.shadow)} parameters")
        for s, v in zip(self.shadow, shadow, strict=True):
            if s.shape != v.shape:
                raise ValueError(f"EMA tensor of shape {tuple(v.shape)} does not fit a parameter of {tuple(s.shape)}")
            s.copy_(v)
        self.decay = float(state["decay"])
        self.num_updates = state["num_updates"]


__all__ = ["ExponentialMovingAverage", "default_ema_rate"]
