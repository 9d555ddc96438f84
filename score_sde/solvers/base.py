"""Steppers and the context the one loop hands them.

A sampler = a time grid + a :class:`Stepper` run by :func:`score_sde.solvers.loop.integrate`.
A stepper owns only its update rule x(t_cur) -> x(t_next) and declares, as data:

- ``order``: its convergence order as a deterministic ODE solver (0 where meaningless),
- ``nfe_per_step``: score evaluations per step,
- ``stochastic``: whether it draws noise.

The loop owns NFE counting (through :class:`CountingScore`), progress bars, callbacks, dtype
and RNG handling. Steppers draw noise only through ``ctx.randn_like`` so that per-sample
generators and ``torch.manual_seed`` reproduce runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..sde.base import LinearSDE
from ..utils import Generator, randn_like


class CountingScore:
    """Wrap ``score_fn(x, t[, cond])`` and count its calls (network function evaluations)."""

    def __init__(self, score_fn: Callable, cond: Any = None):
        self.fn, self.cond, self.nfe = score_fn, cond, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        out = self.fn(x, t) if self.cond is None else self.fn(x, t, self.cond)
        if out.shape != x.shape:
            raise ValueError(f"score_fn returned shape {tuple(out.shape)} for x of shape {tuple(x.shape)}")
        return out


@dataclass
class Context:
    """What a stepper may use: the SDE, the counted score, the RNG, the grid, a state dict."""

    sde: LinearSDE
    score: CountingScore
    generator: Generator = None
    grid: torch.Tensor | None = None
    state: dict = field(default_factory=dict)
    tvecs: list | None = None  # grid[i] as [B] tensors in the data dtype, filled by the loop

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return randn_like(x, self.generator)

    def tvec(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A grid time as a [B] tensor in x's dtype."""
        return t.to(device=x.device, dtype=x.dtype).expand(x.shape[0])

    def time_at(self, i: int | None, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``grid[i]`` (= ``t``) as a [B] tensor in x's dtype, cached by the loop (no per-step allocation);
        ``i = None`` (a step called outside the loop): ``t`` as a fresh [B] tensor."""
        tv = self.tvecs
        if tv is not None and i is not None and tv[i].shape[0] == x.shape[0]:
            return tv[i]
        return self.tvec(t, x)


@dataclass
class StepOutput:
    """x: the state after the step; mean: its noise-free part (returned at the end when denoising);
    x0: the stepper's estimate of x_0 if it formed one (for callbacks)."""

    x: torch.Tensor
    mean: torch.Tensor
    x0: torch.Tensor | None = None
    score: torch.Tensor | None = None  # a score evaluated at (x_in, t_score), for the x_0 estimate
    t_score: torch.Tensor | None = None
    x_in: torch.Tensor | None = None


class Stepper:
    """Base class of all fixed-grid steppers (predictors, correctors, PC, fast solvers)."""

    name: str = "stepper"
    order: int = 1
    nfe_per_step: int = 1
    stochastic: bool = False

    def check(self, sde: LinearSDE) -> None:
        """Raise ValueError if this stepper does not fit ``sde``."""

    def init(self, ctx: Context, x: torch.Tensor) -> None:
        """Reset per-run state in ``ctx.state`` (multistep history etc.)."""

    def step(
        self, ctx: Context, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, i: int, last: bool
    ) -> StepOutput:
        """Advance x from grid time t to t_next (both 0-d float64 tensors). ``last`` marks the final
        step: stochastic steppers then return their mean without drawing noise (the denoising step).

        Every predictor and fast solver overrides this; correctors only provide ``correct`` and run
        inside :class:`~score_sde.solvers.correctors.PCStepper`."""
        raise TypeError(f"{type(self).__name__} has no step rule of its own (a corrector?); use it inside sampler='pc'")

    def nfe(self, steps: int) -> int:
        """Exact NFE of ``steps`` steps (override when the last or first step differs)."""
        return steps * self.nfe_per_step

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(order={self.order}, nfe_per_step={self.nfe_per_step}, stochastic={self.stochastic})"
        )
