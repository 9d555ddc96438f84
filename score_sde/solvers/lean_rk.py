"""torchdiffeq's adaptive Runge–Kutta solvers with a lean stage combination (the ``ode`` sampler's and the
likelihood's ``dopri5``, ``dopri8``, ``bosh3``, ``fehlberg2``, ``adaptive_heun``).

An explicit Runge–Kutta step of s stages from (t0, y0) with step h forms (Butcher tableau c, A, b, b^):

    k_1 = f(t0, y0),   k_i = f(t0 + c_i h, y0 + h sum_{j<i} a_ij k_j)          (i = 2..s)
    y1 = y0 + h sum_j b_j k_j,   err = h sum_j (b_j - b^_j) k_j,

for ``dopri5`` the Dormand–Prince 5(4) pair (Dormand & Prince 1980, with Shampine's dense-output midpoint),
whose last stage is evaluated at y1 itself ("first same as last": k_s = f(t1, y1) starts the next step).

torchdiffeq keeps the stages as the last axis of one tensor k [n, s] and forms every stage's argument as
``torch.sum(k[..., :i] * (a_i h), dim=-1)``: each stage a strided product, a temporary of n x i entries and a
reduction over the innermost axis of length <= s (large enough, at n = 8320 for the likelihood's flat state, to
be split over the threads, which on a busy machine waits for the slowest). Here the stages are the rows of a
contiguous buffer K [s, n] and every combination is one matrix-vector product, ``y0 + K[:i]^T (a_i h)``
(``torch.addmv``), and likewise the error estimate and the midpoint of the dense output. The solver's own time
per call on that state, against torchdiffeq's, is the last line of ``benchmarks/likelihood_overhead.py``'s output
(benchmarks/results/likelihood_overhead_runs.txt).

What is torchdiffeq's and what is ours. torchdiffeq's, called as they are: the tableaus, the input checks and
normalisation (``_check_inputs``: tuple states, reversed time, the default norm, the callbacks), the first-step
selection, the error ratio (``_compute_error_ratio``: the given norm of err / (atol + rtol max(|y0|, |y1|))), the
step-size update (``_optimal_step_size``), the interpolation (``_interp_fit``, ``_interp_evaluate``) and the loop
over the requested output times. Ours:

- :meth:`_LeanStages._adaptive_step`: torchdiffeq forms the stages inside its adaptive step (a module function,
  not a method), so the step is restated around the lean stages with torchdiffeq's decisions in torchdiffeq's
  order (h clamped to [min_step, max_step], its checks that t advances and that the state is finite, the latter
  by one sum unless that sum is not finite, landing on ``step_t`` / ``jump_t``, accept when the error ratio is
  <= 1 or h is at a positive min_step, the next step size);
- two stage buffers kept for the solve (a fresh one per step would be paged in anew), the step writing into the
  one the last accepted step did not fill;
- the dense output of an accepted step fitted when first read (:class:`_DenseOutput`; torchdiffeq fits every
  step, an adaptive solve to one end time reads only its last);
- the time perturbation at a step's end (:class:`_LeanPerturb`) without torchdiffeq's per-call module and
  autograd function.

Only the order of the floating-point sums inside a stage changes: states differ from torchdiffeq's at the level
of round-off and the accepted and rejected steps are the same (tests/test_ode_lean.py: within 1e-12 in float64;
the next step size follows the error estimate, a sum with cancellation, so it agrees to ~1e-8 relative where that
estimate is far below the tolerance). Where an autograd graph runs through the solve (y0, f0 or a stage requiring
grad), or for dtypes other than float32 / float64 (``torch.addmv`` on half precision), the step is torchdiffeq's
own, unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

try:  # torchdiffeq's internals this layer builds on (present since torchdiffeq 0.2)
    from torchdiffeq._impl.interp import _interp_fit
    from torchdiffeq._impl.misc import Perturb, _check_inputs, _compute_error_ratio, _flat_to_shape, _optimal_step_size
    from torchdiffeq._impl.odeint import SOLVERS
    from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver, _RungeKuttaState
except ImportError:  # pragma: no cover - another torchdiffeq layout: torchdiffeq.odeint as it is
    SOLVERS = None

_LEAN_DTYPES = (torch.float32, torch.float64)


class _LeanStages:
    """Mixin for a torchdiffeq ``RKAdaptiveStepsizeODESolver``: the adaptive step with the stages as the rows of
    K [s, n] (see the module docstring); everything else is the solver's."""

    def _lean_tableau(self):
        """The tableau as the lean step uses it (made once, in the state's dtype and on its device): the nodes
        c_2..c_s [s-1] and which of them are 1, all rows a_i of A side by side [s(s-1)/2] with each row's slice,
        b, b - b^ and the midpoint weights [s], and whether y1 is the last stage's argument (first same as last)."""
        if getattr(self, "_lean", None) is None:
            tab = self.tableau  # torchdiffeq's, already in y0's dtype and on its device
            ends = [bool(c == 1.0) for c in tab.alpha]
            rows, start = [], 0
            for a in tab.beta:
                rows.append(slice(start, start + a.numel()))
                start += a.numel()
            fsal = bool(tab.c_sol[-1] == 0) and bool((tab.c_sol[:-1] == tab.beta[-1]).all())
            self._lean = (tab.alpha, ends, torch.cat(tab.beta), rows, tab.c_sol, tab.c_error, self.mid, fsal)
        return self._lean

    def _adaptive_step(self, rk_state):
        """One attempted step from rk_state (y0, f0 = f(t0, y0), t0, step dt): torchdiffeq's decisions, lean stages."""
        y0, f0, _, t0, dt, interp_coeff = rk_state
        grad = torch.is_grad_enabled() and (y0.requires_grad or f0.requires_grad)
        if grad or y0.dtype not in _LEAN_DTYPES:
            return super()._adaptive_step(rk_state)
        if not math.isfinite(dt.item()):
            dt = self.min_step
        dt = dt.clamp(self.min_step, self.max_step)
        self.func.callback_step(t0, y0, dt)
        t1 = t0 + dt
        # torchdiffeq's two checks (odeint_clamped turns them into an ODESolveError that says why); NaN/inf makes
        # the sum non-finite, so the entrywise test runs only then
        assert t1 > t0, f"underflow in dt {dt.item()}"
        if not math.isfinite(y0.sum(dtype=torch.float64).item()):
            assert torch.isfinite(y0).all(), f"non-finite values in state `y`: {y0}"
        on_step_t = on_jump_t = False
        if len(self.step_t):  # land on the next prescribed time, then on the next jump (it takes precedence)
            nxt = self.step_t[self.next_step_index]
            on_step_t = bool(t0 < nxt < t1)
            if on_step_t:
                t1, dt = nxt, nxt - t0
        if len(self.jump_t):
            nxt = self.jump_t[self.next_jump_index]
            on_jump_t = bool(t0 < nxt < t0 + dt)
            if on_jump_t:
                on_step_t, t1, dt = False, nxt, nxt - t0
        staged = self._lean_step(y0, f0, t0, dt, t1)
        if staged is None:  # a stage came back with an autograd graph: redo the step as torchdiffeq does
            return super()._adaptive_step(rk_state)
        y1, f1, y1_err, K = staged
        error_ratio = _compute_error_ratio(y1_err, self.rtol, self.atol, y0, y1, self.norm)
        accept = bool(error_ratio <= 1)
        bounded_above, bounded_below = self._lean_bounds()
        if bounded_above and dt > self.max_step:
            accept = False
        if bounded_below and dt <= self.min_step:  # dt > 0 here (t0 < t1): only a positive min_step can hold
            accept = True
        if accept:
            self.func.callback_accept_step(t0, y0, dt)
            interp_coeff, self._lean_kept = _DenseOutput(self._lean_interp, y0, y1, K, dt), K
            if on_step_t and self.next_step_index != len(self.step_t) - 1:
                self.next_step_index += 1
            if on_jump_t:
                if self.next_jump_index != len(self.jump_t) - 1:
                    self.next_jump_index += 1
                f1 = self.func(t1, y1, perturb=Perturb.NEXT)  # f on the far side of the discontinuity
            y_next, f_next, t_next = y1, f1, t1
        else:
            self.func.callback_reject_step(t0, y0, dt)
            y_next, f_next, t_next = y0, f0, t0
        dt_next = _optimal_step_size(dt, error_ratio, self.safety, self.ifactor, self.dfactor, self.order)
        dt_next = dt_next.clamp(self.min_step, self.max_step)
        return _RungeKuttaState(y_next, f_next, t0, t_next, dt_next, interp_coeff)

    def _lean_bounds(self) -> tuple[bool, bool]:
        """Whether max_step is finite and min_step positive (made once): torchdiffeq's defaults, inf and 0, never
        change a decision."""
        if getattr(self, "_lean_bounded", None) is None:
            self._lean_bounded = (bool(torch.isfinite(self.max_step)), bool(self.min_step > 0))
        return self._lean_bounded

    def _lean_step(self, y0, f0, t0, dt, t1):
        """(y1, f1, err, K) of one Runge–Kutta step (eqs. in the module docstring), K [s, n] the stages as rows;
        None if a stage requires grad. Times in y0's dtype as torchdiffeq forms them (t0 + c_i h; t1 for c_i = 1,
        approached from below: ``Perturb.PREV``), all stages' c_i h and a_ij h by one product each."""
        c, ends, a, rows, b, b_err, _, fsal = self._lean_tableau()
        t0, dt, t1 = t0.to(y0.dtype), dt.to(y0.dtype), t1.to(y0.dtype)
        times, a_h = t0 + c * dt, a * dt
        y0f = y0.reshape(-1)
        K, firsts, k = self._lean_buffer(f0, (len(rows) + 1, y0f.numel()))
        k[0].copy_(f0.reshape(-1))
        yi = y0
        for i, (at_end, row) in enumerate(zip(ends, rows)):
            ti, perturb = (t1, Perturb.PREV) if at_end else (times[i], Perturb.NONE)
            yi = torch.addmv(y0f, firsts[i], a_h[row]).view_as(y0)
            f = self.func(ti, yi, perturb=perturb)
            if f.requires_grad and torch.is_grad_enabled():
                return None
            k[i + 1].copy_(f.reshape(-1))
        y1 = yi if fsal else torch.addmv(y0f, K.t(), dt * b).view_as(y0)
        err = torch.mv(K.t(), dt * b_err).view_as(y0)
        return y1, K[-1].view_as(y0), err, K

    def _lean_buffer(self, f0, shape):
        """(K, [K[:i]^T], [K[i]]): the stage buffer K [s, n] of this step with its views, of two buffers the one the
        last accepted step did not fill (its last row is f0 of this step, unless a jump renewed f0, and its rows are
        read by that step's dense output, :class:`_DenseOutput`). Fresh buffers of this size would be paged in anew
        at every step."""
        bufs = getattr(self, "_lean_bufs", None)
        if bufs is None or bufs[0][0].shape != shape or bufs[0][0].dtype != f0.dtype or bufs[0][0].device != f0.device:
            Ks = (f0.new_empty(shape), f0.new_empty(shape))
            bufs = self._lean_bufs = [(K, [K[: i + 1].t() for i in range(shape[0])], list(K.unbind(0))) for K in Ks]
            self._lean_kept = None
        return bufs[1] if self._lean_kept is bufs[0][0] else bufs[0]

    def _lean_interp(self, y0, y1, K, dt):
        """torchdiffeq's quartic dense output through (y0, f0), the midpoint y0 + K^T (h mid) and (y1, f1)."""
        dt = dt.type_as(y0)
        y_mid = torch.addmv(y0.reshape(-1), K.t(), dt * self.mid).view_as(y0)
        return _interp_fit(y0, y1, y_mid, K[0].view_as(y0), K[-1].view_as(y0), dt)


