"""Analytic oracles for conditional generation on Gaussian mixtures: the exact noise-conditional classifier,
the exact class-conditional scores, and exact conditionals given some coordinates (ground truth for tests)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..analytic import GaussianMixture
from ..sde.base import LinearSDE
from ..utils import as_time
from .conditioning import _labels, check_labels

# ---------------------------------------------------------------------------------------------
# Analytic oracles
# ---------------------------------------------------------------------------------------------


def mixture_classifier(gmm: GaussianMixture, sde: LinearSDE) -> Callable:
    """The exact noise-conditional classifier of a mixture whose components are the classes.

    Returns ``classifier(x, t) -> logits [B, K]`` with logits_k = log w_k + log N_k,t(x), so
    softmax(logits) = ``gmm.responsibilities(x, t, sde)`` = p_t(y = k | x). Differentiable in x.
    """
    comps = [gmm.component(k) for k in range(gmm.K)]
    logw = torch.log(gmm.weights)

    def classifier(x: torch.Tensor, t) -> torch.Tensor:
        return torch.stack([c.log_prob(x, t, sde) for c in comps], dim=1) + logw.to(x)

    return classifier


class MixtureClassScore:
    """Exact class-conditional score of a labelled Gaussian mixture: ``score(x, t, y)``.

    y = k in [0, K) gives grad log p_t(x | y = k) (component k's score); y = K (the null label)
    or ``cond=None`` gives the mixture's score grad log p_t(x). ``num_classes = K``.
    """

    def __init__(self, gmm: GaussianMixture, sde: LinearSDE):
        self.gmm, self.sde = gmm, sde
        self.num_classes = gmm.K
        self.comps = [gmm.component(k) for k in range(gmm.K)]

    def __call__(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        t = as_time(t, x)
        if cond is None:
            return self.gmm.score(x, t, self.sde)
        y = _labels(cond, x)
        check_labels(y, self.num_classes, allow_null=True)
        out = torch.empty_like(x)
        for k in range(self.num_classes + 1):
            sel = y == k
            if sel.any():
                src = self.gmm if k == self.num_classes else self.comps[k]
                out[sel] = src.score(x[sel], t[sel], self.sde)
        return out


def mixture_conditional(gmm: GaussianMixture, mask: torch.Tensor, y: torch.Tensor) -> GaussianMixture:
    """The exact conditional p(x_u | x_k = y) of a Gaussian mixture: again a Gaussian mixture.

    Per component, with the blocks of (mu, Sigma) over unknown (u) and known (k) coordinates:
    mean mu_u + S_uk S_kk^{-1} (y - mu_k), covariance S_uu - S_uk S_kk^{-1} S_ku, and weight
    proportional to w_k N(y; mu_k, S_kk).

    Args:
        gmm: the data mixture (D dimensions, any event shape).
        mask: bool/0-1 tensor of the event shape (or [D]); True = known.
        y: the observation, event shape (or [D]); only its known entries are used.
    Returns:
        a :class:`GaussianMixture` over the D_u unknown coordinates (in flattened order).
    """
    m = _flat_mask(mask, gmm.D)
    yf = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    if yf.numel() != gmm.D:
        raise ValueError(f"y must hold D = {gmm.D} entries; got shape {tuple(torch.as_tensor(y).shape)}")
    ku, kk = (~m).nonzero().flatten(), m.nonzero().flatten()
    if ku.numel() == 0 or kk.numel() == 0:
        raise ValueError("mask must mark some coordinates known and some unknown")
    mu, S = gmm.means, gmm.covs
    S_uu, S_uk, S_kk = S[:, ku][:, :, ku], S[:, ku][:, :, kk], S[:, kk][:, :, kk]
    L = torch.linalg.cholesky(S_kk)  # [K, dk, dk]
    r = (yf[kk][None] - mu[:, kk])[..., None]  # [K, dk, 1]
    sol = torch.cholesky_solve(r, L)  # S_kk^{-1}(y - mu_k)
    mean = mu[:, ku] + (S_uk @ sol)[..., 0]
    cov = S_uu - S_uk @ torch.cholesky_solve(S_uk.transpose(-1, -2), L)
    logN = (
        -0.5 * (r * sol).sum((-1, -2))
        - torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        - 0.5 * kk.numel() * math.log(2 * math.pi)
    )
    w = torch.softmax(torch.log(gmm.weights) + logN, dim=0)
    return GaussianMixture(w, mean, 0.5 * (cov + cov.transpose(-1, -2)))


def mixture_posterior(gmm: GaussianMixture, mask: torch.Tensor, y: torch.Tensor) -> GaussianMixture:
    """The law of the full x_0 given x_k = y: :func:`mixture_conditional` on the unknown entries and
    the point mass y on the known ones (a D-dimensional mixture with degenerate covariances).

    Its exact score under an SDE samples the conditional through the same sampler as imputation
    does, which separates a sampler's discretization error from the replacement method's bias.
    """
    m = _flat_mask(mask, gmm.D)
    cm = mixture_conditional(gmm, mask, y)
    yf = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    ku = (~m).nonzero().flatten()
    means = yf.expand(cm.K, gmm.D).clone()
    means[:, ku] = cm.means
    covs = torch.zeros(cm.K, gmm.D, gmm.D, dtype=torch.float64)
    covs[:, ku[:, None], ku[None, :]] = cm.covs
    return GaussianMixture(cm.weights, means, covs, gmm.event_shape)


def transform_mixture(gmm: GaussianMixture, A: torch.Tensor) -> GaussianMixture:
    """The law of A x for x ~ gmm (A: [D', D]): means A mu_k, covariances A Sigma_k A^T."""
    A = torch.as_tensor(A, dtype=torch.float64)
    cov = A @ gmm.covs @ A.T
    return GaussianMixture(gmm.weights, gmm.means @ A.T, 0.5 * (cov + cov.transpose(-1, -2)))


def _flat_mask(mask, D: int) -> torch.Tensor:
    m = torch.as_tensor(mask)
    if m.numel() != D:
        raise ValueError(f"mask must hold D = {D} entries; got shape {tuple(m.shape)}")
    return m.reshape(-1).to(torch.bool)
