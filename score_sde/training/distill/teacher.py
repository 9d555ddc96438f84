"""The teacher of a distillation: an exact Gaussian-mixture score or a trained workdir, and the check that a
student fits it.

A :class:`Teacher` offers what the three methods need: the SDE, the data shape, the denoiser
D(x, t) = E[x_0 | x_t = x] (shape like x; t [B]), the score, training data x_0 and, for a network teacher,
the network and its config (progressive distillation and reflow start the student as a copy of it).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable

import torch

from ...analytic import GaussianMixture
from ...sde import VESDE, VPSDE, SubVPSDE
from ...sde.base import LinearSDE
from ...utils import as_time


def describe_sde(sde: LinearSDE) -> str:
    """A readable name with the parameters of an SDE (VP/sub-VP: betas; VE: sigmas)."""
    if isinstance(sde, SubVPSDE):
        return f"subvpsde(beta_min={sde.beta_0:g}, beta_max={sde.beta_1:g})"
    if isinstance(sde, VPSDE):
        return f"vpsde(beta_min={sde.beta_0:g}, beta_max={sde.beta_1:g})"
    if isinstance(sde, VESDE):
        return f"vesde(sigma_min={sde.sigma_min:g}, sigma_max={sde.sigma_max:g})"
    return f"{getattr(sde, 'name', type(sde).__name__)}(T={sde.T:g})"


def same_sde(a: LinearSDE, b: LinearSDE) -> bool:
    """Same kind, same T and the same alpha(t), sigma(t) on 17 times in [0, T] (relative 1e-9)."""
    if type(a) is not type(b) or abs(a.T - b.T) > 1e-12:
        return False
    t = torch.linspace(0.0, a.T, 17, dtype=torch.float64)[1:]
    for f, g in ((a.alpha, b.alpha), (a.sigma, b.sigma)):
        fa, gb = f(t).to(torch.float64), g(t).to(torch.float64)
        if not torch.allclose(fa, gb, rtol=1e-9, atol=1e-12):
            return False
    return True


class Teacher:
    """A distillation teacher.

    Args:
        sde: its forward SDE. data_shape: per-sample shape of x_0.
        denoise: ``denoise(x, t) -> E[x_0 | x_t]`` (t [B]).
        sample_data: ``sample_data(n, generator) -> x_0`` [n, *data_shape], the training data.
        model: the network teacher's :class:`~score_sde.score.ScoreModel` (None for an exact teacher).
        cfg: the network teacher's config; description: a name for messages.
    """

    def __init__(self, sde: LinearSDE, data_shape, denoise: Callable, sample_data: Callable, *, model=None,
                 cfg=None, description: str = "teacher"):  # fmt: skip
        self.sde, self.data_shape = sde, tuple(int(s) for s in data_shape)
        self._denoise, self.sample_data = denoise, sample_data
        self.model, self.cfg, self.description = model, cfg, description

    @classmethod
    def from_mixture(cls, mixture: GaussianMixture, sde: LinearSDE) -> Teacher:
        """The exact teacher of a Gaussian mixture under ``sde`` (its scores are exact in float64)."""
        if not isinstance(mixture, GaussianMixture):
            raise TypeError(f"mixture must be a score_sde.analytic.GaussianMixture; got {type(mixture).__name__}")
        return cls(sde, mixture.event_shape, lambda x, t: mixture.denoise(x, t, sde),
                   lambda n, g: mixture.sample(n, generator=g),
                   description=f"exact Gaussian mixture ({mixture.K} components) under "
                               f"{describe_sde(sde)}")  # fmt: skip

    @classmethod
    def from_workdir(cls, workdir: str | os.PathLike, device: str = "cpu") -> Teacher:
        """A trained workdir (EMA weights): its SDE, network and training data."""
        from ..services import load_split, load_workdir

        cfg, sde, model, state = load_workdir(workdir, device=device)
        if state.get("distill") is not None and state["distill"].get("method") == "consistency":
            raise ValueError(f"teacher workdir {os.fspath(workdir)!r} holds a consistency model, not a score model")
        for p in model.parameters():
            p.requires_grad_(False)
        data = load_split(cfg, "train").data.to(device)
        shape = tuple(int(s) for s in state["data_shape"])
        dtype = next(model.parameters()).dtype

        def sample_data(n, g):
            idx = torch.randint(0, data.shape[0], (n,), generator=g)
            return data[idx.to(data.device)]

        def denoise(x, t):
            with torch.no_grad():
                return model.denoise(x.to(dtype), t.to(dtype)).to(x.dtype)

        return cls(sde, shape, denoise, sample_data, model=model, cfg=cfg,
                   description=f"workdir {os.fspath(workdir)!r} ({describe_sde(sde)}, "
                               f"data {cfg.data.dataset})")  # fmt: skip

    @classmethod
    def from_student(cls, teacher: Teacher, model) -> Teacher:
        """A frozen copy of a student (a ScoreModel) as the teacher of the next round, with the same data."""
        frozen = copy.deepcopy(model).eval()
        for p in frozen.parameters():
            p.requires_grad_(False)
        dtype = next(frozen.parameters()).dtype

        def denoise(x, t):
            with torch.no_grad():
                return frozen.denoise(x.to(dtype), t.to(dtype)).to(x.dtype)

        return cls(frozen.sde, teacher.data_shape, denoise, teacher.sample_data, model=frozen, cfg=teacher.cfg,
                   description=f"student of {teacher.description}")  # fmt: skip

    def denoise(self, x: torch.Tensor, t) -> torch.Tensor:
        """E[x_0 | x_t = x], shape like x."""
        return self._denoise(x, as_time(t, x))

    def score(self, x: torch.Tensor, t, *args) -> torch.Tensor:
        """(alpha D - x) / sigma^2, shape like x (the samplers' score_fn)."""
        t = as_time(t, x)
        a = self.sde.alpha(t).to(x).reshape(-1, *[1] * (x.ndim - 1))
        s = self.sde.sigma(t).to(x).reshape(-1, *[1] * (x.ndim - 1))
        return (a * self.denoise(x, t) - x) / (s * s)

    def check_student(self, sde: LinearSDE, data_shape, what: str = "the student config") -> None:
        """ValueError naming both sides when ``sde`` or ``data_shape`` differ from the teacher's."""
        shape = tuple(int(s) for s in data_shape)
        if shape != self.data_shape:
            raise ValueError(
                f"incompatible teacher: {what} has data of shape {shape} but the teacher ({self.description}) has "
                f"data of shape {self.data_shape}"
            )
        if not same_sde(sde, self.sde):
            raise ValueError(
                f"incompatible teacher: {what} has SDE {describe_sde(sde)} but the teacher ({self.description}) has "
                f"SDE {describe_sde(self.sde)}"
            )

    def dim(self) -> int:
        return math.prod(self.data_shape)


__all__ = ["Teacher", "describe_sde", "same_sde"]
