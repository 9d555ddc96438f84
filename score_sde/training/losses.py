r"""Training objectives: continuous denoising score matching, DDPM's L_simple and the SMLD loss.

Continuous DSM (Song et al. 2021, eq. 7; Vincent 2011). With x_t = alpha(t) x_0 + sigma(t) z,

    J(theta) = E_{t ~ U(eps, T)} E_{x_0, z} [ lambda(t) || s_theta(x_t, t) + z / sigma(t) ||^2 ],      (1)

reduced over the D data dims by a mean (``reduce="mean"``) or by 1/2 sum (``reduce="sum"``), then
averaged over the batch. ``weighting`` names lambda(t) (``"sigma2"``, the eps loss, by default; ``"g2"``,
likelihood weighting; ``"none"``; ``"flow_matching"``; or a callable), ``target`` the quantity whose residual
is formed (eps, x0, v, velocity or score; the same number for the same network, t and z), and
``importance_sampling=True`` draws t with density proportional to g^2 / sigma^2 and reweights; the three are
defined, with their derivations (eq. (2): flow matching as a weighting), in
:mod:`score_sde.training.weighting`.

Discrete losses: :func:`ddpm_loss` is L_simple = E_i ||eps - eps_theta(sqrt(abar_i) x_0 +
sqrt(1 - abar_i) eps, i)||^2 with i ~ U{0..N-1} on the VP SDE's DDPM chain (Ho et al. 2020, Alg. 1);
:func:`smld_loss` is NCSN's sigma_i^2-weighted loss E_i ||sigma_i s_theta(x_0 + sigma_i z, sigma_i) + z||^2
with i ~ U{0..N-1} on the VE SDE's geometric chain (Song & Ermon 2019, eq. 6).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..score import ScoreModel, convert, convert_at
from ..sde import VESDE, VPSDE
from ..sde.base import LinearSDE
from ..utils import Generator, bcast, check_finite, check_time, randn_like
from .config import REDUCES, TARGETS, WEIGHTINGS  # one list of choices for the config and the losses
from .weighting import importance_cdf, loss_weight, sample_index, sample_time, target_scale2


# ---- helpers ---------------------------------------------------------------------------------
def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {choices}")


def _check_x0(x0) -> None:
    if not torch.is_tensor(x0):
        raise TypeError(f"x0 must be a torch.Tensor of shape [B, ...]; got {type(x0).__name__}")
    if x0.ndim < 1 or x0.shape[0] == 0:
        raise ValueError(f"x0 must have shape [B, ...] with B >= 1; got {tuple(x0.shape)}")
    check_finite(x0, "x0")


def _noise(x0: torch.Tensor, noise: torch.Tensor | None, generator: Generator) -> torch.Tensor:
    """z [B, ...]: the given ``noise`` (checked against x0's shape) or fresh standard normal draws."""
    if noise is None:
        return randn_like(x0, generator)
    if noise.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}; got {tuple(noise.shape)}")
    return noise


def _reduce(sq: torch.Tensor, reduce: str) -> torch.Tensor:
    """Per-sample reduction of squared residuals [B, ...] -> [B]: mean over dims, or 1/2 sum."""
    flat = sq.reshape(sq.shape[0], -1)
    return flat.mean(1) if reduce == "mean" else 0.5 * flat.sum(1)


def _as_model(model, sde: LinearSDE | None) -> tuple[Callable, LinearSDE]:
    """(raw(x, t, cond) -> (out, kind), sde) for a ScoreModel or a plain score function."""
    if isinstance(model, ScoreModel):
        return model.raw, model.sde
    if callable(model):
        if sde is None:
            raise ValueError("a plain score function needs sde=...; or pass a ScoreModel")

        def raw(x, t, cond=None):
            return (model(x, t) if cond is None else model(x, t, cond)), "score"

        return raw, sde
    raise TypeError(f"model must be a ScoreModel or a callable score(x, t); got {type(model).__name__}")


