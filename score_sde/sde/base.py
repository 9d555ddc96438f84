"""Linear forward SDEs ``dx = f(t) x dt + g(t) dw`` and their reverse-time forms.

Every SDE of the package is linear, so its perturbation kernel is Gaussian,

    x_t | x_0 ~ N(alpha(t) x_0, sigma(t)^2 I)                       (Song et al. 2021, eq. 29)

and it is fully described by the two schedule functions ``alpha`` and ``sigma``:

    f(t) = d ln alpha / dt,        g(t)^2 = d sigma^2/dt - 2 f(t) sigma(t)^2.

The half log-SNR is ``lambda(t) = ln alpha(t) - ln sigma(t)``; ``x~ = x / alpha`` and
``sigma~ = sigma / alpha = exp(-lambda)`` are the variables of the exponential-integrator
family of fast samplers (DDIM, DPM-Solver). Subclasses implement ``log_alpha``,
``dlog_alpha_dt``, ``sigma`` and ``g2``; everything else is derived here once.

Time convention: ``t`` in ``[0, T]``, ``T = 1``, shape ``[B]`` (or a scalar).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..utils import as_time, bcast, check_finite, check_same_batch, check_time, flat_dim, randn, randn_like

ScoreFn = Callable[..., torch.Tensor]


class LinearSDE(ABC):
    """Base class of the forward SDEs (VP, sub-VP, VE, general linear).

    Attributes:
        T: end time (1.0).
        N: number of discretization steps of the matching discrete chain (DDPM / SMLD).
        prior_std: standard deviation of the prior ``N(0, prior_std^2 I)`` at ``t = T``.
        default_eps: the documented default end time for sampling.
    """

    T: float = 1.0
    N: int = 1000
    prior_std: float = 1.0
    default_eps: float = 1e-3
    supports_ancestral: bool = False

    # ---- schedule (implemented by subclasses, elementwise on a time tensor) -------------------
    @abstractmethod
    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        """ln alpha(t), the log of the kernel mean coefficient."""

    @abstractmethod
    def dlog_alpha_dt(self, t: torch.Tensor) -> torch.Tensor:
        """The drift coefficient f(t) = d ln alpha / dt."""

    @abstractmethod
    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Kernel standard deviation sigma(t)."""

    @abstractmethod
    def g2(self, t: torch.Tensor) -> torch.Tensor:
        """Squared diffusion coefficient g(t)^2."""

    # ---- derived schedule view -----------------------------------------------------------------
    def _t(self, t) -> torch.Tensor:
        return t if torch.is_tensor(t) else torch.tensor(float(t), dtype=torch.float64)

    def alpha(self, t) -> torch.Tensor:
        """Kernel mean coefficient alpha(t) = exp(ln alpha(t))."""
        return torch.exp(self.log_alpha(self._t(t)))

    def log_sigma(self, t) -> torch.Tensor:
        return torch.log(self.sigma(self._t(t)))

    def log_snr(self, t) -> torch.Tensor:
        """Half log signal-to-noise ratio lambda(t) = ln alpha(t) - ln sigma(t) (decreasing in t)."""
        t = self._t(t)
        return self.log_alpha(t) - torch.log(self.sigma(t))

    def sigma_tilde(self, t) -> torch.Tensor:
        """sigma~(t) = sigma(t) / alpha(t) = exp(-lambda(t)), the noise level of x~ = x / alpha."""
        t = self._t(t)
        return self.sigma(t) * torch.exp(-self.log_alpha(t))

    def t_from_log_snr(self, lam) -> torch.Tensor:
        """Inverse of :meth:`log_snr`: the time t with lambda(t) = lam (bisection by default)."""
        lam = torch.as_tensor(lam, dtype=torch.float64)
        lo = torch.zeros_like(lam)
        hi = torch.full_like(lam, self.T)
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            go_right = self.log_snr(mid) > lam  # lambda decreases with t
            lo = torch.where(go_right, mid, lo)
            hi = torch.where(go_right, hi, mid)
        return 0.5 * (lo + hi)

    def t_from_sigma_tilde(self, sigma_tilde) -> torch.Tensor:
        """Inverse of :meth:`sigma_tilde`."""
        return self.t_from_log_snr(-torch.log(torch.as_tensor(sigma_tilde, dtype=torch.float64)))

    def dalpha_dt(self, t) -> torch.Tensor:
        """alpha'(t) = alpha(t) f(t), the mean coefficient's time derivative."""
        t = self._t(t)
        return self.alpha(t) * self.dlog_alpha_dt(t)

    def dsigma_dt(self, t) -> torch.Tensor:
        """sigma'(t) = (d sigma^2/dt) / (2 sigma) = (g^2 + 2 f sigma^2) / (2 sigma) (from the variance ODE;
        undefined where sigma = 0, e.g. t = 0 of VP)."""
        t = self._t(t)
        s = self.sigma(t)
        return (self.g2(t) + 2 * self.dlog_alpha_dt(t) * s**2) / (2 * s)

    def diffusion(self, t) -> torch.Tensor:
        """g(t)."""
        return torch.sqrt(self.g2(self._t(t)))

    # ---- official score_sde method names -------------------------------------------------------
    def sde(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift f(t) x (shape like x) and diffusion g(t) (shape [B]) of the forward SDE."""
        check_finite(x)
        t = as_time(t, x)
        check_time(t, self.T)
        return bcast(self.dlog_alpha_dt(t), x) * x, torch.sqrt(self.g2(t))

    def marginal_prob(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean alpha(t) x_0 (shape like x) and std sigma(t) (shape [B]) of p_0t(x_t | x_0)."""
        check_finite(x)
        t = as_time(t, x)
        check_time(t, self.T)
        return bcast(self.alpha(t), x) * x, self.sigma(t)

    def perturb(self, x0: torch.Tensor, t, noise: torch.Tensor | None = None, generator=None):
        """Draw x_t = alpha(t) x_0 + sigma(t) z; returns (x_t, z)."""
        mean, std = self.marginal_prob(x0, t)
        z = randn_like(x0, generator) if noise is None else noise
        return mean + bcast(std, x0) * z, z

    def prior_sampling(self, shape, generator=None, dtype=None, device=None) -> torch.Tensor:
        """Draw from the prior N(0, prior_std^2 I) at t = T; shape [B, ...]."""
        return self.prior_std * randn(shape, generator=generator, dtype=dtype, device=device)

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, prior_std^2 I), summed over all non-batch dims; shape [B]."""
        D = flat_dim(z)
        s2 = self.prior_std**2
        sq = z.reshape(z.shape[0], -1).pow(2).sum(1)
        return -0.5 * D * math.log(2 * math.pi * s2) - 0.5 * sq / s2

    def discretize(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the discrete chain x_{i+1} = x_i + f_i + G_i z (Song 2021, App. D).

        Default: Euler–Maruyama with dt = T / N, i.e. f_i = f(t) x dt and G_i = g(t) sqrt(dt).
        Returns f_i (shape like x) and G_i (shape [B]).
        """
        dt = self.T / self.N
        drift, diffusion = self.sde(x, t)
        return drift * dt, diffusion * math.sqrt(dt)

    def drift_coefficients(self, t: torch.Tensor) -> tuple:
        """(f(t), g(t)^2) at one time ``t`` (a 0-d float64 tensor, detached), the two coefficients of every drift
        of this SDE (eqs. 6 and 13 of Song et al. 2021). By default two 0-d tensors; a schedule with a closed form
        in plain arithmetic (VP's linear beta) returns Python floats instead, the same IEEE double
        operations without a tensor operation each, for hot loops that use one time per call (the likelihood's
        augmented right-hand side)."""
        return self.dlog_alpha_dt(t), self.g2(t)

    def reverse_drift(
        self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, probability_flow: bool = True
    ) -> torch.Tensor:
        """The one formula of the reverse-time drifts, given a score value ``s`` (shape like x):

            f(t) x - 1/2 g(t)^2 s     (probability-flow ODE, Song et al. 2021 eq. 13), or
            f(t) x - g(t)^2 s         (reverse SDE, eq. 6; ``probability_flow=False``).

        ``t`` is a time tensor of shape [B] or a 0-d tensor (one time for the whole batch: the
        coefficients then stay 0-d and take x's dtype in the products, with no host sync). The result is
        differentiable in x and s (and in t where the schedule is). Used by :class:`ReverseSDE`, the
        ``ode`` sampler and the likelihood's augmented ODE.
        """
        f, g2 = self.dlog_alpha_dt(t), self.g2(t)
        if t.ndim:
            f, g2 = bcast(f, x), bcast(g2, x)
        return f * x - ((0.5 if probability_flow else 1.0) * g2) * s

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> ReverseSDE:
        """The reverse-time SDE (or the probability-flow ODE) driven by ``score_fn(x, t)``."""
        return ReverseSDE(self, score_fn, probability_flow)

    # ---- the matching discrete chain: the one place that maps times <-> indices ----------------
    def discrete_times(self, eps: float | None = None) -> torch.Tensor:
        """Grid of the discrete chain's N steps, descending: linspace(T, eps, N + 1)."""
        eps = self.default_eps if eps is None else eps
        return torch.linspace(self.T, eps, self.N + 1, dtype=torch.float64)

    def time_to_index(self, t: torch.Tensor) -> torch.Tensor:
        """Index i of the discrete chain for time t: floor(t (N - 1) / T) (the official mapping)."""
        t = torch.as_tensor(t)
        return (t * (self.N - 1) / self.T + 1e-9).floor().long().clamp(0, self.N - 1)

    def index_to_time(self, i: torch.Tensor) -> torch.Tensor:
        """Time of chain index i: i T / (N - 1) (the left end of its bin)."""
        return torch.as_tensor(i, dtype=torch.float64) * self.T / (self.N - 1)

    # ---- validation helpers used by samplers ---------------------------------------------------
    def check_eps(self, eps: float) -> None:
        """``ValueError`` unless 0 < eps < T and sigma(eps) > 0 in float32 (the end time must carry noise:
        the score and the log-SNR are singular where sigma = 0)."""
        try:
            e = float(eps) if not isinstance(eps, (bool, str, bytes)) else math.nan
        except (TypeError, ValueError, RuntimeError):  # not a number (or a tensor of several)
            e = math.nan
        if not 0.0 < e < self.T:
            raise ValueError(f"eps must lie in (0, T) = (0, {self.T}); got eps = {eps!r}")
        s = self.sigma(torch.tensor(e, dtype=torch.float32))
        if not bool(s > 0):
            raise ValueError(f"eps = {eps!r} is too small: sigma(eps) underflows to 0 in float32")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(N={self.N})"


