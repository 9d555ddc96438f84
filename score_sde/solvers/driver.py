"""The one driver: ``run(problem, method, x, times, observer) -> SampleResult``.

Every sampler goes through it. ``method`` is either

- a fixed-grid :class:`~score_sde.solvers.base.Stepper`: ``times`` is its grid (descending, len steps + 1)
  and the driver runs the loop below, ``state = init(problem, x)``, then for i = 0 .. steps - 1
  ``out, state = advance(problem, state, x, t_i, t_{i+1}, i, last)``; or
- an :class:`AdaptiveMethod` (a back-end owning its loop: torchdiffeq's ODE solvers in
  :mod:`score_sde.solvers.ode`, torchsde's SDE solvers in :mod:`score_sde.solvers.sdeint`):
  ``times`` are its output times and ``method.solve(problem, x, times, observer)`` runs it.

In both cases the :class:`~score_sde.solvers.observer.Observer` counts, shows progress, records and
calls back, and the result is a :class:`~score_sde.solvers.observer.SampleResult`.
"""

from __future__ import annotations

import torch

from .base import Stepper
from .observer import Observer, SampleResult
from .problem import Problem


class AdaptiveMethod:
    """A method that owns its loop (an adaptive or library solver). ``name`` names it in messages."""

    name: str = "adaptive"

    def solve(self, problem: Problem, x: torch.Tensor, times: torch.Tensor, observer: Observer) -> SampleResult:
        """Integrate from x at ``times[0]`` to ``times[-1]``; hand states at ``times[1:]`` to
        ``observer.saved`` when it is watching. Every adaptive method overrides this."""
        raise TypeError(f"{type(self).__name__} has no solve(problem, x, times, observer) of its own")


def run(problem: Problem, method, x: torch.Tensor, times: torch.Tensor, observer: Observer) -> SampleResult:
    """Solve ``problem`` from x [B, ...] at ``times[0]`` with ``method`` (a Stepper over the grid ``times``,
    or an :class:`AdaptiveMethod` with output times ``times``), watched by ``observer``."""
    observer.attach(problem)
    if isinstance(method, Stepper):
        res = _run_grid(problem, method, x, times, observer)
    elif isinstance(method, AdaptiveMethod):
        try:
            res = method.solve(problem, x, times, observer)
        finally:
            observer.close()
    else:
        raise TypeError(f"method must be a Stepper or an AdaptiveMethod; got {type(method).__name__}")
    return observer.finish(res)


def _run_grid(problem: Problem, stepper: Stepper, x: torch.Tensor, grid: torch.Tensor, obs: Observer) -> SampleResult:
    """The fixed-grid loop. The hot path allocates nothing per step beyond the stepper's own arithmetic:
    the grid times are unbound once, and their [B] versions in the data dtype are built once."""
    if grid.ndim != 1 or grid.numel() < 2:
        raise ValueError(f"grid must be a 1-D tensor of at least 2 times; got shape {tuple(grid.shape)}")
    problem.set_grid(grid, x)
    ts = problem.times
    state = stepper.init(problem, x)
    steps = grid.numel() - 1
    denoise = obs.output.denoise
    last_i = steps - 1 if denoise else -1
    watch = obs.watching or obs.output.progress
    mean = x
    # a stateless stepper (Stepper.advance not overridden) is called at its rule, step(), directly
    step = stepper.step if type(stepper).advance is Stepper.advance else None
    advance = stepper.advance
    for i in obs.steps(steps, stepper.name):
        if step is not None:
            out = step(problem, x, ts[i], ts[i + 1], i, i == last_i)
        else:
            out, state = advance(problem, state, x, ts[i], ts[i + 1], i, i == last_i)
        x, mean = out.x, out.mean
        if watch:
            obs.step(i, ts[i + 1], x, out.x0)
    return SampleResult(x=mean if denoise else x, nfe=problem.score.nfe, grid=grid)


__all__ = ["run", "AdaptiveMethod"]
