"""Predictors of Song et al. 2021 (App. E–F, Alg. 2–4) on an arbitrary descending grid.

Each step goes from grid time t to t_next < t. The forward transition between two grid times is

    x_t = a x_{t_next} + G z,   a = alpha(t)/alpha(t_next),   G^2 = sigma(t)^2 - a^2 sigma(t_next)^2,

which on the SDE's own chain grid is exactly DDPM's (a = sqrt(1 - beta_i), G^2 = beta_i) or
SMLD's (a = 1, G^2 = sigma_i^2 - sigma_{i-1}^2) step, so the same code runs the discrete chains
number for number and any other grid consistently.
"""

from __future__ import annotations

import math

import torch

from ..sde.ve import VESDE
from .base import StepOutput, Stepper
from .coefficients import GridCoefficients, transition  # noqa: F401  (re-exported)
from .problem import Problem

VARIANCES = ("fixed_small", "fixed_large")
DISCRETIZATIONS = ("grid", "chain")


def grid_coefficients(
    problem: Problem, t: torch.Tensor, t_next: torch.Tensor, i: int | None
) -> tuple[GridCoefficients, int]:
    """The coefficient table of the run's grid and the index of the step ``t -> t_next``
    (:meth:`Problem.coefficients <score_sde.solvers.problem.Problem.coefficients>`)."""
    return problem.coefficients(t, t_next, i)


def chain_coefficients(problem: Problem, t: torch.Tensor, i: int | None) -> tuple[float, float]:
    """(f_i / x, G_i) of the SDE's own chain step at grid time t
    (:meth:`Problem.chain_coefficients <score_sde.solvers.problem.Problem.chain_coefficients>`)."""
    return problem.chain_coefficients(t, i)


class NonePredictor(Stepper):
    """Leaves x unchanged (corrector-only sampling, Table 1's "C")."""

    name, order, nfe_per_step, stochastic = "none", 0, 0, False

    def step(self, problem, x, t, t_next, i, last):
        return StepOutput(x, x)


class EulerMaruyama(Stepper):
    """Euler–Maruyama on the reverse SDE dx = [f x - g^2 s] dt + g dw~ with dt = t_next - t < 0:
    x_mean = x + (f x - g^2 s) dt, x = x_mean + g sqrt(|dt|) z (Song et al. 2021, App. E;
    f, g and s evaluated at the step's start t). x: [B, ...]."""

    name, order, nfe_per_step, stochastic = "euler_maruyama", 1, 1, True

    @staticmethod
    def scalars(problem, t, t_next, i) -> tuple[float, float, float]:
        """(1 + f dt, g^2 dt, g sqrt(|dt|)) of the step (:meth:`Problem.per_step`)."""
        c, k = problem.coefficients(t, t_next, i)
        dt, g2 = c.dt[k], c.g2[k]
        return 1.0 + c.f[k] * dt, g2 * dt, math.sqrt(-g2 * dt)

    def step(self, problem, x, t, t_next, i, last):
        keep, drift, diffusion = problem.per_step(self.scalars, t, t_next, i, x)
        tv = problem.time_at(i, t, x)
        s = problem.score(x, tv)
        mean = x * keep - drift * s
        x0 = problem.tweedie(x, tv, s) if problem.observed else None
        if last:
            return StepOutput(mean, mean, x0)
        return StepOutput(mean + diffusion * problem.randn_like(x), mean, x0)


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

    def scalars(self, problem, t, t_next, i) -> tuple[float, float, float]:
        """(1 - f_i / x, G_i^2, G_i) of the step (:meth:`Problem.per_step`)."""
        if self.discretization == "chain":
            f1, G = problem.chain_coefficients(t, i)
            return 1.0 - f1, G * G, G
        c, k = problem.coefficients(t, t_next, i)
        noise_std = c.sqrt_G2[k]
        return 2.0 - c.a[k], c.G2[k], noise_std

    def step(self, problem, x, t, t_next, i, last):
        keep, gain, noise_std = problem.per_step(self.scalars, t, t_next, i, x)
        tv = problem.time_at(i, t, x)
        s = problem.score(x, tv)
        mean = x * keep + gain * s
        x0 = problem.tweedie(x, tv, s) if problem.observed else None
        if last:
            return StepOutput(mean, mean, x0)
        return StepOutput(mean + noise_std * problem.randn_like(x), mean, x0)


