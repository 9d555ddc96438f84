"""A teacher-free grid loss: the sampler's step-doubling estimate of its own global error.

In the spirit of Align Your Steps (Sabour et al. 2024), which fits a schedule by minimising an error
bound that needs no teacher trajectories. Here the bound is Richardson's: for a sampler S of order p
run on a grid G (times t_0 > ... > t_N) and on the grid G/2 that halves every step in log-SNR
(lambda_{i+1/2} = (lambda_i + lambda_{i+1}) / 2, 2N steps), the exact end state x* satisfies

    S_G(x_T) - x* = (S_G - S_{G/2})(x_T) / (1 - 2^-p) + O(h^{p+1}),

so B(G) = 1/B sum_b || S_G(x_T,b) - S_{G/2}(x_T,b) ||_2 / alpha(eps) (x~ units) is, up to the constant
1 / (1 - 2^-p), an estimate of the mean pathwise error that uses only the sampler itself: no reference
solve, no teacher trajectories. Each evaluation costs the NFE of both runs (about 3x the budget).
"""

from __future__ import annotations

import torch

from ..solvers.api import sample


def halve(sde, times: torch.Tensor) -> torch.Tensor:
    """G/2: the grid [2N + 1] with the log-SNR midpoint inserted in every step of ``times`` [N + 1]."""
    lam = sde.log_snr(times)
    mid = sde.t_from_log_snr(0.5 * (lam[1:] + lam[:-1])).to(times.dtype)
    return torch.cat([torch.stack([times[:-1], mid], 1).reshape(-1), times[-1:]])


class StepDoublingBound:
    """B(G) above for ``sampler`` (with ``options``) at ``nfe``; call with times [N + 1] -> float."""

    def __init__(self, sde, score_fn, sampler, nfe, x_T, eps, options, cond=None):
        self.sde, self.score_fn, self.sampler, self.nfe, self.x_T = sde, score_fn, sampler, nfe, x_T
        self.eps, self.options, self.cond = eps, options, cond
        self.scale = 1.0 / float(sde.alpha(torch.tensor(eps, dtype=torch.float64)))

    def _run(self, times: torch.Tensor) -> torch.Tensor:
        return sample(self.sde, self.score_fn, x_T=self.x_T, sampler=self.sampler, grid=times, eps=self.eps,
                      cond=self.cond, **self.options).x  # fmt: skip

    def __call__(self, times: torch.Tensor) -> float:
        coarse, fine = self._run(times), self._run(halve(self.sde, times.to(torch.float64)))
        return self.scale * float((coarse - fine).flatten(1).norm(dim=1).mean())