class _DenseOutput:
    """The coefficients of torchdiffeq's dense output on an accepted step (``_interp_fit``), fitted when first read:
    torchdiffeq evaluates only the step that holds a requested output time (an adaptive solve to one end time reads
    its last step only), and fits every step. Indexing and slicing as the list torchdiffeq's fit returns."""

    def __init__(self, fit: Callable, *args):
        self._fit, self._args, self._coeffs = fit, args, None

    def _fitted(self) -> list:
        if self._coeffs is None:
            self._coeffs, self._args = self._fit(*self._args), None
        return self._coeffs

    def __getitem__(self, i):
        return self._fitted()[i]

    def __len__(self) -> int:
        return len(self._fitted())

    def __iter__(self):
        return iter(self._fitted())


class _LeanPerturb:
    """torchdiffeq's ``_PerturbFunc`` (the time cast to the state's dtype and, for ``Perturb.PREV`` / ``NEXT``, moved
    to the neighbouring float, so that a stage at a step's end sees the left limit of a jump) at the cost of those
    two operations: torchdiffeq's wrapper takes |y| for the dtype, goes through ``nn.Module`` and an autograd
    function per call. Where t requires grad or y is complex the call is torchdiffeq's wrapper's own. Other
    attributes (the step callbacks) are the wrapped one's."""

    def __init__(self, perturb_func):
        self.inner, self.base_func = perturb_func, perturb_func.base_func

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, t, y, *, perturb=None):
        perturb = Perturb.NONE if perturb is None else perturb
        if t.requires_grad or y.is_complex():
            return self.inner(t, y, perturb=perturb)
        t = t.to(y.dtype)
        if perturb is Perturb.NEXT:
            t = torch.nextafter(t, t + 1)
        elif perturb is Perturb.PREV:
            t = torch.nextafter(t, t - 1)
        return self.base_func(t, y)


