"""Score networks: time embeddings, an MLP for low-dimensional data, a DDPM++/NCSN++ U-Net, and a
noise-conditional classifier.

``NCSNpp`` (NCSN++ / DDPM++ with every option of the official code) and ``DDPM`` (Ho et al.'s
U-Net) are the networks of the official score_sde checkpoints (see :mod:`score_sde.pretrained`).

Every score net is called as ``net(x, labels[, cond])`` and returns a tensor shaped like ``x``;
wrap it with :class:`score_sde.ScoreModel` to say what it predicts and which time labels it gets.
Label conventions (the ``label_scale`` / ``embedding`` arguments):

=====================  =========================================  ==============================
net                    labels it expects                          ScoreModel(time_labels=...)
=====================  =========================================  ==============================
sinusoidal (default)   t in [0, 1], embedded as PE(1000 t)        ``"continuous"``
sinusoidal,            t (N-1) or an integer index                ``"t999"`` / ``"discrete"``
``label_scale=1``
fourier (NCSN++)       sigma(t), embedded as Fourier(ln sigma)    ``"sigma"``
=====================  =========================================  ==============================
"""

from __future__ import annotations

from torch import nn

from .classifier import NoiseConditionalClassifier
from .ddpm import DDPM
from .embeddings import GaussianFourierProjection, LabelEmbedding, SinusoidalEmbedding
from .mlp import ClassConditioning, MLPScoreNet
from .ncsnpp import NCSNpp
from .unet import UNet

# kind -> (class, defaults applied before the user's keyword arguments)
NETS: dict[str, tuple[type, dict]] = {
    "mlp": (MLPScoreNet, {}),
    "unet": (UNet, {}),
    # DDPM++ (continuous) as in the official CIFAR-10 configs: BigGAN blocks, 4 blocks per level
    "ddpmpp": (UNet, {"resblock": "biggan", "num_res_blocks": 4}),
    # NCSN++ (continuous VE): Fourier features of ln sigma (scale 16), BigGAN blocks, 4 blocks per level
    "ncsnpp": (UNet, {"embedding": "fourier", "fourier_scale": 16.0, "resblock": "biggan", "num_res_blocks": 4}),
    "classifier": (NoiseConditionalClassifier, {}),
}


def build_net(kind: str, **kwargs) -> nn.Module:
    """Build a network by name: ``"mlp"`` -> :class:`MLPScoreNet`; ``"unet"``, ``"ddpmpp"``,
    ``"ncsnpp"`` -> :class:`UNet` (with the defaults of :data:`NETS`); ``"classifier"`` ->
    :class:`NoiseConditionalClassifier`. Keyword arguments override the defaults.

    Pair ``"ncsnpp"`` with ``ScoreModel(time_labels="sigma")`` (its labels are sigma).
    """
    if not isinstance(kind, str) or kind.lower() not in NETS:
        raise ValueError(f"unknown net kind {kind!r}; choose one of {sorted(NETS)}")
    cls, defaults = NETS[kind.lower()]
    try:
        return cls(**{**defaults, **kwargs})
    except TypeError as e:  # an unknown keyword: name it and the kind
        raise TypeError(f"build_net({kind!r}): {e}") from None


__all__ = [
    "build_net",
    "NETS",
    "MLPScoreNet",
    "UNet",
    "NCSNpp",
    "DDPM",
    "NoiseConditionalClassifier",
    "SinusoidalEmbedding",
    "GaussianFourierProjection",
    "LabelEmbedding",
    "ClassConditioning",
]
