"""Reflow (Liu et al. 2022): couple noise with samples through the teacher's PF-ODE, retrain on the straight
paths between the pairs, repeat.

Coupling. z ~ N(0, prior_std^2 I) is taken as x_T and carried to x_0 = ODE_teacher(z) by ``ss.sample``
(``pair_sampler``, ``pair_steps``), giving pairs (x_0, z) that no longer cross.

Training path and loss. The student learns E[x_0 | x_t] on x_t = alpha(t) x_0 + sigma(t) z for the *coupled*
pairs, t ~ U(eps, T). On the rectified-flow path (``ss.GeneralLinearSDE.rectified_flow()``, alpha = 1 - t,
sigma = t) the pair moves on the straight line x_t = (1 - t) x_0 + t z with velocity u = z - x_0, and a
velocity model u^ is fitted by |u^ - u|^2. Written through the student's x_0 estimate D^ with
z^ = (x_t - alpha D^) / sigma, any linear path has u^ - u = (alpha' - sigma' alpha / sigma)(D^ - x_0)
= -alpha lambda'(t) (D^ - x_0) with lambda = ln(alpha / sigma), so

    |u^ - u|^2 = w(t) |D^ - x_0|^2,   w(t) = (alpha(t) lambda'(t))^2,

which on the rectified-flow path is (-1 - (1 - t)/t)^2 = 1 / t^2: the velocity (flow-matching) loss is the
x_0 loss weighted by 1 / t^2 (``reflow_weighting="velocity"``, the default). ``"eps"`` uses
w = 1 / sigma~^2, the velocity loss in sigma~-time (where every linear path reads x~ = x_0 + sigma~ z with
constant velocity z). On every linear path the pairs' paths are straight in x~ = x / alpha, so reflow also
runs on the teacher's own VP / VE SDE (what ``score-sde distill`` does).

Straightness (Liu et al. 2022, Def. 3.1) of a flow, S = int_0^1 E |(x_1 - x_0) - v(x_s, s)|^2 ds in the
normalised time s = (T - t) / (T - eps), is :func:`score_sde.metrics.straightness` (0 for a flow whose paths
are straight lines run at constant speed); reflow lowers it.
"""

from __future__ import annotations

import torch

from ...utils import bcast


def velocity_weight(sde, t: torch.Tensor) -> torch.Tensor:
    """w(t) = (alpha(t) lambda'(t))^2 [B] (module docstring), lambda' by autograd in float64."""
    with torch.enable_grad():
        tt = t.detach().to(torch.float64).clone().requires_grad_(True)
        (dlam,) = torch.autograd.grad(sde.log_snr(tt).sum(), tt)
    return (sde.alpha(t.to(torch.float64)) * dlam) ** 2


@torch.no_grad()
def couple(sde, score_fn, n: int, shape, generator, *, sampler="heun", steps=32, eps=None, batch=2000, dtype=None,
           device=None):
    """n pairs (x_0 [n, *shape], z [n, *shape]) on the CPU with x_0 = the PF-ODE image of z = x_T under ``score_fn``
    (z is drawn on the CPU with ``generator``; the ODE runs on ``device``)."""
    from ...solvers import sample

    dtype = dtype or torch.get_default_dtype()
    z = sde.prior_sampling((n, *shape), generator=generator, dtype=dtype)
    out = [sample(sde, score_fn, x_T=z[i : i + batch].to(device), sampler=sampler, steps=steps, eps=eps).x.cpu()
           for i in range(0, n, batch)]  # fmt: skip
    return torch.cat(out), z


def reflow_loss(student, x0: torch.Tensor, z: torch.Tensor, generator, eps: float, weighting: str = "velocity"):
    """One batch of pairs (x0, z), each [B, ...]: mean of w(t) |D^(x_t, t) - x_0|^2 / dim, t ~ U(eps, T)."""
    sde = student.sde
    u = torch.rand(x0.shape[0], generator=generator, dtype=torch.float64)
    t = eps + (sde.T - eps) * u
    w = velocity_weight(sde, t) if weighting == "velocity" else sde.sigma_tilde(t) ** -2
    t = t.to(x0)
    x_t = bcast(sde.alpha(t).to(x0), x0) * x0 + bcast(sde.sigma(t).to(x0), x0) * z
    dims = tuple(range(1, x0.ndim))
    return (w.to(x0) * ((student.denoise(x_t, t) - x0) ** 2).mean(dims)).mean()


__all__ = ["velocity_weight", "couple", "reflow_loss"]
