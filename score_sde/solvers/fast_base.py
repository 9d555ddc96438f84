"""The shared ground of the fast samplers: the denoiser / half-log-SNR view, its Taylor weights, the
per-run tables (typed state) and the final-step policy.

In x~ = x / alpha and lambda = ln(alpha / sigma) (half the log-SNR) the probability-flow ODE of every
linear SDE is (Lu et al. 2022b, DPM-Solver++, data-prediction form)

    d x~ / d lambda = D(x~, lambda) - x~,        D = E[x_0 | x_t] = (x + sigma^2 s) / alpha,

and its exact solution from lambda_s to lambda_t = lambda_s + h (h > 0 when denoising) is

    x~_t = e^{-h} x~_s + int_0^h e^{-(h - tau)} D(lambda_s + tau) dtau.                        (1)

Expanding D in Taylor series around lambda_s gives the coefficients

    c_k(h) = int_0^h e^{-(h - tau)} tau^k / k! dtau,  c_0 = 1 - e^{-h},  c_k = h^k / k! - c_{k-1},   (2)

so x~_t = e^{-h} x~_s + sum_k c_k(h) D^{(k)}(lambda_s). Every fast solver is a choice of how to
approximate the derivatives D^{(k)} from denoiser evaluations; the families live in their own modules:
:mod:`~score_sde.solvers.ddim`, :mod:`~score_sde.solvers.dpm_solver` (singlestep),
:mod:`~score_sde.solvers.multistep` (DPM-Solver++ 2M/3M, UniPC), :mod:`~score_sde.solvers.sde_dpm`
(SDE-DPM-Solver++(2M)) and :mod:`~score_sde.solvers.edm` (Heun / EDM / Restart).

The denoiser comes from the problem's denoiser view (:meth:`ExpStepper.predict_at`,
:mod:`score_sde.solvers.denoiser`), one evaluation per call: the network's own x_0 (or eps, for the methods
written in eps: DPM-Solver) when the score is a :class:`~score_sde.score.ScoreModel` predicting it, with no
score <-> denoiser round trip, and Tweedie's D = (x + sigma^2 s) / alpha for a plain score function.
The run's state is kept where the papers keep it: the tables of lambda_i (and alpha_i, sigma_i) of
:class:`ExpState`, the multistep history as (lambda, D) pairs, EDM's steps in sigma~ = e^{-lambda}.

Final-step policy (option ``final``; grids are descending times ending at ``eps``):

- ``"step"`` (default): the last step is a normal step of the solver to eps (sigma_min);
- ``"euler"``: the last step is a first-order (DDIM / Euler-in-sigma~) step to eps;
- ``"denoise"``: the last step is a denoising step to time 0: it returns x^_0 = D(x, t_{N-1}) at the
  last time. ``ss.sample`` then builds ``steps - 1`` grid steps from T to eps and appends t = 0,
  so NFE stays equal to ``stepper.nfe(steps)``.

Grids: any kind of :func:`~score_sde.solvers.grids.make_grid` or a tensor of times, plus ``"auto"``
(the default of ``ddim``, ``dpmpp_*`` and ``unipc``): time-quadratic on VP / sub-VP, logSNR-uniform
otherwise (measured best on the DDPM table by ``benchmarks/sampler_error_vs_nfe.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import StatefulStepper, StepOutput
from .denoiser import Prediction
from .grids import make_grid
from .problem import Problem

FINALS = ("step", "euler", "denoise")


def taylor_weights(h: float, K: int) -> list[float]:
    """c_0..c_K of eq. (2): c_k(h) = int_0^h e^{-(h - tau)} tau^k / k! dtau (h > 0)."""
    c = [-math.expm1(-h)]
    for k in range(1, K + 1):
        c.append(h**k / math.factorial(k) - c[-1])
    return c


def sigma_tilde(lam: float) -> float:
    """sigma~ = sigma / alpha = e^{-lambda} (0 at the appended t = 0 of a ``"denoise"`` grid, lambda = inf)."""
    return 0.0 if lam == math.inf else math.exp(-lam)


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {name} = {value!r}")


def check_number(name: str, value, lo: float = 0.0, hi: float = math.inf, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number; got {name} = {value!r}")
    v = float(value)
    if not (lo <= v <= hi) or (lo_open and v == lo) or math.isinf(v):
        raise ValueError(f"{name} must lie in {'(' if lo_open else '['}{lo}, {hi}]; got {name} = {value!r}")
    return v


def check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be an integer {rng}; got {name} = {value!r}")
    return value


@dataclass
class ExpState:
    """Tables of the run's grid t_0 > ... > t_n in the exponential-integrator variables, float64 as
    Python floats: ``lam`` = lambda_i, ``alpha`` = alpha(t_i), ``sigma`` = sigma(t_i); ``steps`` = n.
    Methods that carry more (a history) subclass it."""

    lam: list
    alpha: list
    sigma: list
    steps: int


class ExpStepper(StatefulStepper):
    """Base of the samplers in (x~, lambda): grid tables, the denoiser, the final policy.

    ``init`` tabulates, once per run and in float64, lambda_i, alpha_i and sigma_i of the grid
    (the final t = 0 of a ``"denoise"`` grid gets lambda = +inf, sigma~ = 0) into ``State``
    (:class:`ExpState` or a subclass, whose extra fields have defaults).
    """

    final: str = "step"
    State = ExpState

    def __init__(self, final: str = "step"):
        check_choice("final", final, FINALS)
        self.final = final

    # -- grid -----------------------------------------------------------------------------------
    def build_grid(self, sde, kind, steps: int, eps: float) -> torch.Tensor:
        """Grid for ``steps`` steps. With ``final="denoise"`` the last step is the denoising step
        to t = 0, so ``steps - 1`` steps run from T to eps and t = 0 is appended.

        ``kind="auto"`` (:func:`make_grid`; the default of the multistep samplers and DDIM): time-quadratic
        on VP and sub-VP schedules, logSNR-uniform otherwise (VE, general). On the DDPM table the time-quadratic
        grid gave the lowest error at 5-50 NFE in ``benchmarks/sampler_error_vs_nfe.py``; on VE the
        time-quadratic grid is worse than the logSNR-uniform one (VE time is already log sigma).
        """
        if self.final != "denoise" or not isinstance(kind, str):
            return make_grid(sde, kind, steps, eps)
        if steps == 1:
            return torch.tensor([sde.T, 0.0], dtype=torch.float64)
        g = make_grid(sde, kind, steps - 1, eps)
        return torch.cat([g, g.new_zeros(1)])

    def nfe(self, steps: int) -> int:
        return steps * self.nfe_per_step - (self.nfe_per_step - 1 if self.final == "denoise" else 0)

    def init(self, problem: Problem, x: torch.Tensor) -> ExpState:
        if problem.grid is None:
            raise ValueError(f"{self.name} steps along a grid: run it through ss.sample (problem.grid is None)")
        sde, g = problem.sde, problem.grid.to(torch.float64)
        lam = sde.log_snr(g)
        if self.final == "denoise":
            lam[-1] = math.inf  # the appended t = 0
        state = self.State(lam=lam.tolist(), alpha=sde.alpha(g).tolist(), sigma=sde.sigma(g).tolist(),
                           steps=g.numel() - 1)  # fmt: skip
        self.prepare(state)
        return state

    def prepare(self, state: ExpState) -> None:
        """Fill a subclass's extra state fields from the tables (default: nothing)."""

    def is_final_denoise(self, state: ExpState, i: int) -> bool:
        return self.final == "denoise" and i == state.steps - 1

    # -- the denoiser view -----------------------------------------------------------------------
    def predict_at(self, problem: Problem, state: ExpState | None, x: torch.Tensor, t: torch.Tensor,
                   i: int | None = None) -> Prediction:  # fmt: skip
        """One (counted) evaluation of the model at x [B, ...], time t: grid point i (alpha, sigma from the
        run's float64 tables) or any time (i = None). Its views (:class:`~score_sde.solvers.denoiser.Prediction`):
        ``.x0`` = D(x, t), ``.eps``, ``.noise(x~, sigma~)``, each the network's own output where it predicts
        that quantity, else one conversion (Tweedie's (x + sigma^2 s) / alpha for a plain score)."""
        if i is None:
            a, sig = float(problem.sde.alpha(t)), float(problem.sde.sigma(t))
            return problem.predict(x, problem.tvec(t, x), a, sig)
        return problem.predict(x, problem.time_at(i, t, x), state.alpha[i], state.sigma[i])

    def denoise_at(self, problem: Problem, state: ExpState | None, x: torch.Tensor, t: torch.Tensor,
                   i: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """(D, s) of :meth:`predict_at`, for steppers written against earlier versions (s is converted
        from the network's prediction when it is not a score)."""
        pred = self.predict_at(problem, state, x, t, i)
        return pred.x0, pred.score

    @staticmethod
    def x0_of(problem: Problem, pred: Prediction) -> torch.Tensor | None:
        """A step's x_0 estimate for its :class:`StepOutput`: D when the step formed it (or the network gave
        it), else formed only when the observer records or calls back (``problem.observed``)."""
        return pred.x0 if problem.observed else pred.formed_x0

    @staticmethod
    def out(x_next: torch.Tensor, D: torch.Tensor, mean: torch.Tensor | None = None) -> StepOutput:
        return StepOutput(x_next, x_next if mean is None else mean, x0=D)


__all__ = ["FINALS", "taylor_weights", "sigma_tilde", "ExpState", "ExpStepper"]
