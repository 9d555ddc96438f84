"""Predictors of Song et al. 2021 (App. E–F, Alg. 2–4) on an arbitrary descending grid.

Each step goes from grid time t to t_next < t. The forward transition between two grid times is

    x_t = a x_{t_next} + G z,   a = alpha(t)/alpha(t_next),   G^2 = sigma(t)^2 - a^2 sigma(t_next)^2,

which on the SDE's own chain grid is exactly DDPM's (a = sqrt(1 - beta_i), G^2 = beta_i) or
SMLD's (a = 1, G^2 = sigma_i^2 - sigma_{i-1}^2) step, so the same code runs the discrete chains
number for number and any other grid consistently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..sde.base import LinearSDE
from ..sde.ve import VESDE
from ..sde.vp import VPSDE, SubVPSDE
from .base import Context, StepOutput, Stepper

VARIANCES = ("fixed_small", "fixed_large")
DISCRETIZATIONS = ("grid", "chain")


def transition(sde: LinearSDE, t: torch.Tensor, t_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, G^2) of the forward step x_t = a x_{t_next} + G z between grid times (float64, any shape)."""
    a = torch.exp(sde.log_alpha(t) - sde.log_alpha(t_next))
    G2 = sde.sigma(t) ** 2 - a * a * sde.sigma(t_next) ** 2
    return a, G2.clamp(min=0)


@dataclass
class GridCoefficients:
    """Per-step schedule coefficients of a grid t_0 > t_1 > ... > t_n, as Python floats.

    Computed once per run (vectorised over the grid, float64) so that a step costs only its
    update arithmetic. Entry i belongs to the step t_i -> t_{i+1}:
    ``a``, ``G2`` (:func:`transition`), ``sqrt_G2``, ``f`` = f(t_i), ``g2`` = g(t_i)^2,
    ``dt`` = t_{i+1} - t_i (< 0), ``sigma`` = sigma(t_i), ``sigma_next`` = sigma(t_{i+1}),
    ``alpha`` = alpha(t_i).
    """

    a: list
    G2: list
    sqrt_G2: list
    f: list
    g2: list
    dt: list
    sigma: list
    sigma_next: list
    alpha: list

    @classmethod
    def build(cls, sde: LinearSDE, grid: torch.Tensor) -> GridCoefficients:
        grid = grid.to(torch.float64)
        t, tn = grid[:-1], grid[1:]
        a, G2 = transition(sde, t, tn)
        return cls(
            a=a.tolist(),
            G2=G2.tolist(),
            sqrt_G2=G2.sqrt().tolist(),
            f=(sde.dlog_alpha_dt(t) + 0 * t).tolist(),
            g2=(sde.g2(t) + 0 * t).tolist(),
            dt=(tn - t).tolist(),
            sigma=sde.sigma(t).tolist(),
            sigma_next=sde.sigma(tn).tolist(),
            alpha=sde.alpha(t).tolist(),
        )


def grid_coefficients(
    ctx: Context, t: torch.Tensor, t_next: torch.Tensor, i: int | None
) -> tuple[GridCoefficients, int]:
    """The coefficient table of the run's grid and the index of the step ``t -> t_next``.

    Inside the loop (``ctx.grid`` set) ``i`` indexes the cached table of ``ctx.grid``; a step called
    on its own (``ctx.grid is None`` or ``i is None``) gets a one-step table of ``(t, t_next)`` and index 0.
    """
    if ctx.grid is None or i is None:
        return GridCoefficients.build(ctx.sde, torch.stack([torch.as_tensor(t), torch.as_tensor(t_next)])), 0
    tab = ctx.state.get("_grid_coefficients")
    if tab is None:
        tab = ctx.state["_grid_coefficients"] = GridCoefficients.build(ctx.sde, ctx.grid)
    return tab, i


def _chain_table(sde: LinearSDE, times: torch.Tensor) -> tuple[list, list]:
    times = times.to(torch.float64).cpu().reshape(-1)
    f, G = sde.discretize(torch.ones_like(times), times)  # f_i is linear in x: f_i(x = 1)
    return f.tolist(), G.tolist()


def chain_coefficients(ctx: Context, t: torch.Tensor, i: int | None) -> tuple[float, float]:
    """(f_i / x, G_i) of the SDE's own chain step at grid time t (``sde.discretize``), tabulated once
    per run on the CPU in float64, as :func:`grid_coefficients` does for the grid's own steps."""
    if ctx.grid is None or i is None:
        f, G = _chain_table(ctx.sde, torch.as_tensor(t))
        return f[0], G[0]
    tab = ctx.state.get("_chain_coefficients")
    if tab is None:
        tab = ctx.state["_chain_coefficients"] = _chain_table(ctx.sde, ctx.grid[:-1])
    return tab[0][i], tab[1][i]