@dataclass
class ReverseSDE:
    """Reverse-time SDE ``dx = [f - g^2 s] dt + g dw~`` or, with ``probability_flow=True``, the
    probability-flow ODE ``dx/dt = f - 1/2 g^2 s`` (Song et al. 2021, eqs. 6 and 13).

    ``drift(x, t)`` is the coefficient of dt in forward time (integrate with dt < 0);
    ``diffusion(t)`` is g(t) (0 for the ODE). ``score_fn(x, t)`` takes ``t`` of shape [B].
    """

    forward: LinearSDE
    score_fn: ScoreFn
    probability_flow: bool = False

    @property
    def T(self) -> float:
        return self.forward.T

    @property
    def N(self) -> int:
        return self.forward.N

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = as_time(t, x)
        return self.forward.reverse_drift(x, t, self.score_fn(x, t), self.probability_flow)

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        g = torch.sqrt(self.forward.g2(t))
        return torch.zeros_like(g) if self.probability_flow else g

    def sde(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Official name: (drift, diffusion) of the reverse SDE / PF-ODE."""
        t = as_time(t, x)
        return self.drift(x, t), self.diffusion(t)

    def discretize(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Reverse of the forward discretization (Song 2021 eq. 46, reverse diffusion):
        ``rev_f = f_i - G_i^2 s (x 1/2 for probability flow)``, ``rev_G = G_i`` (0 for flow)."""
        t = as_time(t, x)
        f, G = self.forward.discretize(x, t)
        s = self.score_fn(x, t)
        rev_f = f - bcast(G**2, x) * s * (0.5 if self.probability_flow else 1.0)
        rev_G = torch.zeros_like(G) if self.probability_flow else G
        return rev_f, rev_G


def _t_from_B(B: torch.Tensor, beta_min: float, beta_max: float) -> torch.Tensor:
    """Solve beta_min t + 1/2 (beta_max - beta_min) t^2 = B for t >= 0 (stable form)."""
    d = beta_max - beta_min
    return 2 * B / (beta_min + torch.sqrt(beta_min**2 + 2 * d * B))


__all__ = ["LinearSDE", "ReverseSDE", "check_same_batch"]
