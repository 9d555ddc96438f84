"""Variance-preserving SDEs: VP (linear and cosine beta), sub-VP, and a discrete DDPM chain.

VP (Song et al. 2021, eq. 11): dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw, with
beta(t) = beta_min + t (beta_max - beta_min) and B(t) = int_0^t beta = beta_min t + 1/2 (beta_max -
beta_min) t^2. Kernel: alpha = exp(-B/2), sigma^2 = 1 - exp(-B) (computed as -expm1(-B)).

sub-VP (eq. 12): same drift, g^2 = beta(t)(1 - exp(-2B)), kernel std sigma = 1 - exp(-B).
"""

from __future__ import annotations

import math
import numbers

import torch

from ..utils import as_time, bcast
from .base import LinearSDE, _t_from_B


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number; got {name} = {value!r}")


class VPSDE(LinearSDE):
    """Variance-preserving SDE (DDPM's continuous limit).

    Args:
        beta_min, beta_max: linear beta(t) endpoints (defaults 0.1, 20 as in Song et al. 2021).
        N: steps of the matching DDPM chain; beta_i = beta_min/N + i (beta_max-beta_min)/(N(N-1)).
        schedule: ``"linear"`` (default) or ``"cosine"`` (Nichol & Dhariwal 2021,
            alpha_bar(t) = cos^2(pi/2 (t+s)/(1+s)) / cos^2(pi/2 s/(1+s)), s = ``cosine_s``). The
            cosine schedule is singular at t = 1, so it ends at ``T = 0.9946`` (as DPM-Solver does).
    """

    default_eps = 1e-3
    supports_ancestral = True

    def __init__(
        self,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        N: int = 1000,
        schedule: str = "linear",
        cosine_s: float = 0.008,
    ):
        _check_positive("beta_min", beta_min)
        _check_positive("beta_max", beta_max)
        if beta_max < beta_min:
            raise ValueError(f"beta_max must be >= beta_min; got beta_min = {beta_min}, beta_max = {beta_max}")
        if not isinstance(N, int) or N < 2:
            raise ValueError(f"N must be an integer >= 2; got N = {N!r}")
        if schedule not in ("linear", "cosine"):
            raise ValueError(f"schedule must be 'linear' or 'cosine'; got schedule = {schedule!r}")
        if schedule == "linear" and beta_max / N >= 1:
            raise ValueError(
                f"beta_max / N must be < 1 (the DDPM chain's betas beta_i ~ beta(t)/N lie in (0, 1)); got beta_max = "
                f"{beta_max!r}, N = {N}, beta_max / N = {beta_max / N:g}"
            )
        if isinstance(cosine_s, bool) or not isinstance(cosine_s, numbers.Real) or not 0 <= cosine_s < 1:
            raise ValueError(f"cosine_s must be a number in [0, 1); got cosine_s = {cosine_s!r}")
        self.beta_0, self.beta_1, self.N, self.schedule = float(beta_min), float(beta_max), N, schedule
        self.cosine_s = float(cosine_s)
        if schedule == "cosine":
            self.T = 0.9946
        self.discrete_betas = self._make_discrete_betas()
        self.alphas = 1.0 - self.discrete_betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)

    def _make_discrete_betas(self) -> torch.Tensor:
        N = self.N
        if self.schedule == "linear":
            # beta_i = beta_min/N + i (beta_max - beta_min) / (N (N - 1)) = linspace(beta_min/N, beta_max/N, N)
            return torch.linspace(self.beta_0 / N, self.beta_1 / N, N, dtype=torch.float64)
        t = torch.linspace(0, self.T, N + 1, dtype=torch.float64)
        ab = torch.exp(2 * self.log_alpha(t))
        return (1 - ab[1:] / ab[:-1]).clamp(max=0.999)

    # B(t) and beta(t)
    def _B(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_0 * t + 0.5 * (self.beta_1 - self.beta_0) * t * t

    def beta(self, t) -> torch.Tensor:
        t = self._t(t)
        if self.schedule == "cosine":
            s = self.cosine_s
            return math.pi / (1 + s) * torch.tan(0.5 * math.pi * (t + s) / (1 + s))
        return self.beta_0 + t * (self.beta_1 - self.beta_0)

    def log_alpha(self, t) -> torch.Tensor:
        t = self._t(t)
        if self.schedule == "cosine":
            s = self.cosine_s
            return torch.log(torch.cos(0.5 * math.pi * (t + s) / (1 + s))) - math.log(
                math.cos(0.5 * math.pi * s / (1 + s))
            )
        return -0.5 * self._B(t)

    def dlog_alpha_dt(self, t) -> torch.Tensor:
        return -0.5 * self.beta(t)

    def sigma(self, t) -> torch.Tensor:
        return torch.sqrt(-torch.expm1(2 * self.log_alpha(self._t(t))))

    def g2(self, t) -> torch.Tensor:
        return self.beta(t)

    def drift_coefficients(self, t: torch.Tensor) -> tuple:
        """(f(t), g(t)^2) = (-beta(t) / 2, beta(t)) as Python floats for the linear schedule, computed as
        :meth:`beta` and :meth:`dlog_alpha_dt` compute them on a float64 tensor (the same double operations, bit for
        bit); the cosine schedule and subclasses that redefine beta or g2 (sub-VP, the discrete chain) keep the
        tensor form of :meth:`LinearSDE.drift_coefficients`."""
        cls = type(self)
        if self.schedule != "linear" or cls.beta is not VPSDE.beta or cls.g2 is not VPSDE.g2:
            return super().drift_coefficients(t)
        beta = self.beta_0 + t.item() * (self.beta_1 - self.beta_0)
        return -0.5 * beta, beta

    def t_from_log_snr(self, lam) -> torch.Tensor:
        """Closed form for the linear schedule: B = ln(1 + e^{-2 lambda}), then solve B(t) = B."""
        if self.schedule != "linear":
            return super().t_from_log_snr(lam)
        lam = torch.as_tensor(lam, dtype=torch.float64)
        B = torch.nn.functional.softplus(-2 * lam)
        return _t_from_B(B, self.beta_0, self.beta_1)

    def discretize(self, x, t):
        """DDPM step x_{i+1} = sqrt(1 - beta_i) x_i + sqrt(beta_i) z: f = (sqrt(1-beta_i) - 1) x, G = sqrt(beta_i)."""
        t = as_time(t, x)
        beta = self.discrete_betas.to(x)[self.time_to_index(t)]
        f = bcast(torch.sqrt(1 - beta), x) * x - x
        return f, torch.sqrt(beta)

    def chain_beta(self, t) -> torch.Tensor:
        """beta_i of the discrete chain at the index of time t; shape [B]."""
        t = torch.as_tensor(t)
        return self.discrete_betas.to(t.dtype if t.is_floating_point() else torch.float64)[self.time_to_index(t)]

    @classmethod
    def from_betas(cls, betas) -> DiscreteVPSDE:
        """A discrete DDPM chain (betas of shape [N], each in (0, 1)) as a VP SDE whose alpha_bar is
        exact at its N times t_i = (i + 1) T / N (see :class:`DiscreteVPSDE`)."""
        return DiscreteVPSDE(betas)

    def __repr__(self) -> str:
        return f"VPSDE(beta_min={self.beta_0}, beta_max={self.beta_1}, N={self.N}, schedule={self.schedule!r})"


class DiscreteVPSDE(VPSDE):
    """A DDPM chain beta_0..beta_{N-1} embedded in continuous time.

    The chain's cumulative product alpha_bar_i = prod_{j<=i} (1 - beta_j) is placed at the times
    t_i = (i + 1) T / N, with alpha_bar(0) = 1, and ln alpha_bar(t) is interpolated linearly
    between these knots. So beta(t) = -d ln alpha_bar / dt = -N ln(1 - beta_i) is piecewise
    constant, the SDE is an exact VP SDE, and alpha(t_i)^2 = alpha_bar_i, sigma(t_i)^2 = 1 -
    alpha_bar_i exactly: the ancestral sampler on the N times is DDPM's sampler.
    The time <-> index map is t in (t_{i-1}, t_i]  <->  i.
    """

    def __init__(self, betas):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1:
            raise ValueError(f"betas must be a 1-D sequence [N]; got shape {tuple(betas.shape)}")
        if betas.numel() < 2:
            raise ValueError(f"betas must hold at least 2 values; got {betas.numel()}")
        bad = ~((betas > 0) & (betas < 1))
        if bad.any():
            i = int(bad.nonzero()[0])
            raise ValueError(f"betas must lie in (0, 1); got betas[{i}] = {betas[i].item()!r}")
        self.N = int(betas.numel())
        self.T = 1.0
        self.schedule = "discrete"
        self.discrete_betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        self._log_ab = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(torch.log1p(-betas), 0)])
        self._rate = -torch.log1p(-betas) * self.N  # beta(t) on each segment
        self.beta_0, self.beta_1 = float(self._rate[0]), float(self._rate[-1])

    def _seg(self, t: torch.Tensor) -> torch.Tensor:
        # segment k covers (k/N, (k+1)/N]; t = 0 belongs to segment 0. A knot (k+1)/N rounded to a
        # lower precision (float32 grids) may land just above itself: snap within that round-off.
        exact = t.dtype == torch.float64 or not t.is_floating_point()
        tol = 1e-9 if exact else min(0.5, 8 * self.N * torch.finfo(t.dtype).eps)
        return (t.to(torch.float64) * self.N / self.T - tol).ceil().long().clamp(1, self.N) - 1

    def log_alpha(self, t) -> torch.Tensor:
        t = self._t(t)
        k = self._seg(t)
        la = self._log_ab.to(t)
        rate = self._rate.to(t)
        return 0.5 * (la[k] - rate[k] * (t - k.to(t) * self.T / self.N))

    def beta(self, t) -> torch.Tensor:
        t = self._t(t)
        return self._rate.to(t)[self._seg(t)]

    def t_from_log_snr(self, lam) -> torch.Tensor:
        return LinearSDE.t_from_log_snr(self, lam)

    def discrete_times(self, eps: float | None = None) -> torch.Tensor:
        """Grid of the chain's N steps: its times t_i = (i + 1) T / N, descending, then 0
        (the step from t_0 to 0 is DDPM's last, noise-free step; eps is not used)."""
        return torch.arange(self.N, -1, -1, dtype=torch.float64) * self.T / self.N

    def time_to_index(self, t: torch.Tensor) -> torch.Tensor:
        return self._seg(torch.as_tensor(t))

    def index_to_time(self, i) -> torch.Tensor:
        return (torch.as_tensor(i, dtype=torch.float64) + 1) * self.T / self.N

    def __repr__(self) -> str:
        return f"DiscreteVPSDE(N={self.N})"


