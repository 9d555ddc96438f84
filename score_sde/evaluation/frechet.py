"""Fréchet distance between Gaussians fitted to features (Heusel et al. 2017, eq. 6; Dowson & Landau 1982).

    FD = |mu1 - mu2|^2 + tr(Sigma1 + Sigma2 - 2 (Sigma1 Sigma2)^{1/2})

With Inception-v3 pool features this is FID; in another network's feature space it is a different metric
and carries that network's name (e.g. FD-digits, :mod:`score_sde.evaluation.feature_nets`).

The trace of the square root is taken without forming the non-symmetric product: with S_i = Sigma_i^{1/2}
(symmetric eigendecompositions), Sigma1 Sigma2 is similar to S1 Sigma2 S1 = (S1 S2)(S1 S2)^T, so
tr((Sigma1 Sigma2)^{1/2}) is the sum of the singular values of S1 S2 (its nuclear norm). Singular values carry
an absolute error of about eps |S1 S2|, where square roots of eigenvalues of S1 Sigma2 S1 would carry
sqrt(eps); the result stays finite and accurate on singular or ill-conditioned covariances (fewer samples
than feature dimensions) and needs no offset.
"""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray


def _as_float64(x: ArrayLike, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array; got {type(x).__name__}")
    x = x.detach().cpu().double()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains non-finite values")
    return x


def _features(x: ArrayLike, name: str) -> torch.Tensor:
    """Features as float64 [N, D] (a batch [N, ...] is flattened)."""
    x = _as_float64(x, name)
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape [N, D]; got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1)


def feature_statistics(features: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and covariance [D, D] (unbiased, ddof = 1, as FID uses) of ``features`` [N, D], float64."""
    f = _features(features, "features")
    if f.shape[0] < 2:
        raise ValueError(f"features needs at least 2 rows for a covariance; got {f.shape[0]}")
    mu = f.mean(0)
    c = f - mu
    return mu, (c.T @ c) / (f.shape[0] - 1)


def sqrtm_psd(sigma: ArrayLike) -> torch.Tensor:
    """Principal square root S of a symmetric positive semi-definite matrix [D, D] (S S = sigma, S = S^T),
    from its eigendecomposition with round-off eigenvalues set to 0; float64."""
    s = _as_float64(sigma, "sigma")
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"sigma must be a square matrix [D, D]; got shape {tuple(s.shape)}")
    w, v = torch.linalg.eigh((s + s.T) / 2)
    return (v * _clean_eigenvalues(w).sqrt()) @ v.T


def _clean_eigenvalues(w: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of a PSD matrix with round-off set to 0: those below D * eps * max (as numpy's matrix_rank
    and pinv threshold). A square root would otherwise turn each round-off eigenvalue ~1e-16 |A| into
    ~1e-8 |A|^(1/2), which adds up over the null space of a covariance fitted to fewer samples than dims."""
    tol = w.shape[0] * torch.finfo(w.dtype).eps * w.abs().max().clamp(min=torch.finfo(w.dtype).tiny)
    return torch.where(w > tol, w, torch.zeros_like(w))


def trace_sqrt_product(sigma1: ArrayLike, sigma2: ArrayLike) -> float:
    """tr((sigma1 sigma2)^{1/2}) for positive semi-definite sigma1, sigma2 [D, D] (see the module docstring)."""
    return float(torch.linalg.svdvals(sqrtm_psd(sigma1) @ sqrtm_psd(sigma2)).sum())


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    Args:
        mu1, mu2: means [D]. sigma1, sigma2: covariances [D, D] (e.g. from :func:`feature_statistics`).

    Returns:
        |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^{1/2}), a float computed in float64
        (>= 0 up to round-off; exactly the FID formula when the features are Inception pool features).
    """
    mu1, mu2 = _as_float64(mu1, "mu1"), _as_float64(mu2, "mu2")
    s1, s2 = _as_float64(sigma1, "sigma1"), _as_float64(sigma2, "sigma2")
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"mu1 and mu2 must be vectors [D] of one length; got {tuple(mu1.shape)}, {tuple(mu2.shape)}")
    d = mu1.shape[0]
    for name, s in (("sigma1", s1), ("sigma2", s2)):
        if tuple(s.shape) != (d, d):
            raise ValueError(f"{name} must have shape [{d}, {d}] to match the means; got {tuple(s.shape)}")
    diff = mu1 - mu2
    return float(diff @ diff + s1.trace() + s2.trace()) - 2.0 * trace_sqrt_product(s1, s2)


def frechet_distance_features(features1: ArrayLike, features2: ArrayLike) -> float:
    """:func:`frechet_distance` between Gaussians fitted to two feature sets [N1, D] and [N2, D]."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


__all__ = ["feature_statistics", "frechet_distance", "frechet_distance_features", "sqrtm_psd", "trace_sqrt_product"]
