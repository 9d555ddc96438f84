"""Options of a distillation run: one dataclass, plain values only (stored in every checkpoint).

``score-sde distill --set key=value`` sets these keys (without a section prefix) or, with a section
prefix (``model.hidden=64``), keys of the student's :class:`~score_sde.training.config.Config`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass

METHODS = ("progressive", "consistency", "reflow")
PD_TARGETS = ("x0", "v")
PD_WEIGHTINGS = ("truncated_snr", "snr_plus_one")
CM_MODES = ("cd", "ct")
ODE_STEPS = ("heun", "euler")
REFLOW_WEIGHTINGS = ("velocity", "eps")


@dataclass
class DistillConfig:
    """What to distil and how.

    Shared: ``method`` (``progressive``, ``consistency``, ``reflow``); ``steps``: sampling steps of the
    final student (progressive: the last round's step count; consistency / reflow: the steps written to
    the workdir's sampling section); ``iters``: optimiser steps per round; ``batch_size``; ``lr`` (Adam);
    ``grad_clip`` (<= 0: off); ``ema_rate``: EMA of the student that samples (0: the raw weights);
    ``eps``: the end time (None: the SDE's default); ``seed``: every random draw of step k is a function
    of (seed, k), so a resumed run repeats an uninterrupted one bit for bit; ``ckpt_every``,
    ``keep_ckpts``, ``log_every``.

    Progressive (Salimans & Ho 2022): ``teacher_steps`` = N of the first round's DDIM teacher (a power
    of two times ``steps``); ``target`` ``x0`` or ``v``; ``weighting`` of the x0 loss,
    ``truncated_snr`` (max(SNR, 1)) or ``snr_plus_one``.

    Consistency (Song et al. 2023): ``mode`` ``cd`` (distillation from the teacher's ODE step) or ``ct``
    (training without a teacher); ``cm_points``: N of the sigma~ discretisation in CD (17: the K-step
    sampling grids of K = 1, 2, 4, 8, 16 are points of it, see :mod:`.consistency`); ``ode_step``
    ``heun`` or ``euler`` (the teacher's PF-ODE step in CD); ``target_ema``: mu of the target network in
    CD; ``ct_s0``, ``ct_s1``, ``ct_mu0``: CT's schedules N(k) and mu(k) (Alg. 3 / App. C);
    ``sigma_data`` of the boundary parameterisation.

    Reflow (Liu et al. 2022): ``rounds`` of (couple, retrain); ``pairs``: noise / sample pairs per round;
    ``pair_sampler`` / ``pair_steps``: the teacher's PF-ODE solver that couples them;
    ``reflow_weighting`` ``velocity`` (the rectified-flow velocity loss) or ``eps``.
    """

    method: str = "progressive"
    steps: int = 1
    iters: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    grad_clip: float = 1.0
    ema_rate: float = 0.999
    eps: float | None = None
    seed: int = 0
    ckpt_every: int = 500
    keep_ckpts: int = 2
    log_every: int = 100
    # progressive distillation
    teacher_steps: int = 64
    target: str = "x0"
    weighting: str = "truncated_snr"
    # consistency models
    mode: str = "cd"
    cm_points: int = 17
    ode_step: str = "heun"
    target_ema: float = 0.95
    ct_s0: int = 2
    ct_s1: int = 150
    ct_mu0: float = 0.9
    sigma_data: float = 0.5
    # reflow
    rounds: int = 1
    pairs: int = 10000
    pair_sampler: str = "heun"
    pair_steps: int = 32
    reflow_weighting: str = "velocity"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def n_rounds(self) -> int:
        """Rounds of the method: log2(teacher_steps / steps) halvings, ``rounds`` reflows, one CM round."""
        if self.method == "progressive":
            return int(round(math.log2(self.teacher_steps // self.steps)))
        return self.rounds if self.method == "reflow" else 1


def _choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"distill option {name} must be one of {choices}; got {name} = {value!r}")


def _int(name, value, lo=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"distill option {name} must be an integer >= {lo}; got {name} = {value!r}")


def _real(name, value, lo, hi, lo_open=False, hi_open=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ValueError(f"distill option {name} must be a number in {lb}{lo}, {hi}{rb}; got {name} = {value!r}")


def validate_distill(c: DistillConfig) -> DistillConfig:
    """ValueError naming the first bad option."""
    _choice("method", c.method, METHODS)
    for name in ("steps", "iters", "batch_size", "ckpt_every", "keep_ckpts", "log_every", "teacher_steps",
                 "cm_points", "ct_s0", "ct_s1", "rounds", "pairs", "pair_steps"):  # fmt: skip
        _int(name, getattr(c, name), 2 if name in ("cm_points", "ct_s0") else 1)
    _int("seed", c.seed, 0)
    _real("lr", c.lr, 0, math.inf, lo_open=True)
    _real("grad_clip", c.grad_clip, -math.inf, math.inf)
    _real("ema_rate", c.ema_rate, 0, 1, hi_open=True)
    _real("target_ema", c.target_ema, 0, 1, hi_open=True)
    _real("ct_mu0", c.ct_mu0, 0, 1, hi_open=True)
    _real("sigma_data", c.sigma_data, 0, math.inf, lo_open=True)
    if c.eps is not None:
        _real("eps", c.eps, 0, 1, lo_open=True)
    _choice("target", c.target, PD_TARGETS)
    _choice("weighting", c.weighting, PD_WEIGHTINGS)
    _choice("mode", c.mode, CM_MODES)
    _choice("ode_step", c.ode_step, ODE_STEPS)
    _choice("reflow_weighting", c.reflow_weighting, REFLOW_WEIGHTINGS)
    if c.ct_s1 < c.ct_s0:
        raise ValueError(f"distill option ct_s1 must be >= ct_s0; got ct_s0 = {c.ct_s0}, ct_s1 = {c.ct_s1}")
    if c.method == "progressive":
        k = c.teacher_steps // c.steps
        if c.teacher_steps % c.steps or k < 2 or k & (k - 1):
            raise ValueError(
                f"progressive distillation halves the steps: teacher_steps must be steps times a power of two >= 2; "
                f"got teacher_steps = {c.teacher_steps}, steps = {c.steps}"
            )
    return c


def distill_config_from_dict(d: dict) -> DistillConfig:
    """A :class:`DistillConfig` from plain values (unknown keys raise ValueError naming them)."""
    names = {f.name: f for f in dataclasses.fields(DistillConfig)}
    bad = sorted(set(d) - set(names))
    if bad:
        raise ValueError(f"unknown distill option(s) {bad}; valid: {sorted(names)}")
    return validate_distill(DistillConfig(**d))


def coerce_option(key: str, value: str):
    """A ``--set key=value`` string as the type of DistillConfig's field ``key``."""
    from ..config.parsing import coerce

    names = {f.name: f for f in dataclasses.fields(DistillConfig)}
    if key not in names:
        raise ValueError(f"unknown distill option {key!r}; valid: {sorted(names)}")
    hints = typing.get_type_hints(DistillConfig)
    return coerce(f"distill.{key}", value, hints[key], from_string=True)


__all__ = ["DistillConfig", "validate_distill", "distill_config_from_dict", "coerce_option", "METHODS"]
