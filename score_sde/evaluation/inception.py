"""FID / KID / Inception Score features from the TF-Inception network, through torch-fidelity.

FID as the field reports it (Heusel et al. 2017) uses the TensorFlow Inception-v3 graph of 2015-12-05;
torch-fidelity ships a PyTorch port that reproduces its features (pool3, 2048-D, and the 1008 logits for
the Inception Score). We do not re-implement that network: :func:`inception_feature_extractor` builds
torch-fidelity's, with the weights from a local file. Nothing is downloaded at run time; the weights are
looked up, in order, at the ``weights`` argument, ``$SCORE_SDE_INCEPTION_WEIGHTS``, and torch's hub cache
(where torch-fidelity itself stores them), and a missing file raises an error that names the file to
fetch and where to put it.
"""

from __future__ import annotations

import os

import torch

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS_FILE}"
INCEPTION_FEATURE_NET = "inception-v3-compat"  # torch-fidelity's name for the TF-compatible port
WEIGHTS_ENV = "SCORE_SDE_INCEPTION_WEIGHTS"


def inception_cache_path() -> str:
    """Where torch-fidelity caches the weights: ``<torch.hub.get_dir()>/checkpoints/<file>``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", INCEPTION_WEIGHTS_FILE)


def find_inception_weights(weights: str | os.PathLike | None = None) -> str:
    """Path of the TF-Inception weights file, or FileNotFoundError saying what to fetch and where to put it."""
    if weights is not None:
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Inception weights file {path!r} does not exist; fetch {INCEPTION_WEIGHTS_URL} and save it there"
            )
        return path
    candidates = [os.environ[WEIGHTS_ENV]] if os.environ.get(WEIGHTS_ENV) else []
    candidates.append(inception_cache_path())
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"FID/KID/IS need the TF-Inception weights file {INCEPTION_WEIGHTS_FILE} (about 92 MB), which is not "
        f"on this machine. Fetch {INCEPTION_WEIGHTS_URL} and put it at {inception_cache_path()} (torch's hub "
        f"cache, where torch-fidelity looks too), or anywhere and set ${WEIGHTS_ENV} to its path. Looked at: "
        f"{', '.join(candidates)}"
    )


def inception_feature_extractor(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
    """torch-fidelity's TF-compatible Inception-v3 returning (pool3 [B, 2048], logits_unbiased [B, 1008]) for
    uint8 images [B, 3, H, W] (resized to 299 inside, as TF did). Needs ``pip install torch-fidelity`` (with
    a torchvision that matches your torch) and the weights file (see :func:`find_inception_weights`)."""
    path = find_inception_weights(weights)
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as e:
        raise ImportError(
            "FID/KID/IS need torch-fidelity: pip install 'score_sde[inception]' (torch-fidelity with a torchvision "
            f"build that matches your torch); import failed with: {e}"
        ) from e
    net = FeatureExtractorInceptionV3(INCEPTION_FEATURE_NET, ["2048", "logits_unbiased"], path)
    return net.to(device).eval()


def to_uint8_rgb(x: torch.Tensor, centered: bool = True) -> torch.Tensor:
    """Model-space images [B, C, H, W] (C = 1 or 3; on [-1, 1] if ``centered`` else [0, 1]) as uint8 RGB."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape [B, 1 or 3, H, W]; got {tuple(x.shape)}")
    y = (x.detach().float() + 1) / 2 if centered else x.detach().float()
    y = (y.clamp(0, 1) * 255).round().to(torch.uint8)
    return y.expand(-1, 3, -1, -1) if y.shape[1] == 1 else y


@torch.no_grad()
def inception_features(images: torch.Tensor, net, batch_size: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """(pool3 features [N, 2048], logits [N, 1008]) of uint8 RGB ``images`` [N, 3, H, W], float64 on the CPU."""
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 (see to_uint8_rgb); got dtype {images.dtype}")
    dev = next(net.parameters()).device
    pools, logits = [], []
    for b in torch.split(images, batch_size):
        p, lg = net(b.to(dev))
        pools.append(p.double().cpu())
        logits.append(lg.double().cpu())
    return torch.cat(pools), torch.cat(logits)


def inception_score(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016): exp E_x KL(p(y|x) || p(y)), per split of the samples.

    Args:
        logits: classifier logits [N, K] (Inception's 1008 ``logits_unbiased``).
        splits: the samples are cut, in their order, into this many equal parts (10, as reported);
            torch-fidelity shuffles them first (seed 2020), and gives our numbers with ``shuffle=False``.

    Returns:
        (mean, std) of the per-split scores (std with ddof = 0, as the reference code).
    """
    if logits.ndim != 2 or logits.shape[0] < splits:
        raise ValueError(f"logits must be [N, K] with N >= splits = {splits}; got shape {tuple(logits.shape)}")
    logp = torch.log_softmax(logits.double(), dim=1)
    scores = []
    for part in torch.tensor_split(logp, splits):
        log_py = torch.logsumexp(part, dim=0) - torch.log(torch.tensor(float(part.shape[0]), dtype=torch.float64))
        kl = (part.exp() * (part - log_py)).sum(1).mean()
        scores.append(kl.exp())
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(unbiased=False))


__all__ = [
    "INCEPTION_WEIGHTS_FILE",
    "INCEPTION_WEIGHTS_URL",
    "INCEPTION_FEATURE_NET",
    "find_inception_weights",
    "inception_cache_path",
    "inception_feature_extractor",
    "inception_features",
    "inception_score",
    "to_uint8_rgb",
]
