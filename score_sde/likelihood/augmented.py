"""The augmented scheme: (x, Delta) integrated jointly along the probability-flow ODE, eq. (D.2) of
Song et al. (2021), the divergence at every stage of every step."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from ..solvers.base import CountingScore
from ..solvers.driver import AdaptiveMethod, run
from ..solvers.observer import Observer, OutputOptions, SampleResult
from ..solvers.ode import ADAPTIVE_METHODS, odeint_clamped
from ..solvers.problem import Problem
from ..solvers.scipy_ode import SCIPY_METHODS
from ..utils import FiniteWatch, ScoreGuard, flat_dim
from .divergence import _VJP, _depends_on_other_leaf, _divergence_exact, _divergence_hutchinson, _no_graph_divergence
from .options import DivergenceOptions, ODESolveOptions


class _AugmentedPFODE:
    """Right-hand side of the augmented system d(x, Delta)/dt = (f~(x, t), div f~(x, t)), eq. (D.2).

    One score evaluation per call serves both the drift and the divergence (the official code calls the
    network twice: once for the drift, once more inside the divergence's autograd graph). The drift is the
    shared :meth:`LinearSDE.reverse_drift` applied once to the flat pair ([x, D], [s, div s]); without a
    graph to keep it is formed outside autograd at a detached float64 time, so each call costs one forward
    and the vector-Jacobian products of the divergence, little else."""

    def __init__(self, sde, score: CountingScore, div: DivergenceOptions, work_dtype: torch.dtype, shape: tuple):
        """div: the resolved divergence options (``probes`` a tensor [k, B, ...] in the state dtype, or None for
        ``"exact"``); work_dtype: the dtype the score sees x in; shape: x's shape [B, ...]."""
        self.sde, self.score, self.work, self.shape = sde, score, work_dtype, shape
        self.n = math.prod(shape)  # the flat state is [x.flatten(), Delta]: n + B entries
        self.divergence, self.probes, self.chunk_size = div.kind, div.probes, div.chunk_size
        self.probes_work = None if div.probes is None else div.probes.to(work_dtype)
        self.create_graph = div.create_graph  # None: decided at the first call
        self.vjp = _VJP()
        self.dims = None  # [D] * B in the state dtype: the x-coefficient of the Delta row, made once
        self.watch = FiniteWatch()  # NaN/inf in div s (no sync per call); the score's output has its own guard

    def __call__(self, t, y):
        x_state = y[: self.n].view(self.shape)  # names: x_state (state dtype), x (work dtype), x_leaf (graph leaf)
        x = x_state.to(self.work)
        B, D = x.shape[0], flat_dim(x)
        # odeint_clamped keeps t inside [eps, T]. When the state carries a graph so does t (torchdiffeq's
        # first step depends on y0); t then stays a tensor so that the gradient of the discrete flow is
        # consistent. Otherwise the schedule is evaluated at the detached time in float64.
        keep = self.create_graph is not False and (x_state.requires_grad or t.requires_grad)
        tv = t.to(x.dtype).expand(B)
        with torch.enable_grad():
            x_leaf = x if keep and x.requires_grad else x.detach().requires_grad_(True)
            s = self.score(x_leaf, tv)
            if self.create_graph is None:
                self.create_graph = keep or _depends_on_other_leaf(s, x_leaf)
            cg = self.create_graph
            if not s.requires_grad:
                div_s = _no_graph_divergence(self.score.fn, s, x_leaf, tv)
            elif self.divergence == "exact":
                div_s = _divergence_exact(s, x_leaf, self.vjp, cg, self.chunk_size, x_state.dtype)
            else:
                div_s = _divergence_hutchinson(s, x_leaf, self.probes_work, self.probes, self.vjp, cg)
        self.watch.see(div_s, t)  # the score's own output is watched by its ScoreGuard
        if self.dims is None or self.dims.dtype != y.dtype or self.dims.device != y.device:
            self.dims = y.new_full((B,), D)
        # the PF drift is linear in (x, s), and its divergence is the same formula at (D, div s):
        # d[x, Delta]/dt = f(t) [x, D] - 1/2 g(t)^2 [s, div s], one shared drift on the flat state
        if cg:
            tc = t.to(x.dtype) if keep else t.detach().to(torch.float64)
            sd = torch.cat((s.reshape(-1), div_s))
            sd = sd if sd.dtype == y.dtype else sd.to(y.dtype)
            return self.sde.reverse_drift(torch.cat((y[: self.n], self.dims)), tc, sd)
        # no graph: the same products in place on fresh buffers, at the coefficients of one detached float64 time
        # (Python floats where the schedule has them: LinearSDE.drift_coefficients), bit for bit reverse_drift's
        f, g2 = self.sde.drift_coefficients(t.detach().to(torch.float64))
        # torch.cat casts s (work dtype) to the dtype of div s (the state's, but for a score constant in x) in its copy
        sd = torch.cat((s.detach().reshape(-1), div_s))
        sd = sd if sd.dtype == y.dtype else sd.to(y.dtype)
        return torch.cat((y[: self.n], self.dims)).mul_(f).sub_(sd.mul_(0.5 * g2))


def _split_norm(n: int) -> Callable:
    """torchdiffeq error norm of the flat state [x.flatten(), Delta]: the larger of the RMS error ratios of the x
    part and of the Delta part, so that neither the data (n entries) nor the log-density (B entries) drowns
    the other (the norm torchdiffeq applies to a tuple state, without its tuple bookkeeping)."""
    rn = 1.0 / math.sqrt(n)

    def norm(r: torch.Tensor) -> torch.Tensor:
        return torch.maximum(
            torch.linalg.vector_norm(r[:n]) * rn, torch.linalg.vector_norm(r[n:]) / math.sqrt(r.numel() - n)
        )

    return norm


@dataclass(eq=False)
class AugmentedProblem(Problem):
    """The likelihood's problem for the integrator core: the probability-flow ODE (eq. 13) of ``sde`` with the
    counted score, augmented by Delta' = div f~ (eq. D.2), so that the state is the flat
    ``[x.flatten(), Delta]`` (B*D + B entries). ``divergence`` says how div s is formed (resolved: probes a
    tensor [k, B, ...] in the state dtype or None for ``"exact"``), ``work_dtype`` is the dtype the score sees
    x in and ``shape`` is x's shape [B, ...]."""

    divergence: DivergenceOptions | None = None
    work_dtype: torch.dtype = torch.float32
    shape: tuple = ()

    def __post_init__(self):
        super().__post_init__()
        self.rhs = _AugmentedPFODE(self.sde, self.score, self.divergence, self.work_dtype, self.shape)


class _FirstCallOnce:
    """``func`` whose value at (t0, y0), computed beforehand, is handed back once instead of recomputed when
    the solver asks for it (both torchdiffeq and scipy start with f(t0, y0))."""

    def __init__(self, func, t0: torch.Tensor, y0: torch.Tensor, f0: torch.Tensor):
        self.func, self.first = func, (float(t0), y0, f0)

    def __call__(self, t, y):
        if self.first is not None:
            t0, y0, f0 = self.first
            self.first = None
            if float(t) == t0 and y.shape == y0.shape and torch.equal(y.detach(), y0.detach()):
                return f0
        return self.func(t, y)


@dataclass
class AugmentedODE(AdaptiveMethod):
    """The augmented PF-ODE solved by an adaptive ODE method, as a method of the one driver
    (:func:`score_sde.solvers.driver.run`): a torchdiffeq method (``"dopri5"`` by default) or scipy's
    ``"scipy_rk45"`` / ``"scipy_dop853"`` (:mod:`score_sde.solvers.scipy_ode`: the official code's integrator;
    no autograd graph, float64 arithmetic). ``"auto"`` picks ``"scipy_rk45"`` when ``logp`` needs no graph and
    the state is float64, else ``"dopri5"``. For ``"auto"`` and the scipy methods the right-hand side is
    evaluated once at (eps, [x, 0]) before the solve (it decides whether a graph is needed) and that value is
    the solver's first.

    The error norm of torchdiffeq's methods and of ``"scipy_rk45"`` is the larger of the RMS error ratios of the
    x part and of the Delta part (:func:`_split_norm`), so that neither the data (B*D entries) nor the
    log-density (B entries) drowns the other, unless ``options`` carries a ``norm``: ``"rms"`` takes the RMS
    over the whole flat state as the official code does (Delta then weighs 1/(D+1): a larger error at a given
    tolerance and a cheaper solve, both measured in benchmarks/results/likelihood_overhead.txt), or a function
    of the error ratios. ``"scipy_dop853"`` keeps scipy's own norm."""

    solve_options: ODESolveOptions = field(default_factory=ODESolveOptions)
    eps: float = 1e-5  # the solve runs over [eps, sde.T]; the right-hand side is never called outside it
    name = "log_likelihood"

    def solve(self, problem: AugmentedProblem, y0: torch.Tensor, times: torch.Tensor, observer) -> SampleResult:
        o, func = self.solve_options, problem.rhs
        method = o.method
        if method == "auto" or method in SCIPY_METHODS:
            f0 = func(times[0], y0)  # decides create_graph (None until the first call)
            if method == "auto":  # scipy's state is float64: a float32 state asks for torchdiffeq's arithmetic
                method = "dopri5" if func.create_graph or y0.dtype != torch.float64 else "scipy_rk45"
            elif func.create_graph:
                raise ValueError(
                    f"method {method!r} (scipy) carries no autograd graph, but logp is to be differentiable (x or "
                    "a parameter of the score requires grad): use method='dopri5', or call under torch.no_grad()"
                )
            func = _FirstCallOnce(func, times[0], y0, f0)
        options = dict(o.options or {})  # odeint_clamped makes an adaptive last step land on T (step_t)
        norm = options.pop("norm", None)
        if norm is None and method in ADAPTIVE_METHODS + ("scipy_rk45",):
            norm = _split_norm(problem.rhs.n)
        if norm == "rms":  # the RMS over the whole flat state: scipy's own, and the official code's
            norm = _rms_norm if method in ADAPTIVE_METHODS else None
        if norm is not None and method in SCIPY_METHODS:
            norm = _on_numpy(norm)  # scipy hands the norm a numpy array
        if norm is not None:
            options["norm"] = norm
        sol = odeint_clamped(
            func,
            y0,
            times,
            lo=self.eps,
            hi=problem.sde.T,
            rtol=o.rtol,
            atol=o.atol,
            method=method,
            options=options,
            on_call=observer.progress_hook(f"log_likelihood[{method}]", float(times[0]), float(times[-1])),
            watch=_Watches(problem.score.fn, problem.rhs.watch) if isinstance(problem.score.fn, ScoreGuard) else None,
        )
        return SampleResult(x=sol.y, nfe=problem.score.nfe, grid=times, info={"method": method})


class _Watches:
    """The NaN/inf watches of the augmented right-hand side, the score's (its :class:`ScoreGuard`) and div s's, as
    one for :func:`odeint_clamped`: the right-hand side [f x - g^2/2 s, f D - g^2/2 div s] is finite where x, s
    and div s are (the solver checks x), so its output needs no check of its own."""

    def __init__(self, *watches: FiniteWatch):
        self.watches = watches

    def first_time(self) -> float | None:
        """The time of the earliest call at which one of the watches saw NaN/inf, or None."""
        found = [(i, w.first_time()) for w in self.watches if (i := w.first_bad()) is not None]
        return min(found, key=lambda f: f[0])[1] if found else None


def _rms_norm(r: torch.Tensor) -> torch.Tensor:
    """The RMS of all error ratios of the flat state (``options={"norm": "rms"}``)."""
    return torch.linalg.vector_norm(r) / math.sqrt(r.numel())


def _on_numpy(norm: Callable) -> Callable:
    """A norm of torch tensors as scipy's step-size control calls it: on a float64 numpy array, returning a float."""

    def on_numpy(r) -> float:
        return float(norm(torch.from_numpy(r)))

    return on_numpy


def _solve_augmented(sde, score_fn, x: torch.Tensor, eps: float, div: DivergenceOptions, solve: ODESolveOptions,
                     progress: bool = False):
    """(z, Delta, nfe, method): the augmented state at T in ``solve.state_dtype``, z [B, ...] and Delta [B], the
    score calls and the ODE method used; the score is evaluated in x's dtype. ``div`` is resolved (probes a tensor
    or None, chunk_size and create_graph decided). The solve is :func:`~score_sde.solvers.driver.run` on an
    :class:`AugmentedProblem` with the :class:`AugmentedODE` method."""
    state_dtype = solve.state_dtype
    div = replace(div, probes=None if div.probes is None else div.probes.to(state_dtype))
    problem = AugmentedProblem(
        sde, CountingScore(score_fn), equation="probability_flow", divergence=div, work_dtype=x.dtype,
        shape=tuple(x.shape),
    )
    if div.create_graph is False:
        x = x.detach()
    x_state = x.to(state_dtype)
    times = torch.tensor([eps, sde.T], dtype=state_dtype, device=x.device)
    y0 = torch.cat((x_state.reshape(-1), x_state.new_zeros(x.shape[0])))
    res = run(problem, AugmentedODE(solve, eps), y0, times, Observer(OutputOptions(progress=progress)))
    n = problem.rhs.n
    return res.x[:n].view(x.shape), res.x[n:], res.nfe, res.info["method"]
