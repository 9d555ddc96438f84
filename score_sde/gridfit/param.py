"""A low-dimensional monotone parameterisation of time grids in log-SNR.

A base grid (one of :func:`score_sde.make_grid`'s kinds) with log-SNRs lambda_0 < ... < lambda_N
(lambda_0 = lambda(T), lambda_N = lambda(eps)) has increments d_i = lambda_{i+1} - lambda_i > 0. A
coefficient vector c in R^K reshapes them:

    d_i(c) = d_i exp(sum_{k=1}^K c_k P_k(u_i)) / Z(c),   u_i = 2 (i + 1/2) / N - 1,         (1)

P_k the Legendre polynomials and Z(c) the normaliser that keeps sum_i d_i(c) = lambda_N - lambda_0.
Every c gives a strictly increasing lambda (so strictly decreasing times) with the ends fixed at T and
eps, and c = 0 is the base grid (up to the table interpolation of t(lambda) below): a K-dimensional
search (K <= 6) instead of N - 1 free times, which a derivative-free optimiser handles in a few hundred
evaluations, and which has too few degrees of freedom to overfit a few hundred fitting starts.
Times are t_i = t(lambda_i) through the SDE's inverse log-SNR.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.polynomial import legendre

from ..sde.base import LinearSDE


def n_coefficients(steps: int, max_k: int = 6) -> int:
    """K of eq. (1) for a grid of ``steps`` steps: at most steps - 1 (the free times), at most ``max_k``."""
    return max(0, min(max_k, steps - 1))


class GridMap:
    """Eq. (1) for one SDE and base grid: ``GridMap(sde, base)(c)`` -> times [N + 1] (descending, float64).

    The inverse log-SNR is read off a table of ``table`` times (dense near eps, t = eps + (T - eps) u^2) by
    monotone linear interpolation, once per fit: an SDE's own inverse can be slow (the DDPM-table VP solves
    for it), and a grid needs its times, not a particular rounding of them.
    """

    def __init__(self, sde: LinearSDE, base: torch.Tensor, table: int = 20001):
        base = base.to(torch.float64)
        self.base = base
        self.lam = sde.log_snr(base).numpy()
        t0, t1 = float(base[-1]), float(base[0])
        u = np.linspace(0.0, 1.0, table)
        t = t0 + (t1 - t0) * u**2
        lam = sde.log_snr(torch.from_numpy(t)).numpy()  # decreasing in t
        self._lam_tab, self._t_tab = lam[::-1].copy(), t[::-1].copy()

    def __call__(self, c) -> torch.Tensor:
        lam, n = self.lam, self.lam.size - 1
        d = np.diff(lam)
        c = np.asarray(c, dtype=np.float64).reshape(-1)
        if c.size:
            u = 2 * (np.arange(n) + 0.5) / n - 1
            w = legendre.legval(u, np.concatenate([[0.0], c]))
            d = d * np.exp(np.clip(w - w.max(), -60, 0))
            d = d * (lam[-1] - lam[0]) / d.sum()
        lam_new = lam[0] + np.concatenate([[0.0], np.cumsum(d)])
        t = torch.from_numpy(np.interp(lam_new, self._lam_tab, self._t_tab))
        t[0], t[-1] = self.base[0], self.base[-1]  # exact ends
        # two times closer than the table resolves would coincide: keep the grid strictly decreasing
        for i in range(1, n):
            if not t[i] < t[i - 1]:
                t[i] = torch.nextafter(t[i - 1], t.new_tensor(-1.0))
        return t


def grid_from_coefficients(sde: LinearSDE, base: torch.Tensor, c) -> torch.Tensor:
    """Eq. (1): times [N + 1] (descending, float64) from a base grid ``base`` [N + 1] and coefficients c [K]."""
    return GridMap(sde, base)(c)
