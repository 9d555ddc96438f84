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
