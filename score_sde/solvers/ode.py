"""The probability-flow ODE through torchdiffeq (Song et al. 2021, eq. 13; App. D.3).

The probability-flow ODE of a forward SDE ``dx = f(t) x dt + g(t) dw`` with score s = grad log p_t,

    dx/dt = f(t) x - 1/2 g(t)^2 s(x, t),                                   (eq. 13)

has the same marginals p_t as the SDE, so integrating it from x_T ~ p_T at t = T down to t = eps
draws from p_eps (deterministically given x_T). This module is the one place that calls
torchdiffeq; the likelihood module reuses it:

- :func:`probability_flow_drift` builds the right-hand side ``rhs(t, x)`` of eq. 13;
- :func:`odeint_clamped` runs torchdiffeq on any right-hand side (tensor or tuple state), keeps
  the time handed to the function inside ``[lo, hi]``, counts the real function calls and stops
  with :class:`NFEBudgetExceeded` when a budget is exceeded;
- :func:`odeint_pf` combines the two (optionally in float64, optionally one sample at a time);
- :func:`ode_sample` is the ``ode`` sampler of :func:`score_sde.sample`.

Two pitfalls of adaptive solvers are handled here (both seen with torchdiffeq):

1. torchdiffeq picks its first step by probing the function a little way past the start; on a
   short interval the probe can leave ``[eps, T]``, where e.g. the VP sigma(t) is NaN for t < 0
   (one NaN makes the step size underflow). The time given to the function is clamped to the
   interval; a ``first_step`` can also be passed in ``options``.
2. Adaptive solvers share one step size (and error norm) across the batch, so a sample's result
   and the NFE depend on the rest of the batch. ``per_sample=True`` solves every sample on its own
   (B solves; results are then independent of the batch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from ..sde.base import LinearSDE
from ..utils import FiniteWatch, ScoreGuard, check_ode_dtype, check_tolerance
from .driver import AdaptiveMethod, run
from .grids import make_grid
from .lean_rk import odeint_lean
from .observer import Observer, OutputOptions, SampleResult
from .problem import CountingScore, Problem
from .scipy_ode import SCIPY_METHODS, ScipySolveError, odeint_scipy

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
SAVE_POINTS = 32  # output times of an adaptive solve asked to record / call back without steps= or grid=
FIXED_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams", "fixed_adams")


class NFEBudgetExceeded(RuntimeError):
    """Raised when an ODE solve needs more function evaluations than its ``max_nfe`` budget."""


class ODESolveError(RuntimeError):
    """torchdiffeq gave up (its step size underflowed or it ran out of steps); the message says why:
    a right-hand side (score) that returned NaN/inf, or tolerances the dtype can not meet."""


def probability_flow_drift(sde: LinearSDE, score_fn: Callable) -> Callable:
    """The right-hand side of the probability-flow ODE (eq. 13) as ``rhs(t, x)``.

    Args:
        sde: the forward SDE (supplies f(t) = d ln alpha/dt and g(t)^2).
        score_fn: ``score_fn(x, t)`` -> grad log p_t(x), t of shape [B].
    Returns:
        ``rhs(t, x) = f(t) x - 1/2 g(t)^2 score_fn(x, t)`` for a 0-d time tensor t and x [B, ...];
        the result has the shape of x (:meth:`LinearSDE.reverse_drift` with a 0-d t, so the schedule
        stays on x's device). ``rhs`` is differentiable in x and t (no ``no_grad`` inside), so it can
        be used for divergences / adjoints.
    """

    def rhs(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t64 = torch.as_tensor(t, dtype=torch.float64)
        # the score's time in x's dtype, straight from t (a float32 t read through float64 is the same number)
        tv = (t if torch.is_tensor(t) else t64).to(device=x.device, dtype=x.dtype).expand(x.shape[0])
        return sde.reverse_drift(x, t64, score_fn(x, tv))

    return rhs


@dataclass
class ODESolution:
    """y: the state at t1 (tensor or tuple like y0); nfe: calls of the right-hand side;
    ys: the states at every requested time (first dim = len(times)); times: those times."""

    y: torch.Tensor | tuple
    nfe: int
    ys: torch.Tensor | tuple | None = None
    times: torch.Tensor | None = None
    info: dict = field(default_factory=dict)


def _check_method(method: str, options: dict, times: torch.Tensor) -> None:
    if method not in ADAPTIVE_METHODS + FIXED_METHODS + tuple(SCIPY_METHODS) + ("scipy_solver",):
        valid = sorted(ADAPTIVE_METHODS + FIXED_METHODS) + sorted(SCIPY_METHODS)
        raise ValueError(f"unknown ODE method {method!r}; valid methods (torchdiffeq, then scipy): {valid}")
    if method in FIXED_METHODS and "step_size" not in options and "grid_constructor" not in options:
        if times.numel() <= 2:
            raise ValueError(
                f"the fixed-step method {method!r} needs a step count (steps=... / a grid) or "
                "options={'step_size': ...}; without one torchdiffeq takes a single step"
            )


def odeint_clamped(
    func: Callable,
    y0: torch.Tensor | tuple,
    times: torch.Tensor,
    *,
    lo: float,
    hi: float,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    options: dict | None = None,
    max_nfe: int | None = None,
    on_call: Callable | None = None,
    watch: FiniteWatch | None = None,
) -> ODESolution:
    """Run ``torchdiffeq.odeint(func, y0, times)`` with the time kept in ``[lo, hi]`` and NFE counted.

    Args:
        func: ``func(t, y)`` with a 0-d time tensor; y a tensor or a tuple of tensors (e.g. the
            likelihood's augmented state (x, delta_logp)).
        y0: the initial state at ``times[0]``.
        times: 1-D tensor of output times, monotone (increasing or decreasing); the first is the
            start. For fixed-step methods without ``options['step_size']`` these are the steps.
        lo, hi: the interval the function may be evaluated on (e.g. [eps, T]); probes of the
            adaptive first-step selection outside it are clamped. Adaptive methods get
            ``step_t = [times[-1]]`` (unless given) so that their last step ends on the end time.
        rtol, atol: tolerances of adaptive methods (ignored by fixed-step ones).
        method: any torchdiffeq method (:data:`ADAPTIVE_METHODS`, :data:`FIXED_METHODS`) or a scipy one
            (``"scipy_rk45"``, ``"scipy_dop853"``: :mod:`score_sde.solvers.scipy_ode`; a tensor state only).
        options: passed to torchdiffeq (e.g. ``first_step``, ``step_size``, ``max_num_steps``).
        max_nfe: raise :class:`NFEBudgetExceeded` once ``func`` would be called more often.
        on_call: called as ``on_call(t)`` before each evaluation (progress bars).
        watch: where the caller already watches the values inside ``func`` for NaN/inf (a
            :class:`~score_sde.utils.ScoreGuard` on the score), that watch; it then names the first non-finite
            time of a failed solve and ``func``'s outputs are not checked again (by default each output is
            checked, :class:`~score_sde.utils.FiniteWatch`, without a sync per call).
    Returns:
        :class:`ODESolution` with ``y`` at ``times[-1]``, ``ys`` at all ``times`` and ``nfe``.
    Raises:
        ValueError for rtol/atol that are not finite numbers > 0; :class:`ODESolveError` instead of
        torchdiffeq's bare ``AssertionError`` (step-size underflow, too many steps), naming the first time
        the right-hand side returned NaN/inf when it did.
    """
    rtol, atol = check_tolerance("rtol", rtol), check_tolerance("atol", atol)
    options = dict(options or {})
    times = torch.as_tensor(times)
    _check_method(method, options, times)
    if method in ADAPTIVE_METHODS and "step_t" not in options:
        # end a step exactly at the last time: otherwise the last step overshoots, its stages are
        # evaluated at clamped times (a kinked right-hand side) and the end is interpolated
        options["step_t"] = times[-1:].clone()
    if max_nfe is not None and (not isinstance(max_nfe, int) or max_nfe < 1):
        raise ValueError(f"max_nfe must be an integer >= 1; got max_nfe = {max_nfe!r}")
    count = [0]
    own_watch = watch is None  # then the outputs are watched here: the first time the right-hand side was not finite
    if own_watch:
        watch = FiniteWatch()

    def wrapped(t, y):
        if max_nfe is not None and count[0] >= max_nfe:
            raise NFEBudgetExceeded(
                f"the ODE solve needs more than max_nfe = {max_nfe} function evaluations "
                f"(method={method!r}, rtol={rtol}, atol={atol}); loosen rtol/atol or raise the budget"
            )
        count[0] += 1
        # on the CPU reading t costs less than clamping it (a no-op inside [lo, hi], where it nearly always is)
        tc = t if t.is_cpu and lo <= t.item() <= hi else t.clamp(lo, hi)
        if on_call is not None:
            on_call(tc)
        out = func(tc, y)
        if own_watch:
            for v in out if isinstance(out, tuple) else (out,):
                if torch.is_tensor(v):
                    watch.see(v, tc)
        return out

    try:
        if method in SCIPY_METHODS:
            if isinstance(y0, tuple):
                raise TypeError(f"method {method!r} (scipy) integrates one tensor state, not a tuple")
            ys = odeint_scipy(wrapped, y0, times, rtol=rtol, atol=atol, method=method, options=options)
        else:
            ys = odeint_lean(wrapped, y0, times, rtol=rtol, atol=atol, method=method, options=options)
    except (AssertionError, ScipySolveError) as e:
        first_t = watch.first_time()
        if first_t is not None:
            why = f"the right-hand side (the score) returned NaN/inf, first at t = {first_t:.6g}"
        else:
            dt = (y0[0] if isinstance(y0, tuple) else y0).dtype
            why = f"the tolerances rtol = {rtol:g}, atol = {atol:g} may be too tight for {dt}"
        lib = "scipy" if method in SCIPY_METHODS else "torchdiffeq"
        raise ODESolveError(
            f"the ODE solve ({method}) failed after {count[0]} evaluations: {why} ({lib}: {e})"
        ) from None
    y1 = tuple(v[-1] for v in ys) if isinstance(ys, tuple) else ys[-1]
    return ODESolution(y=y1, nfe=count[0], ys=ys, times=times)


def odeint_pf(
    sde: LinearSDE,
    score_fn: Callable,
    x: torch.Tensor,
    t0: float,
    t1: float,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    options: dict | None = None,
    float64: bool = False,
    max_nfe: int | None = None,
    per_sample: bool = False,
    times: torch.Tensor | None = None,
    cond=None,
    on_call: Callable | None = None,
) -> ODESolution:
    """Integrate the probability-flow ODE (eq. 13) from ``t0`` to ``t1`` (either direction).

    Args:
        x: the state at t0, shape [B, ...].
        t0, t1: start and end times in [0, T] (sampling: T -> eps; encoding: eps -> T).
        float64: solve in float64 (the result is cast back to x's dtype).
        per_sample: solve each sample on its own (batch-invariant results; ``nfe`` is then the sum
            over samples and ``info['nfe_per_sample']`` holds each sample's count; ``max_nfe``
            applies to each solve).
        times: output times (default ``[t0, t1]``); for fixed-step methods also the steps.
        cond: conditioning passed as ``score_fn(x, t, cond)`` (sliced per sample if it is a [B, ...] tensor).
        Other arguments as :func:`odeint_clamped`.
    Returns:
        :class:`ODESolution`: ``y`` [B, ...] at t1, ``ys`` [len(times), B, ...], ``nfe``.
    """
    check_ode_dtype(x, "x")
    lo, hi = min(float(t0), float(t1)), max(float(t0), float(t1))
    if times is None:
        times = torch.tensor([float(t0), float(t1)], dtype=torch.float64)
    dtype = x.dtype
    work = torch.float64 if float64 else dtype
    times = torch.as_tensor(times, dtype=torch.float64).to(device=x.device, dtype=work)

    def solve_one(xb, cb):
        fn = score_fn if cb is None else (lambda x_, t_: score_fn(x_, t_, cb))
        return odeint_clamped(
            probability_flow_drift(sde, fn),
            xb.to(work),
            times,
            lo=lo,
            hi=hi,
            rtol=rtol,
            atol=atol,
            method=method,
            options=options,
            max_nfe=max_nfe,
            on_call=on_call,
            watch=score_fn if isinstance(score_fn, FiniteWatch) else None,
        )

    if not per_sample:
        sol = solve_one(x, cond)
        sol.y, sol.ys = sol.y.to(dtype), sol.ys.to(dtype)
        return sol
    B = x.shape[0]
    sols = []
    for b in range(B):
        cb = cond[b : b + 1] if torch.is_tensor(cond) and cond.ndim > 0 and cond.shape[0] == B else cond
        sols.append(solve_one(x[b : b + 1], cb))
    ys = torch.cat([s.ys for s in sols], dim=1).to(dtype)
    nfes = [s.nfe for s in sols]
    return ODESolution(y=ys[-1], nfe=sum(nfes), ys=ys, times=times, info={"nfe_per_sample": nfes})


@dataclass(frozen=True)
class AdaptiveOptions:
    """How an adaptive ODE solve runs (``ss.sample(..., sampler="ode", solver=AdaptiveOptions(...))``).

    method: a torchdiffeq method (:data:`ADAPTIVE_METHODS`, :data:`FIXED_METHODS`) or ``"scipy_rk45"`` /
    ``"scipy_dop853"`` (:mod:`score_sde.solvers.scipy_ode`); rtol, atol: its
    tolerances (finite numbers > 0); options: torchdiffeq's (e.g. ``first_step``, ``step_size``);
    max_nfe: raise :class:`NFEBudgetExceeded` past this many right-hand-side calls.
    """

    method: str = "dopri5"
    rtol: float = 1e-5
    atol: float = 1e-5
    options: dict | None = None
    max_nfe: int | None = None

    def __post_init__(self):
        if self.method not in ADAPTIVE_METHODS + FIXED_METHODS + tuple(SCIPY_METHODS) + ("scipy_solver",):
            valid = sorted(ADAPTIVE_METHODS + FIXED_METHODS) + sorted(SCIPY_METHODS)
            raise ValueError(f"unknown ODE method {self.method!r}; valid methods (torchdiffeq, then scipy): {valid}")
        check_tolerance("rtol", self.rtol)
        check_tolerance("atol", self.atol)
        if self.max_nfe is not None and (not isinstance(self.max_nfe, int) or self.max_nfe < 1):
            raise ValueError(f"max_nfe must be an integer >= 1; got max_nfe = {self.max_nfe!r}")


@dataclass
class ProbabilityFlowODE(AdaptiveMethod):
    """The probability-flow ODE (eq. 13) through torchdiffeq, as a method of the one driver: the state at
    ``times[0]`` is carried to ``times[-1]`` (:func:`odeint_pf`); the observer sees the dense output at
    ``times[1:]`` (which does not change the accepted steps)."""

    solver: AdaptiveOptions = field(default_factory=AdaptiveOptions)
    float64: bool = False
    per_sample: bool = False
    name = "ode"

    def solve(self, problem, x, times, observer):
        o = self.solver
        on_call = observer.progress_hook(f"ode[{o.method}]", float(times[0]), float(times[-1]))
        guard = problem.score.fn
        sol = odeint_pf(
            problem.sde,
            guard,
            x,
            float(times[0]),
            float(times[-1]),
            rtol=o.rtol,
            atol=o.atol,
            method=o.method,
            options=o.options,
            float64=self.float64,
            max_nfe=o.max_nfe,
            per_sample=self.per_sample,
            times=times,
            cond=problem.cond,
            on_call=on_call,
        )
        problem.score.nfe += sol.nfe
        res = SampleResult(x=sol.y, nfe=sol.nfe, grid=times.to(torch.float64), info=dict(sol.info, method=o.method))
        if observer.watching:
            counted = CountingScore(guard, problem.cond)
            res.info["observer_nfe"] = observer.saved(times[1:], sol.ys[1:].unbind(0), counted)
        return res


def ode_sample(
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
    method: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    float64: bool = False,
    per_sample: bool = False,
    max_nfe: int | None = None,
    options: dict | None = None,
    solver: AdaptiveOptions | None = None,
) -> SampleResult:
    """The ``ode`` sampler: x_T -> x_eps along the probability-flow ODE with torchdiffeq.

    Options (``ss.sample(..., sampler="ode", **options)``): ``method`` (any torchdiffeq method,
    default ``dopri5``), ``rtol``/``atol`` (1e-5 as in the official code; on the 2-D mixture of the
    tests this leaves max endpoint errors of 2e-4 to 5e-4 against a DOP853 reference at 1e-10 (VP,
    sub-VP, VE), 1e-7 leaves <= 4e-6 and 1e-8 <= 2e-7; tests/test_samplers.py), ``float64``,
    ``per_sample`` (batch-invariant solves), ``max_nfe`` (or ``ss.sample``'s ``nfe=``: a budget;
    exceeding it raises :class:`NFEBudgetExceeded`), ``options`` (torchdiffeq's, e.g. ``first_step``);
    or the first four and ``max_nfe`` grouped as ``solver=AdaptiveOptions(...)`` (then those keywords
    must not be given as well).
    ``steps``/``grid`` give the output times (and, for fixed-step methods, the steps). ``record`` and
    ``callback(i, t, x, x0_hat)`` see the state at each output time after the first (default, for an
    adaptive method, :data:`SAVE_POINTS` uniform times), read off torchdiffeq's dense output, so the
    accepted steps and the result do not change; x0_hat is Tweedie's estimate from one more score
    call per output time, counted in ``info['observer_nfe']``
    (:meth:`Observer.saved <score_sde.solvers.observer.Observer.saved>`). The ODE path
    adds no noise, so ``denoise`` has nothing to remove and is ignored (as for the fixed-step
    probability-flow predictor); ``generator`` is unused (x_T is drawn by ``ss.sample``).
    """
    loose = {"method": method, "rtol": rtol, "atol": atol, "options": options, "max_nfe": max_nfe}
    if solver is None:
        d = AdaptiveOptions()
        rtol = d.rtol if rtol is None else check_tolerance("rtol", rtol)
        atol = d.atol if atol is None else check_tolerance("atol", atol)
        budget = max_nfe if max_nfe is not None else nfe
        solver = AdaptiveOptions(d.method if method is None else method, rtol, atol, options, budget)
    elif not isinstance(solver, AdaptiveOptions):
        raise TypeError(f"solver must be an AdaptiveOptions; got {type(solver).__name__}")
    elif any(v is not None for v in loose.values()):
        given = sorted(k for k, v in loose.items() if v is not None)
        raise TypeError(f"give {given} inside solver=AdaptiveOptions(...) or as keywords, not both")
    elif nfe is not None and solver.max_nfe is None:
        solver = replace(solver, max_nfe=nfe)
    output = OutputOptions(record=record, callback=callback, progress=progress, denoise=denoise)
    check_ode_dtype(x_T, "x_T")
    guard = ScoreGuard(score_fn, f"sampler 'ode' ({solver.method})")
    if grid is not None or steps is not None:
        times = make_grid(sde, grid if grid is not None else "uniform", steps if steps is not None else 1, eps)
    elif solver.method in FIXED_METHODS:
        times = make_grid(sde, "uniform", sde.N, eps)
    elif output.record or output.callback is not None:  # save times only: the adaptive steps do not depend on them
        times = make_grid(sde, "uniform", SAVE_POINTS, eps)
    else:
        times = torch.tensor([sde.T, float(eps)], dtype=torch.float64)
    problem = Problem(sde, CountingScore(guard, cond), generator, equation="probability_flow")
    res = run(problem, ProbabilityFlowODE(solver, float64, per_sample), x_T, times, Observer(output))
    guard.report(res.x, stacklevel=4)
    res.info["nonfinite"] = guard.nonfinite
    return res


__all__ = [
    "probability_flow_drift",
    "odeint_clamped",
    "odeint_pf",
    "ode_sample",
    "AdaptiveOptions",
    "ProbabilityFlowODE",
    "NFEBudgetExceeded",
    "ODESolveError",
    "ADAPTIVE_METHODS",
    "FIXED_METHODS",
    "SAVE_POINTS",
]
