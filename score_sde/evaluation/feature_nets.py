"""FD-digits and FD-MNIST: Fréchet distance and KID in the feature space of a classifier trained here.

Inception-v3 features (FID) need a 92 MB weights file and 299x299 inputs; for the 8x8 scikit-learn digits
and the 28x28 MNIST subset that the project trains on, a small convolutional classifier trained on the same
data gives a feature space that runs on a CPU in seconds. The distances it defines are *not* FID and are
never called so: they are ``fd-digits`` / ``fd-mnist`` (and KID in that space), comparable only with
numbers from the same network (same name, version and seed).

The classifier is trained once (seeded; 15 epochs on digits, 3 on MNIST: seconds and about a minute on one CPU core),
on uniformly dequantized training images in model space ([-1, 1]), and cached with its held-out accuracy
under ``cache_dir`` (default ``$SCORE_SDE_CACHE`` or ``~/.cache/score_sde``) / ``feature_nets``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

VERSION = 2  # bump when the recipe changes: cached nets of another recipe are not reused
FEATURE_NETS = {"fd-digits": "digits", "fd-mnist": "mnist"}  # name -> data set it is trained on
_EPOCHS = {"digits": 15, "mnist": 3}


class FeatureClassifier(nn.Module):
    """Small conv net for grey images [B, 1, H, W] in [-1, 1]; ``features`` gives the penultimate layer.

    conv3x3(32) - conv3x3(32) - avgpool2 - conv3x3(64) - avgpool2 - linear(128) = features - linear(classes).
    """

    def __init__(self, image_size: int, num_classes: int = 10, feature_dim: int = 128):
        super().__init__()
        act = nn.SiLU()
        s = (image_size + 1) // 2
        s = (s + 1) // 2
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), act,
            nn.Conv2d(32, 32, 3, padding=1), act,
            nn.AvgPool2d(2, ceil_mode=True),
            nn.Conv2d(32, 64, 3, padding=1), act,
            nn.AvgPool2d(2, ceil_mode=True),
            nn.Flatten(),
            nn.Linear(64 * s * s, feature_dim), act,
        )  # fmt: skip
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@dataclass
class FeatureNet:
    """A trained feature classifier: ``features(x)`` -> float64 [N, feature_dim] for model-space images x.

    Attributes: name (``fd-digits`` / ``fd-mnist``), dataset, net, test_accuracy (held-out split), seed, path.
    """

    name: str
    dataset: str
    net: FeatureClassifier
    test_accuracy: float
    seed: int
    path: str | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, 8, 8) if self.dataset == "digits" else (1, 28, 28)

    @torch.no_grad()
    def features(self, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        if not torch.is_tensor(x) or tuple(x.shape[1:]) != self.image_shape:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"{self.name} takes images [N, *{self.image_shape}] in model space; got {shape}")
        out = [self.net.features(b.float()).double() for b in torch.split(x.detach().cpu(), batch_size)]
        return torch.cat(out)

    def __repr__(self) -> str:
        acc = f"{self.test_accuracy:.4f}"
        return f"FeatureNet({self.name!r}, test_accuracy={acc}, seed={self.seed}, path={self.path!r})"


def default_cache_dir() -> str:
    """``$SCORE_SDE_CACHE`` or ``$XDG_CACHE_HOME/score_sde`` (``~/.cache/score_sde``)."""
    if os.environ.get("SCORE_SDE_CACHE"):
        return os.environ["SCORE_SDE_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "score_sde")


def _build(image_size: int, num_classes: int) -> FeatureClassifier:
    """The classifier in float32 whatever torch's default dtype (the same weights from the same seed)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        return FeatureClassifier(image_size, num_classes)
    finally:
        torch.set_default_dtype(old)


def _check_name(name: str) -> str:
    if name not in FEATURE_NETS:
        raise ValueError(f"unknown feature net {name!r}; choose one of {sorted(FEATURE_NETS)}")
    return FEATURE_NETS[name]


