"""Schedule coefficients of a descending time grid, tabulated once per run in float64.

Between grid times t > t_next the forward transition of a linear SDE is

    x_t = a x_{t_next} + G z,   a = alpha(t)/alpha(t_next),   G^2 = sigma(t)^2 - a^2 sigma(t_next)^2,

which on the SDE's own chain grid is exactly DDPM's (a = sqrt(1 - beta_i), G^2 = beta_i) or SMLD's
(a = 1, G^2 = sigma_i^2 - sigma_{i-1}^2) step (Song et al. 2021, App. E-F).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..sde.base import LinearSDE


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


def chain_table(sde: LinearSDE, times: torch.Tensor) -> tuple[list, list]:
    """(f_i / x, G_i) of the SDE's own discrete chain (``sde.discretize``) at each of ``times``."""
    times = times.to(torch.float64).cpu().reshape(-1)
    f, G = sde.discretize(torch.ones_like(times), times)  # f_i is linear in x: f_i(x = 1)
    return f.tolist(), G.tolist()


__all__ = ["transition", "GridCoefficients", "chain_table"]
