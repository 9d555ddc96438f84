"""The reverse-time SDE through torchsde (Song et al. 2021, eq. 6).

The reverse SDE of ``dx = f(t) x dt + g(t) dw`` is

    dx = [f(t) x - g(t)^2 s(x, t)] dt + g(t) dw~,   t from T down to eps.        (eq. 6)

torchsde integrates forward in time on a state of shape [B, D], so the sampler works in the
reversed time s = T - t (increasing from 0 to T - eps) on the flattened state y = x.reshape(B, D):

    dy = [g(t)^2 s(y, t) - f(t) y] ds + g(t) dW_s,   t = T - s.

The noise is additive (g does not depend on x), so the Ito and Stratonovich forms coincide and
the torchsde methods apply: ``euler`` (Ito; the default, Euler–Maruyama), ``milstein``,
``srk`` (Ito, stochastic Runge–Kutta), ``midpoint``, ``heun``, ``euler_heun``,
``log_ode`` (Stratonovich). (torchsde's ``reversible_heun`` is refused with a ValueError: on the
contractive reverse SDE it is unstable; with 200 steps on the VE mixture problem its samples reached
|x| ~ 1e2.) The Brownian motion is a
``torchsde.BrownianInterval`` whose entropy is drawn from ``generator`` (so ``torch.manual_seed``
or a seeded generator reproduces a run; a list of per-sample generators makes every sample solve on
its own with its own Brownian motion, so it does not depend on the batch around it).

With ``denoise=True`` the last of the ``steps`` steps is the noise-free Euler step (the mean of the
last Euler–Maruyama step, as the fixed-grid samplers do), taken outside torchsde.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..sde.base import LinearSDE
from ..utils import ScoreGuard
from .driver import AdaptiveMethod, run
from .observer import Observer, OutputOptions, SampleResult
from .problem import CountingScore, Problem

ITO_METHODS = ("euler", "milstein", "srk")
STRATONOVICH_METHODS = ("midpoint", "heun", "euler_heun", "log_ode")
SDE_METHODS = ITO_METHODS + STRATONOVICH_METHODS


class _ReverseTimeSDE(torch.nn.Module):
    """The reverse SDE in s = T - t on a [B, D] state, in torchsde's (f, g) form (diagonal noise)."""

    noise_type = "diagonal"

    def __init__(self, sde: LinearSDE, score: Callable, shape: tuple, eps: float, sde_type: str):
        super().__init__()
        self.fwd, self.score, self.shape, self.eps, self.sde_type = sde, score, shape, eps, sde_type
        self.T = float(sde.T)
        self._last = None  # (s, y, f): torchsde's contract check calls f(0, y0) once before the
        # first step evaluates the same point; the cache saves that duplicate score call

    def _t(self, s: torch.Tensor) -> torch.Tensor:
        return (self.T - torch.as_tensor(s, dtype=torch.float64)).clamp(self.eps, self.T)

    def f(self, s, y):
        last = self._last
        if last is not None and last[1] is y and last[0] == float(s):
            return last[2]
        t = self._t(s).to(device=y.device)
        x = y.reshape(self.shape)
        sc = self.score(x, t.to(dtype=y.dtype).expand(y.shape[0])).reshape(y.shape)
        # in s = T - t the drift is minus the reverse drift f x - g^2 s (Song et al. 2021, eq. 6)
        out = -self.fwd.reverse_drift(y, t, sc, probability_flow=False)
        self._last = (float(s), y, out)
        return out

    def g(self, s, y):
        return self.fwd.g2(self._t(s).to(device=y.device)).sqrt().to(y.dtype) * torch.ones_like(y)


