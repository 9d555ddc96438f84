"""Progressive distillation (Salimans & Ho 2022, Alg. 2): a student learns in one DDIM step what its teacher
does in two, and becomes the teacher of the next round: N -> N/2 -> ... -> K steps.

Grids. Round r distils a teacher of 2K_r DDIM steps into a student of K_r steps. Both run on
:func:`~score_sde.solvers.grids.make_grid` grids of the same kind (``"auto"``, DDIM's default:
time-quadratic on VP / sub-VP, logSNR-uniform otherwise) from T to eps. These grids nest: point i of the
K-step grid is point 2i of the 2K-step grid (each kind is a fixed function of i / K), so the student
distilled for K steps samples with plain ``ss.sample(sde, student, sampler="ddim", steps=K, eps=eps)``.

Targets (Alg. 2 in x = alpha x_0 + sigma eps). For a student step t = g_i -> t'' = g_{i+1} and the
teacher's midpoint t' = g2_{2i+1}, the teacher's two DDIM steps (eta = 0; D the teacher's denoiser)

    x_{t'}  = alpha_{t'} D(x_t, t) + (sigma_{t'} / sigma_t) (x_t - alpha_t D(x_t, t)),
    x_{t''} = alpha_{t''} D(x_{t'}, t') + (sigma_{t''} / sigma_{t'}) (x_{t'} - alpha_{t'} D(x_{t'}, t'))

are matched by one student DDIM step x_{t''} = alpha_{t''} x~ + (sigma_{t''} / sigma_t)(x_t - alpha_t x~) when
its denoiser returns

    x~ = (x_{t''} - (sigma_{t''} / sigma_t) x_t) / (alpha_{t''} - (sigma_{t''} / sigma_t) alpha_t).

Losses on the student's denoiser D_s: ``target="x0"``: w(t) |D_s(x_t, t) - x~|^2 with the truncated-SNR
weight w = max(SNR, 1) (SNR = alpha^2 / sigma^2; ``weighting="snr_plus_one"``: w = SNR + 1);
``target="v"``: |v_s - v~|^2 with v~ = alpha eps~ - sigma x~ and eps~ = (x_t - alpha x~) / sigma, which on
VP (alpha^2 + sigma^2 = 1) is the x0 loss weighted by SNR + 1. Times t are drawn from the student's grid
points g_0..g_{K-1} uniformly; x_t from q(x_t | x_0) with x_0 from the training data.
"""

from __future__ import annotations

import torch

from ...solvers.grids import make_grid
from ...utils import bcast


def nested_grids(sde, student_steps: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's grid (K + 1 times) and the teacher's (2K + 1 times), both ``"auto"`` grids from T to eps."""
    g = make_grid(sde, "auto", student_steps, eps)
    g2 = make_grid(sde, "auto", 2 * student_steps, eps)
    return g, g2


def ddim_step(sde, D: torch.Tensor, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM step from time t to s (both [B]) with denoiser value D: alpha_s D + (sigma_s/sigma_t)
    (x - alpha_t D)."""
    a_t, a_s = bcast(sde.alpha(t).to(x), x), bcast(sde.alpha(s).to(x), x)
    r = bcast((sde.sigma(s) / sde.sigma(t)).to(x), x)
    return a_s * D + r * (x - a_t * D)


def two_step_target(teacher, x_t: torch.Tensor, t, t_mid, t_end) -> torch.Tensor:
    """x~ of the module docstring: the x_0 that makes one DDIM step t -> t_end land where the teacher's two land."""
    x_mid = ddim_step(teacher.sde, teacher.denoise(x_t, t), x_t, t, t_mid)
    x_end = ddim_step(teacher.sde, teacher.denoise(x_mid, t_mid), x_mid, t_mid, t_end)
    sde = teacher.sde
    r = bcast((sde.sigma(t_end) / sde.sigma(t)).to(x_t), x_t)
    a_t, a_e = bcast(sde.alpha(t).to(x_t), x_t), bcast(sde.alpha(t_end).to(x_t), x_t)
    return (x_end - r * x_t) / (a_e - r * a_t)


def progressive_loss(student, teacher, x0: torch.Tensor, grids, generator, *, target="x0", weighting="truncated_snr"):
    """The loss of one batch x0 [B, ...] (module docstring); ``grids`` from :func:`nested_grids`."""
    g, g2 = grids
    B, sde = x0.shape[0], teacher.sde
    K = g.numel() - 1
    i = torch.randint(0, K, (B,), generator=generator)
    t, t_mid, t_end = g[i].to(x0), g2[2 * i + 1].to(x0), g[i + 1].to(x0)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)  # CPU draws: any device
    a, s = bcast(sde.alpha(t).to(x0), x0), bcast(sde.sigma(t).to(x0), x0)
    x_t = a * x0 + s * noise
    with torch.no_grad():
        x_tilde = two_step_target(teacher, x_t, t, t_mid, t_end)
    dims = tuple(range(1, x0.ndim))
    if target == "v":
        eps_tilde = (x_t - a * x_tilde) / s
        v_tilde = a * eps_tilde - s * x_tilde
        return ((student.v(x_t, t) - v_tilde) ** 2).mean(dims).mean()
    snr = (sde.alpha(t) / sde.sigma(t)).to(x0) ** 2
    w = torch.clamp(snr, min=1.0) if weighting == "truncated_snr" else snr + 1
    return (w * ((student.denoise(x_t, t) - x_tilde) ** 2).mean(dims)).mean()


__all__ = ["nested_grids", "ddim_step", "two_step_target", "progressive_loss"]
