"""Exact test problems: Gaussian mixtures whose scores, densities and samples are known in closed form under
every linear SDE (:class:`~score_sde.analytic.GaussianMixture`), and the SDEs the tests run them under.

The test suite, the examples, the paper figures and the benchmarks all draw on these, so a number measured in one
place is measured on the same problem everywhere. Every problem is built in float64 and is deterministic (fixed
numbers, or a seeded ``torch.Generator``).

==========================  =====================================================================================
problem                     what it is for
==========================  =====================================================================================
:data:`SDES`, make_sde      VP (beta 0.1..20), sub-VP (same beta) and VE (sigma 0.01..50), N = 1000: the SDEs
                            every sampler and likelihood test runs under
:func:`mixture_2d`          three separated 2-D components with full covariances: sample quality (MMD, mode
                            weights), score and likelihood checks, the 2-D panels of figures and tables
:func:`random_mixture`      K components in d dimensions, random means and full covariances: the same tests in
                            higher dimension (likelihood against the exact density, sampler error against NFE)
:func:`gaussian`            one Gaussian N(m, C): its probability-flow map is linear, so orders of convergence
                            and likelihoods can be checked to round-off
:func:`mixture_scales_4d`   two 4-D components whose coordinates span variances 0.02..1: a sampler whose noise
                            is a few per cent off moves the sample covariance by many standard errors
:func:`mixture_1d`          two 1-D components: the building block of :class:`ProductOfMixtures`
:class:`ProductOfMixtures`  d independent copies of :func:`mixture_1d`: the score's Jacobian is diagonal, so one
                            Rademacher probe gives the exact divergence (Hutchinson checks)
:func:`ring_mixture`        the "8 Gaussians" ring (equal weights on a circle): the toy training set ``mixture``
==========================  =====================================================================================
"""

from __future__ import annotations

import math

import torch

from .analytic import Gaussian, GaussianMixture
from .sde import VESDE, VPSDE, SubVPSDE

F64 = torch.float64

SDES = {
    "vp": lambda: VPSDE(0.1, 20.0, N=1000),
    "subvp": lambda: SubVPSDE(0.1, 20.0, N=1000),
    "ve": lambda: VESDE(0.01, 50.0, N=1000),
}


def make_sde(kind: str, N: int = 1000):
    """The test SDE ``kind`` (``"vp"``, ``"subvp"`` or ``"ve"``, as in :data:`SDES`) with N discretisation steps."""
    if kind == "vp":
        return VPSDE(0.1, 20.0, N=N)
    if kind == "subvp":
        return SubVPSDE(0.1, 20.0, N=N)
    if kind == "ve":
        return VESDE(0.01, 50.0, N=N)
    raise ValueError(f"unknown SDE kind {kind!r}; choose vp, subvp or ve")


def mixture_2d() -> GaussianMixture:
    """Three well-separated 2-D components (weights 0.2 / 0.5 / 0.3) with full covariances."""
    return GaussianMixture(
        [0.2, 0.5, 0.3],
        [[-2.0, -1.0], [1.5, 0.5], [0.0, 2.5]],
        [[[0.30, 0.10], [0.10, 0.20]], [[0.20, -0.05], [-0.05, 0.40]], [[0.15, 0.0], [0.0, 0.10]]],
    )


def random_mixture(d: int, k: int = 3, seed: int = 0, scale: float = 2.0, jitter: float = 0.05) -> GaussianMixture:
    """A K-component mixture in d dimensions: means ``scale * N(0, I)``, covariances ``0.1 A A^T + jitter I`` with
    ``A ~ N(0, 1/d)``, weights ``U(0.5, 1.5)`` (normalised), all drawn from ``torch.Generator().manual_seed(seed)``."""
    g = torch.Generator().manual_seed(seed)
    means = scale * torch.randn(k, d, generator=g, dtype=F64)
    A = torch.randn(k, d, d, generator=g, dtype=F64) / d**0.5
    covs = 0.1 * A @ A.transpose(-1, -2) + jitter * torch.eye(d, dtype=F64)
    w = torch.rand(k, generator=g, dtype=F64) + 0.5
    return GaussianMixture(w, means, covs)


def gaussian(d: int, seed: int = 0) -> Gaussian:
    """A single Gaussian N(m, C) in d dimensions, m ~ N(0, I), C = 0.3 A A^T + 0.1 I with A ~ N(0, 1/d)."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(d, generator=g, dtype=F64)
    A = torch.randn(d, d, generator=g, dtype=F64) / d**0.5
    return Gaussian(m, 0.3 * A @ A.T + 0.1 * torch.eye(d, dtype=F64))


def mixture_scales_4d() -> GaussianMixture:
    """Two overlapping 4-D components whose coordinates span variances 0.02 to 1.

    The within-component spread dominates the total covariance, so a sampler whose noise is a few per cent off
    moves the covariance's trace by many standard errors (n = 10^4)."""
    return GaussianMixture(
        [0.4, 0.6],
        [[0.6, 0.0, 0.3, 0.0], [-0.4, 0.2, -0.2, 0.0]],
        torch.diag_embed(torch.tensor([[1.0, 0.3, 0.1, 0.03], [0.05, 0.6, 0.02, 0.8]], dtype=F64)),
    )


def mixture_1d() -> GaussianMixture:
    """0.3 N(-1.5, 0.2) + 0.7 N(1.0, 0.4) (variances), a 1-D mixture with unequal modes."""
    return GaussianMixture([0.3, 0.7], [[-1.5], [1.0]], [0.2, 0.4])


class ProductOfMixtures:
    """d independent coordinates, each distributed as ``one`` (default :func:`mixture_1d`).

    The score's Jacobian is diagonal, so a single Rademacher probe gives the exact divergence
    (v^T J v = tr J when J is diagonal and v_i^2 = 1). Shapes: x [B, d], t a number or [B]."""

    def __init__(self, d: int, one: GaussianMixture | None = None):
        self.one = mixture_1d() if one is None else one
        self.d = d

    def _t(self, x: torch.Tensor, t) -> torch.Tensor:
        return torch.as_tensor(t, dtype=F64).expand(x.shape[0]).repeat_interleave(self.d)

    def score(self, x: torch.Tensor, t, sde) -> torch.Tensor:
        """grad log p_t(x), shape [B, d]."""
        return self.one.score(x.reshape(-1, 1), self._t(x, t), sde).reshape(x.shape)

    def log_prob(self, x: torch.Tensor, t, sde) -> torch.Tensor:
        """log p_t(x), shape [B]."""
        return self.one.log_prob(x.reshape(-1, 1), self._t(x, t), sde).reshape(x.shape[0], -1).sum(1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n exact samples of p_0, shape [n, d]."""
        return self.one.sample(n * self.d, generator).reshape(n, self.d)


def ring_mixture(components: int = 8, radius: float = 2.0, std: float = 0.25) -> GaussianMixture:
    """Equal-weight isotropic Gaussians N(r (cos 2 pi k/K, sin 2 pi k/K), std^2 I), k = 0..K-1 ("8 Gaussians")."""
    ang = 2 * math.pi * torch.arange(components, dtype=F64) / components
    means = radius * torch.stack([torch.cos(ang), torch.sin(ang)], 1)
    return GaussianMixture(torch.ones(components), means, torch.full((components,), float(std) ** 2))


__all__ = [
    "SDES",
    "make_sde",
    "mixture_2d",
    "random_mixture",
    "gaussian",
    "mixture_scales_4d",
    "mixture_1d",
    "ProductOfMixtures",
    "ring_mixture",
]
