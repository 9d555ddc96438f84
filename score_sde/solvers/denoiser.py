"""The denoiser view of one model evaluation: x_0 and eps from the network's own prediction.

With x = alpha x_0 + sigma eps (Song et al. 2021, eq. 29; x, eps [B, ...]) a model may predict any of

    eps,   x_0 = D (the denoiser),   score = -eps / sigma = (alpha D - x) / sigma^2,   v,   velocity

(:mod:`score_sde.score`). The fast samplers are written in the denoiser D (DDIM eq. 12 in x~ = x / alpha,
DPM-Solver++, UniPC, EDM, Restart, consistency sampling) or in eps (DPM-Solver). Asking the model for its
score and converting back (eps -> score -> D) costs two conversions per evaluation and their rounding;
a :class:`Prediction` holds the model's *native* output and forms each view from it at most once:

- a :class:`~score_sde.score.ScoreModel` (reached through the sampler's wrappers by
  :func:`native_prediction`) gives its network's output: ``x0`` is returned unchanged for an x0 (or
  EDM-preconditioned) network, ``eps`` unchanged for an eps network, and the other view is one
  conversion, D = (x - sigma eps) / alpha or eps = (x - alpha D) / sigma;
- a plain score function s gives D = (x + sigma^2 s) / alpha (Efron / Tweedie) and eps = -sigma s,
  the same arithmetic, in the same order, as the samplers used before this view existed.

The native path is taken only when the model's SDE has the sampler's alpha and sigma
(:func:`same_schedule`), so that both paths denoise the same way up to rounding
(``tests/test_denoiser_view.py`` checks 1e-12 in float64).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..score import convert_at
from ..sde.base import LinearSDE

_PROBE = 33  # times at which two SDEs' schedules are compared (once per run)


class Prediction:
    """One evaluation of the model at (x, t) and its views; x, ``out`` [B, ...], ``t`` [B].

    Attributes:
        out: the model's output as it came, of type ``kind``: ``"x0"``, ``"eps"``, ``"v"``,
            ``"velocity"`` (a network's native prediction) or ``"score"`` (a plain score function).
        alpha, sigma: alpha(t), sigma(t) as Python floats (a grid point's float64 table entries or one
            time's values) or tensors broadcastable against x ([B, 1, ..., 1]).
    """

    __slots__ = ("x", "out", "kind", "alpha", "sigma", "t", "sde", "_x0")

    def __init__(self, x, out, kind: str, alpha, sigma, t: torch.Tensor, sde: LinearSDE):
        self.x, self.out, self.kind = x, out, kind
        self.alpha, self.sigma, self.t, self.sde = alpha, sigma, t, sde
        self._x0 = out if kind == "x0" else None

    @property
    def x0(self) -> torch.Tensor:
        """The denoiser D(x, t) = E[x_0 | x_t = x], formed once: the model's own output for an x0 network,
        (x - sigma eps) / alpha for an eps network, (x + sigma^2 s) / alpha (Tweedie) for a score."""
        if self._x0 is None:
            x, out, a, sig = self.x, self.out, self.alpha, self.sigma
            if self.kind == "score":
                self._x0 = (x + sig * sig * out) / a
            elif self.kind == "eps":
                self._x0 = (x - sig * out) / a
            else:  # v, velocity: the one conversion table
                self._x0 = convert_at(self.sde, self.t, out, x, self.kind, "x0")
        return self._x0

    @property
    def formed_x0(self) -> torch.Tensor | None:
        """D if it is at hand (native x0, or already formed by :attr:`x0`), else None (no conversion)."""
        return self._x0

    @property
    def eps(self) -> torch.Tensor:
        """The noise estimate eps^ = (x - alpha D) / sigma: the model's own output for an eps network,
        -sigma s for a score, else from :attr:`x0`."""
        if self.kind == "eps":
            return self.out
        if self.kind == "score":
            return -self.sigma * self.out
        return (self.x - self.alpha * self.x0) / self.sigma

    def noise(self, xt: torch.Tensor, sigma_tilde: float) -> torch.Tensor:
        """eps^ in the variables x~ = x / alpha = D + sigma~ eps^ (Lu et al. 2022a, eq. 3.4's integrand):
        the model's own eps for an eps network, else (x~ - D) / sigma~, with x~ = ``xt`` and sigma~ =
        ``sigma_tilde`` as the caller tabulates them (e^{-lambda})."""
        if self.kind == "eps":
            return self.out
        return (xt - self.x0) / sigma_tilde

    @property
    def score(self) -> torch.Tensor:
        """grad log p_t(x) = -eps^ / sigma (the model's output itself for a score function)."""
        return self.out if self.kind == "score" else -self.eps / self.sigma


def same_schedule(a: LinearSDE, b: LinearSDE) -> bool:
    """Whether two SDEs have the same alpha(t) and sigma(t): the same object, or the same class, T and
    bit-equal alpha, sigma at 33 times of [0, T] (float64)."""
    if a is b:
        return True
    if type(a) is not type(b) or float(a.T) != float(b.T):
        return False
    t = torch.linspace(0.0, float(a.T), _PROBE, dtype=torch.float64)[1:]
    return bool(torch.equal(a.alpha(t), b.alpha(t)) and torch.equal(a.sigma(t), b.sigma(t)))


def native_prediction(fn, sde: LinearSDE) -> Callable | None:
    """``raw(x, t[, cond]) -> (out, kind)`` of a score callable that knows its network's own prediction
    (``fn.native_prediction()`` returning ``(raw, model_sde)``: a :class:`~score_sde.score.ScoreModel`, or a
    wrapper such as :class:`~score_sde.utils.ScoreGuard` handing on its model's), when the model's SDE has
    the schedule of ``sde``; None for a plain score function (the samplers then convert its score)."""
    get = getattr(fn, "native_prediction", None)
    found = get() if callable(get) else None
    if found is None:
        return None
    raw, model_sde = found
    return raw if same_schedule(model_sde, sde) else None


__all__ = ["Prediction", "same_schedule", "native_prediction"]
