"""Data distributions whose noised marginals, scores and log-densities are exact under any SDE.

For a linear SDE with kernel x_t = alpha(t) x_0 + sigma(t) z, Gaussian-mixture data
p_0 = sum_k w_k N(mu_k, Sigma_k) stays a Gaussian mixture at every t:

    p_t = sum_k w_k N(alpha mu_k, alpha^2 Sigma_k + sigma^2 I).

Each Sigma_k is diagonalised once, Sigma_k = U_k diag(l_k) U_k^T, so that at any t the
component covariance is U_k diag(alpha^2 l_k + sigma^2) U_k^T: log-densities, scores
grad_x log p_t (responsibility-weighted -C_k^{-1}(x - alpha mu_k)) and the posterior mean
E[x_0 | x_t] cost O(K D^2) per sample with no per-t factorisation. These are the ground truth of
the tests (samplers, likelihood, guidance) and run in float64.

Data of any shape [B, ...] is flattened to [B, D] (D = product of the event shape).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .sde.base import LinearSDE
from .utils import as_time, bcast, randn

LOG2PI = math.log(2 * math.pi)


class GaussianMixture:
    """sum_k w_k N(mu_k, Sigma_k) in D dimensions.

    Args:
        weights: [K] positive (normalised here).
        means: [K, D].
        covs: [K, D, D] symmetric positive semi-definite, or [K, D] diagonals, or [K] isotropic
            variances. float64 is used throughout.
        event_shape: shape of one sample (default ``(D,)``), e.g. ``(1, 2, 2)`` for images.
    """

    def __init__(self, weights, means, covs, event_shape: Sequence[int] | None = None):
        dt = torch.float64
        w = torch.as_tensor(weights, dtype=dt).flatten()
        mu = torch.as_tensor(means, dtype=dt)
        if mu.ndim == 1:
            mu = mu[:, None]
        K, D = mu.shape
        if w.numel() != K:
            raise ValueError(f"weights has {w.numel()} entries but means has {K} components")
        if (w <= 0).any() or not torch.isfinite(w).all():
            raise ValueError(f"weights must be positive and finite; got {w.tolist()}")
        c = torch.as_tensor(covs, dtype=dt)
        if c.ndim == 1:
            c = c[:, None, None] * torch.eye(D, dtype=dt)
        elif c.ndim == 2:
            c = torch.diag_embed(c)
        if c.shape != (K, D, D):
            raise ValueError(f"covs must have shape [K, D, D] = [{K}, {D}, {D}]; got {tuple(c.shape)}")
        c = 0.5 * (c + c.transpose(-1, -2))
        lam, U = torch.linalg.eigh(c)
        if (lam < -1e-10 * lam.abs().max().clamp(min=1)).any():
            raise ValueError("covs must be positive semi-definite")
        self.weights, self.means, self.covs = w / w.sum(), mu, c
        self.eigvals, self.eigvecs = lam.clamp(min=0), U
        self.K, self.D = K, D
        self.event_shape = tuple(event_shape) if event_shape is not None else (D,)
        if math.prod(self.event_shape) != D:
            raise ValueError(f"event_shape {self.event_shape} does not hold D = {D} entries")

    # ---- helpers --------------------------------------------------------------------------
    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.event_shape and x.reshape(x.shape[0], -1).shape[1] != self.D:
            raise ValueError(f"x must have shape [B, *{self.event_shape}]; got {tuple(x.shape)}")
        return x.reshape(x.shape[0], -1)

    def _kernel(self, x: torch.Tensor, t, sde: LinearSDE | None):
        """alpha(t), sigma(t) as [B] float64 tensors (alpha = 1, sigma = 0 at 'no SDE')."""
        if sde is None:
            B = x.shape[0]
            return torch.ones(B, dtype=torch.float64), torch.zeros(B, dtype=torch.float64)
        t = as_time(t, x).to(torch.float64)
        return sde.alpha(t), sde.sigma(t)

    def _components(self, xf: torch.Tensor, a: torch.Tensor, s: torch.Tensor):
        """Per-component log N(x; a mu_k, a^2 Sigma_k + s^2 I) and the whitened residuals.

        Returns logN [B, K], the eigen-basis residual r [B, K, D] and variances v [B, K, D].
        """
        v = a[:, None, None] ** 2 * self.eigvals[None] + s[:, None, None] ** 2  # [B, K, D]
        diff = xf[:, None, :] - a[:, None, None] * self.means[None]  # [B, K, D]
        r = torch.einsum("bkd,kde->bke", diff, self.eigvecs)  # coordinates in eigenbasis
        logN = -0.5 * (r * r / v).sum(-1) - 0.5 * torch.log(v).sum(-1) - 0.5 * self.D * LOG2PI
        return logN, r, v

    # ---- densities and scores -------------------------------------------------------------
    def log_prob(self, x: torch.Tensor, t=0.0, sde: LinearSDE | None = None) -> torch.Tensor:
        """log p_t(x), shape [B]; with ``sde=None`` the data density p_0."""
        xf = self._flat(x).to(torch.float64)
        a, s = self._kernel(xf, t, sde)
        logN, _, _ = self._components(xf, a, s)
        return torch.logsumexp(logN + torch.log(self.weights), dim=1).to(x.dtype)

    def responsibilities(self, x: torch.Tensor, t=0.0, sde: LinearSDE | None = None) -> torch.Tensor:
        """p_t(k | x) for each component k, shape [B, K] (the exact noisy classifier)."""
        xf = self._flat(x).to(torch.float64)
        a, s = self._kernel(xf, t, sde)
        logN, _, _ = self._components(xf, a, s)
        return torch.softmax(logN + torch.log(self.weights), dim=1).to(x.dtype)

    def score(self, x: torch.Tensor, t, sde: LinearSDE) -> torch.Tensor:
        """grad_x log p_t(x), shape like x: sum_k r_k(x) (-C_k^{-1}(x - alpha mu_k))."""
        xf = self._flat(x).to(torch.float64)
        a, s = self._kernel(xf, t, sde)
        logN, r, v = self._components(xf, a, s)
        resp = torch.softmax(logN + torch.log(self.weights), dim=1)  # [B, K]
        g = -torch.einsum("bke,kde->bkd", r / v, self.eigvecs)  # -C_k^{-1}(x - a mu_k)
        return (resp[..., None] * g).sum(1).reshape(x.shape).to(x.dtype)

    def score_fn(self, sde: LinearSDE):
        """``score(x, t)`` callable for the samplers (t of shape [B] or scalar)."""
        return lambda x, t, *args: self.score(x, t, sde)

    def denoise(self, x: torch.Tensor, t, sde: LinearSDE) -> torch.Tensor:
        """E[x_0 | x_t = x] by Tweedie: (x + sigma^2 score) / alpha, shape like x."""
        tt = as_time(t, x)
        s = self.score(x, tt, sde)
        return (x + bcast(sde.sigma(tt).to(x) ** 2, x) * s) / bcast(sde.alpha(tt).to(x), x)

    def log_prob_fn(self, sde: LinearSDE):
        return lambda x, t: self.log_prob(x, t, sde)

    # ---- sampling -----------------------------------------------------------------------
    def sample(self, n: int, generator=None, return_labels: bool = False):
        """n exact samples of p_0, shape [n, *event_shape] (float64); optionally the component labels."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = randn((n, self.D), generator=generator, dtype=torch.float64)
        root = self.eigvecs[k] * torch.sqrt(self.eigvals[k])[:, None, :]  # U diag(sqrt l)
        x = self.means[k] + torch.einsum("nde,ne->nd", root, z)
        x = x.reshape(n, *self.event_shape)
        return (x, k) if return_labels else x

    def marginal_sample(self, n: int, t, sde: LinearSDE, generator=None) -> torch.Tensor:
        """n exact samples of p_t (data pushed through the forward kernel)."""
        x0 = self.sample(n, generator)
        t = as_time(t, x0)
        mean, std = sde.marginal_prob(x0, t)
        return mean + bcast(std, x0) * randn(x0.shape, generator=generator, dtype=x0.dtype)

    def moments(self, t=0.0, sde: LinearSDE | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact mean [D] and covariance [D, D] of p_t."""
        if sde is None:
            a, s = 1.0, 0.0
        else:
            tt = torch.tensor(float(t), dtype=torch.float64)
            a, s = float(sde.alpha(tt)), float(sde.sigma(tt))
        m_k = a * self.means
        m = (self.weights[:, None] * m_k).sum(0)
        C_k = a * a * self.covs + s * s * torch.eye(self.D, dtype=torch.float64)
        d = m_k - m
        C = (self.weights[:, None, None] * (C_k + d[:, :, None] * d[:, None, :])).sum(0)
        return m, C

    def component(self, k: int) -> GaussianMixture:
        """Component k as a one-component mixture (the class-conditional of a labelled mixture)."""
        if not 0 <= k < self.K:
            raise ValueError(f"component index must lie in [0, {self.K}); got {k!r}")
        return GaussianMixture([1.0], self.means[k : k + 1], self.covs[k : k + 1], self.event_shape)

    # ---- 1-D probability-flow transport map -----------------------------------------------
    def cdf(self, x: torch.Tensor, t, sde: LinearSDE | None) -> tuple[torch.Tensor, torch.Tensor]:
        """1-D only: (F_t(x), 1 - F_t(x)) for x of shape [B] (both kept for tail accuracy)."""
        self._require_1d()
        x = x.to(torch.float64).reshape(-1)
        a, s = self._kernel(x[:, None], t, sde)
        sd = torch.sqrt(a[:, None] ** 2 * self.covs[:, 0, 0][None] + s[:, None] ** 2)
        z = (x[:, None] - a[:, None] * self.means[:, 0][None]) / sd
        F = (self.weights * torch.special.ndtr(z)).sum(1)
        Fc = (self.weights * torch.special.ndtr(-z)).sum(1)
        return F, Fc

    def transport(self, x: torch.Tensor, t_from, t_to, sde: LinearSDE, iters: int = 200) -> torch.Tensor:
        """The exact probability-flow map in 1-D: x_to = F_{t_to}^{-1}(F_{t_from}(x)).

        In one dimension the PF-ODE flow is the unique monotone map that carries p_{t_from} to
        p_{t_to}, i.e. it preserves the CDF. Inverted by bisection in float64 (using the
        survival function above the median for tail accuracy). x: [B] or [B, 1]."""
        self._require_1d()
        shape = x.shape
        xf = x.reshape(-1).to(torch.float64)
        F, Fc = self.cdf(xf, t_from, sde)
        upper = Fc < F
        target = torch.where(upper, Fc, F)
        tt = as_time(t_to, xf)
        m, C = self.moments(0.0, None)
        a, s = sde.alpha(tt), sde.sigma(tt)
        spread = 50 * torch.sqrt(a**2 * C[0, 0] + s**2) + a * self.means.abs().max()
        lo, hi = -spread.clone(), spread.clone()
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            Fm, Fcm = self.cdf(mid, tt, sde)
            below = torch.where(upper, Fcm > target, Fm < target)  # root lies right of mid
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return (0.5 * (lo + hi)).reshape(shape).to(x.dtype)

    def _require_1d(self):
        if self.D != 1:
            raise ValueError(f"the exact transport map / CDF is defined for 1-D mixtures; this one has D = {self.D}")


def Gaussian(mean, cov, event_shape=None) -> GaussianMixture:
    """A single Gaussian N(mean, cov) as a one-component mixture (mean [D], cov [D, D] or [D])."""
    mean = torch.as_tensor(mean, dtype=torch.float64).reshape(1, -1)
    cov = torch.as_tensor(cov, dtype=torch.float64)
    cov = cov[None] if cov.ndim >= 1 else cov.reshape(1)
    return GaussianMixture([1.0], mean, cov, event_shape)


class EmpiricalDistribution:
    """The empirical measure of n data points; its noised marginal is an isotropic mixture.

    p_t(x) = 1/n sum_i N(x; alpha x_i, sigma^2 I). The ideal denoiser is
    E[x_0 | x_t] = sum_i softmax_i(-|x - alpha x_i|^2 / (2 sigma^2)) x_i (the network that
    memorises the training set); the score is (alpha D - x) / sigma^2.

    Args: data [n, ...] (any event shape).
    """

    def __init__(self, data: torch.Tensor):
        data = torch.as_tensor(data, dtype=torch.float64)
        self.event_shape = tuple(data.shape[1:])
        self.data = data.reshape(data.shape[0], -1)
        self.n, self.D = self.data.shape
        self._sq = (self.data**2).sum(1)

    def _logits(self, xf, a, s):
        d2 = (xf**2).sum(1, keepdim=True) - 2 * a[:, None] * xf @ self.data.T + a[:, None] ** 2 * self._sq[None]
        return -0.5 * d2.clamp(min=0) / s[:, None] ** 2

    def denoise(self, x: torch.Tensor, t, sde: LinearSDE) -> torch.Tensor:
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        tt = as_time(t, xf)
        a, s = sde.alpha(tt), sde.sigma(tt)
        w = torch.softmax(self._logits(xf, a, s), dim=1)
        return (w @ self.data).reshape(x.shape).to(x.dtype)

    def score(self, x: torch.Tensor, t, sde: LinearSDE) -> torch.Tensor:
        tt = as_time(t, x)
        D = self.denoise(x, tt, sde)
        a, s = bcast(sde.alpha(tt).to(x), x), bcast(sde.sigma(tt).to(x), x)
        return (a * D - x) / s**2

    def score_fn(self, sde: LinearSDE):
        return lambda x, t, *args: self.score(x, t, sde)

    def log_prob(self, x: torch.Tensor, t, sde: LinearSDE) -> torch.Tensor:
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        tt = as_time(t, xf)
        a, s = sde.alpha(tt), sde.sigma(tt)
        return (
            torch.logsumexp(self._logits(xf, a, s), 1) - math.log(self.n) - 0.5 * self.D * (LOG2PI + 2 * torch.log(s))
        ).to(x.dtype)


def _log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a <= 0, accurate on both sides of -ln 2."""
    return torch.where(a > -math.log(2), torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


class Uniform:
    """Uniform data on the box [low, high]^D: its noised marginal is a product of 1-D box-Gaussian convolutions.

    Per coordinate, with z1 = (x - alpha low) / sigma and z2 = (x - alpha high) / sigma,

        p_t(x) = (Phi(z1) - Phi(z2)) / (alpha (high - low)),
        d/dx log p_t(x) = (phi(z1) - phi(z2)) / (sigma (Phi(z1) - Phi(z2))).

    The difference of normal CDFs is taken in log space on the side of the box's centre where it is
    a difference of small tails (float64-stable far outside the box). Exact for t > 0; ``sde=None``
    gives the box density itself. This is the data of dequantized uniform K-level data, whose exact
    bits/dim is log2 K.

    Args: low < high (floats), event_shape (e.g. ``(D,)`` or ``(C, H, W)``).
    """

    def __init__(self, low: float = -1.0, high: float = 1.0, event_shape: Sequence[int] = (1,)):
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"need finite low < high; got low = {low!r}, high = {high!r}")
        self.low, self.high = float(low), float(high)
        self.event_shape = tuple(event_shape)
        self.D = math.prod(self.event_shape)

    def _log_mass(self, x: torch.Tensor, t, sde: LinearSDE):
        """Per-entry log(Phi(z1) - Phi(z2)), log phi(z1), log phi(z2), alpha, sigma (float64, like x)."""
        xf = x.to(torch.float64)
        tt = as_time(t, xf)
        a, s = bcast(sde.alpha(tt).to(xf), xf), bcast(sde.sigma(tt).to(xf), xf)
        z1, z2 = (xf - a * self.low) / s, (xf - a * self.high) / s
        right = z1 + z2 > 0  # x right of the centre: Phi(z1) - Phi(z2) = Phi(-z2) - Phi(-z1)
        big = torch.where(right, -z2, z1)
        small = torch.where(right, -z1, z2)
        lb = torch.special.log_ndtr(big)
        log_mass = lb + _log1mexp(torch.special.log_ndtr(small) - lb)
        log_phi1 = -0.5 * z1 * z1 - 0.5 * LOG2PI
        log_phi2 = -0.5 * z2 * z2 - 0.5 * LOG2PI
        return log_mass, log_phi1, log_phi2, a, s

    def log_prob(self, x: torch.Tensor, t=0.0, sde: LinearSDE | None = None) -> torch.Tensor:
        """log p_t(x) summed over the event, shape [B]; with ``sde=None`` the box density (-inf outside)."""
        if sde is None:
            inside = ((x >= self.low) & (x <= self.high)).reshape(x.shape[0], -1).all(1)
            val = torch.full((x.shape[0],), -self.D * math.log(self.high - self.low), dtype=torch.float64)
            return torch.where(inside, val, torch.full_like(val, -math.inf)).to(x.dtype)
        log_mass, _, _, a, _ = self._log_mass(x, t, sde)
        per = log_mass - torch.log(a * (self.high - self.low))
        return per.reshape(x.shape[0], -1).sum(1).to(x.dtype)

    def score(self, x: torch.Tensor, t, sde: LinearSDE) -> torch.Tensor:
        """grad_x log p_t(x), shape like x (t > 0)."""
        log_mass, lp1, lp2, _, s = self._log_mass(x, t, sde)
        return ((torch.exp(lp1 - log_mass) - torch.exp(lp2 - log_mass)) / s).to(x.dtype)

    def score_fn(self, sde: LinearSDE):
        return lambda x, t, *args: self.score(x, t, sde)

    def sample(self, n: int, generator=None) -> torch.Tensor:
        """n exact samples, shape [n, *event_shape] (float64)."""
        u = torch.rand((n, *self.event_shape), generator=generator, dtype=torch.float64)
        return self.low + (self.high - self.low) * u


__all__ = ["GaussianMixture", "Gaussian", "EmpiricalDistribution", "Uniform"]
