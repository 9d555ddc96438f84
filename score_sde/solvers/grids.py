"""Time grids for samplers: descending 1-D float64 tensors from T (or t_max) to the end time.

A grid of ``steps + 1`` points defines ``steps`` steps. Kinds:

- ``uniform``: linspace(T, eps, steps + 1) (Song et al. 2021's grid).
- ``quadratic``: t_i = eps + (T - eps) (i / steps)^2, dense near the data (DDIM's quadratic).
- ``discrete``: the N steps of the SDE's discrete chain (``sde.discrete_times``): the DDPM chain's
  own times then 0 for :class:`~score_sde.sde.DiscreteVPSDE`, linspace(T, eps, N + 1) otherwise.
- ``karras``: sigma~_i = (s_max^{1/rho} + i/steps (s_min^{1/rho} - s_max^{1/rho}))^rho, rho = 7
  (Karras et al. 2022, eq. 5), mapped to times through the SDE's inverse log-SNR.
- ``logsnr``: uniform in lambda = ln(alpha/sigma) (DPM-Solver's recommendation at low NFE).
- ``auto``: ``quadratic`` on VP / sub-VP schedules, ``logsnr`` otherwise (the default of the fast
  multistep samplers; the measured best on the DDPM table in benchmarks/sampler_error_vs_nfe.py).
- a user tensor / sequence of times (must be strictly decreasing inside [0, T]).
"""

from __future__ import annotations

import math

import torch

from ..sde.base import LinearSDE
from ..sde.vp import VPSDE

GRIDS = ("uniform", "quadratic", "discrete", "karras", "logsnr", "auto")


def make_grid(
    sde: LinearSDE,
    kind="uniform",
    steps: int = 1000,
    eps: float | None = None,
    rho: float = 7.0,
    t_max: float | None = None,
) -> torch.Tensor:
    """Build a descending time grid of ``steps + 1`` points from ``t_max`` (default T) to ``eps``.

    For ``kind="discrete"`` the grid is the SDE's chain (``steps`` is ignored: N steps, one per
    chain index), which the ancestral / DDPM samplers use by default.
    """
    eps = sde.default_eps if eps is None else float(eps)
    T = sde.T if t_max is None else float(t_max)
    if not isinstance(kind, str):
        grid = torch.as_tensor(kind, dtype=torch.float64).flatten()
        if grid.numel() < 2:
            raise ValueError(f"a user grid needs at least 2 times; got {grid.numel()}")
        if not (grid[1:] < grid[:-1]).all():
            raise ValueError(f"a user grid must be strictly decreasing; got {grid.tolist()[:8]}...")
        if grid.max() > sde.T + 1e-12 or grid.min() < 0:
            raise ValueError(
                f"a user grid must lie in [0, T] = [0, {sde.T}]; got [{grid.min().item()}, {grid.max().item()}]"
            )
        return grid
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1; got steps = {steps!r}")
    sde.check_eps(eps)
    if kind == "auto":
        kind = "quadratic" if isinstance(sde, VPSDE) else "logsnr"
    if kind == "uniform":
        return torch.linspace(T, eps, steps + 1, dtype=torch.float64)
    if kind == "quadratic":
        u = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
        return eps + (T - eps) * u**2
    if kind == "discrete":
        return sde.discrete_times(eps).to(torch.float64)
    if kind in ("karras", "logsnr"):
        lam_max = float(sde.log_snr(torch.tensor(eps, dtype=torch.float64)))
        lam_min = float(sde.log_snr(torch.tensor(T, dtype=torch.float64)))
        if kind == "logsnr":
            lam = torch.linspace(lam_min, lam_max, steps + 1, dtype=torch.float64)
        else:
            s_max, s_min = math.exp(-lam_min), math.exp(-lam_max)
            u = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
            sig = (s_max ** (1 / rho) + u * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
            lam = -torch.log(sig)
        t = sde.t_from_log_snr(lam).to(torch.float64)
        t[0], t[-1] = T, eps  # exact endpoints
        return t
    raise ValueError(f"unknown grid {kind!r}; choose one of {GRIDS} or pass a tensor of times")
