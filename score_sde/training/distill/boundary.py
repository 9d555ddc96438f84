"""The consistency model's boundary parameterisation (Song et al. 2023, eq. 7 and App. C) on any linear SDE.

In the EDM view every linear SDE x_t = alpha(t) x_0 + sigma(t) z is x~ = x / alpha = x_0 + sigma~ z with
sigma~ = sigma / alpha, and its PF-ODE depends on t only through sigma~. The consistency function maps a
point of a PF-ODE trajectory to the trajectory's value at the end time eps, in x~:

    f(x, t) = c_skip(sigma~) x~ + c_out(sigma~) F(c_in(sigma~) x~, label(t)),
    c_skip = s_d^2 / ((sigma~ - sigma~_min)^2 + s_d^2),
    c_out  = s_d (sigma~ - sigma~_min) / sqrt(s_d^2 + sigma~^2),
    c_in   = 1 / sqrt(sigma~^2 + s_d^2),

with sigma~_min = sigma~(eps) and s_d = sigma_data. At t = eps, c_skip = 1 and c_out = 0, so
f(x, eps) = x~ exactly (the boundary condition) whatever the network F does. On alpha = 1 (VE, EDM) this
is the paper's parameterisation with sigma = sigma~.

:class:`ConsistencyModel` is a :class:`~score_sde.score.ScoreModel` whose ``denoise`` view is f and whose
``score`` view is (alpha f - x) / sigma^2, so the samplers' Tweedie step recovers f and
``ss.sample(sde, model, sampler="consistency", steps=K)`` runs multistep consistency sampling (Alg. 1).
"""

from __future__ import annotations

import math

import torch

from ...score import ScoreModel, time_labels
from ...utils import bcast


class ConsistencyModel(ScoreModel):
    """f(x, t) of a network F with the boundary parameterisation above; shapes x [B, ...], t [B].

    Args:
        net: F, called as ``net(c_in x~, labels[, cond])``.
        sde: the forward SDE; eps: the end time where f(x, eps) = x / alpha(eps).
        sigma_data: s_d (0.5); time_labels: the network's time label (see :func:`~score_sde.score.time_labels`).
    """

    def __init__(self, net, sde, eps: float, sigma_data: float = 0.5, time_labels: str = "continuous"):
        super().__init__(net, sde, prediction="x0", time_labels=time_labels, sigma_data=sigma_data)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < sde.T:
            raise ValueError(f"eps must lie in (0, T) = (0, {sde.T}); got eps = {eps!r}")
        self.eps = float(eps)
        self.sigma_min = float(sde.sigma_tilde(torch.tensor(self.eps, dtype=torch.float64)))

    def coefficients(self, t: torch.Tensor):
        """(c_skip, c_out, c_in) at times t [B] (float64)."""
        st = self.sde.sigma_tilde(t.to(torch.float64))
        sd2, d = self.sigma_data**2, st - self.sigma_min
        c_skip = sd2 / (d * d + sd2)
        c_out = self.sigma_data * d / torch.sqrt(sd2 + st * st)
        c_in = 1 / torch.sqrt(st * st + sd2)
        return c_skip, c_out, c_in

    def _raw(self, x, t, cond=None):
        c_skip, c_out, c_in = (bcast(c.to(x), x) for c in self.coefficients(t))
        xt = x / bcast(self.sde.alpha(t).to(x), x)
        F = self._call(xt * c_in, time_labels(self.sde, t, self.time_labels).to(x), cond)
        return c_skip * xt + c_out * F, "x0"

    def extra_repr(self) -> str:
        return f"eps={self.eps}, sigma_data={self.sigma_data}, sigma_min={self.sigma_min:.3g}"


def marker(model: ConsistencyModel) -> dict:
    """The plain values a checkpoint stores so that :func:`~score_sde.training.services.load_workdir` rebuilds
    the wrapper: ``{"eps", "sigma_data", "time_labels"}``."""
    return {"eps": model.eps, "sigma_data": model.sigma_data, "time_labels": model.time_labels}


def from_marker(net, sde, m: dict) -> ConsistencyModel:
    """The :class:`ConsistencyModel` of a checkpoint's ``consistency`` entry."""
    if not isinstance(m, dict) or not {"eps", "sigma_data", "time_labels"} <= set(m):
        raise ValueError(f"a checkpoint's 'consistency' entry needs eps, sigma_data, time_labels; got {m!r}")
    if not math.isfinite(float(m["eps"])):
        raise ValueError(f"a checkpoint's consistency eps is not finite: {m['eps']!r}")
    return ConsistencyModel(net, sde, float(m["eps"]), float(m["sigma_data"]), str(m["time_labels"]))


__all__ = ["ConsistencyModel", "marker", "from_marker"]
