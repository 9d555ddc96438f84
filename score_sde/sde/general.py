"""A linear SDE defined by any pair of schedule functions alpha(t), sigma(t).

f(t) = d ln alpha / dt and g(t)^2 = d sigma^2 / dt - 2 f(t) sigma(t)^2 (the mean and variance ODEs of a linear
SDE, Särkkä & Solin 2019, eqs. 5.50-5.51, as used in Song et al. 2021, App. B).
Derivatives are taken by autograd unless given. This one class covers the EDM path
(alpha = 1, sigma = t-scaled), rectified-flow / flow-matching paths (alpha = 1 - t, sigma = t)
and any user schedule.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .base import LinearSDE

Fn = Callable[[torch.Tensor], torch.Tensor]


class GeneralLinearSDE(LinearSDE):
    """Linear SDE with kernel x_t = alpha(t) x_0 + sigma(t) z given by two callables.

    Args:
        alpha, sigma: elementwise functions of a time tensor (differentiable by autograd).
        T: end time; prior_std: std of the prior N(0, prior_std^2 I).
        dlog_alpha_dt, dsigma2_dt, dsigma_dt: optional closed-form derivatives (``dsigma_dt`` defaults to
            autograd of ``sigma``, which stays finite where sigma = 0).
        N: steps of the Euler–Maruyama discretization; default_eps: sampling end time.
    """

    def __init__(
        self,
        alpha: Fn,
        sigma: Fn,
        T: float = 1.0,
        prior_std: float = 1.0,
        dlog_alpha_dt: Fn | None = None,
        dsigma2_dt: Fn | None = None,
        N: int = 1000,
        default_eps: float = 1e-3,
        name: str = "GeneralLinearSDE",
        dsigma_dt: Fn | None = None,
    ):
        self._alpha, self._sigma, self._dsigma = alpha, sigma, dsigma_dt
        self._dla, self._ds2 = dlog_alpha_dt, dsigma2_dt
        self.T, self.prior_std, self.N, self.default_eps, self.name = float(T), float(prior_std), N, default_eps, name

    def _grad(self, fn: Fn, t: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            tt = t.detach().clone().requires_grad_(True)
            y = fn(tt)
            (g,) = torch.autograd.grad(y.sum(), tt)
        return g

    def log_alpha(self, t):
        return torch.log(self._alpha(self._t(t)))

    def sigma(self, t):
        return self._sigma(self._t(t))

    def dlog_alpha_dt(self, t):
        t = self._t(t)
        return self._dla(t) if self._dla is not None else self._grad(lambda s: torch.log(self._alpha(s)), t)

    def dsigma_dt(self, t):
        t = self._t(t)
        return self._dsigma(t) if self._dsigma is not None else self._grad(self._sigma, t)

    def g2(self, t):
        t = self._t(t)
        ds2 = self._ds2(t) if self._ds2 is not None else self._grad(lambda s: self._sigma(s) ** 2, t)
        return ds2 - 2 * self.dlog_alpha_dt(t) * self.sigma(t) ** 2

    @classmethod
    def edm(cls, sigma_min: float = 0.002, sigma_max: float = 80.0, N: int = 1000) -> GeneralLinearSDE:
        """EDM's path (Karras et al. 2022): alpha = 1, sigma(t) = sigma_max t on [sigma_min/sigma_max, 1]."""
        if not (0 < sigma_min < sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max; got {sigma_min!r}, {sigma_max!r}")
        return cls(
            alpha=lambda t: 1.0 + 0.0 * t,
            sigma=lambda t: sigma_max * t,
            dlog_alpha_dt=lambda t: 0.0 * t,
            dsigma2_dt=lambda t: 2 * sigma_max**2 * t,
            dsigma_dt=lambda t: sigma_max + 0.0 * t,
            prior_std=sigma_max,
            N=N,
            default_eps=sigma_min / sigma_max,
            name="EDM",
        )

    @classmethod
    def rectified_flow(cls, T: float = 0.999, N: int = 1000) -> GeneralLinearSDE:
        """Rectified-flow / flow-matching path alpha = 1 - t, sigma = t (T < 1 keeps alpha > 0)."""
        if isinstance(T, bool) or not isinstance(T, (int, float)) or not 0 < T < 1:
            raise ValueError(f"rectified flow needs 0 < T < 1 (alpha(T) = 1 - T > 0); got T = {T!r}")
        return cls(
            alpha=lambda t: 1 - t,
            sigma=lambda t: t,
            dlog_alpha_dt=lambda t: -1 / (1 - t),
            dsigma2_dt=lambda t: 2 * t,
            dsigma_dt=lambda t: 1.0 + 0.0 * t,
            T=T,
            N=N,
            name="RectifiedFlow",
        )

    def __repr__(self) -> str:
        return f"{self.name}(T={self.T}, prior_std={self.prior_std})"
