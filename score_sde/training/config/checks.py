"""Validation of a config's values (not only their types) and of its data files."""

from __future__ import annotations

import math
import os

from .schema import DTYPES, FILE_DATASETS, LOSSES, REDUCES, SDE_KINDS, TARGETS, WEIGHTINGS, Config

# ---------------------------------------------------------------------------------------------
# validation


def _choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"config key {key!r} = {value!r} is not one of {list(choices)}")


def _positive(key: str, value, strict: bool = True) -> None:
    if value is None:
        return
    if (strict and not value > 0) or (not strict and not value >= 0) or not math.isfinite(value):
        raise ValueError(f"config key {key!r} must be finite and {'> 0' if strict else '>= 0'}; got {value!r}")


def validate(cfg: Config, check_files: bool = True) -> Config:
    """Check values (not only types) and, with ``check_files``, that data files exist.

    Raises ``ValueError`` naming the dotted key: a non-positive learning rate, an unknown SDE,
    loss or data set, a batch that does not split over accumulation steps, a missing ``data.root``.
    """
    t, s, m, d = cfg.training, cfg.sde, cfg.model, cfg.data
    _positive("training.lr", t.lr)
    _positive("training.batch_size", t.batch_size)
    _positive("training.n_iters", t.n_iters, strict=False)
    _positive("training.warmup", t.warmup, strict=False)
    _positive("training.accum_steps", t.accum_steps)
    _positive("training.adam_eps", t.adam_eps)
    _positive("training.weight_decay", t.weight_decay, strict=False)
    _positive("training.eps", t.eps)
    if math.isnan(t.grad_clip):
        raise ValueError(f"config key 'training.grad_clip' must be a number (< 0: off); got {t.grad_clip!r}")
    for k in ("rtol", "atol"):
        _positive(f"sampling.{k}", getattr(cfg.sampling, k))
        _positive(f"eval.{k}", getattr(cfg.eval, k))
    _positive("sampling.snr", cfg.sampling.snr, strict=False)
    _positive("sampling.eps", cfg.sampling.eps)
    _positive("eval.eps", cfg.eval.eps)
    if not 0.0 <= t.cond_drop <= 1.0:
        raise ValueError(f"config key 'training.cond_drop' must lie in [0, 1]; got {t.cond_drop!r}")
    if t.cond_drop > 0 and not m.num_classes:
        raise ValueError("config key 'training.cond_drop' needs a class-conditional model (model.num_classes > 0)")
    for k in ("log_every", "ckpt_every"):
        _positive(f"training.{k}", getattr(t, k))
    for k in ("sample_every", "eval_every"):
        _positive(f"training.{k}", getattr(t, k), strict=False)
    _positive("training.keep_ckpts", t.keep_ckpts)
    for k in ("beta1", "beta2"):
        if not 0 <= getattr(t, k) < 1:
            raise ValueError(f"config key 'training.{k}' must lie in [0, 1); got {getattr(t, k)!r}")
    if t.ema_rate is not None and not 0 <= t.ema_rate < 1:
        raise ValueError(f"config key 'training.ema_rate' must lie in [0, 1); got {t.ema_rate!r}")
    if t.batch_size % t.accum_steps:
        raise ValueError(
            f"config key 'training.batch_size' = {t.batch_size} does not split into "
            f"training.accum_steps = {t.accum_steps} equal micro-batches"
        )
    _choice("training.loss", t.loss, LOSSES)
    _choice("training.weighting", t.weighting, WEIGHTINGS)
    _choice("training.target", t.target, TARGETS)
    _choice("training.reduce", t.reduce, REDUCES)
    _choice("training.dtype", t.dtype, DTYPES)
    if not (t.device in ("auto", "cpu") or t.device.startswith("cuda")):
        raise ValueError(f"config key 'training.device' = {t.device!r} is not 'auto', 'cpu' or 'cuda[:i]'")
    _choice("sde.kind", s.kind, SDE_KINDS)
    _positive("sde.N", s.N)
    for k in ("beta_min", "beta_max", "sigma_min", "sigma_max"):
        _positive(f"sde.{k}", getattr(s, k))
    if s.beta_max <= s.beta_min:
        raise ValueError(f"config key 'sde.beta_max' = {s.beta_max} must exceed sde.beta_min = {s.beta_min}")
    if s.sigma_max <= s.sigma_min:
        raise ValueError(f"config key 'sde.sigma_max' = {s.sigma_max} must exceed sde.sigma_min = {s.sigma_min}")
    _check_path(cfg)
    from ...score import PREDICTIONS, TIME_LABELS

    _choice("model.prediction", m.prediction, PREDICTIONS)
    _choice("model.time_labels", m.time_labels, TIME_LABELS)
    _choice("model.kind", m.kind, ("mlp", "unet", "ddpmpp", "ncsnpp"))
    _choice("model.embedding", m.embedding, ("sinusoidal", "fourier"))
    _choice("model.resblock", m.resblock, ("ddpm", "biggan"))
    labels = "edm" if m.prediction == "edm" else m.time_labels
    if m.embedding == "fourier" and labels in ("edm", "discrete"):
        why = "c_noise = ln(sigma~)/4, negative below sigma~ = 1" if labels == "edm" else "indices from 0"
        raise ValueError(
            f"config key 'model.embedding' = 'fourier' embeds ln(label) and needs positive labels; the network "
            f"gets {labels!r} labels ({why}): use model.embedding = 'sinusoidal' or model.time_labels 'sigma'"
        )
    _positive("model.label_scale", m.label_scale)
    for k in ("hidden", "depth", "emb_dim", "ch", "num_res_blocks"):
        _positive(f"model.{k}", getattr(m, k))
    if not 0 <= m.dropout < 1:
        raise ValueError(f"config key 'model.dropout' must lie in [0, 1); got {m.dropout!r}")
    _positive("model.num_classes", m.num_classes, strict=False)
    _positive("model.context_dim", m.context_dim, strict=False)
    _positive("sampling.num", cfg.sampling.num)
    _positive("sampling.steps", cfg.sampling.steps)
    _positive("eval.num", cfg.eval.num)
    _positive("eval.batch_size", cfg.eval.batch_size)
    _positive("eval.probes", cfg.eval.probes)
    _choice("eval.divergence", cfg.eval.divergence, ("hutchinson", "exact"))
    _choice("eval.split", cfg.eval.split, ("train", "test"))
    _positive("data.n_train", d.n_train)
    _positive("data.n_test", d.n_test)
    _check_dataset(cfg, check_files)
    return cfg


