"""The augmented scheme: (x, Delta) integrated jointly along the probability-flow ODE, eq. (D.2) of
Song et al. (2021), the divergence at every stage of every step."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch

from ..solvers.base import CountingScore
from ..solvers.ode import ADAPTIVE_METHODS, odeint_clamped
from ..utils import flat_dim
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
        if not cg:
            s, div_s = s.detach(), div_s.detach()
        # the PF drift is linear in (x, s), and its divergence is the same formula at (D, div s):
        # d[x, Delta]/dt = f(t) [x, D] - 1/2 g(t)^2 [s, div s], one shared drift on the flat state
        tc = t.to(x.dtype) if keep else t.detach().to(torch.float64)
        if self.dims is None or self.dims.dtype != y.dtype or self.dims.device != y.device:
            self.dims = y.new_full((B,), D)
        # torch.cat casts s (work dtype) to the dtype of div s (the state's, but for a score constant in x) in its copy
        sd = torch.cat((s.reshape(-1), div_s))
        sd = sd if sd.dtype == y.dtype else sd.to(y.dtype)
        return self.sde.reverse_drift(torch.cat((y[: self.n], self.dims)), tc, sd)


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


def _solve_augmented(sde, score_fn, x: torch.Tensor, eps: float, div: DivergenceOptions, solve: ODESolveOptions):
    """(z, Delta, nfe): the augmented state at T in ``solve.state_dtype``, z [B, ...] and Delta [B]; the score is
    evaluated in x's dtype. ``div`` is resolved (probes a tensor or None, chunk_size and create_graph decided)."""
    score = CountingScore(score_fn)
    state_dtype = solve.state_dtype
    div = replace(div, probes=None if div.probes is None else div.probes.to(state_dtype))
    func = _AugmentedPFODE(sde, score, div, x.dtype, tuple(x.shape))
    if div.create_graph is False:
        x = x.detach()
    x_state = x.to(state_dtype)
    times = torch.tensor([eps, sde.T], dtype=state_dtype, device=x.device)
    options = dict(solve.options or {})  # odeint_clamped makes an adaptive last step land on T (step_t)
    if solve.method in ADAPTIVE_METHODS and "norm" not in options:
        options = {**options, "norm": _split_norm(func.n)}
    sol = odeint_clamped(
        func,
        torch.cat((x_state.reshape(-1), x_state.new_zeros(x.shape[0]))),
        times,
        lo=eps,
        hi=sde.T,
        rtol=solve.rtol,
        atol=solve.atol,
        method=solve.method,
        options=options,
    )
    z, delta = sol.y[: func.n].view(x.shape), sol.y[func.n :]
    return z, delta, score.nfe


