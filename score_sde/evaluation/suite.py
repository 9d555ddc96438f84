"""All feature-space metrics of one set of samples against reference features, as one flat dict."""

from __future__ import annotations

import torch

from .frechet import feature_statistics, frechet_distance
from .kernel import kernel_distance
from .precision_recall import precision_recall


def feature_metrics(
    features: torch.Tensor,
    reference: torch.Tensor,
    fd_key: str,
    suffix: str = "",
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    k: int = 3,
    seed: int = 0,
) -> dict:
    """Fréchet distance, KID (with its standard error) and precision/recall of ``features`` [N, F] against
    ``reference`` [M, F]. Keys: ``fd_key`` for the FD (``fid`` for Inception features, ``fd_digits`` ...: the
    name says which feature space), then ``kid``, ``kid_stderr``, ``kid_std``, ``kid_subset_size``,
    ``precision``, ``recall``, each followed by ``suffix`` (e.g. ``"_inception"``) so that two feature spaces
    fit in one dict."""
    fd = frechet_distance(*feature_statistics(features), *feature_statistics(reference))
    kid = kernel_distance(features, reference, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    pr = precision_recall(features, reference, k=k)
    return {
        fd_key: fd,
        f"kid{suffix}": kid.value,
        f"kid_stderr{suffix}": kid.stderr,
        f"kid_std{suffix}": kid.std,
        f"kid_subset_size{suffix}": kid.subset_size,
        f"precision{suffix}": pr.precision,
        f"recall{suffix}": pr.recall,
    }


__all__ = ["feature_metrics"]
