"""Controllable generation as step hooks on fixed-grid samplers: imputation / inpainting and colorization
(Song et al. 2021, App. I.2 and I.3)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..sde.base import LinearSDE
from ..solvers.api import SAMPLERS, sample
from ..solvers.base import StatefulStepper, Stepper
from ..solvers.observer import SampleResult
from ..solvers.problem import Problem
from ..utils import Generator, as_time, bcast, check_finite

# ---------------------------------------------------------------------------------------------
# Controllable generation: observations and the imputation step hook
# ---------------------------------------------------------------------------------------------

#: Song et al. 2021, App. I.3: the orthogonal 3x3 matrix that decouples RGB into a gray-scale
#: channel and two colour channels. Column j is the j-th decoupled channel's direction:
#: (1, 1, 1)/sqrt(3) (gray: sqrt(3) times the channel mean), (-2, 1, 1)/sqrt(6), (0, 1, -1)/sqrt(2).
COLOR_DECOUPLE = torch.stack(
    [
        torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64) / math.sqrt(3.0),
        torch.tensor([-2.0, 1.0, 1.0], dtype=torch.float64) / math.sqrt(6.0),
        torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64) / math.sqrt(2.0),
    ],
    dim=1,
)


def decouple_colors(x: torch.Tensor, M: torch.Tensor | None = None, channel_dim: int = 1) -> torch.Tensor:
    """u_j = sum_i x_i M_ij over the channel axis (App. I.3's ``decouple``); x [B, C, ...]."""
    M = (COLOR_DECOUPLE if M is None else M).to(x)
    return torch.movedim(torch.movedim(x, channel_dim, -1) @ M, -1, channel_dim)


def couple_colors(u: torch.Tensor, M: torch.Tensor | None = None, channel_dim: int = 1) -> torch.Tensor:
    """Inverse of :func:`decouple_colors` (M orthogonal, so M^{-1} = M^T)."""
    M = (COLOR_DECOUPLE if M is None else M).to(u)
    return torch.movedim(torch.movedim(u, channel_dim, -1) @ M.T, -1, channel_dim)


class Observation:
    """Known values of a sample: ``mask`` (True = known) and the values ``y``, optionally in a
    transformed basis u = T(x) given by an orthogonal channel matrix (colorization).

    Args:
        y: observed values, [B, ...] or the event shape (shared by the batch); entries outside the
            mask are ignored. In the transformed basis when ``transform`` is given.
        mask: bool or 0/1 tensor, the event shape or [B, ...].
        transform: optional orthogonal [C, C] matrix M acting on ``channel_dim`` (u = x M).
        channel_dim: the channel axis of x (1 for [B, C, H, W]).
    """

    def __init__(self, y: torch.Tensor, mask: torch.Tensor, transform: torch.Tensor | None = None, channel_dim=1):
        if not torch.is_tensor(y):
            raise TypeError(f"y must be a torch.Tensor; got {type(y).__name__}")
        if not torch.is_tensor(mask):
            raise TypeError(f"mask must be a torch.Tensor; got {type(mask).__name__}")
        check_finite(y, "y")
        mvals = mask if mask.dtype == torch.bool else mask.to(torch.float64)
        if mask.dtype != torch.bool and not ((mvals == 0) | (mvals == 1)).all():
            raise ValueError("mask must be boolean or hold only 0 and 1")
        self.mask = mask.to(torch.bool)
        self.y = y
        self.channel_dim = channel_dim
        if transform is not None:
            M = torch.as_tensor(transform, dtype=torch.float64)
            if M.ndim != 2 or M.shape[0] != M.shape[1]:
                raise ValueError(f"transform must be a square [C, C] matrix; got shape {tuple(M.shape)}")
            if not torch.allclose(M.T @ M, torch.eye(M.shape[0], dtype=torch.float64), atol=1e-6):
                raise ValueError("transform must be orthogonal (M^T M = I) so the noise stays isotropic")
            transform = M
        self.transform = transform
        if y.ndim == self.mask.ndim + 1 and tuple(y.shape[1:]) != tuple(self.mask.shape):
            raise ValueError(f"mask has shape {tuple(self.mask.shape)} but y has shape {tuple(y.shape)}")
        if y.ndim == self.mask.ndim and tuple(y.shape) != tuple(self.mask.shape):
            raise ValueError(f"mask has shape {tuple(self.mask.shape)} but y has shape {tuple(y.shape)}")

    def check(self, x: torch.Tensor) -> None:
        """Raise ValueError if this observation does not fit samples x [B, ...]."""
        ev = tuple(x.shape[1:])
        if tuple(self.mask.shape) not in (ev, tuple(x.shape)):
            raise ValueError(
                f"mask has shape {tuple(self.mask.shape)}; expected the event shape {ev} or the batch shape "
                f"{tuple(x.shape)} of x"
            )
        if tuple(self.y.shape) not in (ev, tuple(x.shape)):
            raise ValueError(f"y has shape {tuple(self.y.shape)}; expected {ev} or {tuple(x.shape)}")
        if self.transform is not None:
            C = x.shape[self.channel_dim]
            if self.transform.shape[0] != C:
                raise ValueError(f"transform is {tuple(self.transform.shape)} but x has {C} channels")

    def to_obs(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.transform is None else decouple_colors(x, self.transform, self.channel_dim)

    def from_obs(self, u: torch.Tensor) -> torch.Tensor:
        return u if self.transform is None else couple_colors(u, self.transform, self.channel_dim)

    def replace(self, x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """x with its known entries (in the observation basis) set to ``values``."""
        u = self.to_obs(x)
        m = self.mask.to(x.device)
        m = m.expand_as(u) if m.shape != u.shape else m
        return self.from_obs(torch.where(m, values.to(u).expand_as(u), u))

    def noised(self, sde: LinearSDE, t: torch.Tensor, x: torch.Tensor, z: torch.Tensor | None):
        """(alpha(t) y + sigma(t) z, alpha(t) y): the observation pushed through the forward kernel."""
        tv = as_time(t.to(x.dtype) if torch.is_tensor(t) else t, x)
        a = bcast(sde.alpha(tv).to(x), x)
        mean = a * self.y.to(x)
        if z is None:
            return mean, mean
        return mean + bcast(sde.sigma(tv).to(x), x) * z, mean


@dataclass
class ImputationState:
    """The wrapped stepper's state and, with ``noise="fixed"``, the one z of the known entries."""

    inner: Any
    z: torch.Tensor | None


class ImputationStepper(StatefulStepper):
    """Imputation / inpainting as a hook around any fixed-grid stepper (Song et al. 2021, App. I.2).

    Each step of the wrapped stepper takes x(t) to x(t_next); then the known entries are replaced:

        x[known]    <- alpha(t_next) y + sigma(t_next) z,     z ~ N(0, I),
        mean[known] <- alpha(t_next) y.

    Unlike the official ``inpaint_update_fn``, the replacement uses the time t_next at which the new
    state lives, and the noise-free ``mean`` (returned at the end with ``denoise=True``) gets the
    noise-free observation and keeps the stepper's own mean elsewhere (the official code builds it
    from the noisy x). Before the first step the known entries of x_T are drawn the same way at T.
    On the final step both x and mean carry y itself, so the known entries come back exactly.

    Args:
        inner: the stepper to wrap (predictor, PC, probability flow, a fast solver, ...).
        observation: an :class:`Observation`.
        noise: ``"fresh"`` (a new z every step, the paper's choice) or ``"fixed"`` (one z drawn at the
            start: the known entries follow a smooth path, natural for deterministic ODE steppers).
            Default: fresh for stochastic steppers, fixed for deterministic ones.
    """

    def __init__(self, inner: Stepper, observation: Observation, noise: str | None = None):
        if not isinstance(inner, Stepper):
            raise TypeError(f"inner must be a Stepper; got {type(inner).__name__}")
        if not isinstance(observation, Observation):
            raise TypeError(f"observation must be an Observation; got {type(observation).__name__}")
        noise = noise if noise is not None else ("fresh" if inner.stochastic else "fixed")
        if noise not in ("fresh", "fixed"):
            raise ValueError(f"noise must be 'fresh' or 'fixed'; got noise = {noise!r}")
        self.inner, self.obs, self.noise = inner, observation, noise
        self.name = f"impute[{inner.name}]"
        self.order, self.nfe_per_step, self.stochastic = inner.order, inner.nfe_per_step, True

    def check(self, sde):
        self.inner.check(sde)

    def runs(self, steps: int) -> bool:
        return self.inner.runs(steps)

    def nfe(self, steps: int) -> int:
        return self.inner.nfe(steps)

    def init(self, problem: Problem, x: torch.Tensor) -> ImputationState:
        self.obs.check(x)
        inner = self.inner.init(problem, x)
        z = problem.randn_like(self.obs.to_obs(x)) if self.noise == "fixed" else None
        return ImputationState(inner, z)

    def advance(self, problem: Problem, state: ImputationState, x, t, t_next, i, last):
        z = state.z
        if i == 0:
            x_known, _ = self.obs.noised(problem.sde, t, x, z if z is not None else problem.randn_like(x))
            x = self.obs.replace(x, x_known)
        out, state.inner = self.inner.advance(problem, state.inner, x, t, t_next, i, last)
        if last:
            y = self.obs.y.to(out.x)
            return replace(out, x=self.obs.replace(out.x, y), mean=self.obs.replace(out.mean, y)), state
        z = z if z is not None else problem.randn_like(out.x)
        x_known, mean_known = self.obs.noised(problem.sde, t_next, out.x, z)
        return replace(out, x=self.obs.replace(out.x, x_known), mean=self.obs.replace(out.mean, mean_known)), state


def _build_stepper(sampler, options: dict) -> Stepper:
    if isinstance(sampler, Stepper):
        if options:
            raise ValueError(f"sampler options {sorted(options)} given with a Stepper object")
        return sampler
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; valid samplers: {sorted(SAMPLERS)}")
    spec = SAMPLERS[sampler]
    if spec.build is None:
        raise ValueError(
            f"sampler {sampler!r} is an adaptive back-end that chooses its own steps, so it has no step to hook "
            "for imputation; use a fixed-grid sampler: 'probability_flow' (fixed-step PF ODE), 'pc', "
            "'reverse_diffusion', 'euler_maruyama', 'ancestral' or a fast solver. Guidance (score transforms) "
            "does work with the adaptive samplers."
        )
    return spec.build(**options)


def impute(
    sde: LinearSDE,
    score_fn: Callable,
    y: torch.Tensor,
    mask: torch.Tensor,
    shape: Sequence[int] | None = None,
    sampler: str | Stepper = "pc",
    steps: int | None = None,
    noise: str | None = None,
    transform: torch.Tensor | None = None,
    channel_dim: int = 1,
    generator: Generator = None,
    cond=None,
    **kwargs,
) -> SampleResult:
    """Sample the unknown entries given ``y`` on ``mask`` (inpainting; Song et al. 2021, App. I.2).

    Args:
        sde, score_fn: the forward SDE and the (unconditional or, with ``cond``, guided) score.
        y: observed values [B, ...] (or the event shape, shared); mask: True = known.
        shape: [B, ...] of the samples (default y's shape when y is batched).
        sampler: a fixed-grid sampler name (or a Stepper); its options go in ``kwargs`` together
            with :func:`~score_sde.sample`'s (``grid``, ``eps``, ``x_T``, ...).
        noise: see :class:`ImputationStepper`.
        transform, channel_dim: an orthogonal channel transform; y and mask then live in u = x M.
    Returns:
        :class:`~score_sde.solvers.loop.SampleResult` whose known entries equal y.
    """
    sample_keys = {"x_T", "eps", "denoise", "progress", "grid", "nfe", "callback", "record", "dtype", "device"}
    sample_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in sample_keys}
    obs = Observation(y, mask, transform, channel_dim)
    if shape is None and sample_kw.get("x_T") is None:
        if y.ndim != obs.mask.ndim + 1:
            raise ValueError("give shape=[B, ...] (y has no batch dimension)")
        shape = tuple(y.shape)
    stepper = ImputationStepper(_build_stepper(sampler, kwargs), obs, noise)
    return sample(sde, score_fn, shape, sampler=stepper, steps=steps, generator=generator, cond=cond, **sample_kw)


def colorize(
    sde: LinearSDE,
    score_fn: Callable,
    gray: torch.Tensor,
    sampler: str | Stepper = "pc",
    steps: int | None = None,
    generator: Generator = None,
    **kwargs,
) -> SampleResult:
    """Colorization (Song et al. 2021, App. I.3): imputation in the decoupled colour basis.

    ``gray`` [B, H, W] or [B, 1, H, W] is the channel mean of the wanted RGB image. In the
    basis u = x M (:data:`COLOR_DECOUPLE`) the first channel is sqrt(3) * gray and is known; the
    two colour channels are imputed. M is orthogonal, so the forward noise stays isotropic in u.
    Returns samples [B, 3, H, W] whose channel mean equals ``gray`` (to rounding).
    """
    if not torch.is_tensor(gray):
        raise TypeError(f"gray must be a torch.Tensor; got {type(gray).__name__}")
    if gray.ndim == 4 and gray.shape[1] == 1:
        gray = gray[:, 0]
    if gray.ndim != 3:
        raise ValueError(f"gray must have shape [B, H, W] or [B, 1, H, W]; got {tuple(gray.shape)}")
    B, H, W = gray.shape
    u = torch.zeros(B, 3, H, W, dtype=gray.dtype, device=gray.device)
    u[:, 0] = math.sqrt(3.0) * gray
    mask = torch.zeros(3, H, W, dtype=torch.bool, device=gray.device)
    mask[0] = True
    return impute(
        sde, score_fn, u, mask, (B, 3, H, W), sampler, steps, transform=COLOR_DECOUPLE, generator=generator, **kwargs
    )
