"""Shared exact problems for the tests (Gaussian mixtures whose scores are exact under any SDE)."""

import torch

import score_sde as ss
from score_sde import metrics

SDES = {
    "vp": lambda: ss.VPSDE(0.1, 20.0, N=1000),
    "subvp": lambda: ss.SubVPSDE(0.1, 20.0, N=1000),
    "ve": lambda: ss.VESDE(0.01, 50.0, N=1000),
}


def mixture_2d() -> ss.GaussianMixture:
    """Three well-separated 2-D components with full covariances."""
    return ss.GaussianMixture(
        [0.2, 0.5, 0.3],
        [[-2.0, -1.0], [1.5, 0.5], [0.0, 2.5]],
        [[[0.30, 0.10], [0.10, 0.20]], [[0.20, -0.05], [-0.05, 0.40]], [[0.15, 0.0], [0.0, 0.10]]],
    )


def random_mixture(d: int, k: int = 3, seed: int = 0, scale: float = 2.0) -> ss.GaussianMixture:
    """A random K-component mixture in d dimensions with random full covariances."""
    g = torch.Generator().manual_seed(seed)
    means = scale * torch.randn(k, d, generator=g, dtype=torch.float64)
    A = torch.randn(k, d, d, generator=g, dtype=torch.float64) / d**0.5
    covs = 0.1 * A @ A.transpose(-1, -2) + 0.05 * torch.eye(d, dtype=torch.float64)
    w = torch.rand(k, generator=g, dtype=torch.float64) + 0.5
    return ss.GaussianMixture(w, means, covs)


def gaussian(d: int, seed: int = 0) -> ss.GaussianMixture:
    """A single Gaussian N(m, C): its probability-flow map is linear and exact."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(d, generator=g, dtype=torch.float64)
    A = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    return ss.Gaussian(m, 0.3 * A @ A.T + 0.1 * torch.eye(d, dtype=torch.float64))


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


def mixture_scales_4d() -> ss.GaussianMixture:
    """Two overlapping 4-D components whose coordinates span scales 0.02 to 1 (variances).

    The within-component spread dominates the total covariance, so a sampler whose noise is a few
    per cent off moves the covariance's trace by many standard errors (n = 10^4)."""
    return ss.GaussianMixture(
        [0.4, 0.6],
        [[0.6, 0.0, 0.3, 0.0], [-0.4, 0.2, -0.2, 0.0]],
        torch.diag_embed(torch.tensor([[1.0, 0.3, 0.1, 0.03], [0.05, 0.6, 0.02, 0.8]], dtype=torch.float64)),
    )
