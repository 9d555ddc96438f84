r"""Training times and loss weights of the denoising losses (:mod:`score_sde.training.losses`, eq. (1)):
the weighting lambda(t), the scale c_target(t) of each prediction target, and the draws of t (uniform or
importance-sampled) and of discrete chain indices.

Weightings. ``weighting`` names lambda(t), always in *score* units:

* ``"sigma2"``: lambda = sigma^2 -- the eps loss ||eps_theta - z||^2 (Ho et al. 2020; the default);
* ``"g2"``: lambda = g^2 -- likelihood weighting (Song et al. 2021b, ScoreFlow): with
  ``reduce="sum"``, J equals the KL bound's score term, so J + const bounds -log p;
* ``"none"``: lambda = 1 (the plain Fisher divergence; very noisy near t = 0);
* ``"flow_matching"``: lambda = g^4 / 4 -- the conditional flow-matching loss ||u_theta - u||^2 with
  u = alpha' x_0 + sigma' z (Lipman et al. 2023; Liu et al. 2022), see (2) below;
* or a callable ``lambda(t) -> [B]``.

Targets. The same objective can be written on the network's ``target`` (eps, x0, v or score):
the residual in each parameterisation is a fixed multiple of the score residual
r = s_theta + z / sigma,

    eps_theta - z   = -sigma r,                        ||.||^2 = sigma^2 ||r||^2
    x0_theta - x_0  = (sigma^2 / alpha) r,             ||.||^2 = sigma^4 / alpha^2 ||r||^2
    v_theta - v     = -(sigma (alpha^2 + sigma^2) / alpha) r,   v = alpha z - sigma x_0
    u_theta - u     = -(g^2 / 2) r,                    u = alpha' x_0 + sigma' z (``velocity``)
    score           = r,

so (1) is evaluated as lambda(t) / c_target(t) ||target_theta - target||^2 with c_eps = sigma^2,
c_x0 = sigma^4/alpha^2, c_v = sigma^2 (alpha^2 + sigma^2)^2 / alpha^2, c_velocity = g^4 / 4, c_score = 1.
The velocity line: for fixed x_t, u = f x_t + (g^2 / (2 sigma)) z (:mod:`score_sde.score`, eq. V2), so
u_theta - u = (g^2 / (2 sigma)) (eps_theta - z) = -(g^2 / 2) r. Hence flow matching is this denoising loss
with the weighting

    ||u_theta - u||^2 = (g^4 / 4) ||r||^2 = g^4 / (4 sigma^2) ||eps_theta - z||^2,                  (2)

lambda_FM = g^4 / 4 in score units, w(t) = g^4 / (4 sigma^2) = (sigma' - sigma alpha'/alpha)^2 on the eps loss;
for rectified flow (alpha = 1 - t, sigma = t) w(t) = 1 / (1 - t)^2. Every target gives
the same number for the same network, t and z (a test checks it); the choice only decides which
quantity is formed without dividing by a small sigma (use the net's own prediction type).

Importance sampling (``importance_sampling=True``). For any linear SDE, g^2 / sigma^2 = -2 d lambda_snr /
dt, where lambda_snr = ln(alpha / sigma) is the half log-SNR. So sampling t with density
p(t) proportional to g^2 / sigma^2 -- the proposal that removes the likelihood weighting's variance --
is sampling lambda_snr uniformly on [lambda_snr(T), lambda_snr(eps)] and mapping back with
``sde.t_from_log_snr`` (closed form for VP, sub-VP and VE). For VP the CDF is thus proportional to
ln(e^{B(t)} - 1) = B(t) + ln(1 - e^{-B(t)}). Each draw carries the weight
lambda(t) / (p(t) (T - eps)), so J keeps its value (1) -- the estimate is unbiased for any weighting.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..sde.base import LinearSDE
from ..utils import Generator
from .config import WEIGHTINGS


# ---- random draws --------------------------------------------------------------------------------
def _per_sample(draw: Callable, B: int, generator: Generator, device) -> torch.Tensor:
    """[B] draws ``draw(n, generator, gen_device)`` from None / one generator / B per-sample generators.

    Draws happen on the generator's device (a CPU generator works for CUDA data), then move to ``device``.
    """
    if generator is None:
        return draw(B, None, device)
    if isinstance(generator, torch.Generator):
        return draw(B, generator, generator.device).to(device)
    gens = list(generator)
    if len(gens) != B:
        raise ValueError(f"got {len(gens)} per-sample generators for a batch of {B}")
    return torch.cat([draw(1, g, g.device).to(device) for g in gens])


def _rand(B: int, generator: Generator, like: torch.Tensor) -> torch.Tensor:
    """U[0, 1) draws [B]; ``generator`` may be one generator or B per-sample generators."""

    def draw(n, g, dev):
        return torch.rand(n, generator=g, dtype=like.dtype, device=dev)

    return _per_sample(draw, B, generator, like.device)


def sample_index(N: int, B: int, generator: Generator, device) -> torch.Tensor:
    """Uniform chain indices i ~ U{0..N-1} [B] (the discrete losses' time); ``generator`` as for :func:`_rand`."""

    def draw(n, g, dev):
        return torch.randint(0, N, (n,), generator=g, device=dev)

    return _per_sample(draw, B, generator, device)


# ---- weights ------------------------------------------------------------------------------------
def target_scale2(target: str, alpha: torch.Tensor, sigma: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """c_target(t): ||target residual||^2 = c_target ||score residual||^2 (see the module docstring)."""
    if target == "velocity":
        return g2**2 / 4
    if target == "score":
        return torch.ones_like(sigma)
    if target == "eps":
        return sigma**2
    if target == "x0":
        return sigma**4 / alpha**2
    return sigma**2 * (alpha**2 + sigma**2) ** 2 / alpha**2  # v


def loss_weight(sde: LinearSDE, t: torch.Tensor, weighting: str | Callable) -> torch.Tensor:
    """lambda(t) [B] of eq. (1) for ``weighting`` in sigma2 / g2 / none / flow_matching or a callable."""
    if callable(weighting):
        w = torch.as_tensor(weighting(t)).to(t)
        if w.shape != t.shape:
            raise ValueError(f"a weighting function must return shape [B] = {tuple(t.shape)}; got {tuple(w.shape)}")
        return w
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose one of {WEIGHTINGS}")
    if weighting == "sigma2":
        return sde.sigma(t) ** 2
    if weighting == "g2":
        return sde.g2(t)
    if weighting == "flow_matching":
        return sde.g2(t) ** 2 / 4
    return torch.ones_like(t)


# ---- time sampling -----------------------------------------------------------------------------
def _log_snr_range(sde: LinearSDE, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(lambda_snr(eps), lambda_snr(T)) in float64: the ends of the importance proposal's lambda_snr range."""
    return sde.log_snr(torch.tensor(eps, dtype=torch.float64)), sde.log_snr(torch.tensor(sde.T, dtype=torch.float64))


def sample_time(
    sde: LinearSDE,
    B: int,
    *,
    eps: float = 1e-5,
    importance_sampling: bool = False,
    generator: Generator = None,
    dtype=None,
    device=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training times t [B] and their importance weights w [B] (E_t[w f(t)] = E_{U(eps, T)}[f(t)]).

    Uniform: t = eps + (T - eps) u, w = 1. Importance sampling: lambda_snr ~ U[lambda_snr(T),
    lambda_snr(eps)], t = t(lambda_snr), so p(t) = g^2(t) / sigma^2(t) / (2 (lambda_snr(eps) -
    lambda_snr(T))) and w = 1 / (p(t) (T - eps)).
    """
    sde.check_eps(eps)
    ref = torch.empty(0, dtype=dtype or torch.get_default_dtype(), device=device)
    u = _rand(B, generator, ref)
    T = sde.T
    if not importance_sampling:
        return eps + (T - eps) * u, torch.ones_like(u)
    hi, lo = _log_snr_range(sde, eps)
    lam = lo + (hi - lo) * u.to(torch.float64)
    t = sde.t_from_log_snr(lam).clamp(eps, T)
    density = sde.g2(t) / sde.sigma(t) ** 2 / (2 * (hi - lo))
    w = 1.0 / (density * (T - eps))
    return t.to(ref), w.to(ref)


def importance_cdf(sde: LinearSDE, t: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """CDF of the importance distribution p(t) proportional to g^2 / sigma^2 on [eps, T]:
    (lambda_snr(eps) - lambda_snr(t)) / (lambda_snr(eps) - lambda_snr(T))."""
    t = torch.as_tensor(t, dtype=torch.float64)
    hi, lo = _log_snr_range(sde, eps)
    return (hi - sde.log_snr(t)) / (hi - lo)


__all__ = ["loss_weight", "target_scale2", "sample_time", "importance_cdf", "sample_index"]
