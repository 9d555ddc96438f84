"""Correctors (Song et al. 2021, Alg. 4–5; Song & Ermon 2019, Alg. 1) and the PC stepper."""

from __future__ import annotations

import math

import torch

from ..utils import bcast
from .base import Stepper
from .problem import Problem
from .registry import CORRECTORS, register_corrector  # noqa: F401  (their home is the registry)


def _norm(v: torch.Tensor, per_sample: bool) -> torch.Tensor:
    """Per-sample L2 norms over the non-batch dims, [B]; with per_sample=False their batch mean
    (the official code), a 0-d tensor."""
    n = torch.linalg.vector_norm(v if v.ndim == 2 else v.reshape(v.shape[0], -1), dim=-1)
    return n if per_sample else n.mean()


class NoneCorrector(Stepper):
    """No correction (predictor-only sampling)."""

    name, order, nfe_per_step, stochastic = "none", 0, 0, False

    def __init__(self, snr: float = 0.0, n_steps: int = 0, per_sample: bool = False):
        pass

    def correct(self, problem: Problem, x, t, t_next, i: int | None = None):
        return x, x


class LangevinCorrector(Stepper):
    """Langevin corrector (Song et al. 2021, Alg. 4), run at time t before the predictor.

    For j = 1..n_steps: z ~ N(0, I), s = score(x, t),
    eps = 2 a_i (r |z| / |s|)^2, x_mean = x + eps s, x = x_mean + sqrt(2 eps) z,
    with r the signal-to-noise ratio ``snr`` and a_i = (alpha(t)/alpha(t_next))^2 = 1 - beta_i for
    VP-type SDEs (1 for VE, whose alpha is 1), as in the official code. Norms are taken over all
    non-batch dims of [B, ...] and averaged over the batch as the official code does (this couples
    the samples of a batch); ``per_sample=True`` uses each sample's own norms (batch-invariant).

    Caveat of ``per_sample=True``: the step size then depends on x, eps(x) ~ 1/|s(x)|^2, and
    Langevin dynamics with a state-dependent step h(x) leaves p_t(x) / h(x) ~ p_t |s|^2 invariant,
    not p_t; in low dimension, where |s| of one sample can be near 0, the bias is large (measured on
    the 2-D mixture of the tests: PC with 200 steps puts mode weights 0.32/0.40/0.28 on a
    0.2/0.5/0.3 mixture; with D = 32, corrector-only sampling misses the covariance by 0.21 vs
    0.07 for batch-averaged norms). For batch-invariant PC sampling prefer
    :class:`AnnealedLangevinCorrector`, whose step depends on t only.
    """

    name, order, nfe_per_step, stochastic = "langevin", 0, 1, True

    def __init__(self, snr: float = 0.16, n_steps: int = 1, per_sample: bool = False):
        if not (isinstance(snr, (int, float)) and snr > 0):
            raise ValueError(f"snr must be a number > 0; got snr = {snr!r}")
        if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 1:
            raise ValueError(f"corrector_steps must be an integer >= 1; got corrector_steps = {n_steps!r}")
        self.snr, self.n_steps, self.per_sample = float(snr), n_steps, bool(per_sample)
        self.nfe_per_step = n_steps

    def scalars(self, problem: Problem, t, t_next, i) -> tuple[float]:
        """(2 a_i r^2,) at the step's time (:meth:`Problem.per_step`)."""
        c, k = problem.coefficients(t, t_next, i)
        ai = c.a[k] * c.a[k]
        return (2 * ai * self.snr**2,)

    def correct(self, problem: Problem, x, t, t_next, i: int | None = None):
        """Run the corrector at grid time t (= problem.grid[i] inside the loop); returns (x, x_mean)."""
        (scale,) = problem.per_step(self.scalars, t, t_next, i, x)
        tv = problem.time_at(i, t, x)
        mean = x
        for _ in range(self.n_steps):
            s = problem.score(x, tv)
            z = problem.randn_like(x)
            step = scale * (_norm(z, self.per_sample) / _norm(s, self.per_sample)) ** 2  # [B] or 0-d
            mean = x + bcast(step, x) * s
            x = mean + bcast(torch.sqrt(2 * step), x) * z
        return x, mean


class AnnealedLangevinCorrector(LangevinCorrector):
    """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1, as Song et al. 2021's corrector).

    At noise level sigma(t) the step size is eps = 2 a_i (r sigma(t))^2 (the marginal std of the
    perturbed data sets the scale instead of the gradient norm); x_mean = x + eps s,
    x = x_mean + sqrt(2 eps) z, repeated n_steps times. Batch-invariant by construction.
    """

    name = "annealed_langevin"

    def scalars(self, problem: Problem, t, t_next, i) -> tuple[float, float]:
        """(eps, sqrt(2 eps)) at the step's time (:meth:`Problem.per_step`)."""
        c, k = problem.coefficients(t, t_next, i)
        step = 2 * c.a[k] * c.a[k] * (self.snr * c.sigma[k]) ** 2
        return step, math.sqrt(2 * step)

    def correct(self, problem: Problem, x, t, t_next, i: int | None = None):
        step, noise = problem.per_step(self.scalars, t, t_next, i, x)
        tv = problem.time_at(i, t, x)
        mean = x
        for _ in range(self.n_steps):
            s = problem.score(x, tv)
            z = problem.randn_like(x)
            mean = x + step * s
            x = mean + noise * z
        return x, mean


class PCStepper(Stepper):
    """Predictor–corrector sampling (Song et al. 2021, Alg. 1): at each grid time the corrector runs
    first (as in the official code), then the predictor steps to the next time. The state is the
    predictor's (correctors are stateless: ``correct(problem, x, t, t_next, i) -> (x, x_mean)``)."""

    stochastic = True

    def __init__(self, predictor: Stepper, corrector):
        self.predictor, self.corrector = predictor, corrector
        self.name = f"pc[{predictor.name}+{corrector.name}]"
        self.order = predictor.order
        self.nfe_per_step = predictor.nfe_per_step + corrector.nfe_per_step
        self.stochastic = predictor.stochastic or corrector.stochastic

    def check(self, sde):
        self.predictor.check(sde)
        self.corrector.check(sde)

    def init(self, problem, x):
        init = getattr(self.corrector, "init", None)
        if init is not None:
            init(problem, x)  # a user-written corrector of the earlier form may set up problem.state
        return self.predictor.init(problem, x)

    def runs(self, steps: int) -> bool:
        return self.predictor.runs(steps)

    def nfe(self, steps: int) -> int:
        return self.predictor.nfe(steps) + steps * self.corrector.nfe_per_step

    def advance(self, problem, state, x, t, t_next, i, last):
        if self.corrector.nfe_per_step:
            x, _ = self.corrector.correct(problem, x, t, t_next, i)
        return self.predictor.advance(problem, state, x, t, t_next, i, last)

    def step(self, problem, x, t, t_next, i, last):
        return self.advance(problem, self.init(problem, x), x, t, t_next, i, last)[0]
