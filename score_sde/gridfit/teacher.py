"""Fitting a grid to teacher trajectories (in the spirit of learning-to-discretize, Tong et al. 2024).

From fitting starts x_T [B, ...], a tight solve of the probability-flow ODE (the teacher: UniPC-3 with
many steps) gives the end states x_ref [B, ...] at eps. The loss of a grid t_0 > ... > t_N is the mean
pathwise error of the sampler run on that grid from the same starts, in x~ = x / alpha(eps) units:

    L(t) = 1/B sum_b || S_t(x_T,b) - x_ref,b ||_2 / alpha(eps),

the quantity the benchmarks report on held-out starts. The sampler is run through ``ss.sample`` itself.
"""

from __future__ import annotations

import torch

from ..solvers.api import sample


def teacher_targets(sde, score_fn, x_T: torch.Tensor, eps: float, steps: int = 400, cond=None) -> torch.Tensor:
    """x_ref [B, ...]: the end states of UniPC-3 with ``steps`` steps on the ``"auto"`` grid from x_T."""
    return sample(sde, score_fn, x_T=x_T, sampler="unipc", order=3, steps=steps, grid="auto", eps=eps, cond=cond).x


class TeacherLoss:
    """L(t) above for ``sampler`` (with ``options``) at ``nfe``; call with times [N + 1] -> float."""

    def __init__(self, sde, score_fn, sampler, nfe, x_T, eps, options, cond=None, teacher_steps: int = 400):
        self.sde, self.score_fn, self.sampler, self.nfe, self.x_T = sde, score_fn, sampler, nfe, x_T
        self.eps, self.options, self.cond = eps, options, cond
        self.x_ref = teacher_targets(sde, score_fn, x_T, eps, teacher_steps, cond)
        self.scale = 1.0 / float(sde.alpha(torch.tensor(eps, dtype=torch.float64)))

    def __call__(self, times: torch.Tensor) -> float:
        x = sample(self.sde, self.score_fn, x_T=self.x_T, sampler=self.sampler, nfe=self.nfe, grid=times,
                   eps=self.eps, cond=self.cond, **self.options).x  # fmt: skip
        return self.scale * float((x - self.x_ref).flatten(1).norm(dim=1).mean())
