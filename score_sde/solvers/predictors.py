"""Predictors of Song et al. 2021 (App. E–F, Alg. 2–4) on an arbitrary descending grid.

Each step goes from grid time t to t_next < t. The forward transition between two grid times is

    x_t = a x_{t_next} + G z,   a = alpha(t)/alpha(t_next),   G^2 = sigma(t)^2 - a^2 sigma(t_next)^2,

which on the SDE's own chain grid is exactly DDPM's (a = sqrt(1 - beta_i), G^2 = beta_i) or
SMLD's (a = 1, G^2 = sigma_i^2 - sigma_{i-1}^2) step, so the same code runs the discrete chains
number for number and any other grid consistently.
"""

from __future__ import annotations

import torch

from ..sde.base import LinearSDE
from ..sde.ve import VESDE
from ..sde.vp import VPSDE, SubVPSDE
from .base import StepOutput, Stepper


def transition(sde: LinearSDE, t: torch.Tensor, t_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, G^2) of the forward step x_t = a x_{t_next} + G z between two grid times (0-d float64)."""
    a = torch.exp(sde.log_alpha(t) - sde.log_alpha(t_next))
    G2 = sde.sigma(t) ** 2 - a * a * sde.sigma(t_next) ** 2
    return a, G2.clamp(min=0)


class NonePredictor(Stepper):
    """Leaves x unchanged (corrector-only sampling, Table 1's "C")."""

    name, order, nfe_per_step, stochastic = "none", 0, 0, False

    def step(self, ctx, x, t, t_next, i, last):
        return StepOutput(x, x)


class EulerMaruyama(Stepper):
    """Euler–Maruyama on the reverse SDE dx = [f - g^2 s] dt + g dw~ with dt = t_next - t < 0:
    x_mean = x + (f x - g^2 s) dt, x = x_mean + g sqrt(|dt|) z (Song et al. 2021, App. E)."""

    name, order, nfe_per_step, stochastic = "euler_maruyama", 1, 1, True

    def step(self, ctx, x, t, t_next, i, last):
        tv = ctx.tvec(t, x)
        s = ctx.score(x, tv)
        dt = (t_next - t).to(x.dtype)
        f = ctx.sde.dlog_alpha_dt(t).to(x.dtype)
        g2 = ctx.sde.g2(t).to(x.dtype)
        mean = x + (f * x - g2 * s) * dt
        if last:
            return StepOutput(mean, mean, score=s, t_score=tv, x_in=x)
        return StepOutput(mean + torch.sqrt(g2 * -dt) * ctx.randn_like(x), mean, score=s, t_score=tv, x_in=x)


class ReverseDiffusion(Stepper):
    """Reverse diffusion (Song et al. 2021, eq. 46): x_mean = x - f_i + G_i^2 s, x = x_mean + G_i z,
    with the forward step f_i = (a - 1) x, G_i from :func:`transition` (VP: (2 - sqrt(1-beta)) x +
    beta s + sqrt(beta) z; VE: x + (sigma_i^2 - sigma_{i-1}^2) s + sqrt(...) z)."""

    name, order, nfe_per_step, stochastic = "reverse_diffusion", 1, 1, True

    def step(self, ctx, x, t, t_next, i, last):
        tv = ctx.tvec(t, x)
        s = ctx.score(x, tv)
        a, G2 = transition(ctx.sde, t, t_next)
        a, G2 = a.to(x.dtype), G2.to(x.dtype)
        mean = (2 - a) * x + G2 * s
        if last:
            return StepOutput(mean, mean, score=s, t_score=tv, x_in=x)
        return StepOutput(mean + torch.sqrt(G2) * ctx.randn_like(x), mean, score=s, t_score=tv, x_in=x)


class ProbabilityFlowPredictor(Stepper):
    """Fixed-step probability flow (Song et al. 2021, App. F): x = x - f_i + 1/2 G_i^2 s (deterministic)."""

    name, order, nfe_per_step, stochastic = "probability_flow", 1, 1, False

    def step(self, ctx, x, t, t_next, i, last):
        tv = ctx.tvec(t, x)
        s = ctx.score(x, tv)
        a, G2 = transition(ctx.sde, t, t_next)
        x_new = (2 - a.to(x.dtype)) * x + 0.5 * G2.to(x.dtype) * s
        return StepOutput(x_new, x_new, score=s, t_score=tv, x_in=x)


def _is_vp(sde: LinearSDE) -> bool:
    return isinstance(sde, VPSDE) and not isinstance(sde, SubVPSDE)


class AncestralSampling(Stepper):
    """Ancestral sampling (Song et al. 2021, App. F; DDPM's Algorithm 2 with sigma_t^2 = beta_t).

    VP: x_{i-1} = (x_i + beta_i s) / sqrt(1 - beta_i) + sqrt(beta_i) z, where 1 - beta_i = a^2 and
    beta_i = G^2 from :func:`transition`; with s = -eps / sqrt(1 - alpha_bar_i) this is the seed's
    ``p_sample``. VE: x_{i-1} = x_i + (sigma_i^2 - sigma_{i-1}^2) s +
    sqrt(sigma_{i-1}^2 (sigma_i^2 - sigma_{i-1}^2) / sigma_i^2) z. No ancestral sampler exists for
    sub-VP or general SDEs (a clear error says so).
    """

    name, order, nfe_per_step, stochastic = "ancestral", 1, 1, True

    def check(self, sde):
        if not (_is_vp(sde) or isinstance(sde, VESDE)):
            raise ValueError(
                f"the ancestral predictor is defined for VPSDE (DDPM) and VESDE (SMLD) only; got {sde!r}. "
                "Use 'reverse_diffusion' or 'euler_maruyama' instead."
            )

    def step(self, ctx, x, t, t_next, i, last):
        tv = ctx.tvec(t, x)
        s = ctx.score(x, tv)
        a, G2 = transition(ctx.sde, t, t_next)
        a, G2 = a.to(x.dtype), G2.to(x.dtype)
        if isinstance(ctx.sde, VESDE):
            mean = x + G2 * s
            std = torch.sqrt(ctx.sde.sigma(t_next).to(x.dtype) ** 2 * G2 / ctx.sde.sigma(t).to(x.dtype) ** 2)
        else:
            mean = (x + G2 * s) / a
            std = torch.sqrt(G2)
        if last:
            return StepOutput(mean, mean, score=s, t_score=tv, x_in=x)
        return StepOutput(mean + std * ctx.randn_like(x), mean, score=s, t_score=tv, x_in=x)


PREDICTORS = {
    "none": NonePredictor,
    "euler_maruyama": EulerMaruyama,
    "reverse_diffusion": ReverseDiffusion,
    "ancestral": AncestralSampling,
    "probability_flow": ProbabilityFlowPredictor,
}