class SubVPSDE(VPSDE):
    """sub-VP SDE (Song et al. 2021, eq. 12): g^2 = beta(t)(1 - e^{-2B}), kernel std 1 - e^{-B}.

    Its variance never exceeds the VP variance. Prior N(0, I). There is no ancestral sampler
    for sub-VP (its discrete chain is only the Euler–Maruyama one).
    """

    supports_ancestral = False

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        super().__init__(beta_min, beta_max, N, schedule="linear")

    def sigma(self, t) -> torch.Tensor:
        return -torch.expm1(-self._B(self._t(t)))

    def g2(self, t) -> torch.Tensor:
        t = self._t(t)
        return self.beta(t) * (-torch.expm1(-2 * self._B(t)))

    def t_from_log_snr(self, lam) -> torch.Tensor:
        """Closed form: alpha solves e^lam (1 - a^2) = a; then B = -2 ln a."""
        lam = torch.as_tensor(lam, dtype=torch.float64)
        e = torch.exp(lam)
        a = 2 * e / (1 + torch.sqrt(1 + 4 * e * e))  # = (-1 + sqrt(1 + 4 e^2)) / (2 e), stable
        return _t_from_B(-2 * torch.log(a), self.beta_0, self.beta_1)

    def discretize(self, x, t):
        return LinearSDE.discretize(self, x, t)

    def __repr__(self) -> str:
        return f"SubVPSDE(beta_min={self.beta_0}, beta_max={self.beta_1}, N={self.N})"
