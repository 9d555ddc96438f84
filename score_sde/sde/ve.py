"""Variance-exploding SDE (Song et al. 2021, eq. 9; SMLD / NCSN in continuous time).

sigma(t) = sigma_min (sigma_max / sigma_min)^t, f = 0, g = sigma(t) sqrt(2 ln(sigma_max / sigma_min)).
Following the SMLD convention the kernel std is sigma(t) itself: x_t = x_0 + sigma(t) z. Prior
N(0, sigma_max^2 I); sampling ends at eps = 1e-5.
"""

from __future__ import annotations

import math

import torch

from ..utils import as_time
from .base import LinearSDE


class VESDE(LinearSDE):
    """Variance-exploding SDE.

    Args:
        sigma_min, sigma_max: noise scales (defaults 0.01 and 50, the CIFAR-10 setting).
        N: steps of the matching SMLD chain, sigma_i = sigma_min (sigma_max/sigma_min)^{i/(N-1)}.
    """

    default_eps = 1e-5
    supports_ancestral = True

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000):
        for name, v in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive finite number; got {name} = {v!r}")
        if sigma_min >= sigma_max:
            raise ValueError(f"sigma_min must be < sigma_max; got sigma_min = {sigma_min!r}, sigma_max = {sigma_max!r}")
        if not isinstance(N, int) or N < 2:
            raise ValueError(f"N must be an integer >= 2; got N = {N!r}")
        log_g2 = 2 * math.log(sigma_max) + math.log(2 * math.log(sigma_max / sigma_min))  # ln g(T)^2
        if log_g2 >= math.log(torch.finfo(torch.float32).max):
            raise ValueError(
                f"sigma_max = {sigma_max!r} is too large: g(T)^2 = 2 sigma_max^2 ln(sigma_max / sigma_min) "
                f"= e^{log_g2:.1f} overflows float32"
            )
        self.sigma_min, self.sigma_max, self.N = float(sigma_min), float(sigma_max), N
        self.prior_std = self.sigma_max
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)
        self.discrete_sigmas = torch.exp(
            torch.linspace(math.log(self.sigma_min), math.log(self.sigma_max), N, dtype=torch.float64)
        )

    def log_alpha(self, t) -> torch.Tensor:
        return 0.0 * self._t(t)

    def dlog_alpha_dt(self, t) -> torch.Tensor:
        return 0.0 * self._t(t)

    def sigma(self, t) -> torch.Tensor:
        return self.sigma_min * torch.exp(self._t(t) * self._log_ratio)

    def g2(self, t) -> torch.Tensor:
        return self.sigma(t) ** 2 * (2 * self._log_ratio)

    def t_from_log_snr(self, lam) -> torch.Tensor:
        lam = torch.as_tensor(lam, dtype=torch.float64)
        return (-lam - math.log(self.sigma_min)) / self._log_ratio

    def chain_sigmas(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma_i, sigma_{i-1}) of the SMLD chain at the index of t, with sigma_{-1} = 0; [B] each."""
        t = torch.as_tensor(t)
        i = self.time_to_index(t)
        s = self.discrete_sigmas.to(t.dtype)
        prev = torch.where(i == 0, torch.zeros_like(s[i]), s[(i - 1).clamp(min=0)])
        return s[i], prev

    def discretize(self, x, t):
        """SMLD step x_i = x_{i-1} + sqrt(sigma_i^2 - sigma_{i-1}^2) z: f = 0, G = sqrt(sigma_i^2 - sigma_{i-1}^2)."""
        t = as_time(t, x)
        s, prev = self.chain_sigmas(t)
        s, prev = s.to(x), prev.to(x)
        return torch.zeros_like(x), torch.sqrt(s**2 - prev**2)

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, N={self.N})"
