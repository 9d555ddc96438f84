"""Networks of other libraries as score models.

- :class:`DenoiserModel`: a k-diffusion / EDM denoiser ``D(x, sigma) -> x_0`` on any linear SDE.
- :func:`unet2d_score_model`: a diffusers ``UNet2DModel`` (wrapped by :class:`DiffusersUNet`) as a
  :class:`~score_sde.score.ScoreModel` with the prediction type and time labels it was trained with.

Both give the views ``score``, ``eps``, ``denoise`` and ``v`` of :class:`~score_sde.score.ScoreModel`,
so every sampler, the likelihood and guidance run on them unchanged. Neither module imports
diffusers or k-diffusion: they wrap objects the caller built.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..score import ScoreModel
from ..sde.base import LinearSDE
from ..sde.ve import VESDE
from ..utils import bcast

# diffusers' names of the prediction types -> ours
DIFFUSERS_PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}


class DenoiserModel(ScoreModel):
    """A denoiser in the variance-exploding parametrization as a score model on any linear SDE.

    k-diffusion's wrapped models (``Denoiser``, ``VDenoiser``, ``CompVisDenoiser``, ...) and EDM's
    preconditioned networks (``EDMPrecond``, ``VPPrecond``, ``VEPrecond``) are called as
    ``D(x~, sigma~)`` on noisy data x~ = x_0 + sigma~ z and return E[x_0 | x~]. Under an SDE with
    x_t = alpha(t) x_0 + sigma(t) z the same data is x~ = x_t / alpha(t) at sigma~ = sigma(t) / alpha(t)
    (Karras et al. 2022, eqs. 3-4, with their s(t) = alpha(t)), so

        D_t(x) = D(x / alpha(t), sigma(t) / alpha(t)),       score = (alpha(t) D_t(x) - x) / sigma(t)^2.

    Args:
        denoiser: ``D(x~ [B, ...], sigma~ [B]) -> [B, ...]``; with a condition it is called as
            ``D(x~, sigma~, cond)``, or ``D(x~, sigma~, **{cond_key: cond})`` when ``cond_key`` is given
            (k-diffusion passes ``cond=``, EDM ``class_labels=``).
        sde: the SDE whose times the samplers walk; the default ``VESDE(0.002, 80)`` spans EDM's
            sigma range, on which sigma~(t) = sigma(t) and alpha = 1.
        cond_key: keyword under which a condition is passed (``None``: third positional argument).
    """

    def __init__(self, denoiser: Callable, sde: LinearSDE | None = None, cond_key: str | None = None):
        if not callable(denoiser):
            raise TypeError(f"denoiser must be callable as D(x, sigma); got {type(denoiser).__name__}")
        if sde is None:
            sde = VESDE(sigma_min=0.002, sigma_max=80.0)
        if not isinstance(sde, LinearSDE):
            raise TypeError(f"sde must be a score_sde SDE (e.g. ss.VESDE(0.002, 80)); got {type(sde).__name__}")
        if cond_key is not None and not isinstance(cond_key, str):
            raise TypeError(f"cond_key must be a keyword name or None; got cond_key = {cond_key!r}")
        super().__init__(denoiser, sde, prediction="x0", time_labels="continuous")
        self.cond_key = cond_key

    def _raw(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> tuple[torch.Tensor, str]:
        """D_t(x) = D(x / alpha(t), sigma~(t)) and the type ``"x0"``; x [B, ...], t [B] (checked by
        :meth:`ScoreModel.raw` / the score views before this is called)."""
        alpha = self.sde.alpha(t).to(x)
        sigma_tilde = self.sde.sigma_tilde(t).to(x)
        xt = x / bcast(alpha, x)
        if cond is None:
            return self.net(xt, sigma_tilde), "x0"
        if self.cond_key is None:
            return self.net(xt, sigma_tilde, cond), "x0"
        return self.net(xt, sigma_tilde, **{self.cond_key: cond}), "x0"


class DiffusersUNet(nn.Module):
    """A diffusers ``UNet2DModel`` as ``net(x, labels[, class_labels]) -> tensor`` (shape like x).

    ``labels`` are what the UNet was trained with: integer timesteps (DDPM / DDIM pipelines) or
    noise levels sigma (``ScoreSdeVePipeline``, whose UNet divides its output by sigma).
    """

    def __init__(self, unet: nn.Module):
        super().__init__()
        config = getattr(unet, "config", None)
        if config is None or not hasattr(config, "in_channels") or not hasattr(config, "out_channels"):
            raise TypeError(f"unet must be a diffusers UNet2DModel (with .config); got {type(unet).__name__}")
        if config.out_channels != config.in_channels:
            raise ValueError(
                f"the UNet predicts {config.out_channels} channels for {config.in_channels} input channels "
                "(a learned variance?); only UNets whose output is shaped like their input are supported"
            )
        self.unet = unet

    def forward(self, x: torch.Tensor, labels: torch.Tensor, cond=None) -> torch.Tensor:
        return self.unet(x, labels, class_labels=cond, return_dict=False)[0]


def unet2d_score_model(
    unet: nn.Module, sde: LinearSDE, prediction: str = "eps", time_labels: str = "discrete"
) -> ScoreModel:
    """A diffusers ``UNet2DModel`` as a :class:`~score_sde.score.ScoreModel` on ``sde``.

    Args:
        unet: the ``UNet2DModel`` (any device / dtype; the samples must match them).
        sde: the SDE it was trained on (``VPSDE.from_betas(betas)`` for a DDPM chain, a ``VESDE`` for
            score SDE VE models).
        prediction: ours (``eps``, ``x0``, ``v``, ``score``) or diffusers' name (``epsilon``,
            ``sample``, ``v_prediction``).
        time_labels: ``discrete`` (integer timesteps of the chain, DDPM / DDIM) or ``sigma``
            (``ScoreSdeVePipeline``), or any other of :data:`~score_sde.score.TIME_LABELS`.
    """
    prediction = DIFFUSERS_PREDICTIONS.get(prediction, prediction)
    return ScoreModel(DiffusersUNet(unet), sde, prediction=prediction, time_labels=time_labels)


__all__ = ["DenoiserModel", "DiffusersUNet", "unet2d_score_model", "DIFFUSERS_PREDICTIONS"]
