"""Fast samplers of the exponential-integrator family, written once in x~ = x / alpha and
lambda = ln(alpha / sigma), so that the same code runs VP, sub-VP, VE and any linear SDE.

In these variables the probability-flow ODE of every linear SDE is (Lu et al. 2022, eq. 8,
in data-prediction form)

    d x~ / d lambda = D(x~, lambda) - x~,        D = E[x_0 | x_t] = (x + sigma^2 s) / alpha,

and its exact solution from lambda_s to lambda_t = lambda_s + h (h > 0 when denoising) is

    x~_t = e^{-h} x~_s + int_0^h e^{-(h - tau)} D(lambda_s + tau) dtau.                        (1)

Expanding D in Taylor series around lambda_s gives the coefficients

    c_k(h) = int_0^h e^{-(h - tau)} tau^k / k! dtau,  c_0 = 1 - e^{-h},  c_k = h^k / k! - c_{k-1},   (2)

so x~_t = e^{-h} x~_s + sum_k c_k(h) D^{(k)}(lambda_s). Every solver here is a choice of how to
approximate the derivatives D^{(k)} from denoiser evaluations:

- ``ddim`` (Song et al. 2021a, eq. 12): D frozen, with DDIM's eta (eta = 0: deterministic DDIM =
  Euler in sigma~ = DPM-Solver-1; eta = 1: the DDPM posterior step).
- ``dpm_solver_1/2/3`` (Lu et al. 2022a, Alg. 1-2): singlestep, noise-prediction form, with
  intermediate points at lambda_s + r h.
- ``dpmpp_2m`` / ``dpmpp_3m`` (Lu et al. 2022b, Alg. 2): multistep, derivatives from earlier
  denoiser values (exact Taylor weights; DPM-Solver++(2M)'s midpoint weight by default at order 2).
- ``unipc`` (Zhao et al. 2023, Alg. 1-2): the UniP predictor plus the UniC corrector that reuses
  the next step's denoiser evaluation (no extra NFE) and raises the order by one. ``corrector=True``
  adds the same UniC corrector to ``dpmpp_2m`` / ``dpmpp_3m``.
- ``dpmpp_2m_sde`` (Lu et al. 2022b, SDE-DPM-Solver++(2M)): the eta-family
  d x~ = (1 + eta)(D - x~) d lambda + sqrt(2 eta) e^{-lambda} dW.
- ``heun`` / ``edm`` (Karras et al. 2022, Alg. 1-2): Heun in sigma~ with optional churn.
- ``restart`` (Xu et al. 2023): Heun with K restart loops (noise forward, ODE back) on one interval.

Final-step policy (option ``final``; grids are descending times ending at ``eps``):

- ``"step"`` (default): the last step is a normal step of the solver to eps (sigma_min);
- ``"euler"``: the last step is a first-order (DDIM / Euler-in-sigma~) step to eps;
- ``"denoise"``: the last step is a denoising step to time 0: it returns x^_0 = D(x, t_{N-1}) at the
  last time. ``ss.sample`` then builds ``steps - 1`` grid steps from T to eps and appends t = 0,
  so NFE stays equal to ``stepper.nfe(steps)``.

Grids: any kind of :func:`~score_sde.solvers.grids.make_grid` or a tensor of times, plus ``"auto"``
(the default of ``ddim``, ``dpmpp_*`` and ``unipc``): time-quadratic on VP / sub-VP, logSNR-uniform
otherwise (measured best on the DDPM table by ``benchmarks/sampler_error_vs_nfe.py``).

``lower_order_final`` (multistep solvers): the last steps use order min(order, steps left)
(DPM-Solver++ and UniPC's recipe for stability at low NFE); ``lower_order_final_below = n`` applies
it only when the run has fewer than n steps (diffusers' DPMSolverMultistep uses 15).

Every stepper declares ``order`` (the nominal one), ``nfe_per_step``, ``stochastic`` and an exact
``nfe(steps)``. A fixed number of steps with local error O(h^m) adds O(h^m) to the global error, so
the classic multistep start (a first-order first step) and a first-order last step cap the
*asymptotic* order at 2; ``first_step="singlestep"`` and ``lower_order_final=False`` remove the caps
(tests/test_fast_samplers.py measures both). Third-order weights: the second divided difference
D2 = h^2 D''/2 carries 2! c_2(h) / h^2 here (as in UniP-3); k-diffusion's and diffusers'
DPM-Solver++(3M) use half that weight, so they are not this ``dpmpp_3m``.
"""

