"""diffusers pipelines as score models that carry their own sampling recipe.

``load_diffusers(folder)`` reads a folder written by ``save_pretrained`` of a ``DDPMPipeline``,
``DDIMPipeline`` or ``ScoreSdeVePipeline`` (a ``UNet2DModel`` and a scheduler) and returns a
:class:`~score_sde.score.ScoreModel` with

- ``model.sde``: the forward SDE of the scheduler. DDPM / DDIM: the scheduler's chain as
  :meth:`VPSDE.from_betas <score_sde.sde.vp.VPSDE.from_betas>`, with the betas
  beta_i = 1 - alpha_bar_i / alpha_bar_{i-1} of the scheduler's own (float32) ``alphas_cumprod``, so
  that our alpha_bar is the one the scheduler steps with, whatever ``beta_schedule`` made it
  (``linear``, ``scaled_linear``, ``squaredcos_cap_v2``, ``sigmoid`` or ``trained_betas``).
  ``ScoreSdeVeScheduler``: ``VESDE(sigma_min, sigma_max, N)`` with N the number of steps.
- ``model.sampling``: the pipeline's sampler as keyword arguments of :func:`score_sde.sample`, so
  that ``ss.sample(model.sde, model, x_T=x_T, generator=g, **model.sampling)`` runs the sampler the
  pipeline runs, on the same times:

  ==================  ==========================================================================
  DDPMPipeline         ``ancestral`` over the scheduler's timesteps, then t = 0, with its
                       ``variance_type`` (``fixed_small`` / ``fixed_large``) and ``clip_sample``
  DDIMPipeline         ``ddim`` (eta = 0, the pipeline's default) over the scheduler's timesteps, then
                       alpha_bar = 1 (``set_alpha_to_one``), with ``clip_sample``
  ScoreSdeVePipeline   ``pc``: Langevin corrector (the scheduler's ``snr`` and ``correct_steps``),
                       then reverse diffusion with the SMLD chain's sigmas (``discretization="chain"``)
                       at the times linspace(1, sampling_eps, N), then a last step to sigma = 0
  ==================  ==========================================================================

- ``model.data_scaling``: data on [-1, 1] (DDPM / DDIM) or [0, 1] (score SDE VE), as the pipelines
  map their samples to images.

Random numbers: every pipeline draws x_T, then one standard normal tensor per noisy step (and
per corrector step) from its generator, in the order our loop draws them, so the same
``torch.Generator`` state gives the same samples (tests/test_pretrained_diffusers.py).

diffusers is an optional dependency: ``pip install 'score_sde[diffusers]'``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..data_scaling import DataScaling
from ..score import ScoreModel
from ..sde.ve import VESDE
from ..sde.vp import VPSDE, DiscreteVPSDE
from ..solvers.predictors import ReverseDiffusion
from .adapters import DIFFUSERS_PREDICTIONS, unet2d_score_model

PIPELINES = ("DDPMPipeline", "DDIMPipeline", "ScoreSdeVePipeline")
_SCHEDULERS = {
    "DDPMPipeline": "DDPMScheduler",
    "DDIMPipeline": "DDIMScheduler",
    "ScoreSdeVePipeline": "ScoreSdeVeScheduler",
}
_DEFAULT_STEPS = {"DDIMPipeline": 50}  # DDIMPipeline.__call__'s default; the others run their full chain
_VARIANCES = {"fixed_small": "fixed_small", "fixed_small_log": "fixed_small", "fixed_large": "fixed_large"}


def require_diffusers():
    """Import diffusers, or raise an ImportError that names the extra to install."""
    try:
        import diffusers
    except ImportError as err:
        raise ImportError(
            "loading a diffusers pipeline needs the optional package 'diffusers': "
            "pip install 'score_sde[diffusers]' (or: pip install diffusers)"
        ) from err
    return diffusers


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {path.parent} a folder written by a pipeline's save_pretrained?")
    with open(path) as f:
        return json.load(f)


def load_diffusers(
    source, *, num_inference_steps: int | None = None, device=None, dtype: torch.dtype | None = None
) -> ScoreModel:
    """Load a diffusers pipeline (a ``save_pretrained`` folder, or the pipeline object) as a score model.

    Args:
        source: the folder (with ``model_index.json``, ``unet/``, ``scheduler/``), or a
            ``DDPMPipeline`` / ``DDIMPipeline`` / ``ScoreSdeVePipeline`` object (its UNet is used as it
            is, moved to ``device`` / ``dtype`` if given; its scheduler is left untouched).
        num_inference_steps: the pipeline's ``num_inference_steps``. Default: the pipeline's own,
            i.e. the scheduler's full chain (``num_train_timesteps``) for ``DDPMPipeline`` and
            ``ScoreSdeVePipeline`` (their default 1000 / 2000 equal it for published checkpoints) and
            50 for ``DDIMPipeline``.
        device, dtype: where and in which precision to put the UNet (the samples must match).
    Returns:
        a :class:`~score_sde.score.ScoreModel` with ``.sde``, ``.sampling`` (keyword arguments of
        :func:`score_sde.sample`), ``.data_scaling`` and ``.source`` (the pipeline's class and folder).
    """
    n = num_inference_steps
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"num_inference_steps must be an integer >= 1; got num_inference_steps = {n!r}")
    diffusers = require_diffusers()
    if isinstance(source, (str, os.PathLike)):
        kind, unet_name, scheduler_name, config, folder = _read_folder(Path(source))
        unet = None
    else:
        if not isinstance(source, diffusers.DiffusionPipeline):
            raise TypeError(f"source must be a folder or a diffusers pipeline; got {type(source).__name__}")
        kind, folder = type(source).__name__, None
        _check_kind(kind, "the pipeline object")
        unet = getattr(source, "unet", None)
        unet_name, scheduler_name = type(unet).__name__, type(source.scheduler).__name__
        config = dict(source.scheduler.config)
    where = folder or f"the {kind}"
    if unet_name != "UNet2DModel":
        raise ValueError(f"{where}: the pipeline's unet is a {unet_name!r}; only UNet2DModel is supported")
    want = _SCHEDULERS[kind]
    if kind != "DDIMPipeline" and scheduler_name != want:  # DDIMPipeline converts any scheduler config to DDIM
        raise ValueError(f"{where}: a {kind} with a {scheduler_name!r}; only its default {want} is supported")
    scheduler = getattr(diffusers, want).from_config(config)
    if unet is None:
        unet = diffusers.UNet2DModel.from_pretrained(str(folder), subfolder="unet")
    unet = unet.to(device=device, dtype=dtype)
    unet.eval()
    if kind == "ScoreSdeVePipeline":
        model = _score_sde_ve(unet, scheduler, n)
    else:
        model = _ddpm_or_ddim(kind, unet, scheduler, n)
    model.source = {"pipeline": kind, "folder": None if folder is None else str(folder)}
    size = unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    model.data_shape = (unet.config.in_channels, *size)  # [C, H, W] of one sample
    return model


def _check_kind(kind, where: str) -> None:
    if kind not in PIPELINES:
        raise ValueError(f"{where} is a {kind!r} pipeline; load_diffusers reads one of {PIPELINES}")


def _read_folder(folder: Path):
    """(pipeline class, unet class, scheduler class, scheduler config, folder) of a save_pretrained folder."""
    index = _read_json(folder / "model_index.json")
    kind = index.get("_class_name")
    _check_kind(kind, str(folder))
    unet_name = index.get("unet", [None, None])[-1]
    scheduler_name = index.get("scheduler", [None, None])[-1]
    config = _read_json(folder / "scheduler" / "scheduler_config.json")
    return kind, unet_name, scheduler_name, config, folder


# ---------------------------------------------------------------------------------------------
# DDPM and DDIM: a discrete VP chain
# ---------------------------------------------------------------------------------------------
def chain_from_scheduler(scheduler) -> DiscreteVPSDE:
    """The scheduler's chain as a VP SDE: beta_i = 1 - alpha_bar_i / alpha_bar_{i-1} of its ``alphas_cumprod``."""
    ab = scheduler.alphas_cumprod.detach().to(torch.float64).cpu()
    betas = 1.0 - ab / torch.cat([ab.new_ones(1), ab[:-1]])
    if not bool(((betas > 0) & (betas < 1)).all()):
        i = int((~((betas > 0) & (betas < 1))).nonzero()[0])
        raise ValueError(
            f"the scheduler's chain has beta_{i} = {betas[i].item()!r} outside (0, 1) "
            "(rescale_betas_zero_snr gives alpha_bar_T = 0, which has no Gaussian prior N(0, I)); not supported"
        )
    return VPSDE.from_betas(betas)


def _check_config(kind: str, config) -> None:
    if config.get("thresholding", False):
        raise ValueError(f"{kind}: the scheduler's dynamic thresholding (thresholding=True) is not supported")
    if config.get("prediction_type", "epsilon") not in DIFFUSERS_PREDICTIONS:
        raise ValueError(
            f"{kind}: prediction_type = {config.get('prediction_type')!r}; supported: {sorted(DIFFUSERS_PREDICTIONS)}"
        )


def _timesteps(kind: str, scheduler, steps: int) -> tuple[list[int], bool]:
    """The scheduler's integer timesteps for ``steps`` steps (descending), checked to step from each
    listed timestep to the next one, as our grid does; and whether the chain ends at alpha_bar = 1."""
    scheduler.set_timesteps(steps)
    ts = [int(t) for t in scheduler.timesteps]
    n_train = scheduler.config.num_train_timesteps
    if kind == "DDPMPipeline":
        prev = [int(scheduler.previous_timestep(t)) for t in ts]
        to_one = True
    else:  # DDIMScheduler.step: prev = t - num_train_timesteps // num_inference_steps
        prev = [t - n_train // steps for t in ts]
        to_one = bool(scheduler.config.set_alpha_to_one)
    expected = ts[1:] + [prev[-1]]
    if prev != expected or prev[-1] >= 0 or not all(0 <= t < n_train for t in ts):
        raise ValueError(
            f"{kind}: with timestep_spacing = {scheduler.config.timestep_spacing!r} and num_inference_steps = "
            f"{steps} the scheduler steps from timestep t to {prev[:4]}... while it evaluates the UNet at "
            f"{ts[1:5]}...; only schedules that step to their next timestep are supported"
        )
    return ts, to_one


def _ddpm_or_ddim(kind: str, unet, scheduler, steps: int | None) -> ScoreModel:
    config = scheduler.config
    _check_config(kind, config)
    sde = chain_from_scheduler(scheduler)
    steps = _DEFAULT_STEPS.get(kind, sde.N) if steps is None else steps
    if steps > sde.N:
        raise ValueError(f"num_inference_steps = {steps} exceeds the chain's num_train_timesteps = {sde.N}")
    ts, to_one = _timesteps(kind, scheduler, steps)
    times = sde.index_to_time(torch.tensor(ts)).tolist()
    end = 0.0 if to_one else float(sde.index_to_time(0))  # DDIM without set_alpha_to_one ends at alpha_bar_0
    if end >= times[-1]:
        raise ValueError(
            f"{kind}: set_alpha_to_one = False with a last timestep of 0 makes the last step a step of length 0; "
            "not supported (set set_alpha_to_one = True or use steps_offset >= 1)"
        )
    grid = torch.tensor(times + [end], dtype=torch.float64)
    clip = {"clip_denoised": bool(config.clip_sample), "clip_range": float(config.clip_sample_range)}
    if kind == "DDPMPipeline":
        vt = config.variance_type
        if vt not in _VARIANCES:
            raise ValueError(f"{kind}: variance_type = {vt!r} is not supported; supported: {sorted(_VARIANCES)}")
        sampling = {"sampler": "ancestral", "grid": grid, "variance": _VARIANCES[vt], **clip}
    else:
        sampling = {"sampler": "ddim", "grid": grid, "eta": 0.0, **clip}
    model = unet2d_score_model(unet, sde, prediction=config.prediction_type, time_labels="discrete")
    model.sampling = sampling
    model.data_scaling = DataScaling.centered()
    return model


# ---------------------------------------------------------------------------------------------
# score SDE VE: predictor-corrector on the SMLD chain
# ---------------------------------------------------------------------------------------------
def _score_sde_ve(unet, scheduler, steps: int | None) -> ScoreModel:
    config = scheduler.config
    steps = int(config.num_train_timesteps) if steps is None else steps
    if steps < 2:
        raise ValueError(f"ScoreSdeVePipeline: num_inference_steps must be >= 2; got {steps}")
    sde = VESDE(float(config.sigma_min), float(config.sigma_max), N=steps)
    eps = float(config.sampling_eps)
    times = torch.linspace(1.0, eps, steps, dtype=torch.float64)
    grid = torch.cat([times, times.new_zeros(1)])  # the last step goes from sigma_0 to sigma = 0
    n_correct = int(config.correct_steps)
    sampling = {
        "sampler": "pc",
        "grid": grid,
        "predictor": ReverseDiffusion(discretization="chain"),
        "corrector": "langevin" if n_correct > 0 else "none",
        "snr": float(config.snr),
        "corrector_steps": max(n_correct, 1),
    }
    model = unet2d_score_model(unet, sde, prediction="score", time_labels="sigma")
    model.sampling = sampling
    model.data_scaling = DataScaling.unit()
    return model


__all__ = ["load_diffusers", "chain_from_scheduler", "require_diffusers", "PIPELINES"]
