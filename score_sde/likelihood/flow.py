"""The probability-flow ODE as a bijection: :func:`encode` maps data x(eps) to the latent x(T) (eq. 13 of
Song et al. 2021), :func:`decode` maps it back."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..sde.base import LinearSDE
from ..solvers.base import CountingScore
from ..solvers.ode import odeint_pf
from ..utils import ScoreGuard
from .base import DEFAULT_EPS, _check_inputs


# ---- the PF-ODE: shared with the integrator layer (score_sde.solvers.ode) -------------------------
def _pf_flow(sde, score_fn, x, t0, t1, rtol, atol, method, options) -> tuple[torch.Tensor, int]:
    """x(t1) of the probability-flow ODE started at x(t0) = x; returns (x(t1), nfe)."""
    score = CountingScore(score_fn)  # counts real calls and checks the score's shape
    sol = odeint_pf(sde, score, x, t0, t1, rtol=rtol, atol=atol, method=method, options=options)
    return sol.y, score.nfe



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