def _seed_from(generator) -> int:
    """A 63-bit entropy for the BrownianInterval drawn from ``generator`` (None: torch's global RNG)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


def _solve(sde, score, x, eps, steps, method, denoise, seed, levy, save=False):
    """x_eps [B, ...] from x (at T) in ``steps`` steps; with ``save`` also the states after every step
    (a list of ``steps`` tensors, the last one x_eps): torchsde's outputs at the step times, which do
    not change the steps it takes."""
    import torchsde

    B = x.shape[0]
    y0 = x.reshape(B, -1)
    h = (sde.T - eps) / steps
    n_sde = steps - 1 if denoise else steps
    s_end = n_sde * h
    y, states = y0, []
    if n_sde > 0:
        sde_type = "ito" if method in ITO_METHODS else "stratonovich"
        rsde = _ReverseTimeSDE(sde, score, tuple(x.shape), eps, sde_type)
        bm = torchsde.BrownianInterval(
            t0=0.0,
            t1=s_end,
            size=tuple(y0.shape),
            dtype=y0.dtype,
            device=y0.device,
            entropy=seed,
            levy_area_approximation=levy,
            dt=h,  # the step-size hint lets torchsde build its interval tree for this grid (about 6x faster)
        )
        ts = torch.tensor([0.0, s_end], dtype=torch.float64, device=y0.device)
        if save:  # output times on the step grid; the last one stays s_end exactly
            ts = torch.cat([torch.arange(n_sde, dtype=torch.float64, device=y0.device) * h, ts[-1:]])
        # a step a hair longer than h: torchsde clips the last step at ts[-1], so exactly n_sde
        # steps are taken (an accumulated round-off would otherwise add a tiny extra step)
        ys = torchsde.sdeint(rsde, y0, ts, bm=bm, method=method, dt=h * (1 + 1e-9))
        y = ys[-1]
        if save:
            states = [v.reshape(x.shape) for v in ys[1:].unbind(0)]
    if denoise:
        # the last step, noise-free: x_mean = x + (f x - g^2 s) dt at t = eps + h, dt = -h
        t = torch.tensor(eps + h, dtype=torch.float64, device=x.device)
        xv = y.reshape(x.shape)
        sc = score(xv, t.to(dtype=x.dtype).expand(B))
        xv = xv - h * sde.reverse_drift(xv, t, sc, probability_flow=False)
        y = xv.reshape(B, -1)
        states.append(y.reshape(x.shape))
    return (y.reshape(x.shape), states) if save else y.reshape(x.shape)


@dataclass
class ReverseSDESolve(AdaptiveMethod):
    """The reverse SDE (eq. 6) through ``torchsde.sdeint`` in ``steps`` uniform steps, as a method of the one
    driver; ``times`` are the step times T = t_0 > ... > t_steps = eps (the observer sees the state after
    every step, torchsde's outputs at those times, which do not change its steps)."""

    method: str = "euler"
    steps: int = 1
    denoise: bool = True
    name = "sde"

    def solve(self, problem, x_T, times, observer):
        score, generator, cond = problem.score, problem.generator, problem.cond
        sde, eps, steps, method = problem.sde, float(times[-1]), self.steps, self.method
        on_call = observer.progress_hook(f"sde[{method}]", float(times[0]), eps)
        if on_call is not None:  # the bar follows the score calls (torchsde's own calls included)
            inner = score.fn

            def watched(x, t, *args):
                on_call(t.reshape(-1)[0])
                return inner(x, t, *args)

            score.fn = watched
        levy = {"srk": "space-time", "log_ode": "foster"}.get(method, "none")
        save = observer.watching
        if generator is None or isinstance(generator, torch.Generator):
            out = _solve(sde, score, x_T, eps, steps, method, self.denoise, _seed_from(generator), levy, save)
            x, states = out if save else (out, None)
        else:
            gens = list(generator)
            if len(gens) != x_T.shape[0]:
                raise ValueError(f"got {len(gens)} per-sample generators for a batch of {x_T.shape[0]}")
            parts = []
            for b, g in enumerate(gens):
                sb = score if cond is None or not torch.is_tensor(cond) else CountingScore(score.fn, cond[b : b + 1])
                xb = x_T[b : b + 1]
                parts.append(_solve(sde, sb, xb, eps, steps, method, self.denoise, _seed_from(g), levy, save))
                if sb is not score:
                    score.nfe += sb.nfe
            if save:  # per sample: (x_b, states_b); the states of step k of every sample side by side
                states = [torch.cat(k) for k in zip(*(p[1] for p in parts))]
                parts = [p[0] for p in parts]
            x = torch.cat(parts)
        res = SampleResult(x=x, nfe=score.nfe, info={"method": method, "steps": steps})
        if save:
            res.grid = times
            res.info["observer_nfe"] = observer.saved(times[1:], states, CountingScore(score.fn, cond))
        return res


def sde_sample(
    sde: LinearSDE,
    score_fn: Callable,
    x_T: torch.Tensor,
    *,
    eps: float,
    generator=None,
    progress: bool = False,
    cond=None,
    steps: int | None = None,
    nfe: int | None = None,
    denoise: bool = True,
    callback: Callable | None = None,
    record: bool = False,
    grid=None,
    method: str = "euler",
    dt: float | None = None,
) -> SampleResult:
    """The ``sde`` sampler: the reverse SDE (eq. 6) from T to ``eps`` with ``torchsde.sdeint``.

    Options (``ss.sample(..., sampler="sde", **options)``): ``method`` (a torchsde method, see
    :data:`SDE_METHODS`; default ``euler``) and ``dt`` (step size; default ``(T - eps) / steps``
    with ``steps`` = ``sde.N`` unless given; a uniform grid in t). NFE are counted from the real
    score calls; ``progress`` shows them. ``record`` and ``callback(i, t, x, x0_hat)`` see the state
    after every step (torchsde's outputs at the step times, which do not change its steps; the last
    one is the result) with Tweedie's x_0 estimate from one more score call per step, counted in
    ``info['observer_nfe']`` (:meth:`Observer.saved <score_sde.solvers.observer.Observer.saved>`).
    ``grid`` is not supported (the steps are uniform in t; use ``euler_maruyama`` for other grids);
    ``nfe=`` is accepted only for the ``euler`` method, where it fixes the number of steps.
    x_T: [B, ...]; generator: None, a torch.Generator, or one generator per sample.
    """
    if method not in SDE_METHODS:
        raise ValueError(f"unknown SDE method {method!r}; valid methods (torchsde): {sorted(SDE_METHODS)}")
    if grid is not None:
        raise ValueError("the 'sde' (torchsde) sampler does not take grid=; use 'euler_maruyama' for that")
    if dt is not None:
        if steps is not None:
            raise ValueError("give either steps or dt, not both")
        if not (isinstance(dt, (int, float)) and 0 < dt <= sde.T - eps):
            raise ValueError(f"dt must lie in (0, T - eps] = (0, {sde.T - eps}]; got dt = {dt!r}")
        steps = math.ceil((sde.T - eps) / dt - 1e-9)
    if nfe is not None:
        if steps is not None:
            raise ValueError("give either steps (or dt) or nfe, not both")
        if method != "euler":
            raise ValueError(f"nfe= fixes the step count only for method='euler'; got method={method!r}")
        steps = nfe
    steps = sde.N if steps is None else steps
    output = OutputOptions(record=record, callback=callback, progress=progress, denoise=denoise)
    h = (sde.T - eps) / steps
    times = torch.tensor([float(sde.T)] + [sde.T - k * h for k in range(1, steps)] + [float(eps)], dtype=torch.float64)
    guard = ScoreGuard(score_fn, f"sampler 'sde' ({method})")
    problem = Problem(sde, CountingScore(guard, cond), generator, equation="reverse_sde")
    res = run(problem, ReverseSDESolve(method, steps, output.denoise), x_T, times, Observer(output))
    guard.report(res.x, stacklevel=4)
    res.info["nonfinite"] = guard.nonfinite
    return res


__all__ = ["sde_sample", "ReverseSDESolve", "SDE_METHODS", "ITO_METHODS", "STRATONOVICH_METHODS"]
