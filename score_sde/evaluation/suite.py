"""All feature-space metrics of one set of samples against reference features, as one flat dict."""

from __future__ import annotations

import torch

from .frechet import feature_statistics, frechet_distance
from .kernel import kernel_distance
from .precision_recall import precision_recall


def feature_metrics(
    features: torch.Tensor,
    reference: torch.Tensor,
    prefix: str,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    k: int = 3,
    seed: int = 0,
) -> dict:
    """Fréchet distance, KID (with its standard error) and precision/recall of ``features`` [N, F] against
    ``reference`` [M, F], keyed by the feature space: ``{prefix}`` (the FD, e.g. ``fd_digits`` or ``fid``),
    ``kid``, ``kid_stderr``, ``kid_std``, ``precision``, ``recall``; KID and precision/recall keys carry the
    prefix too when it is not ``fid`` (``kid_fd_digits``...) so that two feature spaces fit in one dict."""
    fd = frechet_distance(*feature_statistics(features), *feature_statistics(reference))
    kid = kernel_distance(features, reference, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    pr = precision_recall(features, reference, k=k)
    tag = "" if prefix == "fid" else f"_{prefix}"
    return {
        prefix: fd,
        f"kid{tag}": kid.value,
        f"kid_stderr{tag}": kid.stderr,
        f"kid_std{tag}": kid.std,
        f"kid_subset_size{tag}": kid.subset_size,
        f"precision{tag}": pr.precision,
        f"recall{tag}": pr.recall,
    }


__all__ = ["feature_metrics"]
