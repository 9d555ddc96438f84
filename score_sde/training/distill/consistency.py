"""Consistency distillation and consistency training (Song et al. 2023, Alg. 2 and 3) on any linear SDE.

Discretisation. N times eps = t_1 < ... < t_N = T whose sigma~ = sigma / alpha follow Karras et al.'s
rho = 7 schedule, sigma~_n = (s_min^{1/rho} + (n - 1)/(N - 1) (s_max^{1/rho} - s_min^{1/rho}))^rho
(the paper's N-point grid, mapped to times by the SDE's inverse of sigma~). The ``consistency`` sampler's
default K-step grid is the same schedule with K + 1 points, so it lies on the training grid when K divides
N - 1 (hence N = 17 by default): a network that sees only the N training times can be poor in between (measured
on digits: a 2-step grid through a time between two training points gave FD-digits 24, through a training point
5.2-6.6).

Consistency distillation (Alg. 2). Draw x_0, n ~ U{1, ..., N - 1}, x_{t_{n+1}} = alpha x_0 + sigma z.
One step of the teacher's PF-ODE, in x~ = x / alpha and sigma~ where it reads dx~/dsigma~ = (x~ - D) / sigma~,
gives x^_{t_n}:

    Euler: x~_n = x~_{n+1} + (sigma~_n - sigma~_{n+1}) d_{n+1},        d = (x~ - D(x, t)) / sigma~,
    Heun:  x~_n = x~_{n+1} + (sigma~_n - sigma~_{n+1}) (d_{n+1} + d'_n) / 2  with d'_n at the Euler point.

The loss is |f_theta(x_{t_{n+1}}, t_{n+1}) - f_theta-(x^_{t_n}, t_n)|^2 (squared L2, lambda = 1) with the
target network theta- <- mu theta- + (1 - mu) theta after every step (``target_ema`` = mu).

Consistency training (Alg. 3) replaces the teacher step by the same noise at both times,
x_{t_n} = alpha_n x_0 + sigma_n z and x_{t_{n+1}} = alpha_{n+1} x_0 + sigma_{n+1} z, with N and mu growing over
the run k = 0..K (App. C): N(k) = ceil(sqrt(k/K ((s_1 + 1)^2 - s_0^2) + s_0^2) - 1) + 1,
mu(k) = exp(s_0 ln(mu_0) / N(k)).

f is a :class:`~score_sde.training.distill.boundary.ConsistencyModel` (denoise view), shapes x [B, ...].
"""

from __future__ import annotations

import math

import torch

from ...utils import bcast


def karras_times(sde, n_points: int, eps: float, rho: float = 7.0) -> torch.Tensor:
    """t_1 < ... < t_N (ascending, float64) with sigma~ on Karras' rho-schedule between sigma~(eps) and sigma~(T)."""
    s_min = float(sde.sigma_tilde(torch.tensor(eps, dtype=torch.float64)))
    s_max = float(sde.sigma_tilde(torch.tensor(sde.T, dtype=torch.float64)))
    u = torch.linspace(0, 1, n_points, dtype=torch.float64)
    sig = (s_min ** (1 / rho) + u * (s_max ** (1 / rho) - s_min ** (1 / rho))) ** rho
    t = sde.t_from_sigma_tilde(sig).to(torch.float64)
    t[0], t[-1] = eps, sde.T
    return t


def ct_schedule(k: int, K: int, s0: int, s1: int, mu0: float) -> tuple[int, float]:
    """CT's (N(k), mu(k)) at step k of K (module docstring)."""
    N = math.ceil(math.sqrt(k / K * ((s1 + 1) ** 2 - s0**2) + s0**2) - 1) + 1
    return N, math.exp(s0 * math.log(mu0) / N)


def teacher_ode_step(teacher, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, method: str = "heun"):
    """One Euler or Heun step of the teacher's PF-ODE in (x~, sigma~) from t to s (both [B]); x [B, ...]."""
    sde = teacher.sde
    a_t, a_s = bcast(sde.alpha(t).to(x), x), bcast(sde.alpha(s).to(x), x)
    st, ss_ = bcast(sde.sigma_tilde(t).to(x), x), bcast(sde.sigma_tilde(s).to(x), x)
    xt = x / a_t
    d = (xt - teacher.denoise(x, t)) / st
    xs = xt + (ss_ - st) * d
    if method == "heun":
        d2 = (xs - teacher.denoise(a_s * xs, s)) / ss_
        xs = xt + (ss_ - st) * 0.5 * (d + d2)
    return a_s * xs


def consistency_loss(student, target_model, x0, times, generator, *, teacher=None, ode_step="heun"):
    """One batch of CD (``teacher`` given) or CT (``teacher=None``); ``times`` from :func:`karras_times`."""
    sde, B = student.sde, x0.shape[0]
    n = torch.randint(0, times.numel() - 1, (B,), generator=generator)
    t_n, t_n1 = times[n].to(x0), times[n + 1].to(x0)
    z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)  # CPU draws: any device
    x_n1 = bcast(sde.alpha(t_n1).to(x0), x0) * x0 + bcast(sde.sigma(t_n1).to(x0), x0) * z
    with torch.no_grad():
        if teacher is not None:
            x_n = teacher_ode_step(teacher, x_n1, t_n1, t_n, ode_step)
        else:
            x_n = bcast(sde.alpha(t_n).to(x0), x0) * x0 + bcast(sde.sigma(t_n).to(x0), x0) * z
        f_target = target_model.denoise(x_n, t_n)
    dims = tuple(range(1, x0.ndim))
    return ((student.denoise(x_n1, t_n1) - f_target) ** 2).mean(dims).mean()


__all__ = ["karras_times", "ct_schedule", "teacher_ode_step", "consistency_loss"]
