"""The score interface: one callable ``score(x, t)`` whatever the network predicts.

A network ``net(x, labels[, cond])`` may predict (with x = alpha x_0 + sigma eps):

=========  ====================================================================
``eps``     the noise eps;                     score = -eps / sigma
``x0``      the clean data x_0 (a denoiser D); score = (alpha D - x) / sigma^2
``v``       v = alpha eps - sigma x_0 (Salimans & Ho 2022)
``velocity`` u = alpha'(t) x_0 + sigma'(t) eps = d x_t / dt along the conditional path (flow matching,
            Lipman et al. 2023; rectified flow, Liu et al. 2022: u = eps - x_0 for alpha = 1 - t,
            sigma = t); its posterior mean is the PF-ODE drift f x - 1/2 g^2 score
``score``   grad_x log p_t(x) itself
``edm``     EDM's preconditioned denoiser (Karras et al. 2022, Table 1): in x~ = x/alpha,
            sigma~ = sigma/alpha, D = c_skip x~ + c_out F(c_in x~, c_noise) with
            c_skip = s_d^2/(sigma~^2+s_d^2), c_out = sigma~ s_d / sqrt(sigma~^2+s_d^2),
            c_in = 1/sqrt(sigma~^2+s_d^2), c_noise = ln(sigma~)/4
=========  ====================================================================

and it may be labelled with time by (all mappings live in :func:`time_labels`):

``continuous`` t itself; ``t999`` t (N - 1) (official continuous VP nets); ``discrete`` the
integer index of the SDE's discrete chain (DDPM nets); ``sigma`` sigma(t) (official VE nets).

:func:`convert` is the one place that maps between eps, x0, v, velocity and score.

``v`` and ``velocity`` are different quantities. Salimans & Ho's v is the derivative of x along the
angle phi = arctan(sigma / alpha) of a variance-preserving path (x = cos phi x_0 + sin phi eps gives
dx/dphi = v); it depends on alpha and sigma only. The ``velocity`` u is the derivative in the SDE's own
time t, so it also needs alpha'(t) and sigma'(t). For x = alpha x_0 + sigma eps and u as above,

    x_0 = (sigma' x - sigma u) / det,    eps = (alpha u - alpha' x) / det,    det = alpha sigma' - sigma alpha',  (V1)

with det = -alpha sigma d lambda/dt > 0 (lambda = ln(alpha / sigma) decreases). In the other direction,
from eps (x_0 = (x - sigma eps) / alpha),

    u = (alpha'/alpha) x + (sigma' - sigma alpha'/alpha) eps = f x + g^2 / (2 sigma) eps
      = f x - 1/2 g^2 score,                                                                      (V2)

using f = alpha'/alpha and g^2 = 2 sigma (sigma' - f sigma) (:mod:`score_sde.sde.base`): the velocity view
of a score is the probability-flow ODE drift (Song et al. 2021, eq. 13), for every linear SDE.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
from torch import nn

from .sde.base import LinearSDE
from .utils import as_time, bcast

PREDICTIONS = ("eps", "x0", "v", "velocity", "score", "edm")
KINDS = ("eps", "x0", "v", "velocity", "score")  # what convert maps between
TIME_LABELS = ("continuous", "t999", "discrete", "sigma", "edm")


def time_labels(sde: LinearSDE, t: torch.Tensor, kind: str) -> torch.Tensor:
    """The label a network receives for time t (shape [B]) under convention ``kind``."""
    if kind == "continuous":
        return t
    if kind == "t999":
        return t * (sde.N - 1)
    if kind == "discrete":
        return sde.time_to_index(t)
    if kind == "sigma":
        return sde.sigma(t)
    if kind == "edm":
        return 0.25 * torch.log(sde.sigma_tilde(t))
    raise ValueError(f"unknown time_labels {kind!r}; choose one of {TIME_LABELS}")


def convert(
    out: torch.Tensor,
    x: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    src: str,
    dst: str,
    *,
    dalpha: torch.Tensor | None = None,
    dsigma: torch.Tensor | None = None,
):
    """Convert a prediction ``out`` of type ``src`` into type ``dst`` (each of eps, x0, v, velocity, score).

    ``alpha`` and ``sigma`` are [B] (or broadcastable to x); x is the noisy input, shape [B, ...].
    ``velocity`` (either side) also needs the derivatives ``dalpha`` = alpha'(t) and ``dsigma`` = sigma'(t)
    ([B]; ``sde.dalpha_dt(t)``, ``sde.dsigma_dt(t)``); equations (V1), (V2) of the module docstring.
    """
    for kind in (src, dst):
        if kind not in KINDS:
            raise ValueError(f"unknown prediction type {kind!r}; choose one of {', '.join(KINDS)}")
    if src == dst:
        return out
    a, s = bcast(alpha, x), bcast(sigma, x)
    if "velocity" in (src, dst):
        if dalpha is None or dsigma is None:
            raise ValueError(f"converting {src!r} to {dst!r} needs dalpha = alpha'(t) and dsigma = sigma'(t)")
        da, ds = bcast(dalpha, x), bcast(dsigma, x)
    # to eps and x0 first
    if src == "eps":
        eps, x0 = out, (x - s * out) / a
    elif src == "x0":
        eps, x0 = (x - a * out) / s, out
    elif src == "score":
        eps, x0 = -s * out, (x + s * s * out) / a
    elif src == "v":
        n = a * a + s * s
        eps, x0 = (s * x + a * out) / n, (a * x - s * out) / n
    else:  # velocity, (V1)
        det = a * ds - s * da
        eps, x0 = (a * out - da * x) / det, (ds * x - s * out) / det
    if dst == "eps":
        return eps
    if dst == "x0":
        return x0
    if dst == "score":
        return -eps / s
    if dst == "v":
        return a * eps - s * x0
    return da * x0 + ds * eps  # velocity


def convert_at(sde: LinearSDE, t: torch.Tensor, out: torch.Tensor, x: torch.Tensor, src: str, dst: str):
    """:func:`convert` with alpha, sigma (and, for ``velocity``, their derivatives) of ``sde`` at times t [B]."""
    kw = {}
    if "velocity" in (src, dst) and src != dst:
        kw = dict(dalpha=sde.dalpha_dt(t).to(x), dsigma=sde.dsigma_dt(t).to(x))
    return convert(out, x, sde.alpha(t).to(x), sde.sigma(t).to(x), src, dst, **kw)


class ScoreModel(nn.Module):
    """Wrap ``net(x, labels[, cond])`` into the views ``score``, ``eps``, ``denoise`` (and ``v``, ``velocity``).

    Args:
        net: the network; called as ``net(x_in, labels)`` or ``net(x_in, labels, cond)``.
        sde: the forward SDE whose alpha(t), sigma(t) define the conversions.
        prediction: one of ``eps`` (default), ``x0``, ``v``, ``velocity``, ``score``, ``edm``.
        time_labels: one of ``continuous`` (default), ``t999``, ``discrete``, ``sigma``
            (``edm`` predictions always get c_noise = ln(sigma~)/4).
        sigma_data: EDM's sigma_data (0.5).

    ``model(x, t)`` is the score; t is [B] or a scalar. All views take an optional ``cond``.
    """

    def __init__(
        self,
        net: Callable,
        sde: LinearSDE,
        prediction: str = "eps",
        time_labels: str = "continuous",
        sigma_data: float = 0.5,
    ):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")
        if time_labels not in TIME_LABELS:
            raise ValueError(f"unknown time_labels {time_labels!r}; choose one of {TIME_LABELS}")
        if not isinstance(sde, LinearSDE):
            raise TypeError(f"sde must be a score_sde SDE (e.g. ss.VPSDE()); got {type(sde).__name__}")
        if not callable(net):
            raise TypeError(f"net must be callable as net(x, labels[, cond]); got {type(net).__name__}")
        if isinstance(sigma_data, bool) or not isinstance(sigma_data, numbers.Real) or not 0 < sigma_data < math.inf:
            raise ValueError(f"sigma_data must be a positive finite number; got sigma_data = {sigma_data!r}")
        self.net, self.sde, self.prediction = net, sde, prediction
        self.time_labels = "edm" if prediction == "edm" else time_labels
        self.sigma_data = float(sigma_data)

    def _check(self, x, t, view: str = "") -> torch.Tensor:
        """x a floating tensor [B, ...]; t as [B] inside [0, T] (up to rounding in t's dtype), else ValueError.
        The score view is also refused where sigma(t) = 0 (t = 0 of a VP SDE), where it is infinite.

        The value checks (t in range, x finite) run when x and t live on the CPU, where they cost a few
        microseconds; on an accelerator they would cost a device sync per call and are skipped (the
        samplers check their own time grids and watch the score's output)."""
        if not torch.is_tensor(x):
            raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
        if not x.is_floating_point() or x.ndim < 1:
            raise TypeError(f"x must be a floating-point tensor [B, ...]; got dtype {x.dtype}, shape {tuple(x.shape)}")
        t = as_time(t, x)
        if t.numel() and t.device.type == "cpu":
            T = self.sde.T
            tol = 4 * torch.finfo(t.dtype).eps * max(T, 1.0)
            lo, hi = torch.aminmax(t.detach())
            fin = torch.isfinite(x.detach()).all().to(lo.dtype)
            lo, hi, fin = torch.stack((lo, hi, fin)).tolist()  # one sync
            if not fin:
                raise ValueError(f"x must be finite; got NaN/inf in x of shape {tuple(x.shape)}")
            if not (lo >= -tol and hi <= T + tol):  # also catches NaN
                bad = lo if not lo >= -tol else hi
                raise ValueError(f"t must lie in [0, T] = [0, {T}]; got t = {bad!r}")
            if view == "score" and lo <= 0 and float(self.sde.sigma(torch.zeros((), dtype=torch.float64))) == 0:
                raise ValueError("t = 0 has sigma(t) = 0, where the score is infinite; evaluate it at t > 0 (t >= eps)")
        return t

    def raw(self, x: torch.Tensor, t, cond=None) -> tuple[torch.Tensor, str]:
        """The network's output for (x, t) and its prediction type (EDM output is returned as x0)."""
        return self._raw(x, self._check(x, t), cond)

    def native_prediction(self) -> tuple[Callable, LinearSDE] | None:
        """``(raw, sde)``: :meth:`raw` (the network's own output and its type) and the SDE that relates it to
        the score, for samplers that read x_0 or eps directly instead of converting the score back
        (:mod:`score_sde.solvers.denoiser`). None when a subclass redefines the score view itself
        (``score``, ``forward`` or ``_view``): then the score is the only authority."""
        cls = type(self)
        if any(getattr(cls, m) is not getattr(ScoreModel, m) for m in ("score", "forward", "_view")):
            return None
        return self.raw, self.sde

    def _raw(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> tuple[torch.Tensor, str]:
        labels = time_labels(self.sde, t, self.time_labels)
        if self.prediction == "edm":
            a = bcast(self.sde.alpha(t).to(x), x)
            st = bcast(self.sde.sigma_tilde(t).to(x), x)
            sd2 = self.sigma_data**2
            xt = x / a
            c_in = 1 / torch.sqrt(st**2 + sd2)
            F = self._call(xt * c_in, labels.to(x), cond)
            D = sd2 / (st**2 + sd2) * xt + st * self.sigma_data * c_in * F
            return D, "x0"
        return self._call(x, labels, cond), self.prediction

    def _call(self, x, labels, cond):
        return self.net(x, labels) if cond is None else self.net(x, labels, cond)

    def _view(self, x, t, dst, cond=None):
        t = self._check(x, t, dst)
        out, kind = self._raw(x, t, cond)
        return convert_at(self.sde, t, out, x, kind, dst)

    def score(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        """grad_x log p_t(x), shape like x."""
        return self._view(x, t, "score", cond)

    def eps(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        """Predicted noise eps, shape like x."""
        return self._view(x, t, "eps", cond)

    def denoise(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        """Predicted clean data x_0 = E[x_0 | x_t] (Tweedie), shape like x."""
        return self._view(x, t, "x0", cond)

    def v(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        """Salimans & Ho's v = alpha eps - sigma x_0 (not the time derivative :meth:`velocity`), shape like x."""
        return self._view(x, t, "v", cond)

    def velocity(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        """Predicted velocity u = alpha'(t) x_0 + sigma'(t) eps = the PF-ODE drift f x - 1/2 g^2 score, shape
        like x (not Salimans & Ho's v: see the module docstring)."""
        return self._view(x, t, "velocity", cond)

    def forward(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        return self.score(x, t, cond)


def score_from_denoiser(denoiser: Callable, sde: LinearSDE) -> Callable:
    """score(x, t) = (alpha(t) D(x, t) - x) / sigma(t)^2 for a denoiser D(x, t) -> x_0."""

    def score(x, t, *args):
        t = as_time(t, x)
        return convert_at(sde, t, denoiser(x, t, *args), x, "x0", "score")

    return score


__all__ = ["ScoreModel", "convert", "convert_at", "time_labels", "score_from_denoiser", "PREDICTIONS", "TIME_LABELS"]
