"""DDIM with eta (Song et al. 2021a, eq. 12 and 16) in the denoiser / half-log-SNR view."""

from __future__ import annotations

import math

from .fast_base import ExpStepper, check_number, sigma_tilde


class DDIM(ExpStepper):
    """DDIM (Song et al. 2021a, eq. 12 and 16) written in x~ and sigma~ = e^{-lambda}. Eq. 12,

        x_{t-1} = sqrt(a_{t-1}) x0^ + sqrt(1 - a_{t-1} - sigma_t^2) eps^ + sigma_t z,
        x0^ = (x_t - sqrt(1 - a_t) eps^) / sqrt(a_t)   (a = DDIM's alpha-bar = alpha^2),

    divided by alpha_{t-1} = sqrt(a_{t-1}) reads, with x0^ = D from the denoiser view,

        x~_t = D + sqrt(sigma~_t^2 - c^2) eps^ + c z,   eps^ = (x~_s - D) / sigma~_s,
        c = eta sigma~_t sqrt(1 - e^{-2h}),  h = lambda_t - lambda_s

    (c is eq. 16's sigma_t(eta) divided by alpha_t). eta = 0 gives
    x~_t = e^{-h} x~_s + (1 - e^{-h}) D, which is Euler in sigma~ and DPM-Solver-1; eta = 1 gives
    x~_t = e^{-2h} x~_s + (1 - e^{-2h}) D + sigma~_t sqrt(1 - e^{-2h}) z, the DDPM posterior
    q(x_t | x_s, x_0 = D). Shapes: x [B, ...]; one NFE per step.

    ``clip_denoised=True`` replaces D by D clipped to [-clip_range, clip_range] in the first term
    only, x~_t = clip(D) + sqrt(sigma~_t^2 - c^2) eps^ + c z with eps^ from the unclipped D, as
    diffusers' ``DDIMScheduler`` does with ``clip_sample`` (and ``use_clipped_model_output=False``).
    """

    name, order, nfe_per_step = "ddim", 1, 1

    def __init__(self, eta: float = 0.0, final: str = "step", clip_denoised: bool = False, clip_range: float = 1.0):
        super().__init__(final)
        self.eta = check_number("eta", eta, 0.0, 1.0)
        self.stochastic = self.eta > 0
        if not isinstance(clip_denoised, bool):
            raise TypeError(f"clip_denoised must be True or False; got clip_denoised = {clip_denoised!r}")
        self.clip_denoised = clip_denoised
        self.clip_range = check_number("clip_range", clip_range, 0.0, lo_open=True)

    def advance(self, problem, state, x, t, t_next, i, last):
        lam, alpha = state.lam, state.alpha
        pred = self.predict_at(problem, state, x, t, i)  # one NFE: x0^ (and eps^) of eq. 12
        if self.clip_denoised:
            return self._clipped_step(problem, state, x, pred, i, last), state
        D = pred.x0
        if self.is_final_denoise(state, i):
            return self.out(alpha[i + 1] * D, D), state
        h = lam[i + 1] - lam[i]
        xt = x / alpha[i]
        if self.eta == 0:  # x~_t = e^{-h} x~_s + (1 - e^{-h}) D
            mean_t = math.exp(-h) * xt - math.expm1(-h) * D
            return self.out(alpha[i + 1] * mean_t, D), state
        sn = sigma_tilde(lam[i + 1])
        one_m = -math.expm1(-2 * h)
        c = self.eta * sn * math.sqrt(one_m)
        keep = math.exp(-h) * math.sqrt(1.0 - self.eta**2 * one_m)  # sqrt(sn^2 - c^2) / sigma~_s
        mean = alpha[i + 1] * (keep * xt + (1.0 - keep) * D)  # eq. 12 with eps^ = (x~_s - D) / sigma~_s
        if last or c == 0:
            return self.out(mean, D), state
        xn = mean + (alpha[i + 1] * c) * problem.randn_like(x)
        return self.out(xn, D, mean=mean), state

    def _clipped_step(self, problem, state, x, pred, i, last):
        """Eq. 12 in x: x_t = alpha_t clip(D) + sqrt(sigma_t^2 - (alpha_t c)^2) eps^ + alpha_t c z with eps^ the
        network's noise estimate (its own output for an eps network, -sigma_s s for a score; written in x, not
        x~, so that a large |D| cancels nothing)."""
        lam, alpha = state.lam, state.alpha
        Dc = pred.x0.clamp(-self.clip_range, self.clip_range)
        a_next = alpha[i + 1]
        if self.is_final_denoise(state, i):
            return self.out(a_next * Dc, Dc)
        sn = sigma_tilde(lam[i + 1])
        c = self.eta * sn * math.sqrt(-math.expm1(-2 * (lam[i + 1] - lam[i])))
        eps_hat = pred.eps
        mean = a_next * Dc + (a_next * math.sqrt(max(sn * sn - c * c, 0.0))) * eps_hat
        if last or c == 0:
            return self.out(mean, Dc)
        return self.out(mean + (a_next * c) * problem.randn_like(x), Dc, mean=mean)


__all__ = ["DDIM"]