class NonePredictor(Stepper):
    """Leaves x unchanged (corrector-only sampling, Table 1's "C")."""

    name, order, nfe_per_step, stochastic = "none", 0, 0, False

    def step(self, ctx, x, t, t_next, i, last):
        return StepOutput(x, x)


class EulerMaruyama(Stepper):
    """Euler–Maruyama on the reverse SDE dx = [f x - g^2 s] dt + g dw~ with dt = t_next - t < 0:
    x_mean = x + (f x - g^2 s) dt, x = x_mean + g sqrt(|dt|) z (Song et al. 2021, App. E;
    f, g and s evaluated at the step's start t). x: [B, ...]."""

    name, order, nfe_per_step, stochastic = "euler_maruyama", 1, 1, True

    def step(self, ctx, x, t, t_next, i, last):
        c, k = grid_coefficients(ctx, t, t_next, i)
        tv = ctx.time_at(i, t, x)
        s = ctx.score(x, tv)
        dt, g2 = c.dt[k], c.g2[k]
        mean = x * (1.0 + c.f[k] * dt) - (g2 * dt) * s
        if last:
            return StepOutput(mean, mean, score=s, t_score=tv, x_in=x)
        return StepOutput(mean + math.sqrt(-g2 * dt) * ctx.randn_like(x), mean, score=s, t_score=tv, x_in=x)


class ReverseDiffusion(Stepper):
    """Reverse diffusion (Song et al. 2021, eq. 46): x_mean = x - f_i + G_i^2 s, x = x_mean + G_i z.

    ``discretization="grid"`` (default): the forward step between the two grid times, f_i = (a - 1) x
    and G_i from :func:`transition` (VP: (2 - sqrt(1-beta)) x + beta s + sqrt(beta) z; VE: x +
    (sigma_i^2 - sigma_{i-1}^2) s + sqrt(...) z), exact on any grid.
    ``discretization="chain"``: f_i, G_i of the SDE's own discrete chain at the chain index of t
    (``sde.discretize``: beta_i of the DDPM chain, sigma_i^2 - sigma_{i-1}^2 of the SMLD chain with
    sigma_{-1} = 0), whatever the grid: the official code's predictor and diffusers'
    ``ScoreSdeVeScheduler.step_pred``, which evaluate the score at t but step with the chain's
    coefficients. x: [B, ...].
    """

    name, order, nfe_per_step, stochastic = "reverse_diffusion", 1, 1, True

    def __init__(self, discretization: str = "grid"):
        if discretization not in DISCRETIZATIONS:
            raise ValueError(
                f"discretization must be one of {DISCRETIZATIONS}; got discretization = {discretization!r}"
            )
        self.discretization = discretization

    def step(self, ctx, x, t, t_next, i, last):
        tv = ctx.time_at(i, t, x)
        s = ctx.score(x, tv)
        if self.discretization == "chain":
            f1, G = chain_coefficients(ctx, t, i)
            mean = x * (1.0 - f1) + (G * G) * s
            noise_std = G
        else:
            c, k = grid_coefficients(ctx, t, t_next, i)
            mean = x * (2.0 - c.a[k]) + c.G2[k] * s
            noise_std = c.sqrt_G2[k]
        if last:
            return StepOutput(mean, mean, score=s, t_score=tv, x_in=x)
        return StepOutput(mean + noise_std * ctx.randn_like(x), mean, score=s, t_score=tv, x_in=x)


class ProbabilityFlowPredictor(Stepper):
    """Fixed-step probability flow (Song et al. 2021, App. F): x = (2 - a) x + 1/2 G_i^2 s, i.e.
    x - f_i + 1/2 G_i^2 s, a first-order (Euler-type) step of dx/dt = f x - 1/2 g^2 s. Deterministic."""

    name, order, nfe_per_step, stochastic = "probability_flow", 1, 1, False

    def step(self, ctx, x, t, t_next, i, last):
        c, k = grid_coefficients(ctx, t, t_next, i)
        tv = ctx.time_at(i, t, x)
        s = ctx.score(x, tv)
        x_new = x * (2.0 - c.a[k]) + (0.5 * c.G2[k]) * s
        return StepOutput(x_new, x_new, score=s, t_score=tv, x_in=x)


def _is_vp(sde: LinearSDE) -> bool:
    return isinstance(sde, VPSDE) and not isinstance(sde, SubVPSDE)