def _lean_solvers() -> dict:
    """torchdiffeq's method table with each adaptive Runge–Kutta solver replaced by its lean subclass."""
    table = dict(SOLVERS)
    for name, cls in SOLVERS.items():
        if isinstance(cls, type) and issubclass(cls, RKAdaptiveStepsizeODESolver):
            table[name] = type(f"Lean{cls.__name__}", (_LeanStages, cls), {"__doc__": _LeanStages.__doc__})
    return table


LEAN_SOLVERS = _lean_solvers() if SOLVERS is not None else None


def odeint_lean(func: Callable, y0, t: torch.Tensor, *, rtol, atol, method: str, options: dict | None = None):
    """``torchdiffeq.odeint(func, y0, t, rtol=rtol, atol=atol, method=method, options=options)`` (no events) with
    the adaptive Runge–Kutta methods taking lean steps: torchdiffeq's input handling (``_check_inputs``), the lean
    solver class in place of torchdiffeq's, and torchdiffeq's reshaping of a tuple state. Returns the states at
    ``t`` [len(t), ...] (a tuple for a tuple y0), as torchdiffeq does."""
    if LEAN_SOLVERS is None:  # pragma: no cover
        import torchdiffeq

        return torchdiffeq.odeint(func, y0, t, rtol=rtol, atol=atol, method=method, options=options)
    shapes, func, y0, t, rtol, atol, method, options, _, _ = _check_inputs(
        func, y0, t, rtol, atol, method, options, None, LEAN_SOLVERS
    )
    solver = LEAN_SOLVERS[method]
    if issubclass(solver, _LeanStages):
        func = _LeanPerturb(func)
    solution = solver(func=func, y0=y0, rtol=rtol, atol=atol, **options).integrate(t)
    if shapes is not None:
        solution = _flat_to_shape(solution, (len(t),), shapes)
    return solution
