"""Names shared by the likelihood's modules: the result type, option names and the input checks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..sde.base import LinearSDE
from ..utils import check_finite, check_tolerance

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