# ---- continuous DSM -------------------------------------------------------------------------------
def per_sample_dsm(
    model,
    x0: torch.Tensor,
    *,
    weighting: str | Callable = "sigma2",
    target: str = "eps",
    importance_sampling: bool = False,
    reduce: str = "mean",
    eps: float = 1e-5,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    cond=None,
    generator: Generator = None,
    sde: LinearSDE | None = None,
) -> torch.Tensor:
    """Per-sample DSM loss [B] of eq. (1); :func:`dsm_loss` averages it.

    Args:
        model: a :class:`~score_sde.score.ScoreModel` (or a plain ``score(x, t)`` with ``sde=``).
        x0: clean data [B, ...].
        weighting: ``"sigma2"``, ``"g2"``, ``"none"``, ``"flow_matching"`` or a callable lambda(t) -> [B].
        target: ``"eps"``, ``"x0"``, ``"v"``, ``"velocity"`` or ``"score"`` -- where the residual is formed.
        importance_sampling: draw t with density proportional to g^2 / sigma^2 and reweight.
        reduce: ``"mean"`` over dims or ``"sum"`` (1/2 sum over dims).
        eps: smallest training time (1e-5).
        t: times [B] to use instead of drawing them (weight 1, i.e. no importance weights).
        noise: z [B, ...] to use instead of drawing it (common random numbers).
        cond: conditioning passed to the network.
        generator: ``torch.Generator`` (or B per-sample generators) for t and z.
    """
    _check_x0(x0)
    _check_choice("target", target, TARGETS)
    _check_choice("reduce", reduce, REDUCES)
    if not callable(weighting):
        _check_choice("weighting", weighting, WEIGHTINGS)
    raw, sde = _as_model(model, sde)
    B = x0.shape[0]
    if t is None:
        t, w_is = sample_time(
            sde, B, eps=eps, importance_sampling=importance_sampling, generator=generator, dtype=x0.dtype,
            device=x0.device,
        )  # fmt: skip
    else:
        t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
        if t.ndim == 0:
            t = t.expand(B)
        if t.shape != (B,):
            raise ValueError(f"t must have shape [B] = [{B}]; got {tuple(t.shape)}")
        check_time(t, sde.T)
        if (t <= 0).any():
            raise ValueError(f"t must be > 0 (sigma(0) = 0); got t = {t.min().item()!r}")
        w_is = torch.ones_like(t)
    noise = _noise(x0, noise, generator)
    alpha, sigma = sde.alpha(t).to(x0), sde.sigma(t).to(x0)
    xt = bcast(alpha, x0) * x0 + bcast(sigma, x0) * noise
    out, kind = raw(xt, t, cond)
    pred = convert_at(sde, t, out, xt, kind, target)
    if target == "eps":
        true = noise
    elif target == "x0":
        true = x0
    elif target == "v":
        true = bcast(alpha, x0) * noise - bcast(sigma, x0) * x0
    elif target == "velocity":
        true = bcast(sde.dalpha_dt(t).to(x0), x0) * x0 + bcast(sde.dsigma_dt(t).to(x0), x0) * noise
    else:
        true = -noise / bcast(sigma, x0)
    per = _reduce((pred - true) ** 2, reduce)
    lam = loss_weight(sde, t, weighting).to(x0)
    return per * lam / target_scale2(target, alpha, sigma, sde.g2(t).to(x0)) * w_is


def dsm_loss(
    model,
    x0: torch.Tensor,
    *,
    weighting: str | Callable = "sigma2",
    target: str = "eps",
    importance_sampling: bool = False,
    reduce: str = "mean",
    eps: float = 1e-5,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    cond=None,
    generator: Generator = None,
    sde: LinearSDE | None = None,
) -> torch.Tensor:
    """Continuous denoising score matching, eq. (1): the batch mean of :func:`per_sample_dsm` (a scalar)."""
    return per_sample_dsm(
        model, x0, weighting=weighting, target=target, importance_sampling=importance_sampling, reduce=reduce,
        eps=eps, t=t, noise=noise, cond=cond, generator=generator, sde=sde,
    ).mean()  # fmt: skip


# ---- discrete losses ------------------------------------------------------------------------------
def _index(i, N: int, B: int, generator, device) -> torch.Tensor:
    if i is None:
        return sample_index(N, B, generator, device)
    i = torch.as_tensor(i, device=device)
    if i.ndim == 0:
        i = i.expand(B)
    if i.shape != (B,) or i.is_floating_point():
        raise ValueError(f"i must be integer indices of shape [B] = [{B}]; got {i.dtype} of shape {tuple(i.shape)}")
    if (i < 0).any() or (i >= N).any():
        bad = i[(i < 0) | (i >= N)][0].item()
        raise ValueError(f"chain indices must lie in 0..{N - 1}; got i = {bad}")
    return i.long()


