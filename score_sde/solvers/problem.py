"""The problem every method of the integrator core reads: the SDE, the counted score, the equation.

A :class:`Problem` is what is solved, apart from how (the method) and what is watched (the
observer, :mod:`score_sde.solvers.observer`):

- the forward SDE ``dx = f(t) x dt + g(t) dw`` (:class:`~score_sde.sde.base.LinearSDE`);
- the score s(x, t) = grad log p_t(x), counted (:class:`CountingScore`; guidance transforms such as
  classifier-free guidance are score functions themselves, so they enter here) and its condition;
- which equation runs backwards from T: the reverse SDE (Song et al. 2021, eq. 6),
  ``dx = [f x - g^2 s] dt + g dw~``, or the probability-flow ODE (eq. 13), ``dx/dt = f x - 1/2 g^2 s``;
- the random numbers (``generator``: None, one ``torch.Generator`` or one per sample);
- for a fixed-grid run, the grid (descending times) and the tables derived from it once
  (:meth:`Problem.coefficients`, :meth:`Problem.chain_coefficients`, the [B] time tensors).

Views of the score the methods share: :meth:`Problem.tweedie` (the denoiser D = (x + sigma^2 s) / alpha,
Efron/Tweedie) and :meth:`Problem.drift` (the right-hand side of eq. 6 or eq. 13).

The denoiser view the fast samplers read: :meth:`Problem.x0` (D(x, t)), :meth:`Problem.eps` and, for both
from one evaluation, :meth:`Problem.predict` (a :class:`~score_sde.solvers.denoiser.Prediction`). They call
the network's own prediction when the score is a :class:`~score_sde.score.ScoreModel` predicting x0, eps, v
or velocity (no score <-> denoiser round trip) and convert the score only for a plain score function.

``Context`` is the same class under the name user-written steppers of earlier versions know; its
``state`` dict is kept for them only (built-in methods keep typed state, see :mod:`score_sde.solvers.base`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..score import convert
from ..sde.base import LinearSDE
from ..utils import Generator, ScoreGuard, bcast, randn_like
from .coefficients import GridCoefficients, chain_table
from .constants import kept
from .denoiser import Prediction, native_prediction

EQUATIONS = ("reverse_sde", "probability_flow")
EXACT_SCALAR_DTYPES = (torch.float32, torch.float64)  # where a 0-d CPU tensor multiplies like a Python float


class CountingScore:
    """Wrap ``score_fn(x, t[, cond])`` and count its calls (network function evaluations); the output's
    shape is checked here unless ``score_fn`` is a :class:`~score_sde.utils.ScoreGuard`, which checks it."""

    def __init__(self, score_fn: Callable, cond: Any = None):
        self.fn, self.cond, self.nfe = score_fn, cond, 0
        self._checked = isinstance(score_fn, ScoreGuard)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        out = self.fn(x, t) if self.cond is None else self.fn(x, t, self.cond)
        if not self._checked and out.shape != x.shape:
            raise ValueError(f"score_fn returned shape {tuple(out.shape)} for x of shape {tuple(x.shape)}")
        return out

    def predict(self, x: torch.Tensor, t: torch.Tensor, sde: LinearSDE) -> tuple[torch.Tensor, str]:
        """One counted evaluation in the model's own terms: ``(out, kind)``, the network's native prediction
        when ``score_fn`` offers one for ``sde``'s schedule (:func:`~score_sde.solvers.denoiser.native_prediction`,
        looked up once per SDE), else ``(score(x, t), "score")``. x [B, ...], t [B]."""
        if getattr(self, "_native_sde", None) is not sde:
            self._native_sde, self._native = sde, native_prediction(self.fn, sde)
        raw = self._native
        if raw is None:
            return self(x, t), "score"
        self.nfe += 1
        out, kind = raw(x, t) if self.cond is None else raw(x, t, self.cond)
        if out.shape != x.shape:
            raise ValueError(f"the model returned shape {tuple(out.shape)} for x of shape {tuple(x.shape)}")
        return out, kind


@dataclass(eq=False)
class Problem:
    """The SDE, the counted score ``score(x, t_vec)`` (t_vec [B]), the RNG, the equation, the run's grid.

    Attributes:
        sde: the forward SDE.
        score: a :class:`CountingScore` (its ``cond`` is the condition); call it as ``score(x, t_vec)``.
        generator: None, a torch.Generator, or one per sample; draw with :meth:`randn_like`.
        grid: the descending grid of a fixed-grid run (None outside one).
        equation: ``"reverse_sde"`` or ``"probability_flow"`` (the adaptive back-ends' choice; a fixed-grid
            stepper's own rule decides for itself).
        observed: True when the observer records or calls back, so steps form their x_0 estimate.
    """

    sde: LinearSDE
    score: CountingScore
    generator: Generator = None
    grid: torch.Tensor | None = None
    equation: str = "reverse_sde"
    observed: bool = False
    tvecs: tuple | None = None  # grid[i] as [B] tensors in the data dtype, set by the driver
    times: tuple | None = None  # grid[i] as 0-d tensors (the grid's dtype), set by the driver
    _coefficients: GridCoefficients | None = field(default=None, repr=False)
    _grid_key: tuple | None = field(default=None, repr=False)
    _chain: tuple | None = field(default=None, repr=False)
    _state: dict | None = field(default=None, repr=False)
    _tables: dict | None = field(default=None, repr=False)  # per_step's tables of this run, by rule
    _scalar_dtype: torch.dtype | None = field(default=None, repr=False)  # their 0-d tensors' dtype (None: floats)
    _cpu_generator: torch.Generator | None = field(default=None, repr=False)  # the generator, known to be a CPU one

    def __post_init__(self):
        if self.equation not in EQUATIONS:
            raise ValueError(f"equation must be one of {EQUATIONS}; got equation = {self.equation!r}")

    @property
    def cond(self):
        """The condition handed to the score (None: unconditional)."""
        return getattr(self.score, "cond", None)

    @property
    def state(self) -> dict:
        """A scratch dict for user-written steppers of the earlier ``ctx.state`` form (built-ins do not use it)."""
        if self._state is None:
            self._state = {}
        return self._state

    # -- random numbers and times ----------------------------------------------------------------
    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """Standard normal draws like x from the problem's generator(s) (:func:`score_sde.utils.randn_like`)."""
        g = self.generator
        if g is not None and g is self._cpu_generator and x.is_cpu:  # the common case, drawn directly
            return torch.randn(x.shape, generator=g, dtype=x.dtype)
        if isinstance(g, torch.Generator) and g.device.type == "cpu":
            self._cpu_generator = g
        return randn_like(x, g)

    def tvec(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A time as a [B] tensor in x's dtype."""
        return t.to(device=x.device, dtype=x.dtype).expand(x.shape[0])

    def time_at(self, i: int | None, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``grid[i]`` (= ``t``) as a [B] tensor in x's dtype, cached by the driver (no per-step allocation);
        ``i = None`` (a step called outside a run): ``t`` as a fresh [B] tensor."""
        if self.tvecs is not None and i is not None:
            tv = self.tvecs[i]
            if tv.shape[0] == x.shape[0]:
                return tv
        return self.tvec(t, x)

    def set_grid(self, grid: torch.Tensor, x: torch.Tensor) -> None:
        """Make ``grid`` (descending, len steps + 1) the run's grid for states like x [B, ...]; its 0-d times
        (:attr:`times`) and [B] time vectors (:attr:`tvecs`) come from :mod:`~score_sde.solvers.constants`."""
        self.grid, self._coefficients, self._chain, self._tables = grid, None, None, {}
        self._grid_key = (grid.dtype, str(grid.device), tuple(grid.tolist()))
        self.times = kept(("times", self._grid_key), lambda: grid.unbind(0))
        self.tvecs = kept(
            ("tvecs", self._grid_key, x.dtype, str(x.device), x.shape[0]),
            lambda: grid.to(device=x.device, dtype=x.dtype)[:, None].expand(-1, x.shape[0]).unbind(0),
        )
        self._scalar_dtype = x.dtype if x.device.type == "cpu" and x.dtype in EXACT_SCALAR_DTYPES else None

    # -- tables of the grid, built once per run ---------------------------------------------------
    def coefficients(self, t: torch.Tensor, t_next: torch.Tensor, i: int | None) -> tuple[GridCoefficients, int]:
        """The coefficient table of the run's grid and the index of the step ``t -> t_next``.

        Inside a run (``grid`` set) ``i`` indexes the table of the grid, built on first use; a step called
        on its own (``grid is None`` or ``i is None``) gets a one-step table of ``(t, t_next)`` and index 0.
        """
        if self.grid is None or i is None:
            return GridCoefficients.build(self.sde, torch.stack([torch.as_tensor(t), torch.as_tensor(t_next)])), 0
        if self._coefficients is None:
            self._coefficients = GridCoefficients.build(self.sde, self.grid)
        return self._coefficients, i

    def per_step(self, rule: Callable, t: torch.Tensor, t_next: torch.Tensor, i: int | None, x: torch.Tensor) -> tuple:
        """A stepper's scalars of the step ``t -> t_next``: ``rule(problem, t, t_next, i)``, a tuple of Python
        floats formed from :meth:`coefficients` / :meth:`chain_coefficients`.

        Inside a run ``rule`` is evaluated once per grid step, on first use (it is then called with
        ``t = t_next = None`` and reads the tables by ``i``), and the step's row is looked up. For CPU data in
        float32 / float64 the rows are 0-d tensors in x's dtype: multiplying x by one gives the same numbers as
        by the Python float (which torch rounds to x's dtype all the same) without wrapping a number into a
        tensor at every operation. Outside a run (or for another dtype) the floats themselves."""
        tables = self._tables
        if tables is None or i is None:
            return rule(self, t, t_next, i)
        rows = tables.get(rule)
        if rows is None:
            floats = tuple(rule(self, None, None, k) for k in range(self.grid.numel() - 1))
            dtype = self._scalar_dtype
            rows = tables[rule] = (floats, kept(("scalars", dtype, floats), lambda: _as_scalars(floats, dtype)))
        return rows[1][i] if x.dtype is self._scalar_dtype else rows[0][i]

    def chain_coefficients(self, t: torch.Tensor, i: int | None) -> tuple[float, float]:
        """(f_i / x, G_i) of the SDE's own chain step at grid time t (``sde.discretize``), tabulated once per
        run on the CPU in float64."""
        if self.grid is None or i is None:
            f, G = chain_table(self.sde, torch.as_tensor(t))
            return f[0], G[0]
        if self._chain is None:
            self._chain = chain_table(self.sde, self.grid[:-1])
        return self._chain[0][i], self._chain[1][i]

    # -- views of the score -----------------------------------------------------------------------
    def tweedie(self, x: torch.Tensor, tv: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """x_0 estimate D = (x + sigma(t)^2 s) / alpha(t) from a score value s at (x, tv) (Efron/Tweedie);
        x, s [B, ...], tv [B]."""
        t = tv.to(x.dtype)
        return convert(s, x, self.sde.alpha(t), self.sde.sigma(t), "score", "x0")

    # -- the denoiser view (the fast samplers) ------------------------------------------------------
    def predict(self, x: torch.Tensor, tv: torch.Tensor, alpha=None, sigma=None) -> Prediction:
        """One counted evaluation at x [B, ...], times tv [B], as a :class:`~score_sde.solvers.denoiser.Prediction`
        (``.x0`` the denoiser D, ``.eps``, ``.noise(x~, sigma~)``), from the network's own prediction when it has
        one. ``alpha``, ``sigma``: alpha(t), sigma(t) as Python floats when the caller holds them (a grid's
        float64 tables); by default the SDE's at tv, in x's dtype."""
        predict = getattr(self.score, "predict", None)
        out, kind = predict(x, tv, self.sde) if predict is not None else (self.score(x, tv), "score")
        if alpha is None or sigma is None:
            t = tv.to(x.dtype)
            alpha, sigma = bcast(self.sde.alpha(t), x), bcast(self.sde.sigma(t), x)
        return Prediction(x, out, kind, alpha, sigma, tv, self.sde)

    def x0(self, x: torch.Tensor, tv: torch.Tensor) -> torch.Tensor:
        """The denoiser D(x, t) = E[x_0 | x_t = x] (one counted evaluation; x [B, ...], tv [B]): an x0 network's
        output unchanged, one conversion from eps / v / velocity, or Tweedie's (x + sigma^2 s) / alpha."""
        return self.predict(x, tv).x0

    def eps(self, x: torch.Tensor, tv: torch.Tensor) -> torch.Tensor:
        """The noise estimate eps^ (one counted evaluation; x [B, ...], tv [B]): an eps network's output
        unchanged, else (x - alpha D) / sigma, or -sigma s for a score."""
        return self.predict(x, tv).eps

    def drift(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The right-hand side of the problem's equation at a 0-d time t (one score call):
        f(t) x - g(t)^2 s (reverse SDE, eq. 6) or f(t) x - 1/2 g(t)^2 s (probability flow, eq. 13); x [B, ...]."""
        t = torch.as_tensor(t, dtype=torch.float64)
        tv = t.to(device=x.device, dtype=x.dtype).expand(x.shape[0])
        pf = self.equation == "probability_flow"
        return self.sde.reverse_drift(x, t, self.score(x, tv), probability_flow=pf)


def _as_scalars(rows: list, dtype: torch.dtype | None) -> list:
    """Rows of Python floats (one tuple per step) as rows of 0-d CPU tensors of ``dtype`` (None: as given)."""
    if dtype is None or not rows:
        return rows
    columns = torch.tensor(rows, dtype=torch.float64).to(dtype).unbind(1)
    return list(zip(*(c.unbind(0) for c in columns)))


Context = Problem  # the name of earlier versions, kept for user-written steppers

__all__ = ["Problem", "Context", "CountingScore", "EQUATIONS"]