class ProbabilityFlowPredictor(Stepper):
    """Fixed-step probability flow (Song et al. 2021, App. F): x = (2 - a) x + 1/2 G_i^2 s, i.e.
    x - f_i + 1/2 G_i^2 s, a first-order (Euler-type) step of dx/dt = f x - 1/2 g^2 s. Deterministic."""

    name, order, nfe_per_step, stochastic = "probability_flow", 1, 1, False

    @staticmethod
    def scalars(problem, t, t_next, i) -> tuple[float, float]:
        """(2 - a, 1/2 G^2) of the step (:meth:`Problem.per_step`)."""
        c, k = problem.coefficients(t, t_next, i)
        return 2.0 - c.a[k], 0.5 * c.G2[k]

    def step(self, problem, x, t, t_next, i, last):
        keep, gain = problem.per_step(self.scalars, t, t_next, i, x)
        tv = problem.time_at(i, t, x)
        s = problem.score(x, tv)
        x_new = x * keep + gain * s
        return StepOutput(x_new, x_new, problem.tweedie(x, tv, s) if problem.observed else None)


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
    Only SDEs that declare ``supports_ancestral`` (VP and its discrete chain, VE) take it; sub-VP and
    general SDEs get a clear error. x: [B, ...].
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
        if not sde.supports_ancestral:  # the SDE declares whether a discrete ancestral chain exists
            raise ValueError(
                f"the ancestral predictor is defined for VPSDE (DDPM) and VESDE (SMLD) only; got {sde!r}. "
                "Use 'reverse_diffusion' or 'euler_maruyama' instead."
            )

    def scalars(self, problem, t, t_next, i) -> tuple[float, ...]:
        """(G^2, a, std) of the step, and with ``clip_denoised`` (sigma^2, alpha, the posterior mean's weights
        of x_0 and x_t) (:meth:`Problem.per_step`)."""
        c, k = problem.coefficients(t, t_next, i)
        G2 = c.G2[k]
        small = self.variance == "fixed_small" or (self.variance is None and isinstance(problem.sde, VESDE))
        std = c.sigma_next[k] * c.sqrt_G2[k] / c.sigma[k] if small else c.sqrt_G2[k]
        if not self.clip_denoised:
            return G2, c.a[k], std
        sig, sig_next = c.sigma[k], c.sigma_next[k]
        alpha = c.alpha[k]
        alpha_next = alpha / c.a[k]
        w0, wx = alpha_next * G2 / (sig * sig), c.a[k] * sig_next * sig_next / (sig * sig)
        return G2, c.a[k], std, sig * sig, alpha, w0, wx

    def step(self, problem, x, t, t_next, i, last):
        sc = problem.per_step(self.scalars, t, t_next, i, x)
        G2, a, std = sc[0], sc[1], sc[2]
        tv = problem.time_at(i, t, x)
        s = problem.score(x, tv)
        x0 = None
        if self.clip_denoised:
            sig2, alpha, w0, wx = sc[3:]
            x0 = ((x + sig2 * s) / alpha).clamp(-self.clip_range, self.clip_range)
            mean = w0 * x0 + wx * x
        elif isinstance(problem.sde, VESDE):
            mean = x + G2 * s
        else:
            mean = (x + G2 * s) / a
        if x0 is None and problem.observed:
            x0 = problem.tweedie(x, tv, s)
        if last:
            return StepOutput(mean, mean, x0)
        return StepOutput(mean + std * problem.randn_like(x), mean, x0)
