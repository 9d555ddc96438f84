"""Improved precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for
Assessing Generative Models", Sec. 2, eqs. 1-3).

Each set's manifold is the union of balls around its points whose radius is the distance to the point's
k-th nearest neighbour within the same set. Precision is the fraction of generated points that fall in the
reference manifold (quality); recall is the fraction of reference points that fall in the generated
manifold (coverage).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .frechet import ArrayLike, _features


@dataclass(frozen=True)
class PrecisionRecall:
    """Result of :func:`precision_recall`; unpacks as ``precision, recall = result``."""

    precision: float
    recall: float
    k: int

    def __iter__(self):
        return iter((self.precision, self.recall))


def _kth_neighbour_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each row of x [n, D] to its k-th nearest other row: [n]."""
    out = []
    for i in range(0, x.shape[0], chunk):
        d = torch.cdist(x[i : i + chunk], x)
        out.append(d.kthvalue(k + 1, dim=1).values)  # the 1st smallest is the point itself (0)
    return torch.cat(out)


def _coverage(query: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, chunk: int) -> float:
    """Fraction of query rows within radii[j] of some support row j."""
    inside = []
    for i in range(0, query.shape[0], chunk):
        d = torch.cdist(query[i : i + chunk], support)
        inside.append((d <= radii[None, :]).any(dim=1))
    return float(torch.cat(inside).double().mean())


def precision_recall(features1: ArrayLike, features2: ArrayLike, k: int = 3, chunk: int = 1024) -> PrecisionRecall:
    """Precision and recall of generated features against reference features.

    Args:
        features1: features of generated samples [N1, D].
        features2: features of reference data [N2, D] (the order matters, unlike FD and KID).
        k: neighbourhood size (3, the paper's choice).
        chunk: rows per distance block (memory is O(chunk * N)).

    Returns:
        :class:`PrecisionRecall`: precision = share of features1 inside the k-NN manifold of features2;
        recall = share of features2 inside the k-NN manifold of features1.
    """
    gen, ref = _features(features1, "features1"), _features(features2, "features2")
    if gen.shape[1] != ref.shape[1]:
        raise ValueError(f"features of different dimension: {gen.shape[1]} and {ref.shape[1]}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got k = {k!r}")
    if min(gen.shape[0], ref.shape[0]) <= k:
        raise ValueError(f"each set needs more than k = {k} rows; got {gen.shape[0]} and {ref.shape[0]}")
    precision = _coverage(gen, ref, _kth_neighbour_radii(ref, k, chunk), chunk)
    recall = _coverage(ref, gen, _kth_neighbour_radii(gen, k, chunk), chunk)
    return PrecisionRecall(precision, recall, k)


__all__ = ["PrecisionRecall", "precision_recall"]