def _check_path(cfg: Config) -> None:
    """The SDE's own keys, and the loss / prediction / sampler combinations it admits (refused here, before
    training, rather than by the loss or the sampler later)."""
    s, t, m = cfg.sde, cfg.training, cfg.model
    kind = SDE_KINDS[s.kind]
    if s.T is not None:
        if kind != "rectified_flow":
            raise ValueError(f"config key 'sde.T' is used by sde.kind = 'rectified_flow' only; got {s.kind!r}")
        if not 0 < s.T < 1:
            raise ValueError(f"config key 'sde.T' must lie in (0, 1) (alpha(T) = 1 - T > 0); got {s.T!r}")
    need = {"ddpm": "vpsde", "smld": "vesde"}.get(t.loss)
    if need is not None and kind != need:
        raise ValueError(f"config key 'training.loss' = {t.loss!r} runs on the {need} chain; got sde.kind = {s.kind!r}")
    if need is not None and m.prediction == "velocity":
        raise ValueError(f"config key 'model.prediction' = 'velocity' needs training.loss = 'dsm'; got {t.loss!r}")
    _check_sampler(cfg)


def _check_sampler(cfg: Config) -> None:
    """A fixed-grid sampler's own check against the config's SDE (e.g. ancestral sampling exists for VP and
    VE only), run now: ValueError naming ``sampling.sampler``."""
    from ...solvers.registry import SAMPLERS
    from ..builders import build_sde
    from ..services import sampler_options

    spec = SAMPLERS.get(cfg.sampling.sampler)
    if spec is None or spec.build is None or spec.solve is not None:
        return
    try:
        stepper = spec.build(**sampler_options(cfg))
    except (TypeError, ValueError) as e:
        raise type(e)(f"config key 'sampling.sampler' = {cfg.sampling.sampler!r}: {e}") from None
    try:
        stepper.check(build_sde(cfg))
    except ValueError as e:
        raise ValueError(
            f"config key 'sampling.sampler' = {cfg.sampling.sampler!r} does not fit sde.kind = {cfg.sde.kind!r}: {e}"
        ) from None


def _check_dataset(cfg: Config, check_files: bool) -> None:
    d = cfg.data
    from ..data import DATASETS

    _choice("data.dataset", d.dataset, sorted(DATASETS))
    if d.dataset in FILE_DATASETS and d.root is None:
        raise ValueError(f"config key 'data.root' must name the file or folder of data.dataset = {d.dataset!r}")
    if check_files and d.root is not None and not os.path.exists(os.path.expanduser(d.root)):
        raise ValueError(f"config key 'data.root': dataset file or folder not found: {d.root!r}")


