"""The entry point :func:`log_likelihood`: checks its options, runs one of the two schemes (per batch or
per sample) and adds the prior's log-density, ``logp = log pi(x(T)) + Delta(T)``."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import torch

from ..sde.base import LinearSDE
from ..solvers.ode import ADAPTIVE_METHODS
from ..utils import Generator, NonFiniteScoreWarning, ScoreGuard, check_finite, flat_dim
from .augmented import _solve_augmented
from .base import DEFAULT_EPS, DIVERGENCES, NOISES, SCHEMES, LikelihoodResult, _check_inputs
from .divergence import _draw_probes
from .options import DivergenceOptions, ODESolveOptions, merge_options
from .path_quadrature import _solve_quadrature


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
    divergence: str | DivergenceOptions = "exact",
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
    solver: ODESolveOptions | None = None,
    progress: bool = False,
) -> LikelihoodResult:
    r"""log p_eps(x) through the probability-flow ODE, eq. (D.2) of Song et al. (2021).

    Integrates ``(x, Delta)`` from ``eps`` to ``T`` with ``dx/dt = f(t) x - 1/2 g^2 s(x, t)`` and
    ``dDelta/dt = D f(t) - 1/2 g^2 div s(x, t)``; returns ``logp = log pi(x(T)) + Delta(T)``.

    Args:
        sde: the forward SDE (its prior pi and schedule).
        score_fn: ``score_fn(x, t) -> tensor like x``, t of shape [B].
        x: data, shape [B, ...] (any rank), floating point, finite.
        divergence: ``"exact"`` (D vector-Jacobian products per evaluation, chunked) or ``"hutchinson"``; or a
            :class:`DivergenceOptions` grouping this choice with ``probes``, ``noise``, ``chunk_size`` and
            ``create_graph`` (a keyword given beside it must not contradict it).
        rtol, atol: torchdiffeq tolerances (> 0) on the augmented state.
        eps: start time in (0, T); the density reported is p_eps. Default 1e-5.
        probes: Hutchinson probes per sample, averaged (held fixed along the trajectory); or the probes
            themselves, a tensor [k, B, ...] (or [B, ...] for one), e.g. to share them between runs.
        noise: Hutchinson probe law, ``"rademacher"`` (default; never worse than Gaussian) or ``"gaussian"``.
        generator: a ``torch.Generator``, B per-sample generators, or None (torch's global RNG) for the probes.
        method, options: the ODE method and its options: a torchdiffeq method (default ``"dopri5"``; its error norm
            is the larger of the RMS error ratios of x and of Delta unless ``options`` has a ``norm``: ``"rms"``,
            the RMS over the whole flat state ``[x.flatten(), Delta]`` as the official code, or a function of
            the error ratios, shape [B*D + B]); ``"scipy_rk45"`` (scipy's RK45, the official code's integrator,
            the same norms) / ``"scipy_dop853"`` (scipy's own norm), options ``first_step``, ``max_step``; no
            autograd graph, float64 state; :mod:`score_sde.solvers.scipy_ode`; or ``"auto"``: ``"scipy_rk45"``
            when ``logp`` needs no graph and the state is float64, else ``"dopri5"``. ``info['method']`` names
            the method used.
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

        solver: an :class:`ODESolveOptions` grouping ``method``, ``rtol``, ``atol``, ``options`` and ``state_dtype``
            (accepted beside those keywords; a keyword given beside it must not contradict it).
        progress: a tqdm bar per solve, advancing with the time reached.

    Returns:
        :class:`LikelihoodResult` with ``logp`` [B] (nats), ``z`` = x(T), ``prior_logp`` [B], ``delta`` [B], ``nfe``
        and ``info`` (the scheme and, for ``"quadrature"``, its node counts and error estimate).
    """
    div_kw = {"probes": probes, "noise": noise, "chunk_size": chunk_size, "create_graph": create_graph}
    if isinstance(divergence, DivergenceOptions):
        div = merge_options(divergence, div_kw, DivergenceOptions, "divergence")
    else:
        div = DivergenceOptions(kind=divergence, **div_kw)
    solve_kw = {"method": method, "rtol": rtol, "atol": atol, "options": options, "state_dtype": state_dtype}
    solve = merge_options(solver, solve_kw, ODESolveOptions, "solver")
    rtol, atol, eps = _check_inputs(sde, score_fn, x, solve.rtol, solve.atol, eps, solve.method)
    score_fn = ScoreGuard(score_fn, "log_likelihood")  # a clear error for a score of the wrong shape or type
    if div.kind not in DIVERGENCES:
        raise ValueError(f"unknown divergence {div.kind!r}; choose one of {DIVERGENCES}")
    if div.noise not in NOISES:
        raise ValueError(f"unknown Hutchinson noise {div.noise!r}; choose one of {NOISES}")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose one of {SCHEMES}")
    if scheme == "quadrature" and solve.method == "auto":  # the x-solve interpolates torchdiffeq's dense output
        solve = dataclasses.replace(solve, method="dopri5")
    if scheme == "quadrature" and solve.method not in ADAPTIVE_METHODS:
        raise ValueError(
            f"scheme='quadrature' needs an adaptive method (its x-solve returns interpolated nodes); got method = "
            f"{solve.method!r}: use scheme='augmented' or one of {sorted(ADAPTIVE_METHODS)}"
        )
    probes, chunk_size = div.probes, div.chunk_size
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
    state_dtype = solve.state_dtype
    if state_dtype is not None and not (isinstance(state_dtype, torch.dtype) and state_dtype.is_floating_point):
        raise TypeError(f"state_dtype must be a floating torch.dtype or None; got {state_dtype!r}")
    state = x.dtype if state_dtype is None or state_dtype.itemsize < x.dtype.itemsize else state_dtype
    if state in (torch.float16, torch.bfloat16):
        raise TypeError(
            f"x has dtype {x.dtype}; the adaptive ODE solver needs a float32 or float64 state: pass x.float(), "
            "dtype=torch.float32 or state_dtype=torch.float32 (the score is then still called in x's dtype)"
        )
    solve = dataclasses.replace(solve, rtol=rtol, atol=atol, state_dtype=state)
    B, D = x.shape[0], flat_dim(x)
    v = None
    if div.kind == "hutchinson":
        v = probes.to(x) if torch.is_tensor(probes) else _draw_probes(x, probes, div.noise, generator)
    # the resolved divergence: probes as a tensor [k, B, ...] (None for "exact"); create_graph False without grad;
    # the augmented scheme's chunk fixed by the whole batch (per_sample runs keep it)
    div = dataclasses.replace(div, probes=v, create_graph=div.create_graph if torch.is_grad_enabled() else False)
    div_augmented = dataclasses.replace(div, chunk_size=chunk_size or max(1, min(D, 2**22 // (B * D))))

    def run(x_part, v_part):
        if scheme == "quadrature":
            return _solve_quadrature(sde, score_fn, x_part, eps, dataclasses.replace(div, probes=v_part), solve)
        div_part = dataclasses.replace(div_augmented, probes=v_part)
        z_p, delta_p, nfe_p, used = _solve_augmented(sde, score_fn, x_part, eps, div_part, solve, progress)
        return z_p, delta_p, nfe_p, {"scheme": "augmented", "method": used}

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


