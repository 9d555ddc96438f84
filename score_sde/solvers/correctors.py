"""Correctors (Song et al. 2021, Alg. 4–5; Song & Ermon 2019, Alg. 1) and the PC stepper."""

from __future__ import annotations

import torch

from ..sde.ve import VESDE
from ..utils import bcast
from .base import Context, Stepper
from .predictors import transition


def _norm(v: torch.Tensor, per_sample: bool) -> torch.Tensor:
    """Per-sample L2 norms [B]; with per_sample=False their batch mean (official code), broadcast."""
    n = v.reshape(v.shape[0], -1).norm(dim=-1)
    return n if per_sample else n.mean().expand_as(n)


class NoneCorrector(Stepper):
    name, order, nfe_per_step, stochastic = "none", 0, 0, False

    def __init__(self, snr: float = 0.0, n_steps: int = 0, per_sample: bool = False):
        pass

    def correct(self, ctx: Context, x, t, t_next):
        return x, x


class LangevinCorrector(Stepper):
    """Langevin corrector (Song et al. 2021, Alg. 4), run at time t before the predictor.

    For j = 1..n_steps: z ~ N(0, I), s = score(x, t),
    eps = 2 a_i (r |z| / |s|)^2, x_mean = x + eps s, x = x_mean + sqrt(2 eps) z,
    with r the signal-to-noise ratio ``snr`` and a_i = 1 - beta_i = (alpha(t)/alpha(t_next))^2 for
    VP-type SDEs (1 for VE), as in the official code. Norms are averaged over the batch as the
    official code does (this couples the samples of a batch); ``per_sample=True`` uses each
    sample's own norms.
    """

    name, order, nfe_per_step, stochastic = "langevin", 0, 1, True

    def __init__(self, snr: float = 0.16, n_steps: int = 1, per_sample: bool = False):
        if snr <= 0:
            raise ValueError(f"snr must be > 0; got snr = {snr!r}")
        if not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"corrector_steps must be an integer >= 1; got {n_steps!r}")
        self.snr, self.n_steps, self.per_sample = float(snr), n_steps, per_sample
        self.nfe_per_step = n_steps

    def correct(self, ctx: Context, x, t, t_next):
        a, _ = transition(ctx.sde, t, t_next)
        ai = (a * a).to(x.dtype) if not isinstance(ctx.sde, VESDE) else torch.ones((), dtype=x.dtype)
        tv = ctx.tvec(t, x)
        mean = x
        for _ in range(self.n_steps):
            s = ctx.score(x, tv)
            z = ctx.randn_like(x)
            step = 2 * ai * (self.snr * _norm(z, self.per_sample) / _norm(s, self.per_sample)) ** 2
            mean = x + bcast(step, x) * s
            x = mean + bcast(torch.sqrt(2 * step), x) * z
        return x, mean


class AnnealedLangevinCorrector(LangevinCorrector):
    """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1, as Song et al. 2021's corrector).

    At noise level sigma(t) the step size is eps = 2 a_i (r sigma(t))^2 (the marginal std of the
    perturbed data sets the scale instead of the gradient norm); x_mean = x + eps s,
    x = x_mean + sqrt(2 eps) z, repeated n_steps times.
    """

    name = "annealed_langevin"

    def correct(self, ctx: Context, x, t, t_next):
        a, _ = transition(ctx.sde, t, t_next)
        ai = (a * a).to(x.dtype) if not isinstance(ctx.sde, VESDE) else torch.ones((), dtype=x.dtype)
        std = ctx.sde.sigma(t).to(x.dtype)
        step = 2 * ai * (self.snr * std) ** 2
        tv = ctx.tvec(t, x)
        mean = x
        for _ in range(self.n_steps):
            s = ctx.score(x, tv)
            z = ctx.randn_like(x)
            mean = x + step * s
            x = mean + torch.sqrt(2 * step) * z
        return x, mean


CORRECTORS = {"none": NoneCorrector, "langevin": LangevinCorrector, "annealed_langevin": AnnealedLangevinCorrector}


class PCStepper(Stepper):
    """Predictor–corrector sampling (Song et al. 2021, Alg. 1): at each grid time the corrector runs
    first (as in the official code), then the predictor steps to the next time."""

    stochastic = True

    def __init__(self, predictor: Stepper, corrector):
        self.predictor, self.corrector = predictor, corrector
        self.name = f"pc[{predictor.name}+{corrector.name}]"
        self.order = predictor.order
        self.nfe_per_step = predictor.nfe_per_step + corrector.nfe_per_step
        self.stochastic = predictor.stochastic or corrector.stochastic

    def check(self, sde):
        self.predictor.check(sde)

    def init(self, ctx, x):
        self.predictor.init(ctx, x)

    def step(self, ctx, x, t, t_next, i, last):
        if self.corrector.nfe_per_step:
            x, _ = self.corrector.correct(ctx, x, t, t_next)
        return self.predictor.step(ctx, x, t, t_next, i, last)
