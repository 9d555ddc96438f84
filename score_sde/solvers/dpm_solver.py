"""DPM-Solver-1/2/3, singlestep, noise-prediction form (Lu et al. 2022a), in the half-log-SNR view.

DPM-Solver is written in eps: it reads eps^ from the problem's denoiser view
(:meth:`~score_sde.solvers.denoiser.Prediction.noise`), the network's own output for an eps network and
(x~ - D) / sigma~ otherwise, so an eps network is never converted to a score and back."""

from __future__ import annotations

import math

import torch

from .fast_base import ExpStepper, check_int, check_number


def dpm_solver_fast_orders(nfe: int) -> list[int]:
    """The order plan of DPM-Solver-fast for a budget of ``nfe`` evaluations (Lu et al. 2022a,
    Sec. 3.4): M = floor(nfe / 3) + 1 steps with orders [3, ..., 3, 2, 1] if nfe % 3 == 0, else
    [3, ..., 3, nfe % 3]; use with ``steps=len(orders)`` and a logSNR-uniform grid."""
    nfe = check_int("nfe", nfe, 1)
    m = nfe // 3 + 1
    if nfe % 3 == 0:
        return [3] * (m - 2) + [2, 1]
    return [3] * (m - 1) + [nfe % 3]


class DPMSolver(ExpStepper):
    """DPM-Solver-k, singlestep (Lu et al. 2022a: eq. 3.7 for k = 1, Alg. 1 for k = 2, Alg. 2 for k = 3),
    divided by alpha_t, i.e. in x~ = x / alpha, lambda and sigma~ = e^{-lambda}, with eps^ the noise view
    (the network's eps, or (x~ - D) / sigma~) and phi(h) = e^{h} - 1:

    - k = 1: x~_t = x~_s - sigma~_t phi(h) eps_s  (= DDIM);
    - k = 2: u = x~_s - sigma~_{s1} phi(r1 h) eps_s at lambda_{s1} = lambda_s + r1 h;
      x~_t = x~_s - sigma~_t phi(h) eps_s - sigma~_t / (2 r1) phi(h) (eps(u) - eps_s);
    - k = 3: r1 = 1/3, r2 = 2/3; u1 as above, u2 = x~_s - sigma~_{s2} phi(r2 h) eps_s
      - sigma~_{s2} (r2 / r1) (phi(r2 h) / (r2 h) - 1)(eps(u1) - eps_s);
      x~_t = x~_s - sigma~_t phi(h) eps_s - sigma~_t / r2 (phi(h) / h - 1)(eps(u2) - eps_s).

    Args:
        order: 1, 2 or 3 (k NFE per step).
        orders: optional per-step orders (e.g. :func:`dpm_solver_fast_orders`); overrides ``order``;
            the sampler then runs exactly ``len(orders)`` steps (:meth:`runs`).
        r1, r2: intermediate points (defaults 1/2 for k = 2; 1/3, 2/3 for k = 3).
    """

    name = "dpm_solver"

    def __init__(self, order: int = 2, orders=None, r1: float | None = None, r2: float | None = None, final="step"):
        super().__init__(final)
        self.k = check_int("order", order, 1, 3)  # the method's order (NFE per step)
        if orders is not None:
            orders = list(orders)
            if not orders or not all(isinstance(o, int) and not isinstance(o, bool) and 1 <= o <= 3 for o in orders):
                raise ValueError(f"orders must be a non-empty list of integers in [1, 3]; got orders = {orders!r}")
            self.k = max(orders)
        self.orders = orders
        self.r1 = check_number("r1", r1 if r1 is not None else (0.5 if self.k == 2 else 1 / 3), 0, 1, True)
        self.r2 = check_number("r2", r2 if r2 is not None else 2 / 3, 0, 1, True)
        self.nfe_per_step = self.k
        self.name = f"dpm_solver_{self.k}" if orders is None else "dpm_solver_fast"
        # declared convergence order: a first-order last step (final="euler") caps it at 2
        self.order = min(self.k, 2) if final == "euler" else self.k

    def _order_at(self, i: int, steps: int) -> int:
        if self.orders is not None:
            if len(self.orders) != steps:
                raise ValueError(f"orders has {len(self.orders)} entries but the grid has {steps} steps")
            return self.orders[i]
        return self.k

    def runs(self, steps: int) -> bool:
        return self.orders is None or steps == len(self.orders)

    def nfe(self, steps: int) -> int:
        if self.orders is not None:
            if not self.runs(steps):
                raise ValueError(f"{self.name} with orders={self.orders} runs exactly {len(self.orders)} steps; "
                                 f"got steps = {steps}")  # fmt: skip
            n = sum(self.orders)
            return n - (self.orders[-1] - 1 if self.final == "denoise" else 0)
        return super().nfe(steps)

    def _eps(self, problem, xt, lam_u):
        """eps^ at x~ = xt, lambda = lam_u (one NFE; the time t_u = t(lam_u) of the SDE's schedule)."""
        sde = problem.sde
        t_u = sde.t_from_log_snr(torch.tensor(lam_u, dtype=torch.float64))
        a = float(sde.alpha(t_u))
        return self.predict_at(problem, None, a * xt, t_u).noise(xt, math.exp(-lam_u))

    def single(self, problem, lam, xt, e0, i: int, k: int) -> torch.Tensor:
        """One DPM-Solver-k step of x~ [B, ...] from grid point i to i + 1 (``lam`` the grid's lambdas),
        given e0 = eps^(x~_i, lambda_i) (k - 1 more NFE)."""
        ls = lam[i]
        h = lam[i + 1] - ls
        st = math.exp(-lam[i + 1])
        phi = math.expm1(h)
        if k == 1:  # eq. 3.7 (DPM-Solver-1)
            return xt - st * phi * e0
        if k == 2:  # Alg. 1 (DPM-Solver-2)
            r1 = self.r1 if self.k == 2 else 0.5  # the 2nd-order steps of a DPM-Solver-3 plan use 1/2
            l1 = ls + r1 * h
            u = xt - math.exp(-l1) * math.expm1(r1 * h) * e0
            e1 = self._eps(problem, u, l1)
            return xt - st * phi * e0 - st / (2 * r1) * phi * (e1 - e0)
        r1, r2 = self.r1, self.r2  # Alg. 2 (DPM-Solver-3)
        l1, l2 = ls + r1 * h, ls + r2 * h
        p1, p2 = math.expm1(r1 * h), math.expm1(r2 * h)
        u1 = xt - math.exp(-l1) * p1 * e0
        e1 = self._eps(problem, u1, l1)
        u2 = xt - math.exp(-l2) * p2 * e0 - math.exp(-l2) * (r2 / r1) * (p2 / (r2 * h) - 1) * (e1 - e0)
        e2 = self._eps(problem, u2, l2)
        return xt - st * phi * e0 - st / r2 * (phi / h - 1) * (e2 - e0)

    def advance(self, problem, state, x, t, t_next, i, last):
        alpha = state.alpha
        pred = self.predict_at(problem, state, x, t, i)
        if self.is_final_denoise(state, i):
            D = pred.x0
            return self.out(alpha[i + 1] * D, D), state
        k = self._order_at(i, state.steps)
        if self.final == "euler" and i == state.steps - 1:
            k = 1
        xt = x / alpha[i]
        xn = self.single(problem, state.lam, xt, pred.noise(xt, math.exp(-state.lam[i])), i, k)
        return self.out(alpha[i + 1] * xn, self.x0_of(problem, pred)), state


def _dpm1(final: str = "step"):
    return DPMSolver(order=1, final=final)


def _dpm2(orders=None, r1: float = 0.5, final: str = "step"):
    return DPMSolver(order=2, orders=orders, r1=r1, final=final)


def _dpm3(orders=None, r1: float = 1 / 3, r2: float = 2 / 3, final: str = "step"):
    return DPMSolver(order=3, orders=orders, r1=r1, r2=r2, final=final)


__all__ = ["DPMSolver", "dpm_solver_fast_orders"]
