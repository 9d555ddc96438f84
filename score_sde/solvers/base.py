"""Fixed-grid methods: the :class:`Stepper` protocol and its :class:`StepOutput`.

A fixed-grid sampler = a time grid + a :class:`Stepper` run by the driver
(:func:`score_sde.solvers.driver.run`). A stepper owns only its update rule x(t) -> x(t_next) and
declares, as data:

- ``order``: its convergence order as a deterministic ODE solver (0 where meaningless),
- ``nfe_per_step``: score evaluations per step,
- ``stochastic``: whether it draws noise.

It reads the :class:`~score_sde.solvers.problem.Problem` (SDE, counted score, RNG, grid tables) and,
when it carries anything from step to step (a multistep history, tables of its own variables), a typed
state of its own, a dataclass:

    state = stepper.init(problem, x)                                   # None: stateless
    out, state = stepper.advance(problem, state, x, t, t_next, i, last)

A stateless stepper only writes ``step(problem, x, t, t_next, i, last) -> StepOutput``; ``advance``
then calls it. The observer (:mod:`score_sde.solvers.observer`) owns NFE counting, progress bars,
recording and callbacks. Steppers draw noise only through ``problem.randn_like`` so that per-sample
generators and ``torch.manual_seed`` reproduce runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..sde.base import LinearSDE
from .problem import Context, CountingScore, Problem

__all__ = ["Stepper", "StepOutput", "Problem", "Context", "CountingScore"]


@dataclass
class StepOutput:
    """x: the state after the step [B, ...]; mean: its noise-free part (returned at the end when
    denoising); x0: the step's x_0 estimate (given when it forms one, or when ``problem.observed``)."""

    x: torch.Tensor
    mean: torch.Tensor
    x0: torch.Tensor | None = None


class Stepper:
    """Base class of all fixed-grid steppers (predictors, correctors, PC, fast solvers)."""

    name: str = "stepper"
    order: int = 1
    nfe_per_step: int = 1
    stochastic: bool = False

    def check(self, sde: LinearSDE) -> None:
        """Raise ValueError if this stepper does not fit ``sde``."""

    def init(self, problem: Problem, x: torch.Tensor) -> Any:
        """The state carried from step to step (a dataclass of the method), built from the run's grid
        ``problem.grid`` and the start x [B, ...]; None for a stateless stepper."""
        return None

    def advance(
        self, problem: Problem, state: Any, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, i: int, last: bool
    ) -> tuple[StepOutput, Any]:
        """The driver's call: one step from ``state``; returns the output and the next state.
        Stateless steppers keep this default, which calls :meth:`step`."""
        return self.step(problem, x, t, t_next, i, last), state

    def step(
        self, problem: Problem, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, i: int, last: bool
    ) -> StepOutput:
        """Advance x from grid time t to t_next (both 0-d float64 tensors; ``i`` the step's index in the
        grid). ``last`` marks the final step: stochastic steppers then return their mean without drawing
        noise (the denoising step).

        Every predictor overrides this (stateful methods override :meth:`advance`); correctors only
        provide ``correct`` and run inside :class:`~score_sde.solvers.correctors.PCStepper`."""
        raise TypeError(f"{type(self).__name__} has no step rule of its own (a corrector?); use it inside sampler='pc'")

    def runs(self, steps: int) -> bool:
        """Whether this stepper can run ``steps`` steps (e.g. a fixed plan of per-step orders runs one count)."""
        return True

    def nfe(self, steps: int) -> int:
        """Exact NFE of ``steps`` steps (override when the last or first step differs); only asked for step
        counts the stepper :meth:`runs`."""
        return steps * self.nfe_per_step

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(order={self.order}, nfe_per_step={self.nfe_per_step}, stochastic={self.stochastic})"
        )


class StatefulStepper(Stepper):
    """A stepper with typed state: it overrides :meth:`init` and :meth:`advance`; :meth:`step` (a step
    called on its own) then starts from a fresh ``init(problem, x)``."""

    def step(self, problem, x, t, t_next, i, last):
        return self.advance(problem, self.init(problem, x), x, t, t_next, i, last)[0]