class AncestralSampling(Stepper):
    """Ancestral sampling (Song et al. 2021, App. F; Ho et al. 2020, Alg. 2), on any grid.

    Between grid times t > t' the forward step is x_t = a x_t' + G z (:func:`transition`), and
    the Gaussian posterior q(x_t' | x_t, x_0) (Ho et al. 2020, eqs. 6-7, here between any two
    times) has

        mean = alpha(t') G^2 / sigma(t)^2  x_0  +  a sigma(t')^2 / sigma(t)^2  x_t,
        variance beta~ = sigma(t')^2 G^2 / sigma(t)^2.

    With x_0 the Tweedie estimate D = (x + sigma^2 s) / alpha this mean is (x + G^2 s) / a (VP;
    on a DDPM chain's own grid 1 - beta_i = a^2, beta_i = G^2, and with s = -eps / sqrt(1 - alpha_bar_i)
    it is DDPM's mean) and x + G^2 s (VE), which is what the step computes unless x_0 is clipped.

    Args:
        variance: the noise of each step. ``"fixed_large"``: G^2 (DDPM's sigma_t^2 = beta_t);
            ``"fixed_small"``: beta~ (DDPM's sigma_t^2 = beta~_t, the posterior variance);
            ``None`` (default): Song et al. 2021's choice, ``fixed_large`` on VP and
            ``fixed_small`` on VE (SMLD's sigma_{i-1}^2 (sigma_i^2 - sigma_{i-1}^2) / sigma_i^2).
            diffusers' ``DDPMScheduler`` defaults to ``fixed_small``.
        clip_denoised: clip the x_0 estimate to [-clip_range, clip_range] and take the posterior
            mean with the clipped x_0 (the official DDPM code's ``clip_denoised``, diffusers'
            ``clip_sample``). The callbacks' x_0 is then the clipped one.
        clip_range: the bound of the clipping (diffusers' ``clip_sample_range``), > 0.

    The last step (``denoise=True``) returns the mean and draws no noise; on a DDPM chain's grid,
    which ends at t = 0, that mean is x_0 itself (clipped when ``clip_denoised``).
    No ancestral sampler exists for sub-VP or general SDEs (a clear error says so). x: [B, ...].
    """

    name, order, nfe_per_step, stochastic = "ancestral", 1, 1, True

    def __init__(self, variance: str | None = None, clip_denoised: bool = False, clip_range: float = 1.0):
        if variance is not None and variance not in VARIANCES:
            raise ValueError(f"variance must be one of {VARIANCES} or None; got variance = {variance!r}")
        if not isinstance(clip_denoised, bool):
            raise TypeError(f"clip_denoised must be True or False; got clip_denoised = {clip_denoised!r}")
        if isinstance(clip_range, bool) or not isinstance(clip_range, (int, float)) or not clip_range > 0:
            raise ValueError(f"clip_range must be a number > 0; got clip_range = {clip_range!r}")
        self.variance, self.clip_denoised, self.clip_range = variance, clip_denoised, float(clip_range)

    def check(self, sde):
        if not (_is_vp(sde) or isinstance(sde, VESDE)):
            raise ValueError(
                f"the ancestral predictor is defined for VPSDE (DDPM) and VESDE (SMLD) only; got {sde!r}. "
                "Use 'reverse_diffusion' or 'euler_maruyama' instead."
            )

    def step(self, ctx, x, t, t_next, i, last):
        c, k = grid_coefficients(ctx, t, t_next, i)
        tv = ctx.time_at(i, t, x)
        s = ctx.score(x, tv)
        G2 = c.G2[k]
        ve = isinstance(ctx.sde, VESDE)
        small = self.variance == "fixed_small" or (self.variance is None and ve)
        std = c.sigma_next[k] * c.sqrt_G2[k] / c.sigma[k] if small else c.sqrt_G2[k]
        x0 = None
        if self.clip_denoised:
            sig, sig_next = c.sigma[k], c.sigma_next[k]
            alpha = c.alpha[k]
            x0 = ((x + (sig * sig) * s) / alpha).clamp(-self.clip_range, self.clip_range)
            alpha_next = alpha / c.a[k]
            mean = (alpha_next * G2 / (sig * sig)) * x0 + (c.a[k] * sig_next * sig_next / (sig * sig)) * x
        elif ve:
            mean = x + G2 * s
        else:
            mean = (x + G2 * s) / c.a[k]
        if last:
            return StepOutput(mean, mean, x0=x0, score=s, t_score=tv, x_in=x)
        return StepOutput(mean + std * ctx.randn_like(x), mean, x0=x0, score=s, t_score=tv, x_in=x)
