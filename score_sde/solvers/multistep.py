"""Multistep exponential integrators in data prediction: DPM-Solver++(2M/3M) (Lu et al. 2022b, Alg. 2)
and UniPC (Zhao et al. 2023, Alg. 1-2), in the denoiser / half-log-SNR view (eqs. (1)-(2) of
:mod:`score_sde.solvers.fast_base`).

``lower_order_final``: the last steps use order min(order, steps left) (DPM-Solver++ and UniPC's
recipe for stability at low NFE); ``lower_order_final_below = n`` applies it only when the run has
fewer than n steps (diffusers' DPMSolverMultistep uses 15). A fixed number of steps with local error
O(h^m) adds O(h^m) to the global error, so the classic multistep start (a first-order first step) and
a first-order last step cap the *asymptotic* order at 2; ``first_step="singlestep"`` and
``lower_order_final=False`` remove the caps (tests/test_fast_samplers.py measures both). Third-order
weights: the second divided difference D2 = h^2 D''/2 carries 2! c_2(h) / h^2 here (as in UniP-3);
k-diffusion's and diffusers' DPM-Solver++(3M) use half that weight, so they are not this ``dpmpp_3m``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .dpm_solver import DPMSolver
from .fast_base import ExpState, ExpStepper, check_choice, check_int, taylor_weights


@dataclass
class MultistepState(ExpState):
    """The grid tables plus the denoiser history ``hist`` = [(lambda, D), ...] (most recent first) and
    ``prev`` = (x~_s, lambda_s, D_s, p) of the last predictor step, for UniC."""

    hist: list = field(default_factory=list)
    prev: tuple | None = None


def _solve_weights(r: list[float], rhs: list[float]) -> list[float]:
    """Solve sum_m a_m r_m^{k-1} = rhs_k, k = 1..len(r) (a Vandermonde system), in float64."""
    n = len(r)
    R = torch.tensor([[rm ** (k - 1) for rm in r] for k in range(1, n + 1)], dtype=torch.float64)
    return torch.linalg.solve(R, torch.tensor(rhs, dtype=torch.float64)).tolist()


class Multistep(ExpStepper):
    """Multistep exponential integrator in data prediction, with an optional UniC corrector.

    Step from lambda_s to lambda_t = lambda_s + h, with denoiser history D_s, D_{s-1}, ... at
    lambda_{s-m} = lambda_s + r_m h (r_m < 0), and Delta_m = (D_{s-m} - D_s) / r_m:

        x~_t = e^{-h} x~_s + c_0(h) D_s + sum_{m=1}^{p-1} a_m Delta_m,                      (3)

    where, for order p >= 3 (and p = 2 with ``solver_type="taylor"``), the weights solve
    sum_m a_m r_m^{k-1} = k! c_k(h) / h^k, k = 1..p-1 (eq. (2); exact for D polynomial of degree
    p - 1 in lambda). For p = 2 the default ``solver_type="midpoint"`` uses a_1 = B(h) / 2, which
    with B(h) = 1 - e^{-h} is DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2) and UniP-2 (bh2).

    UniC (Zhao et al. 2023, Alg. 2), with ``corrector=True``: when D_t = D(x~_t) is evaluated at the
    start of the next step, x~_t is recomputed by (3) with the point (r = 1, D_t - D_s) added and a
    full p x p solve (p = the predictor's order there; for p = 1 UniPC's a = B(h) / 2), so the step
    gains one order and no NFE. B(h) is ``variant`` "bh1" (h) or "bh2" (1 - e^{-h}).

    Args:
        order: predictor order p in 1..4 (warm-up steps use the orders the history allows).
        corrector: add the UniC corrector (not after the last step, which has no evaluation after it).
        solver_type: "midpoint" or "taylor" weights at order 2 (see above).
        variant: "bh1" | "bh2", B(h) of the order-2 midpoint weight and the order-1 corrector.
        lower_order_final: last steps use order min(p, steps left).
        lower_order_final_below: apply ``lower_order_final`` only when steps < this (None: always).
        first_step: "multistep" (classic start: the first steps use the orders the history allows) or
            "singlestep": the first step is DPM-Solver-k (k = min(declared order, 3)), k NFE, so that
            the start does not cap the global order (a first-order first step has local error O(h^2)).
        final: "step" | "euler" | "denoise" (module docstring).
    """

    name = "multistep"
    nfe_per_step = 1
    State = MultistepState

    def __init__(
        self,
        order: int = 2,
        corrector: bool = False,
        solver_type: str = "midpoint",
        variant: str = "bh2",
        lower_order_final: bool = True,
        lower_order_final_below: int | None = None,
        final: str = "step",
        first_step: str = "multistep",
    ):
        super().__init__(final)
        check_int("order", order, 1, 4)
        check_choice("first_step", first_step, ("multistep", "singlestep"))
        self.first_step = first_step
        if not isinstance(corrector, bool):
            raise TypeError(f"corrector must be True or False; got corrector = {corrector!r}")
        check_choice("solver_type", solver_type, ("midpoint", "taylor"))
        check_choice("variant", variant, ("bh1", "bh2"))
        if not isinstance(lower_order_final, bool):
            raise TypeError(f"lower_order_final must be True or False; got {lower_order_final!r}")
        if lower_order_final_below is not None:
            check_int("lower_order_final_below", lower_order_final_below, 1)
        self.corrector, self.solver_type, self.variant = corrector, solver_type, variant
        self.lower_order_final, self.lower_order_final_below = lower_order_final, lower_order_final_below
        self.p = order
        main = order + (1 if corrector else 0)  # UniC raises the order by one
        self._single = DPMSolver(order=max(2, min(main, 3))) if first_step == "singlestep" else None
        # declared (nominal) order. A classic start (a first-order first step, local error O(h^2), or
        # O(h^3) once UniC corrects it) and an ungated ``lower_order_final`` / ``final="euler"`` (a
        # first-order last step that no corrector follows) add fixed-count O(h^2) terms that cap the
        # *asymptotic* order at 2 (3 with the corrector at the start); they show only where D varies
        # at the ends of the lambda range (tests/test_fast_samplers.py). ``first_step="singlestep"``
        # and ``lower_order_final=False`` remove the caps.
        self.order = main

    def _singlestep_first(self, steps: int) -> bool:
        return self._single is not None and not (steps == 1 and self.final in ("euler", "denoise"))

    def nfe(self, steps: int) -> int:
        return steps + (self._single.k - 1 if self._singlestep_first(steps) else 0)

    def _B(self, h: float) -> float:
        return h if self.variant == "bh1" else -math.expm1(-h)

    def _effective_order(self, i: int, steps: int, n_hist: int) -> int:
        p = min(self.p, n_hist)
        if self.final == "denoise":
            steps -= 1  # the window of lower-order final steps ends at the last solver step
        if self.lower_order_final and (self.lower_order_final_below is None or steps < self.lower_order_final_below):
            p = min(p, steps - i)
        if self.final == "euler" and i == steps - 1:
            p = 1
        return p

    def _combine(self, xs, Ds, ls, h, older, p, new=None):
        """Eq. (3) from x~_s = xs, D_s = Ds at lambda_s = ls; ``older`` = [(lambda, D), ...] most
        recent first; ``new`` = D at lambda_s + h for the corrector. Uses p - 1 older points."""
        c = taylor_weights(h, p + 1)
        out = math.exp(-h) * xs + c[0] * Ds
        pts = [((lm - ls) / h, (Dm - Ds) / ((lm - ls) / h)) for lm, Dm in older[: p - 1]]
        if new is not None:
            pts.append((1.0, new - Ds))
        if not pts:
            return out
        n = len(pts)
        if n == 1 and (new is not None or self.solver_type == "midpoint"):
            a = [0.5 * self._B(h)]
        else:
            a = _solve_weights([r for r, _ in pts], [math.factorial(k) * c[k] / h**k for k in range(1, n + 1)])
        for am, (_, dm) in zip(a, pts):
            out = out + am * dm
        return out

    def advance(self, problem, state, x, t, t_next, i, last):
        """One step from lambda_i to lambda_{i+1}, x [B, ...]: evaluate D_i = D(x~_i, lambda_i) (one NFE, the
        denoiser view); UniC: recompute x~_i by eq. (3) with D_i added; push (lambda_i, D_i) on the history;
        predictor: x~_{i+1} by eq. (3) of order p (DPM-Solver++(pM), Lu et al. 2022b, Alg. 2; UniP-p)."""
        lam, alpha, steps, hist = state.lam, state.alpha, state.steps, state.hist
        pred = self.predict_at(problem, state, x, t, i)  # one NFE
        D = pred.x0  # data prediction (DPM-Solver++, UniPC's x0 form)
        xt = x / alpha[i]
        prev = state.prev
        if self.corrector and prev is not None:  # UniC (Alg. 2): redo the last step with D_t added
            xs0, ls0, Ds0, p0 = prev
            xt = self._combine(xs0, Ds0, ls0, lam[i] - ls0, hist[1:], p0, new=D)
        hist.insert(0, (lam[i], D))
        del hist[self.p + 1 :]
        if self.is_final_denoise(state, i):
            return self.out(alpha[i + 1] * D, D), state
        if i == 0 and self._singlestep_first(steps):  # prev stays None: no UniC on it
            e0 = pred.noise(xt, math.exp(-lam[0]))
            return self.out(alpha[1] * self._single.single(problem, lam, xt, e0, 0, self._single.k), D), state
        p = self._effective_order(i, steps, len(hist))
        h = lam[i + 1] - lam[i]
        xn_t = self._combine(xt, D, lam[i], h, hist[1:], p)  # eq. (3): UniP-p / DPM-Solver++(pM)
        state.prev = (xt, lam[i], D, p)
        return self.out(alpha[i + 1] * xn_t, D), state


class DPMSolverPP(Multistep):
    """DPM-Solver++(2M) / (3M) (Lu et al. 2022b, Alg. 2 and its third-order version): eq. (3) of
    :class:`Multistep` with p = 2 (midpoint weight, DPM-Solver++(2M): x~_t = e^{-h} x~_s +
    (1 - e^{-h}) [(1 + 1/(2r)) D_s - D_{s-1} / (2r)], r = h_{s-1} / h) or p = 3 (exact Taylor
    weights; note the third-order weight k! c_2 / h^2 on the second difference). ``corrector=True``
    adds UniC (raises the order by one at no NFE)."""

    def __init__(
        self,
        order: int = 2,
        corrector: bool = False,
        solver_type: str = "midpoint",
        lower_order_final: bool = True,
        lower_order_final_below: int | None = None,
        final: str = "step",
        variant: str = "bh2",
        first_step: str = "multistep",
    ):
        check_int("order", order, 2, 3)
        super().__init__(
            order, corrector, solver_type, variant, lower_order_final, lower_order_final_below, final, first_step
        )
        self.name = f"dpmpp_{order}m" + ("+unic" if corrector else "")


class UniPC(Multistep):
    """UniPC (Zhao et al. 2023): the UniP-p predictor (data prediction; order 2 uses a_1 = B(h)/2)
    and the UniC corrector, order p + 1 at one NFE per step. ``variant="bh2"`` (default, B(h) =
    1 - e^{-h}) or ``"bh1"`` (B(h) = h)."""

    def __init__(
        self,
        order: int = 2,
        variant: str = "bh2",
        lower_order_final: bool = True,
        lower_order_final_below: int | None = None,
        final: str = "step",
        corrector: bool = True,
        first_step: str = "multistep",
    ):
        super().__init__(
            order, corrector, "midpoint", variant, lower_order_final, lower_order_final_below, final, first_step
        )
        self.name = f"unipc_{order}_{variant}"


__all__ = ["MultistepState", "Multistep", "DPMSolverPP", "UniPC"]
