r"""Training objectives: continuous denoising score matching, DDPM's L_simple and the SMLD loss.

Continuous DSM (Song et al. 2021, eq. 7; Vincent 2011). With x_t = alpha(t) x_0 + sigma(t) z,

    J(theta) = E_{t ~ U(eps, T)} E_{x_0, z} [ lambda(t) || s_theta(x_t, t) + z / sigma(t) ||^2 ],      (1)

reduced over the D data dims by a mean (``reduce="mean"``) or by 1/2 sum (``reduce="sum"``), then
averaged over the batch. ``weighting`` names lambda(t), always in *score* units:

* ``"sigma2"``: lambda = sigma^2 -- the eps loss ||eps_theta - z||^2 (Ho et al. 2020; the default);
* ``"g2"``: lambda = g^2 -- likelihood weighting (Song et al. 2021b, ScoreFlow): with
  ``reduce="sum"``, J equals the KL bound's score term, so J + const bounds -log p;
* ``"none"``: lambda = 1 (the plain Fisher divergence; very noisy near t = 0);
* ``"flow_matching"``: lambda = g^4 / 4 -- the conditional flow-matching loss ||u_theta - u||^2 with
  u = alpha' x_0 + sigma' z (Lipman et al. 2023; Liu et al. 2022), see (2) below;
* or a callable ``lambda(t) -> [B]``.

Targets. The same objective can be written on the network's ``target`` (eps, x0, v or score):
the residual in each parameterisation is a fixed multiple of the score residual
r = s_theta + z / sigma,

    eps_theta - z   = -sigma r,                        ||.||^2 = sigma^2 ||r||^2
    x0_theta - x_0  = (sigma^2 / alpha) r,             ||.||^2 = sigma^4 / alpha^2 ||r||^2
    v_theta - v     = -(sigma (alpha^2 + sigma^2) / alpha) r,   v = alpha z - sigma x_0
    u_theta - u     = -(g^2 / 2) r,                    u = alpha' x_0 + sigma' z (``velocity``)
    score           = r,

so (1) is evaluated as lambda(t) / c_target(t) ||target_theta - target||^2 with c_eps = sigma^2,
c_x0 = sigma^4/alpha^2, c_v = sigma^2 (alpha^2 + sigma^2)^2 / alpha^2, c_velocity = g^4 / 4, c_score = 1.
The velocity line: for fixed x_t, u = f x_t + (g^2 / (2 sigma)) z (:mod:`score_sde.score`, eq. V2), so
u_theta - u = (g^2 / (2 sigma)) (eps_theta - z) = -(g^2 / 2) r. Hence flow matching is this denoising loss
with the weighting

    ||u_theta - u||^2 = (g^4 / 4) ||r||^2 = g^4 / (4 sigma^2) ||eps_theta - z||^2,                  (2)

lambda_FM = g^4 / 4 in score units, w(t) = g^4 / (4 sigma^2) = (sigma' - sigma alpha'/alpha)^2 on the eps loss;
for rectified flow (alpha = 1 - t, sigma = t) w(t) = 1 / (1 - t)^2. Every target gives
the same number for the same network, t and z (a test checks it); the choice only decides which
quantity is formed without dividing by a small sigma (use the net's own prediction type).

Importance sampling (``importance_sampling=True``). For any linear SDE, g^2 / sigma^2 = -2 d lambda_snr /
dt, where lambda_snr = ln(alpha / sigma) is the half log-SNR. So sampling t with density
p(t) proportional to g^2 / sigma^2 -- the proposal that removes the likelihood weighting's variance --
is sampling lambda_snr uniformly on [lambda_snr(T), lambda_snr(eps)] and mapping back with
``sde.t_from_log_snr`` (closed form for VP, sub-VP and VE). For VP the CDF is thus proportional to
ln(e^{B(t)} - 1) = B(t) + ln(1 - e^{-B(t)}). Each draw carries the weight
lambda(t) / (p(t) (T - eps)), so J keeps its value (1) -- the estimate is unbiased for any weighting.

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


def _per_sample(draw: Callable, B: int, generator: Generator, device) -> torch.Tensor:
    """[B] draws ``draw(n, generator, gen_device)`` from None / one generator / B per-sample generators.

    Draws happen on the generator's device (a CPU generator works for CUDA data), then move to ``device``.
    """
    if generator is None:
        return draw(B, None, device)
    if isinstance(generator, torch.Generator):
        return draw(B, generator, generator.device).to(device)
    gens = list(generator)
    if len(gens) != B:
        raise ValueError(f"got {len(gens)} per-sample generators for a batch of {B}")
    return torch.cat([draw(1, g, g.device).to(device) for g in gens])


def _rand(B: int, generator: Generator, like: torch.Tensor) -> torch.Tensor:
    """U[0, 1) draws [B]; ``generator`` may be one generator or B per-sample generators."""

    def draw(n, g, dev):
        return torch.rand(n, generator=g, dtype=like.dtype, device=dev)

    return _per_sample(draw, B, generator, like.device)


def _randint(N: int, B: int, generator: Generator, device) -> torch.Tensor:
    """Uniform indices in 0..N-1 [B]; ``generator`` as for :func:`_rand`."""

    def draw(n, g, dev):
        return torch.randint(0, N, (n,), generator=g, device=dev)

    return _per_sample(draw, B, generator, device)


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


def _target_scale2(target: str, alpha: torch.Tensor, sigma: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """c_target(t): ||target residual||^2 = c_target ||score residual||^2 (see the module docstring)."""
    if target == "velocity":
        return g2**2 / 4
    if target == "score":
        return torch.ones_like(sigma)
    if target == "eps":
        return sigma**2
    if target == "x0":
        return sigma**4 / alpha**2
    return sigma**2 * (alpha**2 + sigma**2) ** 2 / alpha**2  # v


def loss_weight(sde: LinearSDE, t: torch.Tensor, weighting: str | Callable) -> torch.Tensor:
    """lambda(t) [B] of :func:`dsm_loss` for ``weighting`` in sigma2 / g2 / none / flow_matching or a callable."""
    if callable(weighting):
        w = torch.as_tensor(weighting(t)).to(t)
        if w.shape != t.shape:
            raise ValueError(f"a weighting function must return shape [B] = {tuple(t.shape)}; got {tuple(w.shape)}")
        return w
    _check_choice("weighting", weighting, WEIGHTINGS)
    if weighting == "sigma2":
        return sde.sigma(t) ** 2
    if weighting == "g2":
        return sde.g2(t)
    if weighting == "flow_matching":
        return sde.g2(t) ** 2 / 4
    return torch.ones_like(t)


# ---- time sampling -----------------------------------------------------------------------------
def _log_snr_range(sde: LinearSDE, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(lambda_snr(eps), lambda_snr(T)) in float64: the ends of the importance proposal's lambda_snr range."""
    return sde.log_snr(torch.tensor(eps, dtype=torch.float64)), sde.log_snr(torch.tensor(sde.T, dtype=torch.float64))


