"""The one loop that runs every fixed-grid sampler, and the result object."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..score import convert
from ..sde.base import LinearSDE
from ..utils import Generator, ScoreGuard
from .base import Context, CountingScore, Stepper


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
) -> SampleResult:
    """Run ``stepper`` over ``grid`` (descending times, len = steps + 1) starting from ``x``.

    Args:
        callback: called as ``callback(i, t, x, x0)`` after each step (t = grid[i + 1]).
        record: keep every state and x_0 estimate in the result.
        denoise: return the last step's noise-free mean (no extra NFE; Song et al. 2021's final
            denoising); with ``False`` the last step draws its noise like every other.
    Returns:
        :class:`SampleResult`. A score that returns NaN/inf, or a result that is not finite, gives one
        :class:`~score_sde.utils.NonFiniteScoreWarning` naming the first such time (``info['nonfinite']``
        is then True); turn it into an error with ``warnings.simplefilter("error", NonFiniteScoreWarning)``.
    """
    if grid.ndim != 1 or grid.numel() < 2:
        raise ValueError(f"grid must be a 1-D tensor of at least 2 times; got shape {tuple(grid.shape)}")
    guard = ScoreGuard(score_fn, f"sampler {stepper.name!r}")
    score = CountingScore(guard, cond)
    ctx = Context(sde=sde, score=score, generator=generator, grid=grid)
    # The hot path below allocates nothing per step beyond the stepper's own arithmetic: the grid
    # times are unbound once, and their [B] versions in the data dtype are built once.
    ts = grid.unbind(0)
    ctx.tvecs = grid.to(device=x.device, dtype=x.dtype)[:, None].expand(-1, x.shape[0]).unbind(0)
    stepper.init(ctx, x)
    steps = grid.numel() - 1
    res = SampleResult(x=x, nfe=0, grid=grid)
    it = range(steps)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(it, desc=stepper.name, leave=False)
        it = bar
    watch = record or callback is not None
    last_i = steps - 1 if denoise else -1
    mean = x
    for i in it:
        out = stepper.step(ctx, x, ts[i], ts[i + 1], i, i == last_i)
        x, mean = out.x, out.mean
        if watch:
            x0 = out.x0 if out.x0 is not None else _tweedie(sde, out)
            if record:
                res.trajectory.append(x)
                res.x0_preds.append(x0)
            if callback is not None:
                callback(i, ts[i + 1], x, x0)
        if bar is not None:
            bar.set_postfix(nfe=score.nfe, refresh=False)
    res.x = mean if denoise else x
    res.nfe = score.nfe
    guard.report(res.x, stacklevel=4)
    res.info["nonfinite"] = guard.nonfinite
    return res


def _tweedie(sde: LinearSDE, out) -> torch.Tensor | None:
    """x_0 estimate (x + sigma^2 s) / alpha from a step's score evaluation (Efron/Tweedie)."""
    if out.score is None:
        return None
    t = out.t_score.to(out.x_in.dtype)
    return convert(out.score, out.x_in, sde.alpha(t), sde.sigma(t), "score", "x0")


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
    """What ``record=`` / ``callback=`` give for a back-end that owns its loop (``ode``, ``sde``).

    Such a back-end hands over its states at the save times it was asked for, ``times`` (descending,
    len n, the last one the end time) and ``states`` (n tensors [B, ...], the last one ``res.x``). For
    each, the x_0 estimate is Tweedie's (x + sigma(t)^2 s(x, t)) / alpha(t) from one more score call
    at that state (the solver's own calls are at its internal stages, not at the save times); those
    calls are counted apart, in ``res.info['observer_nfe']``, not in ``res.nfe``. Then, as the fixed-grid
    loop does, ``record`` appends the state and estimate to ``res.trajectory`` / ``res.x0_preds``
    and ``callback(i, t, x, x0_hat)`` is called with i = 0 .. n - 1 (t a 0-d float64 tensor).
    """
    before = score.nfe
    for i, (t, x) in enumerate(zip(times.to(torch.float64).unbind(0), states)):
        tv = t.to(device=x.device, dtype=x.dtype).expand(x.shape[0])
        x0 = convert(score(x, tv), x, sde.alpha(tv), sde.sigma(tv), "score", "x0")
        if record:
            res.trajectory.append(x)
            res.x0_preds.append(x0)
        if callback is not None:
            callback(i, t, x, x0)
    res.info["observer_nfe"] = score.nfe - before
