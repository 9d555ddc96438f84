"""The toy 2-D training sets, generated in the package from a seed: the ring mixture (with its exact
distribution), swiss roll, two moons, checkerboard and concentric rings."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..analytic import GaussianMixture
from ..testing import ring_mixture
from .dataset import Dataset, _generator


# ---- toy 2-D sets ------------------------------------------------------------------------------------
def mixture_distribution(components: int = 8, radius: float = 2.0, std: float = 0.25) -> GaussianMixture:
    """Equal-weight isotropic Gaussians N(r (cos 2 pi k/K, sin 2 pi k/K), std^2 I), k = 0..K-1
    (:func:`score_sde.testing.ring_mixture`)."""
    return ring_mixture(components, radius, std)


def _toy_mixture(n, g, components=8, radius=2.0, std=0.25):
    dist = mixture_distribution(components, radius, std)
    k = torch.randint(0, components, (n,), generator=g)
    x = dist.means[k] + std * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return x, k, components, dist


def _toy_swiss_roll(n, g, noise=0.5):
    u = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g, dtype=torch.float64))
    x = torch.stack([u * torch.cos(u), u * torch.sin(u)], 1) + noise * torch.randn(
        n, 2, generator=g, dtype=torch.float64
    )
    return x / 5.0, None, None, None


def _toy_moons(n, g, noise=0.05):
    k = torch.randint(0, 2, (n,), generator=g)
    th = math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    upper = torch.stack([torch.cos(th), torch.sin(th)], 1)
    lower = torch.stack([1 - torch.cos(th), 0.5 - torch.sin(th)], 1)
    x = torch.where(k[:, None] == 0, upper, lower) + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    x = 2.0 * (x - torch.tensor([0.5, 0.25], dtype=torch.float64))  # centre and scale to about [-3, 3] x [-1.5, 1.5]
    return x, k, 2, None


def _toy_checkerboard(n, g):
    # columns c = 0..3 of width 1 on [-2, 2]; rows alternate so that (row + col) is even
    x1 = 4 * torch.rand(n, generator=g, dtype=torch.float64) - 2
    col = torch.floor(x1 + 2)
    row = 2 * torch.randint(0, 2, (n,), generator=g).to(torch.float64) + (col % 2)
    x2 = row - 2 + torch.rand(n, generator=g, dtype=torch.float64)
    return torch.stack([x1, x2], 1), None, None, None


def _toy_rings(n, g, radii=(0.5, 1.0, 1.5, 2.0), noise=0.04):
    r = torch.as_tensor(radii, dtype=torch.float64)
    k = torch.randint(0, len(radii), (n,), generator=g)
    th = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    x = r[k][:, None] * torch.stack([torch.cos(th), torch.sin(th)], 1)
    return x + noise * torch.randn(n, 2, generator=g, dtype=torch.float64), k, len(radii), None


def _make_toy(gen: Callable, default_n: dict):
    def load(name, split, n, seed, root, centered, dtype, **kw):
        n_make = n or default_n[split]
        x, k, K, dist = gen(n_make, _generator(seed, split), **kw)
        return Dataset(name, x.to(dtype), k, K, None, None, dist)

    return load


TOY_N = {"train": 10000, "test": 2000}