def load_split(dataset: str, split: str):
    """The project's ``digits`` / ``mnist`` split (data loading only; see ``score_sde.training.data``)."""
    from ..training.data import get_dataset  # data loading has no dependency on the trainer

    return get_dataset(dataset, split, dtype=torch.float32)


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A batch shifted by up to one pixel and given Gaussian noise of a random std in [0, 0.2]."""
    dx, dy = torch.randint(-1, 2, (2,), generator=g).tolist()
    x = torch.roll(x, (dx, dy), (2, 3))
    return x + 0.2 * torch.rand((), generator=g) * torch.randn(x.shape, generator=g)


def train_feature_net(name: str = "fd-digits", seed: int = 0, epochs: int | None = None) -> FeatureNet:
    """Train the classifier of ``name`` on its training split (seeded) and measure its test accuracy.

    AdamW (lr 1e-3, weight decay 1e-2), batches of 64, label smoothing 0.1, a fresh uniform dequantization
    of the training images every epoch, one-pixel shifts and a little Gaussian noise. The regularisation
    keeps the features of held-out digits as close to the training digits' as those of another training
    subset (an unregularised net's features grow without bound on its own training data, which makes the
    training set a poor reference).
    """
    dataset = _check_name(name)
    train, test = load_split(dataset, "train"), load_split(dataset, "test")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = _build(train.shape[-1], train.num_classes)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    net.train()
    for _ in range(epochs or _EPOCHS[dataset]):
        x = train.dequantize(g, torch.float32)
        for idx in torch.randperm(len(train), generator=g).split(64):
            loss = nn.functional.cross_entropy(net(_augment(x[idx], g)), train.labels[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(test.dequantize(g, torch.float32)).argmax(1) == test.labels).double().mean())
    return FeatureNet(name, dataset, net.requires_grad_(False), acc, seed)


def feature_net_path(name: str, seed: int = 0, cache_dir: str | os.PathLike | None = None) -> str:
    _check_name(name)
    return os.path.join(os.fspath(cache_dir or default_cache_dir()), "feature_nets", f"{name}-v{VERSION}-seed{seed}.pt")


def load_feature_net(
    name: str = "fd-digits", seed: int = 0, cache_dir: str | os.PathLike | None = None, train: bool = True
) -> FeatureNet:
    """The feature net ``name`` (``fd-digits`` / ``fd-mnist``) from the cache, trained and cached when missing.

    Args:
        seed: training seed (part of the metric's identity: report it).
        cache_dir: folder of the cache (default :func:`default_cache_dir`).
        train: train when not cached (else FileNotFoundError).
    """
    dataset = _check_name(name)
    path = feature_net_path(name, seed, cache_dir)
    if os.path.isfile(path):
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = _build(int(state["image_size"]), int(state["num_classes"]))
        net.load_state_dict(state["state_dict"])
        return FeatureNet(name, dataset, net.eval().requires_grad_(False), float(state["test_accuracy"]), seed, path)
    if not train:
        raise FileNotFoundError(f"feature net {name!r} (seed {seed}) is not cached at {path!r}")
    fn = train_feature_net(name, seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    state = {
        "state_dict": fn.net.state_dict(),
        "test_accuracy": fn.test_accuracy,
        "image_size": fn.image_shape[-1],
        "num_classes": fn.net.head.out_features,
        "version": VERSION,
        "seed": seed,
    }
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)
    fn.path = path
    return fn


def reference_features(fn: FeatureNet, split: str = "train", dequantize: bool = True, seed: int = 0) -> torch.Tensor:
    """Features [N, F] of the feature net's own data split (dequantized with ``seed``, as the model sees it)."""
    ds = load_split(fn.dataset, split)
    x = ds.dequantize(torch.Generator().manual_seed(seed), torch.float32) if dequantize else ds.data
    return fn.features(x)


__all__ = [
    "FEATURE_NETS",
    "FeatureClassifier",
    "FeatureNet",
    "default_cache_dir",
    "feature_net_path",
    "load_feature_net",
    "reference_features",
    "train_feature_net",
]
