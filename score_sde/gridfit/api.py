"""``ss.optimize_grid``: fit a sampler's time grid to a model from fitting starts, derivative-free.

Why derivative-free: the fixed-grid steppers tabulate their grid coefficients as Python floats
(``ExpStepper.init`` takes ``.tolist()`` of lambda, alpha, sigma), so the sampler's output is not
differentiable in the grid times through autograd. The search is instead over the K <= 6 coefficients of
the monotone log-SNR parameterisation of :mod:`score_sde.gridfit.param` with Nelder-Mead (scipy), from
one start per base grid (c = 0 is the base grid itself, so the fit never ends worse on the fitting
starts than the best base grid). Each loss evaluation is one run of the sampler through ``ss.sample``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch

from ..sde.base import LinearSDE
from ..solvers.api import sample
from .bound import StepDoublingBound
from .object import FittedGrid, sde_fingerprint, steps_for_nfe
from .param import GridMap, n_coefficients
from .teacher import TeacherLoss

METHODS = ("teacher", "bound")
BASES = ("auto", "logsnr", "karras", "quadratic")


class _Counting:
    """score_fn wrapper counting its (batched) calls: the NFE of the fit."""

    def __init__(self, score_fn: Callable):
        self.score_fn, self.nfe = score_fn, 0

    def __call__(self, *args):
        self.nfe += 1
        return self.score_fn(*args)


def optimize_grid(
    sde: LinearSDE,
    score_fn: Callable,
    sampler: str = "unipc",
    nfe: int = 10,
    x_T: torch.Tensor | None = None,
    method: str = "teacher",
    *,
    shape=None,
    generator: torch.Generator | None = None,
    eps: float | None = None,
    bases=BASES,
    max_k: int = 6,
    max_evals: int = 300,
    teacher_steps: int = 400,
    cond=None,
    **sampler_options,
) -> FittedGrid:
    """Fit the times of ``sampler``'s grid at an NFE budget to ``score_fn``.

    Args:
        sde, score_fn: the SDE and the model's score ``score_fn(x, t)`` (x [B, ...], t [B]).
        sampler: a fixed-grid registered sampler ("ddim", "dpmpp_2m", "dpmpp_3m", "unipc", "heun", ...);
            ``**sampler_options`` go to it (e.g. ``order=3``) and are stored with the grid.
        nfe: the NFE budget (the grid has the number of steps ``ss.sample(..., nfe=nfe)`` takes).
        x_T: fitting starts [B, ...] (or ``shape`` and ``generator`` to draw them from the prior). Keep
            them apart from the starts the grid is evaluated on.
        method: "teacher" (mean pathwise error against a tight UniPC-3 solve from x_T,
            :mod:`score_sde.gridfit.teacher`) or "bound" (the teacher-free step-doubling error estimate,
            :mod:`score_sde.gridfit.bound`).
        eps: end time (default ``sde.default_eps``).
        bases: grid kinds the search starts from (one optimiser start for each distinct grid: on VP "auto" is
            "quadratic", on VE it is "logsnr").
        max_k: at most this many coefficients (eq. (1) of :mod:`score_sde.gridfit.param`).
        max_evals: loss evaluations per start (Nelder-Mead's maxfev).
        teacher_steps: steps of the teacher solve (method "teacher").
    Returns:
        :class:`FittedGrid` with the times, the sampler and NFE, the SDE's fingerprint and the cost
        (``cost["nfe"]`` score evaluations including the teacher's, ``cost["seconds"]``, ``cost["starts"]``).
    """
    from scipy.optimize import minimize

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got method = {method!r}")
    if not isinstance(sampler, str):
        raise TypeError(f"sampler must be a registered sampler name; got {type(sampler).__name__}")
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"nfe must be an integer >= 1; got nfe = {nfe!r}")
    if isinstance(max_evals, bool) or not isinstance(max_evals, int) or max_evals < 1:
        raise ValueError(f"max_evals must be an integer >= 1; got max_evals = {max_evals!r}")
    if not bases:
        raise ValueError("bases must name at least one grid kind")
    steps = steps_for_nfe(sampler, sampler_options, nfe)
    eps = sde.default_eps if eps is None else float(eps)
    sde.check_eps(eps)
    if x_T is None:
        if shape is None:
            raise ValueError("give the fitting starts x_T=[B, ...] or shape=[B, ...]")
        x_T = sde.prior_sampling(tuple(shape), generator=generator, dtype=torch.float64)
    t0 = time.perf_counter()
    score = _Counting(score_fn)
    if method == "teacher":
        loss = TeacherLoss(sde, score, sampler, nfe, x_T, eps, sampler_options, cond, teacher_steps)
    else:
        loss = StepDoublingBound(sde, score, sampler, nfe, x_T, eps, sampler_options, cond)
    K = n_coefficients(steps, max_k)
    evals = 0

    def objective(c, gmap):
        nonlocal evals
        evals += 1
        try:
            v = loss(gmap(c))
        except (ValueError, RuntimeError):
            return 1e300
        return math.log(v) if math.isfinite(v) and v > 0 else 1e300

    best = None
    per_base, seen = {}, []
    for kind in bases:
        base = sample(sde, score, x_T=x_T[:1], sampler=sampler, nfe=nfe, grid=kind, eps=eps, cond=cond,
                      **sampler_options).grid.to(torch.float64)  # fmt: skip
        if base.numel() != steps + 1 or base[-1] <= 0:
            raise ValueError(f"{sampler} builds a grid of {base.numel()} times ending at {float(base[-1])} from "
                             f"kind {kind!r}; only grids of {steps + 1} times ending at eps can be fitted")  # fmt: skip
        if any(torch.equal(base, b) for b in seen):
            continue
        seen.append(base)
        gmap = GridMap(sde, base)
        f0 = objective(np.zeros(K), gmap)
        c, f = np.zeros(K), f0
        if K > 0:
            simplex = np.vstack([np.zeros(K), 0.5 * np.eye(K)])
            r = minimize(objective, np.zeros(K), args=(gmap,), method="Nelder-Mead",
                         options=dict(maxfev=max_evals, initial_simplex=simplex, xatol=1e-3, fatol=1e-4))  # fmt: skip
            if r.fun < f0:
                c, f = r.x, float(r.fun)
        per_base[kind] = {"loss_base": math.exp(f0) if f0 < 1e299 else None, "loss_fit": math.exp(f) if f < 1e299
                          else None, "coefficients": [float(v) for v in c]}  # fmt: skip
        if best is None or f < best[0]:
            best = (f, kind, gmap(c))
    f, kind, times = best
    seconds = time.perf_counter() - t0
    cost = {"nfe": score.nfe, "seconds": seconds, "starts": len(seen), "fit_samples": int(x_T.shape[0]),
            "evaluations": evals}  # fmt: skip
    info = {"base": kind, "loss": math.exp(f) if f < 1e299 else None, "per_base": per_base, "k": K,
            "teacher_steps": teacher_steps if method == "teacher" else None}  # fmt: skip
    return FittedGrid(times=times, sampler=sampler, nfe=nfe, sde=sde_fingerprint(sde), options=dict(sampler_options),
                      method=method, cost=cost, info=info)  # fmt: skip
