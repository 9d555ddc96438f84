"""Heun / EDM with churn (Karras et al. 2022, Alg. 1-2) and Restart sampling (Xu et al. 2023, Alg. 1),
in x~ = x / alpha and sigma~ = sigma / alpha = e^{-lambda}."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .fast_base import ExpState, ExpStepper, check_int, check_number, sigma_tilde


@dataclass
class HeunStep:
    """One Heun step's result: x~ at its end, and D = D(x~, sigma~) at its start (the step's x_0 estimate)."""

    xt: torch.Tensor
    D: torch.Tensor


class EDMHeun(ExpStepper):
    """Karras et al. (2022), Alg. 2 (S_churn = 0: Alg. 1, deterministic Heun), in x~ and sigma~:

        gamma_i = min(S_churn / N, sqrt 2 - 1) if S_min <= sigma~_i <= S_max else 0,
        sigma^ = sigma~_i (1 + gamma_i),  x^ = x~_i + sqrt(sigma^^2 - sigma~_i^2) S_noise z,
        d = (x^ - D(x^, sigma^)) / sigma^,  x' = x^ + (sigma~_{i+1} - sigma^) d,
        x~_{i+1} = x^ + (sigma~_{i+1} - sigma^) (d + d') / 2,  d' = (x' - D(x', sigma~_{i+1})) / sigma~_{i+1}.

    D(x~, sigma~) is the problem's denoiser view (an x0 or EDM-preconditioned network's output unchanged, no
    score round trip), evaluated at the time t with sigma(t) / alpha(t) = sigma~; the steps are kept in
    sigma~ = e^{-lambda}, as EDM keeps them in sigma. sigma^ is capped at sigma~(T) (times stay in [0, T]).
    Two NFE per step; with ``final="denoise"`` the last step is Euler to sigma~ = 0 (x~ = D), so
    NFE = 2N - 1 as in EDM; ``final="euler"`` makes the last step an Euler step to sigma_min.
    """

    name, order, nfe_per_step = "heun", 2, 2

    def __init__(
        self,
        S_churn: float = 0.0,
        S_min: float = 0.0,
        S_max: float = math.inf,
        S_noise: float = 1.0,
        final: str = "step",
    ):
        super().__init__(final)
        self.S_churn = check_number("S_churn", S_churn, 0.0)
        self.S_min = check_number("S_min", S_min, 0.0)
        if isinstance(S_max, bool) or not isinstance(S_max, (int, float)) or not (S_max >= self.S_min):
            raise ValueError(f"S_max must be a number >= S_min = {self.S_min}; got S_max = {S_max!r}")
        self.S_max = float(S_max)
        self.S_noise = check_number("S_noise", S_noise, 0.0)
        self.stochastic = self.S_churn > 0
        self.name = "edm" if self.stochastic else "heun"

    def nfe(self, steps: int) -> int:
        return 2 * steps - (1 if self.final in ("denoise", "euler") else 0)

    def _D_at_sigma(self, problem, xt, sig):
        """D at x~ = xt, sigma~ = sig (one NFE)."""
        sde = problem.sde
        t = sde.t_from_log_snr(torch.tensor(-math.log(sig), dtype=torch.float64)).clamp(0.0, sde.T)
        return self.predict_at(problem, None, float(sde.alpha(t)) * xt, t).x0

    def heun(self, problem, xt, s_from, s_to, D_from=None, euler=False) -> HeunStep:
        """One Heun step in sigma~ from s_from to s_to (> 0) (Alg. 1, lines 4-8); ``D_from``: D at the start
        if already known; ``euler``: stop after the Euler predictor."""
        D = self._D_at_sigma(problem, xt, s_from) if D_from is None else D_from
        d = (xt - D) / s_from
        x1 = xt + (s_to - s_from) * d
        if euler:
            return HeunStep(x1, D)
        D2 = self._D_at_sigma(problem, x1, s_to)
        d2 = (x1 - D2) / s_to
        return HeunStep(xt + (s_to - s_from) * 0.5 * (d + d2), D)

    def advance(self, problem, state, x, t, t_next, i, last):
        lam, alpha, steps = state.lam, state.alpha, state.steps
        xt = x / alpha[i]
        s_i, s_n = math.exp(-lam[i]), sigma_tilde(lam[i + 1])
        gamma = 0.0
        if self.S_churn > 0 and self.S_min <= s_i <= self.S_max:  # Alg. 2, line 4
            gamma = min(self.S_churn / steps, math.sqrt(2) - 1)
            gamma = min(gamma, math.exp(-lam[0]) / s_i - 1)  # sigma^ <= sigma~(T)
        if gamma > 0:  # Alg. 2, lines 5-6: raise the noise level to sigma^
            s_hat = s_i * (1 + gamma)
            xt = xt + math.sqrt(s_hat**2 - s_i**2) * self.S_noise * problem.randn_like(xt)
            D = self._D_at_sigma(problem, xt, s_hat)
        else:
            s_hat = s_i
            D = self.predict_at(problem, state, x, t, i).x0
        if self.is_final_denoise(state, i):
            return self.out(alpha[i + 1] * D, D), state
        euler = self.final == "euler" and i == steps - 1
        hs = self.heun(problem, xt, s_hat, s_n, D, euler=euler)
        return self.out(alpha[i + 1] * hs.xt, hs.D), state


@dataclass
class RestartState(ExpState):
    """The grid tables plus ``restart_at``, the step after which the restart loops run."""

    restart_at: int = -1


class Restart(EDMHeun):
    """Restart sampling (Xu et al. 2023, Alg. 1): deterministic Heun steps over the grid; on reaching
    the grid point nearest to ``restart_sigma[0]`` (= sigma~_min of the restart interval), K times:
    add noise forward x~ <- x~ + sqrt(sigma~_max^2 - sigma~_min^2) z to ``restart_sigma[1]`` and
    integrate back to sigma~_min with ``restart_steps`` Heun steps uniform in log sigma~.

    NFE = heun NFE + 2 K ``restart_steps``. Defaults: restart_sigma = (0.1, 1.0) (in sigma~ = sigma /
    alpha), K = 2, restart_steps = 3.
    """

    name = "restart"
    State = RestartState

    def __init__(
        self,
        restart_sigma=(0.1, 1.0),
        K: int = 2,
        restart_steps: int = 3,
        final: str = "step",
    ):
        super().__init__(final=final)
        rs = tuple(float(v) for v in restart_sigma) if isinstance(restart_sigma, (tuple, list)) else None
        if rs is None or len(rs) != 2 or not (0 < rs[0] < rs[1] < math.inf):
            raise ValueError(f"restart_sigma must be (sigma_min, sigma_max) with 0 < min < max; got {restart_sigma!r}")
        self.restart_sigma = rs
        self.K = check_int("K", K, 0)
        self.restart_steps = check_int("restart_steps", restart_steps, 1)
        self.stochastic = self.K > 0
        self.name = "restart"

    def nfe(self, steps: int) -> int:
        return super().nfe(steps) + 2 * self.K * self.restart_steps

    def prepare(self, state: RestartState) -> None:
        sig = [sigma_tilde(v) for v in state.lam]
        target = self.restart_sigma[0]
        # the step whose end point is nearest (in log sigma~) to the restart sigma~_min (not t = 0)
        pos = [v for v in sig if v > 0]
        if not (min(pos) <= self.restart_sigma[0] and self.restart_sigma[1] <= sig[0]):
            raise ValueError(
                f"restart_sigma = {self.restart_sigma} lies outside the grid's sigma~ range "
                f"[{min(pos):.3g}, {sig[0]:.3g}]"
            )
        j = min((j for j in range(1, len(sig)) if sig[j] > 0), key=lambda j: abs(math.log(sig[j] / target)))
        state.restart_at = j - 1  # restart after step j - 1

    def advance(self, problem, state, x, t, t_next, i, last):
        out, state = super().advance(problem, state, x, t, t_next, i, last)
        if i != state.restart_at or self.K == 0:
            return out, state
        lam, alpha = state.lam, state.alpha
        s_lo, s_hi = sigma_tilde(lam[i + 1]), self.restart_sigma[1]
        xt = out.x / alpha[i + 1]
        ss = torch.logspace(math.log10(s_hi), math.log10(s_lo), self.restart_steps + 1, dtype=torch.float64).tolist()
        ss[0], ss[-1] = s_hi, s_lo
        for _ in range(self.K):  # Alg. 1: forward noise to sigma~_max, then Heun back to sigma~_min
            xt = xt + math.sqrt(s_hi**2 - s_lo**2) * problem.randn_like(xt)
            for a, b in zip(ss[:-1], ss[1:]):
                xt = self.heun(problem, xt, a, b).xt
        return self.out(alpha[i + 1] * xt, out.x0), state


def _heun(final: str = "step"):
    return EDMHeun(final=final)


def _edm(S_churn: float = 0.0, S_min: float = 0.0, S_max: float = math.inf, S_noise: float = 1.0, final="step"):
    """EDM sampler (Karras et al. 2022, Alg. 2). Deterministic Heun (Alg. 1) unless churn is asked for, as in
    EDM's and k-diffusion's samplers; EDM's stochastic CIFAR-10 setting is S_churn=40, S_min=0.05,
    S_max=50, S_noise=1.003 (its Table 5)."""
    return EDMHeun(S_churn, S_min, S_max, S_noise, final)


__all__ = ["HeunStep", "EDMHeun", "RestartState", "Restart"]
