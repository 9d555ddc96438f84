"""scipy's explicit Runge–Kutta solvers as ODE methods of the integrator layer (``"scipy_rk45"``, ``"scipy_dop853"``).

``scipy_rk45`` is Dormand & Prince's 5(4) pair (J. Comput. Appl. Math. 6, 1980) with the step-size control of
Hairer, Nørsett & Wanner (Solving ODEs I, Sec. II.4): the local error estimate is the difference of the
5th- and 4th-order solutions of the original pair, measured in the RMS norm of
``err / (atol + rtol * max(|y|, |y_new|))`` over the whole flat state, steps grow or shrink by
``0.9 * err^(-1/5)`` within [0.2, 10]. It is :class:`scipy.integrate.RK45`, the integrator of the official
score-SDE code's likelihood and ODE sampler, so a tolerance means the same thing here as there.
torchdiffeq's ``dopri5`` uses the same stages with Shampine's alternative error estimate, which on the
likelihood problem takes more steps at equal tolerance (benchmarks/likelihood_overhead.py).

The state crosses to numpy (float64, on the CPU) at every call and back to the device of ``y0``; on a GPU
that is one copy of the state each way per call, small next to a network evaluation. scipy's solvers carry
no autograd graph: use a torchdiffeq method when the result must be differentiated.

torchdiffeq wraps the same solvers (``method="scipy_solver"``) but integrates over ``[min(t), max(t)]``
whatever the direction and returns a short solution without a word when scipy gives up, so this module
calls :func:`scipy.integrate.solve_ivp` itself: either direction, the output times as ``t_eval``, a failure
raised with scipy's message, and a right-hand side that returns NaN/inf stops the solve at once (scipy's
first-step guess becomes NaN and its loop never ends).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

SCIPY_METHODS = {"scipy_rk45": "RK45", "scipy_dop853": "DOP853"}
SCIPY_OPTIONS = ("first_step", "max_step", "norm")


def _solver_class(name: str, norm: Callable | None):
    """scipy's solver class ``name``; with ``norm``, an RK45 whose step-size control measures the scaled error
    estimate ``err / (atol + rtol * max(|y|, |y_new|))`` (a float64 array of the flat state) with ``norm``
    instead of the RMS norm. The steps, stages and error estimate are scipy's."""
    import scipy.integrate

    base = getattr(scipy.integrate, name)
    if norm is None:
        return base
    if name != "RK45":
        raise ValueError(f"a custom error norm is supported for 'scipy_rk45' only; got one for {name}")

    class NormedRK45(base):
        def _estimate_error_norm(self, K, h, scale):
            return float(norm(self._estimate_error(K, h) / scale))

    return NormedRK45


class ScipySolveError(RuntimeError):
    """scipy's solver gave up (``solve_ivp`` status -1); the message is scipy's."""


def odeint_scipy(
    func: Callable,
    y0: torch.Tensor,
    times: torch.Tensor,
    *,
    rtol: float,
    atol: float,
    method: str = "scipy_rk45",
    options: dict | None = None,
) -> torch.Tensor:
    """Integrate ``dy/dt = func(t, y)`` from ``times[0]`` through ``times[1:]`` with scipy.

    Args:
        func: ``func(t, y)`` with a 0-d float64 time tensor and y like ``y0``; returns a tensor like y.
        y0: the state at ``times[0]``, a tensor of any shape and floating dtype, on any device.
        times: 1-D, strictly monotone (either direction), len >= 2.
        rtol, atol: scipy's tolerances.
        method: a key of :data:`SCIPY_METHODS`.
        options: ``first_step`` and/or ``max_step`` (scipy's), and for ``"scipy_rk45"`` a ``norm``: a function of
            the scaled error estimate (a float64 numpy array of y0's size) returning a float, which replaces
            the RMS norm of the step-size control; anything else is a ``ValueError`` naming it.
    Returns:
        the states at ``times``, shape [len(times), *y0.shape], in y0's dtype and on its device.
    """
    if method not in SCIPY_METHODS:
        raise ValueError(f"unknown scipy method {method!r}; choose one of {sorted(SCIPY_METHODS)}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(SCIPY_OPTIONS))
    if unknown:
        raise ValueError(f"method {method!r} (scipy) takes the options {list(SCIPY_OPTIONS)} only; got {unknown}")
    from scipy.integrate import solve_ivp

    shape, device, dtype = y0.shape, y0.device, y0.dtype
    ts = times.detach().to("cpu", torch.float64).numpy()

    def f(t, y):
        yt = torch.from_numpy(y).view(shape).to(device=device, dtype=dtype)
        out = func(torch.tensor(t, dtype=torch.float64, device=device), yt).detach().to("cpu", torch.float64)
        f_np = out.reshape(-1).numpy()
        # NaN/inf anywhere makes the sum so; scipy would loop on a NaN step size (its first-step guess) or creep
        if not np.isfinite(f_np.sum()):
            raise ScipySolveError(f"the right-hand side returned NaN/inf at t = {t:.6g}")
        return f_np

    y0_np = y0.detach().to("cpu", torch.float64).reshape(-1).numpy()
    solver = _solver_class(SCIPY_METHODS[method], options.pop("norm", None))
    sol = solve_ivp(f, (ts[0], ts[-1]), y0_np, method=solver, t_eval=ts, rtol=rtol, atol=atol, **options)
    if sol.status != 0 or sol.y.shape[1] != len(ts):
        raise ScipySolveError(f"scipy {SCIPY_METHODS[method]} gave up at t = {sol.t[-1] if sol.t.size else ts[0]:.6g}: "
                              f"{sol.message}")
    ys = torch.from_numpy(np.ascontiguousarray(sol.y.T))
    return ys.to(device=device, dtype=dtype).view(len(ts), *shape)


__all__ = ["odeint_scipy", "SCIPY_METHODS", "ScipySolveError"]
