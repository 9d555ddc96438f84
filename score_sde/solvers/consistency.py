"""Multistep consistency sampling (Song et al. 2023, Alg. 1) as a stepper of the one loop.

A consistency model f(x, t) maps any point of a probability-flow ODE trajectory to the trajectory's
end at the smallest time eps. Written in x~ = x / alpha and sigma~ = sigma / alpha (the EDM view, where
every linear SDE's PF-ODE is the same ODE in sigma~), f returns x~_eps, the x_0 estimate of the sampler.

The sampler needs no new interface: the model is passed as a score function whose Tweedie estimate
is f itself, score(x, t) = (alpha(t) f(x, t) - x) / sigma(t)^2, which is what
:class:`score_sde.training.distill.ConsistencyModel` returns. The step reads f from the problem's denoiser
view (:meth:`~score_sde.solvers.problem.Problem.predict`): a ConsistencyModel (an x0 model) hands f over
unchanged, a plain score function gives f(x, t) = (x + sigma^2 score) / alpha. On a grid
T = tau_0 > tau_1 > ... > tau_K = eps, step i:

    x0_hat = f(x_{tau_i}, tau_i)                                      (one NFE)
    x_{tau_{i+1}} = alpha(tau_{i+1}) (x0_hat + sqrt(sigma~(tau_{i+1})^2 - sigma~(eps)^2) z),  z ~ N(0, I)

(Alg. 1 line 5, with x~ instead of x: f's output already carries the noise level sigma~(eps), so only
the difference of variances is added). The last step returns alpha(eps) x0_hat, a sample at time eps.
With K = 1 this is one-step generation x_eps = alpha(eps) f(x_T, T). Shapes: x [B, ...].

The stepper keeps no state between steps (it reads only the grid in ``problem.grid``). It draws noise
between steps, so it is stochastic; with one step it is deterministic. Given an ordinary score model it still
runs, with Tweedie's posterior mean in place of f, which is not the PF-ODE's end point: its samples are then
too narrow (the sampler is meant for consistency models).
"""

from __future__ import annotations

import math

from .base import StepOutput, Stepper


class ConsistencySampler(Stepper):
    """Multistep consistency sampling (Song et al. 2023, Alg. 1); one NFE per step, noise between steps."""

    name, order, nfe_per_step, stochastic = "consistency", 0, 1, True

    def step(self, problem, x, t, t_next, i, last):
        sde = problem.sde
        tv = problem.time_at(i, t, x)
        a, sig = float(sde.alpha(t)), float(sde.sigma(t))
        x0 = problem.predict(x, tv, a, sig).x0  # f(x, t), one NFE (Alg. 1, lines 2 and 6)
        a_next = float(sde.alpha(t_next))
        out = StepOutput(a_next * x0, a_next * x0, x0=x0)
        eps = problem.grid[-1]
        var = float(sde.sigma_tilde(t_next)) ** 2 - float(sde.sigma_tilde(eps)) ** 2
        if last or var <= 0:
            return out
        out.x = a_next * (x0 + math.sqrt(var) * problem.randn_like(x))
        return out


__all__ = ["ConsistencySampler"]
