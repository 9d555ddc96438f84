r"""Exact likelihoods through the probability-flow ODE (Song et al. 2021, Sec. 4.3 and App. D.2).

The probability-flow ODE of a linear SDE,

    dx/dt = f~(x, t) = f(t) x - 1/2 g(t)^2 s(x, t),        s ~ grad_x log p_t,          (13)

is a continuous normalizing flow, so the instantaneous change of variables (Chen et al. 2018) gives

    log p_eps(x(eps)) = log p_T(x(T)) + \int_eps^T div f~(x(t), t) dt,                  (D.2)

    div f~(x, t) = D f(t) - 1/2 g(t)^2 div s(x, t)          (D = number of data entries).

The drift's share ``D f(t)`` is analytic for our linear SDEs; only ``div s`` goes through autograd,
either exactly (D vector-Jacobian products, vectorised over chunks of dimensions) or with the
Skilling–Hutchinson estimator ``div s ~ v^T (ds/dx) v`` with ``E[v v^T] = I`` (Rademacher or Gaussian
``v``, drawn once per trajectory and held fixed along it). The augmented state ``(x, Delta)`` is
integrated forward from ``eps`` to ``T`` with torchdiffeq (adaptive dopri5 by default), and

    logp = prior_logp(x(T)) + Delta(T)        (nats per sample, shape [B]).

With an exact score and the exact divergence this is the exact ``log p_eps(x)`` up to the ODE's
tolerance and the prior mismatch ``log p_T - log pi`` (about 2e-5 nats/dim for VP with beta_max = 20).

Defaults, chosen by measurement (benchmarks/likelihood_vs_official.py, README "Likelihood"):

- one score evaluation per right-hand-side call serves both the drift and the divergence (the
  official code calls the network twice: a no-grad forward for the drift, then a second forward
  and a backward for the divergence);
- the ODE state is one flat float64 tensor ``[x.flatten(), Delta]`` whatever the data dtype
  (``state_dtype``); the score still sees x in the data's dtype. The divergence of the PF drift,
  ``D f(t) - 1/2 g^2 div s``, is a difference of two terms of size ~D beta(t), so a float32 state
  carries ~1e-6 nats/dim of round-off in Delta whatever the tolerance, and its noisy error estimates
  cost extra steps;
- the error norm is the larger of the RMS error ratios of the x part and of the Delta part;
- dopri5 in the time variable t. Integrating in the log-SNR lambda, in -ln alpha or in sqrt(t), with
  or without x~ = x / alpha (the log-determinant then shifts by D ln alpha exactly), gave the same
  error-vs-NFE curve on the benchmark mixtures, and dopri8 / bosh3 needed more NFE at the official
  loop's accuracy (~1e-4 nats/dim), so none of these is the default.

The adaptive solver shares one step size across the batch, so NFE (and the result, within
tolerance) depend on the other samples in the batch; ``per_sample=True`` solves each sample on its
own. No ``torch.no_grad`` is hidden here: when gradients are enabled and ``x`` or the score's
parameters require them, the divergence is built with ``create_graph=True`` so that ``logp`` can be
differentiated (discretise-then-optimise through the solver's steps).

Bits per dimension go through an explicit :class:`~score_sde.data_scaling.DataScaling` (see there
for eq. (1)): ``bpd = -log p(x) / (D ln 2) - log2 a + log2 K``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from .data_scaling import DataScaling
from .quadrature import AdaptiveClenshawCurtis
from .sde.base import LinearSDE
from .solvers.base import CountingScore
from .solvers.ode import ADAPTIVE_METHODS, odeint_clamped, odeint_pf, probability_flow_drift
from .utils import Generator, NonFiniteScoreWarning, ScoreGuard, check_finite, check_tolerance, flat_dim

DIVERGENCES = ("exact", "hutchinson")
SCHEMES = ("augmented", "quadrature")
NOISES = ("rademacher", "gaussian")
DEFAULT_EPS = 1e-5  # likelihood end time (Song et al. 2021): the density reported is p_eps


@dataclass
class LikelihoodResult:
    """Result of :func:`log_likelihood`.

    Attributes:
        logp: log p_eps(x) in nats, shape [B]; ``prior_logp + delta``.
        z: the latent x(T), shape like x.
        prior_logp: log pi(z) under the SDE's prior, shape [B].
        delta: the integral \\int_eps^T div f~ dt, shape [B].
        nfe: score evaluations per sample. ``"augmented"``: right-hand sides of the augmented ODE (each a
            forward and the divergence's backward). ``"quadrature"``: right-hand sides of the x-solve
            (forward only) plus quadrature nodes (forward and backward; batched several to a call), plus one
            single-row call that checks whether the score reaches parameters requiring grad (when
            ``create_graph`` is None).
        info: details of the scheme: ``scheme``; for ``"quadrature"`` also ``nfe_ode``, ``ode_solves``,
            ``nodes``, ``score_calls`` (real calls of ``score_fn``: nodes are batched), ``delta_error`` (the
            quadrature's error estimate per sample, nats) and ``orders``
            (the final Clenshaw–Curtis order of each panel).
    """

    logp: torch.Tensor
    z: torch.Tensor
    prior_logp: torch.Tensor
    delta: torch.Tensor
    nfe: int
    info: dict = field(default_factory=dict)


# ---- validation ---------------------------------------------------------------------------------
def _no_graph_divergence(score: Callable, s: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The divergence of a score whose output carries no autograd graph back to ``x``.

    A score constant in x (same output at a shifted x) has divergence exactly 0. Otherwise the score was
    computed under ``torch.no_grad()`` or detached from x, its divergence can not be formed, and a
    ``ValueError`` says so (instead of torch's "element 0 of tensors does not require grad")."""
    with torch.no_grad():
        shifted = score(x.detach() * 1.25 + 0.5, t)
    if torch.equal(shifted, s.detach()):
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    raise ValueError(
        "log_likelihood needs the divergence of score_fn, but its output carries no gradient with respect to x "
        "(computed under torch.no_grad(), detached, or via numpy?); remove the no_grad/detach inside score_fn"
    )


def _check_inputs(sde, score_fn, x, rtol, atol, eps, method) -> tuple[float, float, float]:
    if not isinstance(sde, LinearSDE):
        raise TypeError(f"sde must be a score_sde LinearSDE (VPSDE, SubVPSDE, VESDE, ...); got {type(sde).__name__}")
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable as score_fn(x, t); got {type(score_fn).__name__}")
    check_finite(x)
    if x.ndim < 1 or x.shape[0] == 0 or x.numel() == 0:
        raise ValueError(f"x must have shape [B, ...] with B >= 1 and at least one entry; got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor; got dtype {x.dtype}")
    rtol, atol = check_tolerance("rtol", rtol), check_tolerance("atol", atol)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps):
        raise ValueError(f"eps must be a number in (0, T) = (0, {sde.T}); got eps = {eps!r}")
    sde.check_eps(eps)
    if not isinstance(method, str):
        raise TypeError(f"method must be the name of a torchdiffeq method; got {type(method).__name__}")
    return rtol, atol, float(eps)


# ---- the PF-ODE: shared with the integrator layer (score_sde.solvers.ode) -------------------------
def _pf_flow(sde, score_fn, x, t0, t1, rtol, atol, method, options) -> tuple[torch.Tensor, int]:
    """x(t1) of the probability-flow ODE started at x(t0) = x; returns (x(t1), nfe)."""
    score = CountingScore(score_fn)  # counts real calls and checks the score's shape
    sol = odeint_pf(sde, score, x, t0, t1, rtol=rtol, atol=atol, method=method, options=options)
    return sol.y, score.nfe


# ---- divergence of the score ------------------------------------------------------------------------
class _VJP:
    """Vector-Jacobian products of ``s(x)`` with several cotangents at once (``is_grads_batched``), or one
    at a time where a score's ops do not support vmap (detected once, then remembered)."""

    def __init__(self):
        self.batched = True
        self.basis: dict = {}  # one-hot cotangents of the exact divergence, reused across evaluations

    def __call__(self, s, x, vs: torch.Tensor, create_graph: bool, last: bool) -> torch.Tensor:
        """vs: [C, B, ...] cotangents; returns [C, B, ...] rows (ds/dx)^T v."""
        if vs.shape[0] > 1 and self.batched:
            try:
                return torch.autograd.grad(
                    s, x, vs, retain_graph=create_graph or not last, create_graph=create_graph, is_grads_batched=True
                )[0]
            except RuntimeError:
                self.batched = False
        if vs.shape[0] == 1:
            keep = create_graph or not last
            return torch.autograd.grad(s, x, vs[0], retain_graph=keep, create_graph=create_graph)[0][None]
        out = []
        for c in range(vs.shape[0]):
            keep = create_graph or not (last and c == vs.shape[0] - 1)
            out.append(torch.autograd.grad(s, x, vs[c], retain_graph=keep, create_graph=create_graph)[0])
        return torch.stack(out)


def _divergence_exact(s, x, vjp: _VJP, create_graph: bool, chunk_size: int, acc: torch.dtype) -> torch.Tensor:
    """sum_i ds_i/dx_i per sample, shape [B], summed in dtype ``acc``: the Jacobian diagonal from D one-hot
    cotangents e_i, ``chunk_size`` dimensions per batched vector-Jacobian product."""
    B, D = x.shape[0], flat_dim(x)
    div = None
    for start in range(0, D, chunk_size):
        key = (start, tuple(x.shape), x.dtype, x.device)
        if key not in vjp.basis:
            idx = torch.arange(start, min(start + chunk_size, D), device=x.device)
            cidx = torch.arange(idx.numel(), device=x.device)
            vs = x.new_zeros(idx.numel(), B, D)
            vs[cidx, :, idx] = 1.0
            vjp.basis[key] = (vs.reshape(idx.numel(), *x.shape), cidx, idx)
        vs, cidx, idx = vjp.basis[key]
        C = idx.numel()
        rows = vjp(s, x, vs, create_graph, last=start + C >= D).reshape(C, B, D)
        part = rows[cidx, :, idx].to(acc).sum(0)
        div = part if div is None else div + part
    return div


def _divergence_hutchinson(s, x, probes: torch.Tensor, probes_acc: torch.Tensor, vjp: _VJP, create_graph: bool):
    """Skilling–Hutchinson estimate mean_k v_k^T (ds/dx) v_k, shape [B]; probes: [k, B, ...] in x's dtype (the
    cotangents), probes_acc: the same in the dtype the products are summed in."""
    k, B = probes.shape[0], x.shape[0]
    rows = vjp(s, x, probes, create_graph, last=True).to(probes_acc.dtype)
    return (rows * probes_acc).reshape(k, B, -1).sum((0, 2)) / k


def _draw_probes(x: torch.Tensor, k: int, noise: str, generator: Generator) -> torch.Tensor:
    """k probes per sample, shape [k, B, ...], Rademacher (+-1) or standard normal, from ``generator``
    (one ``torch.Generator``, a sequence of B per-sample generators, or None for the global RNG)."""

    def draw(shape, g):
        if noise == "gaussian":
            return torch.randn(shape, generator=g, dtype=x.dtype, device=x.device)
        return torch.randint(0, 2, shape, generator=g, dtype=x.dtype, device=x.device) * 2 - 1

    if generator is None or isinstance(generator, torch.Generator):
        return draw((k, *x.shape), generator)
    gens = list(generator)
    if len(gens) != x.shape[0]:
        raise ValueError(f"got {len(gens)} per-sample generators for a batch of {x.shape[0]}")
    return torch.cat([draw((k, 1, *x.shape[1:]), g) for g in gens], dim=1)


def _depends_on_other_leaf(out: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether ``out``'s autograd graph reaches a leaf that requires grad other than ``x`` (a parameter)."""
    stack, seen = [out.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        var = getattr(fn, "variable", None)
        if var is not None and var is not x:
            return True
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return False


class _AugmentedPFODE:
    """Right-hand side of the augmented system d(x, Delta)/dt = (f~(x, t), div f~(x, t)), eq. (D.2).

    One score evaluation per call serves both the drift and the divergence (the official code calls the
    network twice: once for the drift, once more inside the divergence's autograd graph). The drift is the
    shared :meth:`LinearSDE.reverse_drift` applied once to the flat pair ([x, D], [s, div s]); without a
    graph to keep it is formed outside autograd at a detached float64 time, so each call costs one forward
    and the vector-Jacobian products of the divergence, little else."""

    def __init__(self, sde, score, divergence, probes, chunk_size, create_graph, work_dtype, shape):
        self.sde, self.score, self.work, self.shape = sde, score, work_dtype, shape
        self.n = math.prod(shape)  # the flat state is [x.flatten(), Delta]: n + B entries
        self.divergence, self.probes, self.chunk_size = divergence, probes, chunk_size
        self.probes_work = None if probes is None else probes.to(work_dtype)
        self.create_graph = create_graph  # None: decided at the first call
        self.vjp = _VJP()

    def __call__(self, t, y):
        xs = y[: self.n].view(self.shape)  # in the state dtype; the score sees x in the work dtype
        x = xs.to(self.work)
        B, D = x.shape[0], flat_dim(x)
        # odeint_clamped keeps t inside [eps, T]. When the state carries a graph so does t (torchdiffeq's
        # first step depends on y0); t then stays a tensor so that the gradient of the discrete flow is
        # consistent. Otherwise the schedule is evaluated at the detached time in float64.
        keep = self.create_graph is not False and (xs.requires_grad or t.requires_grad)
        tv = t.to(x.dtype).expand(B)
        with torch.enable_grad():
            xin = x if keep and x.requires_grad else x.detach().requires_grad_(True)
            s = self.score(xin, tv)
            if self.create_graph is None:
                self.create_graph = keep or _depends_on_other_leaf(s, xin)
            cg = self.create_graph
            if not s.requires_grad:
                div_s = _no_graph_divergence(self.score.fn, s, xin, tv)
            elif self.divergence == "exact":
                div_s = _divergence_exact(s, xin, self.vjp, cg, self.chunk_size, xs.dtype)
            else:
                div_s = _divergence_hutchinson(s, xin, self.probes_work, self.probes, self.vjp, cg)
        if not cg:
            s, div_s = s.detach(), div_s.detach()
        # the PF drift is linear in (x, s), and its divergence is the same formula at (D, div s):
        # d[x, Delta]/dt = f(t) [x, D] - 1/2 g(t)^2 [s, div s], one shared drift on the flat state
        tc = t.to(x.dtype) if keep else t.detach().to(torch.float64)
        xd = torch.cat((y[: self.n], y.new_full((B,), D)))
        return self.sde.reverse_drift(xd, tc, torch.cat((s.reshape(-1).to(y.dtype), div_s.to(y.dtype))))


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


def _solve_augmented(
    sde, score_fn, x, eps, divergence, probes, chunk_size, create_graph, rtol, atol, method, options, state_dtype
):
    """(z, Delta, nfe): the augmented state at T in ``state_dtype``; the score is evaluated in x's dtype."""
    score = CountingScore(score_fn)
    probes = None if probes is None else probes.to(state_dtype)
    func = _AugmentedPFODE(sde, score, divergence, probes, chunk_size, create_graph, x.dtype, tuple(x.shape))
    if create_graph is False:
        x = x.detach()
    x = x.to(state_dtype)
    times = torch.tensor([eps, sde.T], dtype=x.dtype, device=x.device)
    options = dict(options or {})  # odeint_clamped makes an adaptive last step land on T (step_t)
    if method in ADAPTIVE_METHODS and "norm" not in options:
        options = {**options, "norm": _split_norm(func.n)}
    sol = odeint_clamped(
        func,
        torch.cat((x.reshape(-1), x.new_zeros(x.shape[0]))),
        times,
        lo=eps,
        hi=sde.T,
        rtol=rtol,
        atol=atol,
        method=method,
        options=options,
    )
    z, delta = sol.y[: func.n].view(x.shape), sol.y[func.n :]
    return z, delta, score.nfe


# ---- the quadrature scheme: x(t) by the PF-ODE, Delta by adaptive quadrature along it ----------------
QUAD_PATH_TOL = 0.1  # the x-solve of the quadrature scheme runs at this fraction of rtol, atol (see _solve_quadrature)


class _PathScore:
    """The score as the x-solve calls it: x cast to the score's dtype and back; evaluated under ``no_grad``
    unless a graph is kept (then the solve is differentiable through torchdiffeq's steps)."""

    def __init__(self, score: CountingScore, work: torch.dtype, keep: bool):
        self.score, self.work, self.keep = score, work, keep

    def __call__(self, x, t):
        if self.keep:
            return self.score(x.to(self.work), t.to(self.work)).to(x.dtype)
        with torch.no_grad():
            return self.score(x.to(self.work), t.to(self.work)).to(x.dtype)


def _solve_quadrature(
    sde, score_fn, x, eps, divergence, probes, chunk_size, create_graph, rtol, atol, method, options, state_dtype
):
    """(z, Delta, nfe, info) with Delta = D ln(alpha_T / alpha_eps) - 1/2 \\int g^2 div s dt, the integral by
    adaptive composite Clenshaw–Curtis quadrature (:mod:`score_sde.quadrature`) at nodes on the PF-ODE path.

    The path is solved QUAD_PATH_TOL = 10x tighter than rtol, atol: the integrand can be far more sensitive to
    x than x itself is to the solver's error (uniform data near its box's faces: at the same tolerance Delta
    was off by 1.2e-3 bits/dim at 1e-5; with the 10x tighter path 2.5e-4). The path needs
    forward passes only, so this is cheap where the scheme pays (the exact divergence at the nodes)."""
    score = CountingScore(score_fn)
    work, shape, B, D = x.dtype, tuple(x.shape), x.shape[0], flat_dim(x)
    keep = create_graph
    probe_calls = 0
    if keep is None:  # does the score reach a parameter that requires grad? one probe row tells
        probe_calls = 1
        with torch.enable_grad():
            x1 = x[:1].detach().requires_grad_(True)
            s1 = score(x1, torch.full((1,), eps, dtype=work, device=x.device))
            keep = x.requires_grad or _depends_on_other_leaf(s1, x1)
    if not keep:
        x = x.detach()
    x0 = x.to(state_dtype)
    rule = AdaptiveClenshawCurtis(eps, sde.T)
    drift = probability_flow_drift(sde, _PathScore(score, work, keep))
    path: dict[float, torch.Tensor] = {}
    nfe_ode = [0, 0]  # ODE right-hand sides; x-solves

    def solve(x_start, times: list[float], lo: float, hi: float) -> None:
        sol = odeint_clamped(
            drift,
            x_start,
            torch.tensor(times, dtype=state_dtype, device=x.device),
            lo=lo,
            hi=hi,
            rtol=rtol * QUAD_PATH_TOL,
            atol=atol * QUAD_PATH_TOL,
            method=method,
            options=options,  # odeint_clamped makes the last step land on hi
        )
        nfe_ode[0] += sol.nfe
        nfe_ode[1] += 1
        path.update(zip(times, sol.ys.unbind(0)))

    def positions(times: torch.Tensor, panels=()) -> torch.Tensor:
        """x at ``times`` (float64, increasing) on the PF-ODE path. The first solve (eps -> T) also returns the
        nodes of the quadrature tree's first levels (interpolated: no extra NFE). Nodes of deeper panels come
        from short solves across each run of adjacent new panels, started at its known left end, which also
        return every node those panels can ask for later (all their orders)."""
        want = [float(t) for t in times]
        if not path:
            solve(x0, sorted(set(want) | set(rule.likely_times()) | {eps, sde.T}), eps, sde.T)
        missing = [t for t in want if t not in path]
        if missing:
            runs: list[list[float]] = []  # merged [a, b] of the panels holding missing nodes
            for a, b in sorted(panels):
                if any(a < t <= b for t in missing):
                    if runs and runs[-1][1] >= a:
                        runs[-1][1] = max(runs[-1][1], b)
                    else:
                        runs.append([a, b])
            for a, b in runs:
                inside = {t for p in panels if a <= p[0] and p[1] <= b for t in rule.nodes(p[0], p[1], rule.n_max)}
                inside |= {t for t in missing if a < t <= b}
                solve(path[a], sorted(inside | {a, b}), a, b)
        return torch.stack([path[t] for t in want])

    nodes_per_call = max(1, 2**20 // (B * D))
    vjp = _VJP()
    probes_work = None if probes is None else probes.to(work)

    def integrand(times: torch.Tensor, panels=()) -> torch.Tensor:
        """-1/2 g(t)^2 div s(x(t), t) at the nodes, [m, B] in the state dtype (nodes batched into one score call
        of up to ``nodes_per_call`` * B rows)."""
        xs = positions(times, panels)
        vjp.basis.clear()  # one-hot cotangents are cached per row count m B: keep only this round's
        out = []
        for c in range(0, len(times), nodes_per_call):
            tc = times[c : c + nodes_per_call].to(device=x.device)
            m = tc.numel()
            xr = xs[c : c + m].reshape(m * B, *shape[1:]).to(work)
            tr = tc.repeat_interleave(B)
            with torch.enable_grad():
                xin = xr if keep and xr.requires_grad else xr.detach().requires_grad_(True)
                s = score(xin, tr.to(work))
                if not s.requires_grad:
                    div_s = _no_graph_divergence(score.fn, s, xin, tr.to(work))
                elif divergence == "exact":
                    chunk = chunk_size or max(1, min(D, 2**22 // (m * B * D)))
                    div_s = _divergence_exact(s, xin, vjp, keep, chunk, state_dtype)
                else:
                    reps = (1, m) + (1,) * (len(shape) - 1)
                    div_s = _divergence_hutchinson(
                        s, xin, probes_work.repeat(*reps), probes.to(state_dtype).repeat(*reps), vjp, keep
                    )
            if not keep:
                div_s = div_s.detach()
            out.append((-0.5 * sde.g2(tr) * div_s.to(state_dtype)).reshape(m, B))
        return torch.cat(out)

    res = rule.integrate(integrand, rtol, atol)
    z = positions(torch.tensor([sde.T], dtype=torch.float64))[0].view(shape)
    ends = torch.tensor([eps, sde.T], dtype=torch.float64)
    la = sde.log_alpha(ends)
    delta = res.value + D * (la[1] - la[0]).to(device=x.device, dtype=state_dtype)
    if not res.converged:
        warnings.warn(
            f"log_likelihood: the quadrature of Delta did not reach rtol = {rtol:g}, atol = {atol:g} "
            f"(estimated error up to {float(res.error.max()):.3g} nats against a tolerance of "
            f"{float(res.tolerance.min()):.3g}) with {len(res.orders)} panels (limit {rule.max_panels}); "
            "the result is less accurate than asked (try scheme='augmented')",
            RuntimeWarning,
            stacklevel=4,
        )
    info = {
        "scheme": "quadrature",
        "nfe_ode": nfe_ode[0],
        "ode_solves": nfe_ode[1],
        "nodes": res.evaluations,
        "score_calls": score.nfe,
        "delta_error": res.error.detach(),
        "orders": res.orders,
    }
    return z, delta, nfe_ode[0] + res.evaluations + probe_calls, info


def _warn_if_outside_prior(sde, z: torch.Tensor, limit: float = 5.0) -> None:
    """Warn when x(T) of some samples has an RMS above ``limit`` prior standard deviations: with a score near
    the true one x(T) follows the prior (RMS ~ 1 +- O(D^-1/2)), so such a latent means the PF-ODE left the
    region where the score is any good (e.g. an unpreconditioned network at large noise), and log p is then
    dominated by log pi(z) and meaningless (measured: an eps-predicting VE MLP on 8x8 digits gave z RMS ~8e3
    prior stds for some digits and 2.7e10 bits/dim)."""
    rms = z.detach().reshape(z.shape[0], -1).double().pow(2).mean(1).sqrt() / sde.prior_std
    bad = rms > limit
    if bool(bad.any()):
        warnings.warn(
            f"log_likelihood: for {int(bad.sum())} of {z.shape[0]} samples the PF-ODE ended far outside the prior "
            f"(x(T) RMS up to {float(rms.max()):.3g} prior standard deviations, > {limit:g}); their log p is "
            "dominated by log pi(x(T)) and unreliable: the score is likely poor along their path",
            RuntimeWarning,
            stacklevel=3,
        )


# ---- public API -----------------------------------------------------------------------------------
def log_likelihood(
    sde: LinearSDE,
    score_fn: Callable,
    x: torch.Tensor,
    divergence: str = "exact",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = DEFAULT_EPS,
    probes: int | torch.Tensor = 1,
    noise: str = "rademacher",
    generator: Generator = None,
    method: str = "dopri5",
    options: dict | None = None,
    chunk_size: int | None = None,
    per_sample: bool = False,
    dtype: torch.dtype | None = None,
    create_graph: bool | None = None,
    state_dtype: torch.dtype | None = torch.float64,
    scheme: str = "augmented",
) -> LikelihoodResult:
    r"""log p_eps(x) through the probability-flow ODE, eq. (D.2) of Song et al. (2021).

    Integrates ``(x, Delta)`` from ``eps`` to ``T`` with ``dx/dt = f(t) x - 1/2 g^2 s(x, t)`` and
    ``dDelta/dt = D f(t) - 1/2 g^2 div s(x, t)``; returns ``logp = log pi(x(T)) + Delta(T)``.

    Args:
        sde: the forward SDE (its prior pi and schedule).
        score_fn: ``score_fn(x, t) -> tensor like x``, t of shape [B].
        x: data, shape [B, ...] (any rank), floating point, finite.
        divergence: ``"exact"`` (D vector-Jacobian products per evaluation, chunked) or ``"hutchinson"``.
        rtol, atol: torchdiffeq tolerances (> 0) on the augmented state.
        eps: start time in (0, T); the density reported is p_eps. Default 1e-5.
        probes: Hutchinson probes per sample, averaged (held fixed along the trajectory); or the probes
            themselves, a tensor [k, B, ...] (or [B, ...] for one), e.g. to share them between runs.
        noise: Hutchinson probe law, ``"rademacher"`` (default; never worse than Gaussian) or ``"gaussian"``.
        generator: a ``torch.Generator``, B per-sample generators, or None (torch's global RNG) for the probes.
        method, options: torchdiffeq method (``"dopri5"``) and its options (a ``norm`` given there receives
            the error ratios of the flat state ``[x.flatten(), Delta]``, shape [B*D + B]).
        chunk_size: dimensions per batched vector-Jacobian product of the exact divergence
            (default: as many as keep the cotangents near 2^22 entries).
        per_sample: solve each sample on its own (batch-independent steps, NFE summed over samples).
        dtype: compute in this dtype (e.g. ``torch.float64``); default x's dtype.
        create_graph: build the divergence's graph so ``logp`` can be differentiated. ``None`` (default):
            yes when gradients are enabled and x or a parameter reached by ``score_fn`` requires grad.
        state_dtype: dtype of the ODE state (x, Delta) and of the solver's arithmetic (default float64,
            as the official code's numpy state; never lower than x's dtype; None: x's dtype). The score
            still sees x in x's (or ``dtype``'s) dtype. A float32 state leaves ~1e-6 nats/dim of
            round-off in Delta whatever the tolerance, and its noisy error estimates cost extra steps.
        scheme: how Delta is computed. ``"augmented"`` (default): the ODE for (x, Delta) is solved jointly, the
            divergence at every stage of every step. ``"quadrature"`` (adaptive methods only): the PF-ODE for x
            alone (forward passes only), then Delta by adaptive Clenshaw–Curtis quadrature at nodes on that path
            (:mod:`score_sde.quadrature`), the divergence only at the nodes, batched; its error estimate is held
            to ``atol + rtol * \\int |1/2 g^2 div s| dt`` per sample (``info['delta_error']``). It pays where
            the divergence dominates the cost and a loose tolerance suffices (it is far more accurate than
            "augmented" at equal tolerance, and slower there); measured speeds against the official recipe are
            in benchmarks/results/likelihood_vs_official.txt (benchmarks/likelihood_vs_official.py). x at the
            nodes is the interpolant of a path solved 10x tighter than rtol, atol; where the score varies
            sharply in x (uniform data near its box's faces) Delta is still less accurate than "augmented"
            (2.5e-4 bits/dim at rtol = atol = 1e-5 against 4e-5).

    Returns:
        :class:`LikelihoodResult` with ``logp`` [B] (nats), ``z`` = x(T), ``prior_logp`` [B], ``delta`` [B], ``nfe``
        and ``info`` (the scheme and, for ``"quadrature"``, its node counts and error estimate).
    """
    rtol, atol, eps = _check_inputs(sde, score_fn, x, rtol, atol, eps, method)
    score_fn = ScoreGuard(score_fn, "log_likelihood")  # a clear error for a score of the wrong shape or type
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; choose one of {DIVERGENCES}")
    if noise not in NOISES:
        raise ValueError(f"unknown Hutchinson noise {noise!r}; choose one of {NOISES}")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose one of {SCHEMES}")
    if scheme == "quadrature" and method not in ADAPTIVE_METHODS:
        raise ValueError(
            f"scheme='quadrature' needs an adaptive method (its x-solve returns interpolated nodes); got method = "
            f"{method!r}: use scheme='augmented' or one of {sorted(ADAPTIVE_METHODS)}"
        )
    if torch.is_tensor(probes):
        if probes.shape == x.shape:
            probes = probes[None]
        if probes.ndim != x.ndim + 1 or probes.shape[1:] != x.shape or probes.shape[0] < 1:
            raise ValueError(
                f"probes given as a tensor must have shape [k, *x.shape] = [k, {', '.join(map(str, x.shape))}]; "
                f"got {tuple(probes.shape)}"
            )
        check_finite(probes, "probes")
    elif isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes must be an integer >= 1 or a tensor of probes; got probes = {probes!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be an integer >= 1 or None; got chunk_size = {chunk_size!r}")
    if dtype is not None:
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype; got {dtype}")
        x = x.to(dtype)
    if state_dtype is not None and not (isinstance(state_dtype, torch.dtype) and state_dtype.is_floating_point):
        raise TypeError(f"state_dtype must be a floating torch.dtype or None; got {state_dtype!r}")
    state = x.dtype if state_dtype is None or state_dtype.itemsize < x.dtype.itemsize else state_dtype
    if state in (torch.float16, torch.bfloat16):
        raise TypeError(
            f"x has dtype {x.dtype}; the adaptive ODE solver needs a float32 or float64 state: pass x.float(), "
            "dtype=torch.float32 or state_dtype=torch.float32 (the score is then still called in x's dtype)"
        )
    if not torch.is_grad_enabled():
        create_graph = False
    B, D = x.shape[0], flat_dim(x)
    chunk = chunk_size or max(1, min(D, 2**22 // (B * D)))
    v = None
    if divergence == "hutchinson":
        v = probes.to(x) if torch.is_tensor(probes) else _draw_probes(x, probes, noise, generator)

    def run(xb, vb):
        if scheme == "quadrature":
            return _solve_quadrature(
                sde, score_fn, xb, eps, divergence, vb, chunk_size, create_graph, rtol, atol, method, options, state
            )
        out = _solve_augmented(
            sde, score_fn, xb, eps, divergence, vb, chunk, create_graph, rtol, atol, method, options, state
        )
        return (*out, {"scheme": "augmented"})

    if per_sample:
        parts = [run(x[i : i + 1], None if v is None else v[:, i : i + 1]) for i in range(B)]
        z, delta = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        nfe = sum(p[2] for p in parts)
        info = {"scheme": scheme, "per_sample": [p[3] for p in parts]}
    else:
        z, delta, nfe, info = run(x, v)
    prior = sde.prior_logp(z)
    if not bool(torch.isfinite(prior + delta).all()):
        n = int((~torch.isfinite(prior + delta)).sum())
        warnings.warn(f"log_likelihood: log p is NaN/inf for {n} of {B} samples", NonFiniteScoreWarning, stacklevel=2)
    _warn_if_outside_prior(sde, z)
    logp, z, prior, delta = ((prior + delta).to(x.dtype), z.to(x.dtype), prior.to(x.dtype), delta.to(x.dtype))
    return LikelihoodResult(logp=logp, z=z, prior_logp=prior, delta=delta, nfe=nfe, info=info)


def encode(
    sde: LinearSDE,
    score_fn: Callable,
    x: torch.Tensor,
    eps: float = DEFAULT_EPS,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    options: dict | None = None,
) -> torch.Tensor:
    """The latent z = x(T) of data x = x(eps) along the probability-flow ODE (eq. 13), shape like x.

    A bijection for a fixed score (up to tolerance); :func:`decode` is its inverse.
    """
    rtol, atol, eps = _check_inputs(sde, score_fn, x, rtol, atol, eps, method)
    return _pf_flow(sde, ScoreGuard(score_fn, "encode"), x, eps, sde.T, rtol, atol, method, options)[0]


def decode(
    sde: LinearSDE,
    score_fn: Callable,
    z: torch.Tensor,
    eps: float = DEFAULT_EPS,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    options: dict | None = None,
) -> torch.Tensor:
    """Data x = x(eps) of the latent z = x(T), integrating the probability-flow ODE backwards; shape like z."""
    rtol, atol, eps = _check_inputs(sde, score_fn, z, rtol, atol, eps, method)
    return _pf_flow(sde, ScoreGuard(score_fn, "decode"), z, sde.T, eps, rtol, atol, method, options)[0]


def _check_scaling(scaling) -> None:
    if not isinstance(scaling, DataScaling):
        raise TypeError(
            "scaling must be a DataScaling (e.g. DataScaling.centered(256) for [-1, 1] or "
            f"DataScaling.unit(256) for [0, 1]); got {type(scaling).__name__}"
        )


def _bits_per_dim(sde, score_fn, data, scaling, dequantize, generator, dtype, kwargs):
    _check_scaling(scaling)
    if torch.is_tensor(data) and (data.ndim < 1 or data.shape[0] == 0 or data.numel() == 0):
        raise ValueError(f"data must hold at least one sample [B >= 1, ...]; got data of shape {tuple(data.shape)}")
    if dequantize:
        if not torch.is_tensor(data):
            raise TypeError(f"data must be a torch.Tensor of integer levels; got {type(data).__name__}")
        if isinstance(generator, (list, tuple)):
            x = torch.cat([scaling.dequantize(data[i : i + 1], g, dtype) for i, g in enumerate(generator)])
        else:
            x = scaling.dequantize(data, generator, dtype)
    else:
        check_finite(data, "data")
        x = data if dtype is None else data.to(dtype)
    res = log_likelihood(sde, score_fn, x, generator=generator, **kwargs)
    return scaling.bits_per_dim(res.logp, flat_dim(x)), res


def bits_per_dim(
    sde: LinearSDE,
    score_fn: Callable,
    data: torch.Tensor,
    scaling: DataScaling,
    *,
    dequantize: bool = True,
    generator: Generator = None,
    dtype: torch.dtype | None = None,
    **likelihood_kwargs,
) -> torch.Tensor:
    """Bits per dimension of discrete data under the model, shape [B].

    With levels n in {0..K-1}, uniform dequantization y = (n + u)/K, u ~ U[0,1), and x = a y + b
    (``scaling``), the bound on -log2 P(n) / D is (see :mod:`score_sde.data_scaling`)

        bpd = -log p_eps(x) / (D ln 2) - log2 a + log2 K.

    Args:
        data: integer levels [B, ...]; or, with ``dequantize=False``, already continuous data in model space.
        scaling: the :class:`DataScaling` (K, a, b).
        generator: seeds the dequantization noise and then the Hutchinson probes.
        dtype: floating dtype of the dequantized data (default torch's default dtype).
        **likelihood_kwargs: passed to :func:`log_likelihood` (divergence, rtol, atol, eps, probes, ...).
    """
    return _bits_per_dim(sde, score_fn, data, scaling, dequantize, generator, dtype, likelihood_kwargs)[0]


@dataclass
class DatasetBitsPerDim:
    """Mean bits/dim over a dataset, its standard errors and its parts; unpacks as ``mean, stderr = result``.

    With K levels, the map x = a y + b to model space, and uniform dequantization, each sample's bits/dim is

        bpd = -log pi(x(T)) / (D ln 2)   [prior term]
              - Delta / (D ln 2)          [ODE integral, Delta = int_eps^T div f~ dt]
              + log2 K - log2 a           [dequantization: bin width 1/K and the change of scale]

    (see :mod:`score_sde.data_scaling`); the first two together are the continuous NLL in model space,
    -log p_eps(x) / (D ln 2). For continuous data (``scaling=None``) the last term is 0.

    Attributes:
        mean: mean bpd over samples (each averaged over the repeats).
        stderr: standard error of ``mean`` as an estimate of the data set's expected bpd: std of the per-sample
            bpd / sqrt(num) (NaN for one sample); it includes the estimator's noise.
        num: samples. nfe: score evaluations in all (every batch and repeat).
        per_sample: tensor [num], each sample's bpd averaged over the repeats.
        repeats: evaluations of each sample (fresh dequantization noise and Hutchinson probes each time).
        mc_stderr: standard error of ``mean`` from the estimator's own randomness alone (dequantization and
            probes; the data held fixed): sqrt(sum_i var_r(bpd_ir) / repeats) / num, from the spread over the
            repeats (NaN for one repeat). Two runs with other seeds on the same data differ by about this.
        prior_bpd, integral_bpd, dequantization_bpd: the three terms above, averaged (they sum to ``mean``).
        nll_nats: continuous NLL in model space, mean -log p_eps(x) in nats per sample (not bits/dim of the
            discrete data; it depends on the data's scale).
        dim: D, dimensions per sample.
        nfe_per_sample: score evaluations per sample and repeat (the ODE solver's count, averaged over batches).
        solver_error_bpd: the solver's own estimate of its error in Delta, as bits/dim averaged over samples
            (``scheme="quadrature"``: its ``delta_error``); None when the scheme gives no estimate.
        per_repeat, prior_logp, delta, delta_error: tensors [num, repeats]: bpd, log pi(x(T)), Delta and the
            solver's error estimate of Delta (nats; None without one) of every evaluation (not in ``repr``).
    """

    mean: float
    stderr: float
    num: int
    nfe: int
    per_sample: torch.Tensor = field(repr=False)
    repeats: int = 1
    mc_stderr: float = float("nan")
    prior_bpd: float = float("nan")
    integral_bpd: float = float("nan")
    dequantization_bpd: float = float("nan")
    nll_nats: float = float("nan")
    dim: int | None = None
    nfe_per_sample: float = float("nan")
    solver_error_bpd: float | None = None
    per_repeat: torch.Tensor | None = field(default=None, repr=False)
    prior_logp: torch.Tensor | None = field(default=None, repr=False)
    delta: torch.Tensor | None = field(default=None, repr=False)
    delta_error: torch.Tensor | None = field(default=None, repr=False)

    def __iter__(self):
        return iter((self.mean, self.stderr))

    def __repr__(self) -> str:  # a one-line summary: the per-sample tensors can hold a whole test set
        return (
            f"{type(self).__name__}(mean={self.mean:.4f}, stderr={self.stderr:.4f}, num={self.num}, "
            f"repeats={self.repeats}, nfe={self.nfe}, per_sample shape {tuple(self.per_sample.shape)})"
        )

    def to_dict(self) -> dict:
        """The scalar fields as a JSON-ready dict (no tensors)."""
        skip = {"per_sample", "per_repeat", "prior_logp", "delta", "delta_error"}
        return {k: v for k, v in self.__dict__.items() if k not in skip}


def summarize_bits_per_dim(
    prior_logp: torch.Tensor,
    delta: torch.Tensor,
    dim: int,
    scaling: DataScaling | None,
    nfe: int,
    solves: int,
    delta_error: torch.Tensor | None = None,
) -> DatasetBitsPerDim:
    """:class:`DatasetBitsPerDim` from the per-evaluation terms ``prior_logp`` and ``delta``, [N, R] in nats.

    Args:
        dim: D. scaling: the data's :class:`DataScaling` (None: continuous data, no dequantization term).
        nfe: score evaluations in all; solves: ODE solves they were spent on (batches x repeats).
        delta_error: the solver's error estimate of Delta [N, R] in nats, or None.
    """
    prior_logp, delta = prior_logp.double().cpu(), delta.double().cpu()
    if prior_logp.ndim != 2 or prior_logp.shape != delta.shape or prior_logp.shape[0] < 1:
        shapes = f"{tuple(prior_logp.shape)}, {tuple(delta.shape)}"
        raise ValueError(f"prior_logp and delta must be [N, R] alike; got {shapes}")
    n, r = prior_logp.shape
    to_bits = dim * math.log(2)
    offset = 0.0 if scaling is None else float(scaling.bits_per_dim(torch.zeros((), dtype=torch.float64), dim))
    per_repeat = -(prior_logp + delta) / to_bits + offset
    per = per_repeat.mean(1)
    stderr = float(per.std() / math.sqrt(n)) if n > 1 else float("nan")
    mc = float(per_repeat.var(dim=1).sum().div(r).sqrt() / n) if r > 1 else float("nan")
    err = None if delta_error is None else float(delta_error.double().mean() / to_bits)
    return DatasetBitsPerDim(
        mean=float(per.mean()), stderr=stderr, num=n, nfe=int(nfe), per_sample=per, repeats=r, mc_stderr=mc,
        prior_bpd=float(-prior_logp.mean() / to_bits), integral_bpd=float(-delta.mean() / to_bits),
        dequantization_bpd=offset, nll_nats=float(-(prior_logp + delta).mean()), dim=int(dim),
        nfe_per_sample=nfe / max(solves, 1), solver_error_bpd=err, per_repeat=per_repeat, prior_logp=prior_logp,
        delta=delta, delta_error=None if delta_error is None else delta_error.double().cpu(),
    )  # fmt: skip


def _batches(data, batch_size: int):
    if torch.is_tensor(data):
        yield from torch.split(data, batch_size)
        return
    for item in data:
        b = item[0] if isinstance(item, (tuple, list)) else item
        if not torch.is_tensor(b):
            raise TypeError(f"each batch must be a tensor or a (tensor, ...) tuple; got {type(b).__name__}")
        yield b


def dataset_bits_per_dim(
    sde: LinearSDE,
    score_fn: Callable,
    data: torch.Tensor | Iterable,
    scaling: DataScaling | None,
    *,
    batch_size: int = 128,
    repeats: int = 1,
    generator: Generator = None,
    max_batches: int | None = None,
    dequantize: bool = True,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    **likelihood_kwargs,
) -> DatasetBitsPerDim:
    """Bits/dim of a dataset under a trained score model (Song et al. 2021, Table 2 protocol).

    Each batch is evaluated ``repeats`` times (fresh dequantization noise and probes; the official code
    makes 5 passes with one Hutchinson probe) and each sample's bpd is averaged over the repeats; the
    result is the mean over samples, its standard error, the estimator's own standard error (from the
    spread over the repeats), the three terms of the bound and the solver's NFE and error estimate.
    Runs without building a graph for parameters (an evaluation, not differentiable); the divergence
    still uses autograd inside.

    Args:
        data: a tensor [N, ...] of integer levels (split into ``batch_size`` batches), or an iterable of
            batches (tensors or ``(tensor, label)`` tuples, e.g. a DataLoader).
        scaling: the :class:`DataScaling`; None for continuous data (model-space points, no dequantization:
            the "bits/dim" is then the continuous NLL / (D ln 2)).
        max_batches: stop after this many batches.
        device: move each batch here before evaluation.
        **likelihood_kwargs: passed to :func:`log_likelihood` (e.g. ``divergence="hutchinson"``, ``rtol``).

    Returns:
        :class:`DatasetBitsPerDim` (``mean, stderr = result``; ``result.to_dict()`` for JSON).
    """
    if scaling is not None:
        _check_scaling(scaling)
    for name, val in (("batch_size", batch_size), ("repeats", repeats)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {name} = {val!r}")
    priors, deltas, errors, nfe, solves, dim = [], [], [], 0, 0, None
    it = _batches(data, batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="bits/dim")
    with torch.no_grad():
        for i, batch in enumerate(it):
            if max_batches is not None and i >= max_batches:
                break
            if device is not None:
                batch = batch.to(device)
            pr, de, er = [], [], []
            for _ in range(repeats):
                if scaling is None:
                    check_finite(batch, "data")
                    x = batch if dtype is None else batch.to(dtype)
                    res = log_likelihood(sde, score_fn, x, generator=generator, **likelihood_kwargs)
                else:
                    kw = likelihood_kwargs
                    _, res = _bits_per_dim(sde, score_fn, batch, scaling, dequantize, generator, dtype, kw)
                dim = flat_dim(batch)
                pr.append(res.prior_logp.double().cpu())
                de.append(res.delta.double().cpu())
                e = res.info.get("delta_error")
                er.append(None if e is None else torch.as_tensor(e, dtype=torch.float64).cpu().reshape(-1))
                nfe += res.nfe
                solves += 1
            priors.append(torch.stack(pr, 1))
            deltas.append(torch.stack(de, 1))
            errors.append(None if any(e is None for e in er) else torch.stack(er, 1))
    if not priors:
        raise ValueError("data yielded no batches")
    err = None if any(e is None for e in errors) else torch.cat(errors)
    return summarize_bits_per_dim(torch.cat(priors), torch.cat(deltas), dim, scaling, nfe, solves, err)


__all__ = [
    "LikelihoodResult",
    "log_likelihood",
    "encode",
    "decode",
    "bits_per_dim",
    "dataset_bits_per_dim",
    "DatasetBitsPerDim",
    "summarize_bits_per_dim",
    "DataScaling",
]
