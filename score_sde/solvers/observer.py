"""The one observer of a solve, and the result object every method returns.

The :class:`Observer` owns what a caller watches, for fixed-grid and adaptive methods alike:

- the NFE count (read off the problem's :class:`~score_sde.solvers.problem.CountingScore`);
- the progress bar (tqdm: per step on a grid; for an adaptive solve, per right-hand-side call, advancing
  with the furthest time reached);
- recording (``record=True``: every state and x_0 estimate in :class:`SampleResult`) and callbacks
  ``callback(i, t, x, x0_hat)``: after every grid step, or at the save times of an adaptive solve.

Options come grouped as :class:`OutputOptions`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..score import convert
from .problem import Problem


@dataclass
class SampleResult:
    """x: samples [B, ...]; nfe: score evaluations used; grid: the times visited (descending);
    trajectory / x0_preds: per-step states and x_0 estimates when ``record=True``."""

    x: torch.Tensor
    nfe: int
    grid: torch.Tensor | None = None
    trajectory: list = field(default_factory=list)
    x0_preds: list = field(default_factory=list)
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class OutputOptions:
    """What a sampling run hands back besides the samples (``ss.sample(..., output=OutputOptions(...))``).

    record: keep every state and x_0 estimate; callback: ``callback(i, t, x, x0_hat)`` after each step
    (t a 0-d float64 tensor); progress: a tqdm bar; denoise: the last step returns its noise-free mean.
    """

    record: bool = False
    callback: Callable | None = None
    progress: bool = False
    denoise: bool = True

    def __post_init__(self):
        for name in ("record", "progress", "denoise"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False; got {name} = {getattr(self, name)!r}")
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"callback must be callable; got callback = {self.callback!r}")


class Observer:
    """Watches one solve for :class:`OutputOptions`; the driver calls it, methods never do."""

    def __init__(self, output: OutputOptions | None = None):
        self.output = output if output is not None else OutputOptions()
        self.watching = self.output.record or self.output.callback is not None
        self.trajectory: list = []
        self.x0_preds: list = []
        self.bar = None
        self.problem: Problem | None = None

    def attach(self, problem: Problem) -> None:
        """Watch ``problem``: its steps form their x_0 estimates when recording or calling back."""
        self.problem = problem
        problem.observed = self.watching

    @property
    def nfe(self) -> int:
        return self.problem.score.nfe

    # -- fixed grid -------------------------------------------------------------------------------
    def steps(self, n: int, name: str):
        """The step indices 0..n-1 (wrapped in a progress bar when asked for)."""
        if not self.output.progress:
            return range(n)
        from tqdm.auto import tqdm

        self.bar = tqdm(range(n), desc=name, leave=False)
        return self.bar

    def step(self, i: int, t: torch.Tensor, x: torch.Tensor, x0: torch.Tensor | None) -> None:
        """After step i, at grid time t = grid[i + 1]."""
        if self.watching:
            self._see(i, t, x, x0)
        if self.bar is not None:
            self.bar.set_postfix(nfe=self.nfe, refresh=False)

    def _see(self, i, t, x, x0):
        if self.output.record:
            self.trajectory.append(x)
            self.x0_preds.append(x0)
        if self.output.callback is not None:
            self.output.callback(i, t, x, x0)

    # -- adaptive ---------------------------------------------------------------------------------
    def progress_hook(self, name: str, t_start: float, t_end: float) -> Callable | None:
        """``on_call(t)`` for an adaptive solver's right-hand side (None without a progress bar): the bar
        advances monotonically with the furthest time reached and shows the calls so far."""
        if not self.output.progress:
            return None
        from tqdm.auto import tqdm

        self.bar = bar = tqdm(total=1000, desc=name, leave=False)
        calls = [0]

        def on_call(t):
            calls[0] += 1
            done = round(1000 * min(1.0, (t_start - float(t)) / (t_start - t_end)))
            bar.set_postfix(nfe=calls[0], refresh=False)
            if done > bar.n:
                bar.update(done - bar.n)

        return on_call

    def saved(self, times: torch.Tensor, states, score: Callable) -> int:
        """A back-end owning its loop hands over its states at the save times ``times`` (descending, len n,
        the last one the end time), ``states`` (n tensors [B, ...]). For each, x_0 is Tweedie's
        (x + sigma(t)^2 s(x, t)) / alpha(t) from one more call of ``score`` (a counting score apart from the
        solver's, whose calls are at its internal stages, not at the save times); then, as on a grid, the
        state is recorded and ``callback(i, t, x, x0_hat)`` called with i = 0 .. n - 1. Returns the number
        of those extra score calls (``info['observer_nfe']``)."""
        if not self.watching:
            return 0
        before = score.nfe
        sde = self.problem.sde
        for i, (t, x) in enumerate(zip(times.to(torch.float64).unbind(0), states)):
            tv = t.to(device=x.device, dtype=x.dtype).expand(x.shape[0])
            x0 = convert(score(x, tv), x, sde.alpha(tv), sde.sigma(tv), "score", "x0")
            self._see(i, t, x, x0)
        return score.nfe - before

    # -- end ----------------------------------------------------------------------------------------
    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def finish(self, res: SampleResult) -> SampleResult:
        """Put the recorded states into ``res`` and close the progress bar."""
        self.close()
        if self.output.record:
            res.trajectory, res.x0_preds = self.trajectory, self.x0_preds
        return res


__all__ = ["SampleResult", "OutputOptions", "Observer"]
