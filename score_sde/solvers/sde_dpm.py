"""SDE-DPM-Solver++(2M) (Lu et al. 2022b, App.), with an eta as in DDIM, in the half-log-SNR view."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .fast_base import ExpState, ExpStepper, check_choice, check_number, sigma_tilde, taylor_weights


@dataclass
class SDEDPMState(ExpState):
    """The grid tables plus ``old`` = (lambda_{s-1}, D_{s-1}) of the previous step (None at the start)."""

    old: tuple | None = None


class DPMSolverPP2MSDE(ExpStepper):
    """SDE-DPM-Solver++(2M) (Lu et al. 2022b, App.; with an eta as in DDIM): with H = (1 + eta) h,

        x~_t = e^{-H} x~_s + (1 - e^{-H}) D_s + w (D_s - D_{s-1}) / r + sigma~_t sqrt(1 - e^{-2 eta h}) z,

    w = (1 - e^{-H}) / 2 ("midpoint") or c_1(H) / H ("taylor"), r = h_{s-1} / h; the first step
    has no w-term. eta = 0 is DPM-Solver++(2M); eta = 1 with the first-order part is the DDPM
    posterior step. It solves the eta-family d x~ = (1 + eta)(D - x~) d lambda + sqrt(2 eta) e^{-lambda} dW."""

    name, order, nfe_per_step = "dpmpp_2m_sde", 1, 1
    State = SDEDPMState

    def __init__(self, eta: float = 1.0, solver_type: str = "midpoint", final: str = "step"):
        super().__init__(final)
        self.eta = check_number("eta", eta, 0.0)
        check_choice("solver_type", solver_type, ("midpoint", "taylor"))
        self.solver_type = solver_type
        self.stochastic = self.eta > 0
        self.order = 1 if self.stochastic else 2

    def advance(self, problem, state, x, t, t_next, i, last):
        lam, alpha = state.lam, state.alpha
        D = self.predict_at(problem, state, x, t, i).x0  # one NFE, data prediction
        old, state.old = state.old, (lam[i], D)
        if self.is_final_denoise(state, i):
            return self.out(alpha[i + 1] * D, D), state
        h = lam[i + 1] - lam[i]
        H = (1 + self.eta) * h
        xt = x / alpha[i]
        mean = math.exp(-H) * xt - math.expm1(-H) * D
        if old is not None and not (self.final == "euler" and i == state.steps - 1):
            r = (lam[i] - old[0]) / h
            w = -0.5 * math.expm1(-H) if self.solver_type == "midpoint" else taylor_weights(H, 1)[1] / H
            mean = mean + (w / r) * (D - old[1])
        mean = alpha[i + 1] * mean
        std = alpha[i + 1] * sigma_tilde(lam[i + 1]) * math.sqrt(-math.expm1(-2 * self.eta * h))
        if last or std == 0:
            return self.out(mean, D), state
        return self.out(mean + std * problem.randn_like(x), D, mean=mean), state


__all__ = ["SDEDPMState", "DPMSolverPP2MSDE"]