def sample_time(
    sde: LinearSDE,
    B: int,
    *,
    eps: float = 1e-5,
    importance_sampling: bool = False,
    generator: Generator = None,
    dtype=None,
    device=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training times t [B] and their importance weights w [B] (E_t[w f(t)] = E_{U(eps, T)}[f(t)]).

    Uniform: t = eps + (T - eps) u, w = 1. Importance sampling: lambda_snr ~ U[lambda_snr(T),
    lambda_snr(eps)], t = t(lambda_snr), so p(t) = g^2(t) / sigma^2(t) / (2 (lambda_snr(eps) -
    lambda_snr(T))) and w = 1 / (p(t) (T - eps)).
    """
    sde.check_eps(eps)
    ref = torch.empty(0, dtype=dtype or torch.get_default_dtype(), device=device)
    u = _rand(B, generator, ref)
    T = sde.T
    if not importance_sampling:
        return eps + (T - eps) * u, torch.ones_like(u)
    hi, lo = _log_snr_range(sde, eps)
    lam = lo + (hi - lo) * u.to(torch.float64)
    t = sde.t_from_log_snr(lam).clamp(eps, T)
    density = sde.g2(t) / sde.sigma(t) ** 2 / (2 * (hi - lo))
    w = 1.0 / (density * (T - eps))
    return t.to(ref), w.to(ref)


def importance_cdf(sde: LinearSDE, t: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """CDF of the importance distribution p(t) proportional to g^2 / sigma^2 on [eps, T]:
    (lambda_snr(eps) - lambda_snr(t)) / (lambda_snr(eps) - lambda_snr(T))."""
    t = torch.as_tensor(t, dtype=torch.float64)
    hi, lo = _log_snr_range(sde, eps)
    return (hi - sde.log_snr(t)) / (hi - lo)


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
    """Per-sample DSM loss [B] of eq. (1) (see the module docstring); :func:`dsm_loss` averages it.

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
    return per * lam / _target_scale2(target, alpha, sigma, sde.g2(t).to(x0)) * w_is


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
        return _randint(N, B, generator, device)
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
