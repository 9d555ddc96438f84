"""Shared exact problems for the tests (Gaussian mixtures whose scores are exact under any SDE)."""

import torch

import score_sde as ss
from score_sde import metrics

# the exact problems live in the package (score_sde.testing); the tests import them from here as before
from score_sde.testing import SDES, gaussian, mixture_1d, mixture_2d, mixture_scales_4d, random_mixture  # noqa: E402, F401


def mmd_permutation_pvalue(x, y, n_perm: int = 200, bandwidth: float | None = None, seed: int = 0, max_n: int = 1500):
    """:func:`score_sde.metrics.mmd_permutation_pvalue`, subsampling each side to ``max_n`` by default."""
    return metrics.mmd_permutation_pvalue(x, y, n_perm=n_perm, bandwidth=bandwidth, seed=seed, max_n=max_n)


def mixture_moment_errors(gmm: ss.GaussianMixture, t, sde, n: int):
    """Exact mean m [D], covariance C [D, D] of p_t and the standard errors of their n-sample estimates.

    For y = x - m the sample covariance's entry (i, j) has variance (E[y_i^2 y_j^2] - C_ij^2) / n to
    leading order; E[y_i^2 y_j^2] is exact from each component N(a, S) (a = its mean minus m):
    a_i^2 a_j^2 + a_i^2 S_jj + a_j^2 S_ii + 4 a_i a_j S_ij + S_ii S_jj + 2 S_ij^2 (Isserlis).
    The trace of the sample covariance (the total variance, E|y|^2) has variance
    (E|y|^4 - (tr C)^2) / n with E|y|^4 = sum_ij E[y_i^2 y_j^2].
    Returns (m, C, se_mean [D], se_cov [D, D], se_trace).
    """
    m, C = gmm.moments(t, sde)
    tt = torch.tensor(float(t), dtype=torch.float64)
    a_t, s_t = float(sde.alpha(tt)), float(sde.sigma(tt))
    eye = torch.eye(gmm.D, dtype=torch.float64)
    a = a_t * gmm.means - m  # [K, D]
    S = a_t**2 * gmm.covs + s_t**2 * eye  # [K, D, D]
    Sd = torch.diagonal(S, dim1=-2, dim2=-1)  # [K, D]
    a2 = a * a
    m4 = (
        a2[:, :, None] * a2[:, None, :]
        + a2[:, :, None] * Sd[:, None, :]
        + Sd[:, :, None] * a2[:, None, :]
        + 4 * a[:, :, None] * a[:, None, :] * S
        + Sd[:, :, None] * Sd[:, None, :]
        + 2 * S * S
    )
    m4 = (gmm.weights[:, None, None] * m4).sum(0)
    return m, C, (torch.diagonal(C) / n).sqrt(), ((m4 - C * C) / n).sqrt(), ((m4.sum() - C.trace() ** 2) / n).sqrt()
