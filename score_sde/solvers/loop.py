"""``integrate``: one fixed-grid stepper over a grid, through the one driver.

The loop itself lives in :func:`score_sde.solvers.driver.run`; this module keeps the entry point of
earlier versions (and re-exports :class:`SampleResult` and :func:`observe_saved`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..sde.base import LinearSDE
from ..utils import Generator, ScoreGuard
from .base import Stepper
from .driver import run
from .observer import Observer, OutputOptions, SampleResult
from .problem import CountingScore, Problem


def integrate(
    stepper: Stepper,
    sde: LinearSDE,
    score_fn: Callable,
    x: torch.Tensor,
    grid: torch.Tensor,
    *,
    generator: Generator = None,
    denoise: bool = True,
    progress: bool = False,
    callback: Callable | None = None,
    record: bool = False,
    cond=None,
    output: OutputOptions | None = None,
) -> SampleResult:
    """Run ``stepper`` over ``grid`` (descending times, len = steps + 1) starting from ``x`` [B, ...].

    Args:
        callback: called as ``callback(i, t, x, x0)`` after each step (t = grid[i + 1]).
        record: keep every state and x_0 estimate in the result.
        denoise: return the last step's noise-free mean (no extra NFE; Song et al. 2021's final
            denoising); with ``False`` the last step draws its noise like every other.
        output: the same four options as one :class:`~score_sde.solvers.observer.OutputOptions`
            (then ``denoise``, ``progress``, ``callback`` and ``record`` are not read).
    Returns:
        :class:`SampleResult`. A score that returns NaN/inf, or a result that is not finite, gives one
        :class:`~score_sde.utils.NonFiniteScoreWarning` naming the first such time (``info['nonfinite']``
        is then True); turn it into an error with ``warnings.simplefilter("error", NonFiniteScoreWarning)``.
    """
    if output is None:
        output = OutputOptions(record=record, callback=callback, progress=progress, denoise=denoise)
    guard = ScoreGuard(score_fn, f"sampler {stepper.name!r}")
    problem = Problem(sde, CountingScore(guard, cond), generator)
    res = run(problem, stepper, x, grid, Observer(output))
    guard.report(res.x, stacklevel=4)
    res.info["nonfinite"] = guard.nonfinite
    return res


def observe_saved(
    sde: LinearSDE,
    score: CountingScore,
    times: torch.Tensor,
    states,
    res: SampleResult,
    *,
    record: bool,
    callback: Callable | None,
) -> None:
    """Record / call back at the save times of a back-end owning its loop, into ``res``
    (:meth:`Observer.saved <score_sde.solvers.observer.Observer.saved>`; its extra score calls go to
    ``res.info['observer_nfe']``)."""
    obs = Observer(OutputOptions(record=record, callback=callback))
    obs.attach(Problem(sde, score))
    res.info["observer_nfe"] = obs.saved(times, states, score)
    if record:
        res.trajectory.extend(obs.trajectory)
        res.x0_preds.extend(obs.x0_preds)


__all__ = ["SampleResult", "integrate", "observe_saved"]