from __future__ import annotations

import math

import torch

from .base import Context, StepOutput, Stepper
from .grids import make_grid

FINALS = ("step", "euler", "denoise")


# ---------------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------------
def taylor_weights(h: float, K: int) -> list[float]:
    """c_0..c_K of eq. (2): c_k(h) = int_0^h e^{-(h - tau)} tau^k / k! dtau (h > 0)."""
    c = [-math.expm1(-h)]
    for k in range(1, K + 1):
        c.append(h**k / math.factorial(k) - c[-1])
    return c


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {name} = {value!r}")


def _check_number(name: str, value, lo: float = 0.0, hi: float = math.inf, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number; got {name} = {value!r}")
    v = float(value)
    if not (lo <= v <= hi) or (lo_open and v == lo) or math.isinf(v):
        raise ValueError(f"{name} must lie in {'(' if lo_open else '['}{lo}, {hi}]; got {name} = {value!r}")
    return v


def _check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be an integer {rng}; got {name} = {value!r}")
    return value


class ExpStepper(Stepper):
    """Base of the samplers in (x~, lambda): grid coefficients, the denoiser, the final policy.

    ``init`` tabulates, once per run and in float64, lambda_i, alpha_i and sigma_i of the grid
    (the final t = 0 of a ``"denoise"`` grid gets lambda = +inf, sigma~ = 0).
    """

    final: str = "step"

    def __init__(self, final: str = "step"):
        _check_choice("final", final, FINALS)
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

    def init(self, ctx: Context, x: torch.Tensor) -> None:
        sde, g = ctx.sde, ctx.grid.to(torch.float64)
        lam = sde.log_snr(g)
        if self.final == "denoise":
            lam[-1] = math.inf  # the appended t = 0
        ctx.state["lam"] = lam.tolist()
        ctx.state["alpha"] = sde.alpha(g).tolist()
        ctx.state["sigma"] = sde.sigma(g).tolist()
        ctx.state["steps"] = g.numel() - 1
        self._init_state(ctx)

    def _init_state(self, ctx: Context) -> None:
        pass

    def _is_final_denoise(self, ctx: Context, i: int) -> bool:
        return self.final == "denoise" and i == ctx.state["steps"] - 1

    # -- denoiser -------------------------------------------------------------------------------
    def denoise_at(self, ctx: Context, x: torch.Tensor, t: torch.Tensor, i: int | None = None):
        """D(x, t) = (x + sigma^2 s) / alpha from one (counted) score evaluation; x [B, ...] at time t.

        Returns (D, s, tv) with the score s and the [B] time tensor tv used."""
        tv = ctx.time_at(i, t, x) if i is not None else ctx.tvec(t, x)
        s = ctx.score(x, tv)
        if i is None:
            a, sig = float(ctx.sde.alpha(t)), float(ctx.sde.sigma(t))
        else:
            a, sig = ctx.state["alpha"][i], ctx.state["sigma"][i]
        return (x + (sig * sig) * s) / a, s, tv

    def _out(self, x_next, D, s, tv, x_in, mean=None) -> StepOutput:
        return StepOutput(x_next, x_next if mean is None else mean, x0=D, score=s, t_score=tv, x_in=x_in)


def _sigma_tilde(lam: float) -> float:
    return 0.0 if lam == math.inf else math.exp(-lam)


# ---------------------------------------------------------------------------------------------
# DDIM with eta
# ---------------------------------------------------------------------------------------------
class DDIM(ExpStepper):
    """DDIM (Song et al. 2021a, eq. 12 and 16) written in x~ and sigma~ = e^{-lambda}:

        x~_t = D + sqrt(sigma~_t^2 - c^2) eps^ + c z,   eps^ = (x~_s - D) / sigma~_s,
        c = eta sigma~_t sqrt(1 - e^{-2h}),  h = lambda_t - lambda_s.

    (On VP this is DDIM's sigma_t(eta) divided by alpha_t.) eta = 0 gives
    x~_t = e^{-h} x~_s + (1 - e^{-h}) D, which is Euler in sigma~ and DPM-Solver-1; eta = 1 gives
    x~_t = e^{-2h} x~_s + (1 - e^{-2h}) D + sigma~_t sqrt(1 - e^{-2h}) z, the DDPM posterior
    q(x_t | x_s, x_0 = D). Shapes: x [B, ...]; one NFE per step.

    ``clip_denoised=True`` replaces D by D clipped to [-clip_range, clip_range] in the first term
    only, x~_t = clip(D) + sqrt(sigma~_t^2 - c^2) eps^ + c z with eps^ from the unclipped D, as
    diffusers' ``DDIMScheduler`` does with ``clip_sample`` (and ``use_clipped_model_output=False``).
    """

    name, order, nfe_per_step = "ddim", 1, 1

    def __init__(self, eta: float = 0.0, final: str = "step", clip_denoised: bool = False, clip_range: float = 1.0):
        super().__init__(final)
        self.eta = _check_number("eta", eta, 0.0, 1.0)
        self.stochastic = self.eta > 0
        if not isinstance(clip_denoised, bool):
            raise TypeError(f"clip_denoised must be True or False; got clip_denoised = {clip_denoised!r}")
        self.clip_denoised = clip_denoised
        self.clip_range = _check_number("clip_range", clip_range, 0.0, lo_open=True)

    def step(self, ctx, x, t, t_next, i, last):
        lam, alpha = ctx.state["lam"], ctx.state["alpha"]
        D, s, tv = self.denoise_at(ctx, x, t, i)
        if self.clip_denoised:
            return self._clipped_step(ctx, x, D, s, tv, i, last)
        if self._is_final_denoise(ctx, i):
            xn = alpha[i + 1] * D
            return self._out(xn, D, s, tv, x)
        h = lam[i + 1] - lam[i]
        xt = x / alpha[i]
        if self.eta == 0:
            mean_t = math.exp(-h) * xt - math.expm1(-h) * D
            xn = alpha[i + 1] * mean_t
            return self._out(xn, D, s, tv, x)
        sn = _sigma_tilde(lam[i + 1])
        one_m = -math.expm1(-2 * h)
        c = self.eta * sn * math.sqrt(one_m)
        keep = math.exp(-h) * math.sqrt(1.0 - self.eta**2 * one_m)  # sqrt(sn^2 - c^2) / sigma~_s
        mean = alpha[i + 1] * (keep * xt + (1.0 - keep) * D)
        if last or c == 0:
            return self._out(mean, D, s, tv, x)
        xn = mean + (alpha[i + 1] * c) * ctx.randn_like(x)
        return self._out(xn, D, s, tv, x, mean=mean)

    def _clipped_step(self, ctx, x, D, s, tv, i, last):
        """x_t = alpha_t clip(D) + sqrt(sigma_t^2 - (alpha_t c)^2) eps^ + alpha_t c z with eps^ = -sigma_s s, the
        network's noise estimate (written in x, not x~, so that a large |D| cancels nothing)."""
        lam, alpha = ctx.state["lam"], ctx.state["alpha"]
        Dc = D.clamp(-self.clip_range, self.clip_range)
        a_next = alpha[i + 1]
        if self._is_final_denoise(ctx, i):
            return self._out(a_next * Dc, Dc, s, tv, x)
        sn = _sigma_tilde(lam[i + 1])
        c = self.eta * sn * math.sqrt(-math.expm1(-2 * (lam[i + 1] - lam[i])))
        eps_hat = (-ctx.state["sigma"][i]) * s
        mean = a_next * Dc + (a_next * math.sqrt(max(sn * sn - c * c, 0.0))) * eps_hat
        if last or c == 0:
            return self._out(mean, Dc, s, tv, x)
        return self._out(mean + (a_next * c) * ctx.randn_like(x), Dc, s, tv, x, mean=mean)


# ---------------------------------------------------------------------------------------------
# DPM-Solver 1/2/3 (singlestep, noise prediction)
# ---------------------------------------------------------------------------------------------
def dpm_solver_fast_orders(nfe: int) -> list[int]:
    """The order plan of DPM-Solver-fast for a budget of ``nfe`` evaluations (Lu et al. 2022a,
    Sec. 3.4): M = floor(nfe / 3) + 1 steps with orders [3, ..., 3, 2, 1] if nfe % 3 == 0, else
    [3, ..., 3, nfe % 3]; use with ``steps=len(orders)`` and a logSNR-uniform grid."""
    nfe = _check_int("nfe", nfe, 1)
    m = nfe // 3 + 1
    if nfe % 3 == 0:
        return [3] * (m - 2) + [2, 1]
    return [3] * (m - 1) + [nfe % 3]


class DPMSolver(ExpStepper):
    """DPM-Solver-k, singlestep (Lu et al. 2022a, eq. 3.7 / Alg. 1 for k = 2 and Alg. 2 for k = 3),
    in x~ with eps^ = (x~ - D) / sigma~ and phi = e^{h} - 1:

    - k = 1: x~_t = x~_s - sigma~_t phi(h) eps_s  (= DDIM);
    - k = 2: u = x~_s - sigma~_{s1} phi(r1 h) eps_s at lambda_{s1} = lambda_s + r1 h;
      x~_t = x~_s - sigma~_t phi(h) eps_s - sigma~_t / (2 r1) phi(h) (eps(u) - eps_s);
    - k = 3: r1 = 1/3, r2 = 2/3; u1 as above, u2 = x~_s - sigma~_{s2} phi(r2 h) eps_s
      - sigma~_{s2} (r2 / r1) (phi(r2 h) / (r2 h) - 1)(eps(u1) - eps_s);
      x~_t = x~_s - sigma~_t phi(h) eps_s - sigma~_t / r2 (phi(h) / h - 1)(eps(u2) - eps_s).

    Args:
        order: 1, 2 or 3 (k NFE per step).
        orders: optional per-step orders (e.g. :func:`dpm_solver_fast_orders`); overrides ``order``.
        r1, r2: intermediate points (defaults 1/2 for k = 2; 1/3, 2/3 for k = 3).
    """

    name = "dpm_solver"

    def __init__(self, order: int = 2, orders=None, r1: float | None = None, r2: float | None = None, final="step"):
        super().__init__(final)
        self.k = _check_int("order", order, 1, 3)  # the method's order (NFE per step)
        if orders is not None:
            orders = list(orders)
            if not orders or not all(isinstance(o, int) and not isinstance(o, bool) and 1 <= o <= 3 for o in orders):
                raise ValueError(f"orders must be a non-empty list of integers in [1, 3]; got orders = {orders!r}")
            self.k = max(orders)
        self.orders = orders
        self.r1 = _check_number("r1", r1 if r1 is not None else (0.5 if self.k == 2 else 1 / 3), 0, 1, True)
        self.r2 = _check_number("r2", r2 if r2 is not None else 2 / 3, 0, 1, True)
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

    def nfe(self, steps: int) -> int:
        if self.orders is not None:
            if steps != len(self.orders):
                return 10**9  # only steps == len(orders) is runnable
            n = sum(self.orders)
            return n - (self.orders[-1] - 1 if self.final == "denoise" else 0)
        return super().nfe(steps)

    def _eps(self, ctx, xt, lam_u, t_u=None):
        """eps^ at x~ = xt, lambda = lam_u (one NFE); returns (eps, D, s, tv)."""
        sde = ctx.sde
        t_u = sde.t_from_log_snr(torch.tensor(lam_u, dtype=torch.float64)) if t_u is None else t_u
        a = float(sde.alpha(t_u))
        D, s, tv = self.denoise_at(ctx, a * xt, t_u)
        return (xt - D) / math.exp(-lam_u), D, s, tv

    def single(self, ctx, xt, D, i: int, k: int) -> torch.Tensor:
        """One DPM-Solver-k step of x~ from grid point i to i + 1, given D = D(x~_i) (k - 1 more NFE)."""
        lam = ctx.state["lam"]
        ls = lam[i]
        e0 = (xt - D) / math.exp(-ls)
        h = lam[i + 1] - ls
        st = math.exp(-lam[i + 1])
        phi = math.expm1(h)
        if k == 1:
            return xt - st * phi * e0
        if k == 2:
            r1 = self.r1 if self.k == 2 else 0.5  # the 2nd-order steps of a DPM-Solver-3 plan use 1/2
            l1 = ls + r1 * h
            u = xt - math.exp(-l1) * math.expm1(r1 * h) * e0
            e1 = self._eps(ctx, u, l1)[0]
            return xt - st * phi * e0 - st / (2 * r1) * phi * (e1 - e0)
        r1, r2 = self.r1, self.r2
        l1, l2 = ls + r1 * h, ls + r2 * h
        p1, p2 = math.expm1(r1 * h), math.expm1(r2 * h)
        u1 = xt - math.exp(-l1) * p1 * e0
        e1 = self._eps(ctx, u1, l1)[0]
        u2 = xt - math.exp(-l2) * p2 * e0 - math.exp(-l2) * (r2 / r1) * (p2 / (r2 * h) - 1) * (e1 - e0)
        e2 = self._eps(ctx, u2, l2)[0]
        return xt - st * phi * e0 - st / r2 * (phi / h - 1) * (e2 - e0)

    def step(self, ctx, x, t, t_next, i, last):
        alpha = ctx.state["alpha"]
        D, s, tv = self.denoise_at(ctx, x, t, i)
        if self._is_final_denoise(ctx, i):
            return self._out(alpha[i + 1] * D, D, s, tv, x)
        k = self._order_at(i, ctx.state["steps"])
        if self.final == "euler" and i == ctx.state["steps"] - 1:
            k = 1
        xn = self.single(ctx, x / alpha[i], D, i, k)
        return self._out(alpha[i + 1] * xn, D, s, tv, x)


# ---------------------------------------------------------------------------------------------
# Multistep data prediction: DPM-Solver++(2M/3M), UniP predictor, UniC corrector
# ---------------------------------------------------------------------------------------------
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
        _check_int("order", order, 1, 4)
        _check_choice("first_step", first_step, ("multistep", "singlestep"))
        self.first_step = first_step
        if not isinstance(corrector, bool):
            raise TypeError(f"corrector must be True or False; got corrector = {corrector!r}")
        _check_choice("solver_type", solver_type, ("midpoint", "taylor"))
        _check_choice("variant", variant, ("bh1", "bh2"))
        if not isinstance(lower_order_final, bool):
            raise TypeError(f"lower_order_final must be True or False; got {lower_order_final!r}")
        if lower_order_final_below is not None:
            _check_int("lower_order_final_below", lower_order_final_below, 1)
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

    def _init_state(self, ctx):
        ctx.state.update(hist=[], prev=None)

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

    def step(self, ctx, x, t, t_next, i, last):
        st = ctx.state
        lam, alpha, steps, hist = st["lam"], st["alpha"], st["steps"], st["hist"]
        D, s, tv = self.denoise_at(ctx, x, t, i)
        xt = x / alpha[i]
        prev = st["prev"]
        if self.corrector and prev is not None:
            xs0, ls0, Ds0, p0 = prev
            xt = self._combine(xs0, Ds0, ls0, lam[i] - ls0, hist[1:], p0, new=D)
        hist.insert(0, (lam[i], D))
        del hist[self.p + 1 :]
        if self._is_final_denoise(ctx, i):
            xn = alpha[i + 1] * D
            return StepOutput(xn, xn, x0=D, score=s, t_score=tv, x_in=x)
        if i == 0 and self._singlestep_first(steps):
            xn = alpha[1] * self._single.single(ctx, xt, D, 0, self._single.k)
            return StepOutput(xn, xn, x0=D, score=s, t_score=tv, x_in=x)  # prev stays None: no UniC on it
        p = self._effective_order(i, steps, len(hist))
        h = lam[i + 1] - lam[i]
        xn_t = self._combine(xt, D, lam[i], h, hist[1:], p)
        st["prev"] = (xt, lam[i], D, p)
        xn = alpha[i + 1] * xn_t
        return StepOutput(xn, xn, x0=D, score=s, t_score=tv, x_in=x)


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
        _check_int("order", order, 2, 3)
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


# ---------------------------------------------------------------------------------------------
# SDE-DPM-Solver++(2M)
# ---------------------------------------------------------------------------------------------
class DPMSolverPP2MSDE(ExpStepper):
    """SDE-DPM-Solver++(2M) (Lu et al. 2022b, App.; with an eta as in DDIM): with H = (1 + eta) h,

        x~_t = e^{-H} x~_s + (1 - e^{-H}) D_s + w (D_s - D_{s-1}) / r + sigma~_t sqrt(1 - e^{-2 eta h}) z,

    w = (1 - e^{-H}) / 2 ("midpoint") or c_1(H) / H ("taylor"), r = h_{s-1} / h; the first step
    has no w-term. eta = 0 is DPM-Solver++(2M); eta = 1 with the first-order part is the DDPM
    posterior step."""

    name, order, nfe_per_step = "dpmpp_2m_sde", 1, 1

    def __init__(self, eta: float = 1.0, solver_type: str = "midpoint", final: str = "step"):
        super().__init__(final)
        self.eta = _check_number("eta", eta, 0.0)
        _check_choice("solver_type", solver_type, ("midpoint", "taylor"))
        self.solver_type = solver_type
        self.stochastic = self.eta > 0
        self.order = 1 if self.stochastic else 2

    def _init_state(self, ctx):
        ctx.state["old"] = None

    def step(self, ctx, x, t, t_next, i, last):
        lam, alpha = ctx.state["lam"], ctx.state["alpha"]
        D, s, tv = self.denoise_at(ctx, x, t, i)
        old = ctx.state["old"]
        ctx.state["old"] = (lam[i], D)
        if self._is_final_denoise(ctx, i):
            xn = alpha[i + 1] * D
            return self._out(xn, D, s, tv, x)
        h = lam[i + 1] - lam[i]
        H = (1 + self.eta) * h
        xt = x / alpha[i]
        mean = math.exp(-H) * xt - math.expm1(-H) * D
        if old is not None and not (self.final == "euler" and i == ctx.state["steps"] - 1):
            r = (lam[i] - old[0]) / h
            w = -0.5 * math.expm1(-H) if self.solver_type == "midpoint" else taylor_weights(H, 1)[1] / H
            mean = mean + (w / r) * (D - old[1])
        mean = alpha[i + 1] * mean
        std = alpha[i + 1] * _sigma_tilde(lam[i + 1]) * math.sqrt(-math.expm1(-2 * self.eta * h))
        if last or std == 0:
            return self._out(mean, D, s, tv, x)
        return self._out(mean + std * ctx.randn_like(x), D, s, tv, x, mean=mean)


# ---------------------------------------------------------------------------------------------
# Heun / EDM with churn, Restart
# ---------------------------------------------------------------------------------------------
class EDMHeun(ExpStepper):
    """Karras et al. (2022), Alg. 2 (S_churn = 0: Alg. 1, deterministic Heun), in x~ and sigma~:

        gamma_i = min(S_churn / N, sqrt 2 - 1) if S_min <= sigma~_i <= S_max else 0,
        sigma^ = sigma~_i (1 + gamma_i),  x^ = x~_i + sqrt(sigma^^2 - sigma~_i^2) S_noise z,
        d = (x^ - D(x^, sigma^)) / sigma^,  x' = x^ + (sigma~_{i+1} - sigma^) d,
        x~_{i+1} = x^ + (sigma~_{i+1} - sigma^) (d + d') / 2,  d' = (x' - D(x', sigma~_{i+1})) / sigma~_{i+1}.

    sigma^ is capped at sigma~(T) (times stay in [0, T]). Two NFE per step; with
    ``final="denoise"`` the last step is Euler to sigma~ = 0 (x~ = D), so NFE = 2N - 1 as in EDM;
    ``final="euler"`` makes the last step an Euler step to sigma_min.
    """

    name, order, nfe_per_step = "heun", 2, 2

    def __init__(
        self,
        S_churn: float = 0.0,
        S_min: float = 0.0,
        S_max: float = math.inf,
        S_noise: float = 1.0,
        final: str = "step",
    ):
        super().__init__(final)
        self.S_churn = _check_number("S_churn", S_churn, 0.0)
        self.S_min = _check_number("S_min", S_min, 0.0)
        if isinstance(S_max, bool) or not isinstance(S_max, (int, float)) or not (S_max >= self.S_min):
            raise ValueError(f"S_max must be a number >= S_min = {self.S_min}; got S_max = {S_max!r}")
        self.S_max = float(S_max)
        self.S_noise = _check_number("S_noise", S_noise, 0.0)
        self.stochastic = self.S_churn > 0
        self.name = "edm" if self.stochastic else "heun"

    def nfe(self, steps: int) -> int:
        return 2 * steps - (1 if self.final in ("denoise", "euler") else 0)

    def _D_at_sigma(self, ctx, xt, sig):
        """D at x~ = xt, sigma~ = sig (one NFE)."""
        sde = ctx.sde
        t = sde.t_from_log_snr(torch.tensor(-math.log(sig), dtype=torch.float64)).clamp(0.0, sde.T)
        return self.denoise_at(ctx, float(sde.alpha(t)) * xt, t)

    def _heun(self, ctx, xt, s_from, s_to, D_from=None, euler=False):
        """One Heun step in sigma~ from s_from to s_to (> 0); returns (x~, D at s_from, s, tv)."""
        D, s, tv = self._D_at_sigma(ctx, xt, s_from) if D_from is None else D_from
        d = (xt - D) / s_from
        x1 = xt + (s_to - s_from) * d
        if euler:
            return x1, D, s, tv
        D2 = self._D_at_sigma(ctx, x1, s_to)[0]
        d2 = (x1 - D2) / s_to
        return xt + (s_to - s_from) * 0.5 * (d + d2), D, s, tv

    def step(self, ctx, x, t, t_next, i, last):
        lam, alpha, steps = ctx.state["lam"], ctx.state["alpha"], ctx.state["steps"]
        xt = x / alpha[i]
        s_i, s_n = math.exp(-lam[i]), _sigma_tilde(lam[i + 1])
        gamma = 0.0
        if self.S_churn > 0 and self.S_min <= s_i <= self.S_max:
            gamma = min(self.S_churn / steps, math.sqrt(2) - 1)
            gamma = min(gamma, math.exp(-lam[0]) / s_i - 1)  # sigma^ <= sigma~(T)
        if gamma > 0:
            s_hat = s_i * (1 + gamma)
            xt = xt + math.sqrt(s_hat**2 - s_i**2) * self.S_noise * ctx.randn_like(xt)
            Dres = self._D_at_sigma(ctx, xt, s_hat)
        else:
            s_hat = s_i
            Dres = self.denoise_at(ctx, x, t, i)
        if self._is_final_denoise(ctx, i):
            D = Dres[0]
            return self._out(alpha[i + 1] * D, D, Dres[1], Dres[2], x)
        euler = self.final == "euler" and i == steps - 1
        xn, D, s, tv = self._heun(ctx, xt, s_hat, s_n, Dres, euler=euler)
        return self._out(alpha[i + 1] * xn, D, s, tv, x)


class Restart(EDMHeun):
    """Restart sampling (Xu et al. 2023, Alg. 1): deterministic Heun steps over the grid; on reaching
    the grid point nearest to ``restart_sigma[0]`` (= sigma~_min of the restart interval), K times:
    add noise forward x~ <- x~ + sqrt(sigma~_max^2 - sigma~_min^2) z to ``restart_sigma[1]`` and
    integrate back to sigma~_min with ``restart_steps`` Heun steps uniform in log sigma~.

    NFE = heun NFE + 2 K ``restart_steps``. Defaults: restart_sigma = (0.1, 1.0) (in sigma~ = sigma /
    alpha), K = 2, restart_steps = 3.
    """

    name = "restart"

    def __init__(
        self,
        restart_sigma=(0.1, 1.0),
        K: int = 2,
        restart_steps: int = 3,
        final: str = "step",
    ):
        super().__init__(final=final)
        rs = tuple(float(v) for v in restart_sigma) if isinstance(restart_sigma, (tuple, list)) else None
        if rs is None or len(rs) != 2 or not (0 < rs[0] < rs[1] < math.inf):
            raise ValueError(f"restart_sigma must be (sigma_min, sigma_max) with 0 < min < max; got {restart_sigma!r}")
        self.restart_sigma = rs
        self.K = _check_int("K", K, 0)
        self.restart_steps = _check_int("restart_steps", restart_steps, 1)
        self.stochastic = self.K > 0
        self.name = "restart"

    def nfe(self, steps: int) -> int:
        return super().nfe(steps) + 2 * self.K * self.restart_steps

    def _init_state(self, ctx):
        lam = ctx.state["lam"]
        sig = [_sigma_tilde(v) for v in lam]
        target = self.restart_sigma[0]
        # the step whose end point is nearest (in log sigma~) to the restart sigma~_min (not t = 0)
        pos = [v for v in sig if v > 0]
        if not (min(pos) <= self.restart_sigma[0] and self.restart_sigma[1] <= sig[0]):
            raise ValueError(
                f"restart_sigma = {self.restart_sigma} lies outside the grid's sigma~ range "
                f"[{min(pos):.3g}, {sig[0]:.3g}]"
            )
        j = min((j for j in range(1, len(sig)) if sig[j] > 0), key=lambda j: abs(math.log(sig[j] / target)))
        ctx.state["restart_at"] = j - 1  # restart after step j - 1

    def step(self, ctx, x, t, t_next, i, last):
        out = super().step(ctx, x, t, t_next, i, last)
        if i != ctx.state["restart_at"] or self.K == 0:
            return out
        lam, alpha = ctx.state["lam"], ctx.state["alpha"]
        s_lo, s_hi = _sigma_tilde(lam[i + 1]), self.restart_sigma[1]
        xt = out.x / alpha[i + 1]
        ss = torch.logspace(math.log10(s_hi), math.log10(s_lo), self.restart_steps + 1, dtype=torch.float64).tolist()
        ss[0], ss[-1] = s_hi, s_lo
        for _ in range(self.K):
            xt = xt + math.sqrt(s_hi**2 - s_lo**2) * ctx.randn_like(xt)
            for a, b in zip(ss[:-1], ss[1:]):
                xt = self._heun(ctx, xt, a, b)[0]
        xn = alpha[i + 1] * xt
        return StepOutput(xn, xn, x0=out.x0, score=out.score, t_score=out.t_score, x_in=out.x_in)


# ---------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------
def _dpm1(final: str = "step"):
    return DPMSolver(order=1, final=final)


def _dpm2(orders=None, r1: float = 0.5, final: str = "step"):
    return DPMSolver(order=2, orders=orders, r1=r1, final=final)


def _dpm3(orders=None, r1: float = 1 / 3, r2: float = 2 / 3, final: str = "step"):
    return DPMSolver(order=3, orders=orders, r1=r1, r2=r2, final=final)


def _heun(final: str = "step"):
    return EDMHeun(final=final)


def _edm(S_churn: float = 0.0, S_min: float = 0.0, S_max: float = math.inf, S_noise: float = 1.0, final="step"):
    """EDM sampler (Karras et al. 2022, Alg. 2). Deterministic Heun (Alg. 1) unless churn is asked for, as in
    EDM's and k-diffusion's samplers; EDM's stochastic CIFAR-10 setting is S_churn=40, S_min=0.05,
    S_max=50, S_noise=1.003 (its Table 5)."""
    return EDMHeun(S_churn, S_min, S_max, S_noise, final)


__all__ = [
    "FINALS",
    "taylor_weights",
    "dpm_solver_fast_orders",
    "ExpStepper",
    "DDIM",
    "DPMSolver",
    "Multistep",
    "DPMSolverPP",
    "UniPC",
    "DPMSolverPP2MSDE",
    "EDMHeun",
    "Restart",
]
