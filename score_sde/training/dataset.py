"""The :class:`Dataset` container (data in model space, labels, the discrete levels and their scaling) and the
helpers every loader shares: split streams and permutations, argument checks, file paths."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..analytic import GaussianMixture
from ..data_scaling import DataScaling
from ..utils import Generator

SPLITS = ("train", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")




@dataclass(eq=False)
class Dataset(torch.utils.data.Dataset):
    """A data set held in memory.

    Attributes:
        name: the registry name.
        data: float tensor [N, ...] in model space.
        labels: int64 tensor [N] of class labels, or None.
        num_classes: number of classes (labels lie in 0..num_classes-1), or None.
        scaling: the :class:`DataScaling` of discrete data (K levels, x = a y + b), or None.
        quantized: int64 tensor [N, ...] of the levels n (discrete data only), else None.
        distribution: the exact data distribution when known (``mixture``), else None.

    ``ds[i]`` is ``data[i]`` (unlabelled) or ``(data[i], labels[i])``; ``len(ds)`` is N.
    """

    name: str
    data: torch.Tensor
    labels: torch.Tensor | None = None
    num_classes: int | None = None
    scaling: DataScaling | None = None
    quantized: torch.Tensor | None = None
    distribution: GaussianMixture | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample (the event shape), e.g. (2,) or (1, 8, 8)."""
        return tuple(self.data.shape[1:])

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __getitem__(self, i):
        return self.data[i] if self.labels is None else (self.data[i], self.labels[i])

    def dequantize(self, generator: Generator = None, dtype=None) -> torch.Tensor:
        """Uniformly dequantized model-space data a (n + u) / K + b, [N, ...] (discrete data only)."""
        if self.scaling is None or self.quantized is None:
            raise ValueError(f"data set {self.name!r} is continuous: it has no levels to dequantize")
        return self.scaling.dequantize(self.quantized, generator, dtype)

    def subset(self, n: int) -> Dataset:
        """The first n points."""
        return Dataset(
            self.name,
            self.data[:n],
            None if self.labels is None else self.labels[:n],
            self.num_classes,
            self.scaling,
            None if self.quantized is None else self.quantized[:n],
            self.distribution,
        )


# ---- helpers ----------------------------------------------------------------------------------------
def _generator(seed: int, split: str) -> torch.Generator:
    """Disjoint streams for the splits: seed 2 seed (train) and 2 seed + 1 (test)."""
    return torch.Generator().manual_seed(2 * int(seed) + (split == "test"))


def _check_args(name, split, n, seed):
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive integer or None; got n = {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got seed = {seed!r}")


def _take(ds: Dataset, n: int | None) -> Dataset:
    if n is None:
        return ds
    if n > len(ds):
        raise ValueError(f"n = {n} exceeds the {len(ds)} points of the {ds.name!r} split")
    return ds.subset(n)


def _scaling(levels: int, centered: bool) -> DataScaling:
    return DataScaling.centered(levels) if centered else DataScaling.unit(levels)


def _discrete(name, levels_tensor, labels, num_classes, K, centered, dtype) -> Dataset:
    """A Dataset of integer levels [N, ...] in 0..K-1, stored as a n / (K - 1) + b."""
    q = torch.as_tensor(levels_tensor).long()
    sc = _scaling(K, centered)
    sc.check_levels(q, name)
    data = sc.to_model(q.to(dtype) / (K - 1))
    lab = None if labels is None else torch.as_tensor(np.asarray(labels)).long()
    return Dataset(name, data, lab, num_classes, sc, q)


def _split_perm(N: int, split: str, seed: int, test_fraction: float) -> torch.Tensor:
    """Indices of ``split`` under a fixed permutation of N points drawn from ``seed``."""
    if not (0 < test_fraction < 1):
        raise ValueError(f"test_fraction must lie in (0, 1); got test_fraction = {test_fraction!r}")
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(int(seed)))
    n_test = max(1, int(round(N * test_fraction)))
    if n_test >= N:
        raise ValueError(f"cannot split {N} points with test_fraction = {test_fraction}")
    return perm[:n_test] if split == "test" else perm[n_test:]


def _path(root, what: str) -> Path:
    if root is None:
        raise ValueError(f"data set {what!r} needs root=<path>; got root = None")
    p = Path(os.path.expanduser(str(root)))
    if not p.exists():
        raise FileNotFoundError(f"data set {what!r}: no such file or directory: {str(p)!r}")
    return p
