"""``score-sde train-classifier``: train a noise-conditional classifier p_t(y | x) for classifier guidance.

::

    score-sde train-classifier --data digits --workdir runs/digits_clf [--sde vp] [--steps 3000]

The classifier is trained by :func:`score_sde.training.classifier.train_noisy_classifier` under the same noise
process as the score model (x_t = alpha(t) x_0 + sigma(t) z, t ~ U(eps, T)). The workdir receives
``classifier.pt`` (weights, the network's arguments and the SDE) and ``accuracy_vs_noise.csv``
(held-out accuracy against t and sigma(t), Song et al. 2021's Fig. 13 measurement). Load it back
with :func:`load_noisy_classifier`; the result plugs into :class:`~score_sde.guidance.ClassifierGuidance`.
"""

from __future__ import annotations

import argparse
import csv
import math
import os

import torch

from .sde import VESDE, VPSDE, SubVPSDE

SDE_KINDS = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}


def make_sde(kind: str):
    """``vp`` / ``subvp`` / ``ve`` -> the SDE with its documented defaults."""
    if kind not in SDE_KINDS:
        raise ValueError(f"unknown sde {kind!r}; choose one of {sorted(SDE_KINDS)}")
    return SDE_KINDS[kind]()


def build_classifier(shape, num_classes: int, arch: str = "auto", hidden: int = 128, depth: int = 2, ch: int = 32):
    """A :class:`~score_sde.nets.NoiseConditionalClassifier` called as ``clf(x, t)`` (continuous t).

    ``arch="mlp"`` flattens the input (MLP on D entries); ``"conv"`` keeps [C, H, W]; ``"auto"``
    picks conv for images and MLP for vectors.
    """
    from .nets import NoiseConditionalClassifier

    shape = tuple(int(s) for s in shape)
    if arch not in ("auto", "mlp", "conv"):
        raise ValueError(f"unknown arch {arch!r}; choose one of auto, mlp, conv")
    if arch == "auto":
        arch = "conv" if len(shape) == 3 else "mlp"
    if arch == "conv" and len(shape) != 3:
        raise ValueError(f"arch 'conv' needs image data [C, H, W]; got shape {shape}")
    if arch == "conv":
        return NoiseConditionalClassifier(shape, num_classes, hidden=hidden, depth=depth, ch=ch)
    return _Flatten(NoiseConditionalClassifier((math.prod(shape),), num_classes, hidden, depth))


class _Flatten(torch.nn.Module):
    """Feeds [B, ...] data to a vector classifier as [B, D]."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.num_classes = inner.num_classes

    def forward(self, x, t):
        return self.inner(x.reshape(x.shape[0], -1), t)


def load_noisy_classifier(path: str, device="cpu"):
    """(classifier, sde) from a ``classifier.pt`` written by ``score-sde train-classifier``."""
    state = torch.load(path, map_location=device, weights_only=True)
    a = state["args"]
    clf = build_classifier(a["shape"], a["num_classes"], a["arch"], a["hidden"], a["depth"], a["ch"])
    clf.load_state_dict(state["state_dict"])
    clf.to(device).eval()
    return clf, make_sde(a["sde"])


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="digits", help="a labelled data set of score_sde.training.data (digits)")
    p.add_argument("--workdir", required=True, help="writes classifier.pt and accuracy_vs_noise.csv here")
    p.add_argument("--sde", default="vp", choices=sorted(SDE_KINDS))
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--arch", default="auto", choices=("auto", "mlp", "conv"))
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--ch", type=int, default=32)
    p.add_argument("--eps", type=float, default=1e-5, help="smallest training time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-times", type=int, default=21, help="points of the accuracy-vs-noise curve")


def _run(args) -> int:
    from .training.classifier import accuracy_vs_noise, train_noisy_classifier
    from .training.data import get_dataset

    torch.manual_seed(args.seed)
    train, test = get_dataset(args.data, "train", seed=args.seed), get_dataset(args.data, "test", seed=args.seed)
    if train.labels is None or train.num_classes is None:
        raise ValueError(f"data set {args.data!r} has no class labels")
    sde = make_sde(args.sde)
    clf = build_classifier(train.shape, train.num_classes, args.arch, args.hidden, args.depth, args.ch)
    g = torch.Generator().manual_seed(args.seed)
    losses = train_noisy_classifier(
        clf, sde, train.data, train.labels, steps=args.steps, batch_size=args.batch_size, lr=args.lr, eps=args.eps,
        generator=g, log_every=max(args.steps // 10, 1),
    )  # fmt: skip
    os.makedirs(args.workdir, exist_ok=True)
    meta = {
        "shape": list(train.shape),
        "num_classes": int(train.num_classes),
        "arch": args.arch,
        "hidden": args.hidden,
        "depth": args.depth,
        "ch": args.ch,
        "sde": args.sde,
        "data": args.data,
        "steps": args.steps,
    }
    torch.save({"state_dict": clf.state_dict(), "args": meta}, os.path.join(args.workdir, "classifier.pt"))
    times = torch.linspace(args.eps, sde.T, args.n_times, dtype=torch.float64)
    acc = accuracy_vs_noise(clf, sde, test.data, test.labels, times, generator=torch.Generator().manual_seed(1))
    with open(os.path.join(args.workdir, "accuracy_vs_noise.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t", "sigma", "accuracy"])
        for t, sig, a in zip(times.tolist(), sde.sigma(times).tolist(), acc.tolist()):
            w.writerow([f"{t:.6g}", f"{sig:.6g}", f"{a:.4f}"])
    print(
        f"{args.workdir}: trained a noise-conditional classifier on {args.data} ({len(train)} points, "
        f"{args.steps} steps, last loss {sum(losses[-50:]) / len(losses[-50:]):.4f}); held-out accuracy "
        f"{acc[0]:.3f} at t = {times[0]:.0e}, {acc[len(acc) // 2]:.3f} at t = {times[len(acc) // 2]:.2f}, "
        f"{acc[-1]:.3f} at t = 1"
    )
    return 0


def register() -> None:
    """Add ``train-classifier`` to the ``score-sde`` command (through the CLI's sub-command registry)."""
    from .cli import register_subcommand

    register_subcommand("train-classifier", "train a noise-conditional classifier for classifier guidance", _args, _run)


__all__ = ["build_classifier", "load_noisy_classifier", "make_sde", "register", "SDE_KINDS"]
