"""A low-dimensional monotone parameterisation of time grids in log-SNR.

A base grid (one of :func:`score_sde.make_grid`'s kinds) with log-SNRs lambda_0 < ... < lambda_N
(lambda_0 = lambda(T), lambda_N = lambda(eps)) has increments d_i = lambda_{i+1} - lambda_i > 0. A
coefficient vector c in R^K reshapes them:

    d_i(c) = d_i exp(sum_{k=1}^K c_k P_k(u_i)) / Z(c),   u_i = 2 (i + 1/2) / N - 1,         (1)

P_k the Legendre polynomials and Z(c) the normaliser that keeps sum_i d_i(c) = lambda_N - lambda_0.
Every c gives a strictly increasing lambda (so strictly decreasing times) with the ends fixed at T and
eps, and c = 0 is the base grid: a K-dimensional search (K = 3-6) instead of N - 1 free times, which a
derivative-free optimiser handles in a few hundred evaluations, and which cannot overfit the fitting
starts. Times are t_i = t(lambda_i) through the SDE's inverse log-SNR.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.polynomial import legendre

from ..sde.base import LinearSDE


def n_coefficients(steps: int, max_k: int = 6) -> int:
    """K of eq. (1) for a grid of ``steps`` steps: at most steps - 1 (the free times), at most ``max_k``."""
    return max(0, min(max_k, steps - 1))


def grid_from_coefficients(sde: LinearSDE, base: torch.Tensor, c) -> torch.Tensor:
    """Eq. (1): times [N + 1] (descending, float64) from a base grid ``base`` [N + 1] and coefficients c [K]."""
    base = base.to(torch.float64)
    lam = sde.log_snr(base).numpy()
    d = np.diff(lam)
    n = d.size
    c = np.asarray(c, dtype=np.float64).reshape(-1)
    if c.size:
        u = 2 * (np.arange(n) + 0.5) / n - 1
        w = legendre.legval(u, np.concatenate([[0.0], c]))
        w = np.exp(np.clip(w - w.max(), -60, 0))
        d = d * w
        d = d * (lam[-1] - lam[0]) / d.sum()
    lam_new = lam[0] + np.concatenate([[0.0], np.cumsum(d)])
    t = sde.t_from_log_snr(torch.from_numpy(lam_new)).to(torch.float64)
    t[0], t[-1] = base[0], base[-1]  # exact ends
    # the inverse log-SNR can round two very close times together: keep the grid strictly decreasing
    for i in range(1, n):
        if not t[i] < t[i - 1]:
            t[i] = torch.nextafter(t[i - 1], t.new_tensor(-1.0))
    return t