def ddpm_loss(
    model: ScoreModel,
    x0: torch.Tensor,
    *,
    reduce: str = "mean",
    i: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    cond=None,
    generator: Generator = None,
) -> torch.Tensor:
    """DDPM's L_simple (Ho et al. 2020, Alg. 1) on the VP SDE's discrete chain; a scalar.

    x_i = sqrt(abar_i) x_0 + sqrt(1 - abar_i) eps with i ~ U{0..N-1}; the net sees the time of chain
    index i (``sde.index_to_time(i)``, which its ScoreModel maps back to i for ``"discrete"`` labels and
    to i for ``"t999"``); its output is converted to eps with the chain's own sqrt(abar_i),
    sqrt(1 - abar_i). Loss = ||eps_theta - eps||^2 reduced by mean (or 1/2 sum) over dims, batch mean.
    """
    _check_x0(x0)
    _check_choice("reduce", reduce, REDUCES)
    if not isinstance(model, ScoreModel):
        raise TypeError(f"ddpm_loss needs a ScoreModel; got {type(model).__name__}")
    sde = model.sde
    if not isinstance(sde, VPSDE) or not sde.supports_ancestral:
        raise ValueError(f"ddpm_loss needs a VP SDE with a DDPM chain (VPSDE or DiscreteVPSDE); got {sde!r}")
    B = x0.shape[0]
    i = _index(i, sde.N, B, generator, x0.device)
    noise = _noise(x0, noise, generator)
    abar = sde.alphas_cumprod.to(device=x0.device, dtype=x0.dtype)[i]
    a, s = torch.sqrt(abar), torch.sqrt(1 - abar)
    xt = bcast(a, x0) * x0 + bcast(s, x0) * noise
    t = sde.index_to_time(i.cpu()).to(device=x0.device, dtype=x0.dtype)
    out, kind = model.raw(xt, t, cond)
    pred = convert(out, xt, a, s, kind, "eps")
    return _reduce((pred - noise) ** 2, reduce).mean()


def smld_loss(
    model: ScoreModel,
    x0: torch.Tensor,
    *,
    reduce: str = "mean",
    i: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    cond=None,
    generator: Generator = None,
) -> torch.Tensor:
    """NCSN's loss (Song & Ermon 2019, eq. 6) on the VE SDE's SMLD chain; a scalar.

    x = x_0 + sigma_i z, i ~ U{0..N-1}, sigma_i = sigma_min (sigma_max/sigma_min)^{i/(N-1)}; with
    lambda(sigma_i) = sigma_i^2 the loss is ||sigma_i s_theta(x, sigma_i) + z||^2 reduced by mean (or 1/2
    sum) over dims, batch mean. The net sees the time of index i (its sigma is sigma_i).
    """
    _check_x0(x0)
    _check_choice("reduce", reduce, REDUCES)
    if not isinstance(model, ScoreModel):
        raise TypeError(f"smld_loss needs a ScoreModel; got {type(model).__name__}")
    sde = model.sde
    if not isinstance(sde, VESDE):
        raise ValueError(f"smld_loss needs a VESDE (the SMLD chain); got {sde!r}")
    B = x0.shape[0]
    i = _index(i, sde.N, B, generator, x0.device)
    noise = _noise(x0, noise, generator)
    sig = sde.discrete_sigmas.to(device=x0.device, dtype=x0.dtype)[i]
    xt = x0 + bcast(sig, x0) * noise
    t = sde.index_to_time(i.cpu()).to(device=x0.device, dtype=x0.dtype)
    out, kind = model.raw(xt, t, cond)
    score = convert(out, xt, torch.ones_like(sig), sig, kind, "score")
    return _reduce((bcast(sig, x0) * score + noise) ** 2, reduce).mean()


LOSSES: dict[str, Callable] = {"dsm": dsm_loss, "ddpm": ddpm_loss, "smld": smld_loss}


def get_loss(name: str) -> Callable:
    """The loss function called ``name`` (one of :data:`LOSSES`: dsm, ddpm, smld)."""
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]


__all__ = [
    "dsm_loss",
    "per_sample_dsm",
    "ddpm_loss",
    "smld_loss",
    "sample_time",
    "importance_cdf",
    "loss_weight",
    "get_loss",
    "LOSSES",
    "WEIGHTINGS",
    "TARGETS",
    "REDUCES",
]
