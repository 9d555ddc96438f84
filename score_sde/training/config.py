"""Typed experiment configs: YAML files read into dataclasses (defaults plus overrides).

A config has six sections, each a dataclass with documented defaults:

===========  ======================================================================
``data``     which data set, its split sizes, centring, the file or folder it reads
``model``    the score network (``model.kind`` picks :func:`score_sde.nets.build_net`),
             its prediction type and time labels
``sde``      the forward SDE (VP, sub-VP, VE) and its parameters
``training`` optimiser (Adam + warmup + clipping), EMA, loss, batch, schedule of
             checkpoints / samples / evaluations, seed, device, dtype
``sampling`` the sampler used for sample grids and ``score-sde sample``
``eval``     the evaluation NLL (probability-flow ODE, Hutchinson probes)
===========  ======================================================================

A YAML file lists only what differs from the defaults (``base: other.yaml`` inherits from
another file first), like the official ``default_*_configs`` plus per-experiment overrides.
Files are read with ``yaml.safe_load`` only (never ``yaml.load``), so reading a config can not run
code. Unknown keys, wrong types and bad values raise ``ValueError`` / ``TypeError`` naming the
dotted key (``training.lr``) before anything is trained. Command-line overrides are
``key=value`` strings (``--set training.lr=1e-3``) coerced to the field's type.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

SDE_KINDS = {
    "vpsde": "vpsde",
    "vp": "vpsde",
    "subvpsde": "subvpsde",
    "subvp": "subvpsde",
    "vesde": "vesde",
    "ve": "vesde",
}
LOSSES = ("dsm", "ddpm", "smld")
WEIGHTINGS = ("sigma2", "g2", "none")
TARGETS = ("eps", "x0", "v", "score")
REDUCES = ("mean", "sum")
DTYPES = ("float32", "float64")
# data sets that read a file or folder given by ``data.root``
FILE_DATASETS = ("cifar10", "npz", "image_folder")


@dataclass
class DataConfig:
    """``data``: the training / evaluation data.

    dataset: a name in :data:`score_sde.training.data.DATASETS` (toy 2-D: ``mixture``, ``swiss_roll``,
        ``moons``, ``checkerboard``, ``rings``; images: ``digits``, ``mnist``, ``cifar10``, ``npz``,
        ``image_folder``).
    root: the file or folder the data set reads (required by ``cifar10``, ``npz``, ``image_folder``).
    n_train, n_test: number of training / held-out points (None: the whole split).
    seed: seed of the data draw (toy sets) and of the split.
    centered: images scaled to [-1, 1] (True) or [0, 1] (False); the scaling is stored with the model.
    random_flip: random horizontal flips of images during training.
    uniform_dequantization: train on (n + u) / K mapped to model space, u ~ U[0, 1), fresh every step
        (discrete data only), so the model learns the density whose bits/dim are reported. Needed when
        the levels are coarse (17-level digits); the official CIFAR-10 runs leave it off.
    """

    dataset: str = "mixture"
    root: str | None = None
    n_train: int | None = None
    n_test: int | None = None
    seed: int = 0
    centered: bool = True
    random_flip: bool = False
    uniform_dequantization: bool = False


@dataclass
class ModelConfig:
    """``model``: the score network and how its output is read.

    kind: ``mlp`` (low-dimensional data) or ``unet`` / ``ddpmpp`` / ``ncsnpp`` (images).
    prediction: what the net predicts (``eps``, ``x0``, ``v``, ``score``, ``edm``); see ScoreModel.
    time_labels: the label the net receives (``continuous`` t, ``t999``, ``discrete``, ``sigma``).
    embedding: time embedding, ``sinusoidal`` (DDPM positional) or ``fourier`` (Gaussian Fourier
        features, NCSN++ for VE with ``fourier_scale`` 16).
    hidden, depth, emb_dim: MLP width, number of hidden layers, embedding width.
    ch, ch_mult, num_res_blocks, attn_resolutions, dropout, fourier_scale: U-Net size (official
        names ``nf``, ``ch_mult``, ``num_res_blocks``, ``attn_resolutions``, ``dropout``).
    num_classes: class-conditional nets (0: unconditional).
    context_dim: width of a cross-attention context (0: none).
    resblock, skip_rescale, resamp_with_conv, init_scale: U-Net block options (``ddpm`` or ``biggan``
        blocks; official DDPM++/NCSN++ use ``biggan``, skip_rescale True, init_scale 0).
    label_scale: PE(label_scale * label); None: 1000 for continuous labels, 1 for ``t999``/``discrete``.
    act: activation (``silu`` = swish). sinusoidal_layout: ``interleaved`` or ``concat`` (official).
    """

    kind: str = "mlp"
    prediction: str = "eps"
    time_labels: str = "continuous"
    embedding: str = "sinusoidal"
    hidden: int = 128
    depth: int = 3
    emb_dim: int = 64
    ch: int = 128
    ch_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 2])
    num_res_blocks: int = 4
    attn_resolutions: list[int] = field(default_factory=lambda: [16])
    dropout: float = 0.1
    fourier_scale: float = 16.0
    num_classes: int = 0
    context_dim: int = 0
    resblock: str = "ddpm"
    skip_rescale: bool = True
    resamp_with_conv: bool = True
    init_scale: float = 0.0
    label_scale: float | None = None
    act: str = "silu"
    sinusoidal_layout: str = "interleaved"


@dataclass
class SDEConfig:
    """``sde``: the forward SDE. kind: ``vpsde``, ``subvpsde`` or ``vesde`` (also ``vp``/``subvp``/``ve``).

    beta_min, beta_max: VP / sub-VP schedule (0.1, 20). sigma_min, sigma_max: VE (0.01, 50).
    N: number of steps of the matching discrete chain (1000).
    """

    kind: str = "vpsde"
    beta_min: float = 0.1
    beta_max: float = 20.0
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    N: int = 1000


@dataclass
class TrainingConfig:
    """``training``: optimisation, loss and bookkeeping (official defaults where they exist).

    batch_size: global batch (all ranks and accumulation steps together), 128.
    n_iters: optimiser steps. lr: Adam learning rate (2e-4). beta1, beta2, adam_eps, weight_decay: Adam.
    warmup: linear warmup steps of the learning rate (5000). grad_clip: max gradient norm (1.0; < 0 off).
    ema_rate: EMA decay; None picks the official default, 0.9999 for VP / sub-VP and 0.999 for VE.
    accum_steps: gradient-accumulation micro-batches per step (batch_size must divide evenly).
    loss: ``dsm`` (continuous), ``ddpm`` (L_simple), ``smld``. weighting: ``sigma2`` (eps loss),
        ``g2`` (likelihood weighting), ``none``. target: ``eps``, ``x0``, ``v``, ``score``.
    importance_sampling: draw t from g^2/sigma^2 (with ``g2`` weighting). reduce: ``mean`` or ``sum``.
    eps: smallest training time (1e-5). seed: seed of initialisation, batches and noise.
    cond_drop: probability of replacing a class label by the null label (``model.num_classes``) during
        training, for classifier-free guidance (Ho & Salimans 2021 use 0.1-0.2; 0 disables).
    log_every, ckpt_every, sample_every, eval_every: periods in steps (0 disables samples / eval).
    keep_ckpts: number of checkpoints kept. device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``.
    dtype: ``float32`` or ``float64``. progress: tqdm progress bar on rank 0.
    """

    batch_size: int = 128
    n_iters: int = 1300001
    lr: float = 2e-4
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    warmup: int = 5000
    grad_clip: float = 1.0
    ema_rate: float | None = None
    accum_steps: int = 1
    loss: str = "dsm"
    weighting: str = "sigma2"
    target: str = "eps"
    importance_sampling: bool = False
    reduce: str = "mean"
    eps: float = 1e-5
    seed: int = 42
    cond_drop: float = 0.0
    log_every: int = 50
    ckpt_every: int = 10000
    keep_ckpts: int = 3
    sample_every: int = 0
    eval_every: int = 0
    device: str = "auto"
    dtype: str = "float32"
    progress: bool = True


@dataclass
class SamplingConfig:
    """``sampling``: the sampler of sample grids and ``score-sde sample``.

    sampler: a name of ``ss.available_samplers()``; steps: grid steps (None: the SDE's N);
    predictor, corrector, snr, corrector_steps: options of ``pc``; rtol, atol: options of ``ode``;
    num: samples in a grid; eps: end time (None: 1e-3 VP / sub-VP, 1e-5 VE); seed: sampling seed.
    """

    sampler: str = "pc"
    steps: int | None = None
    predictor: str = "reverse_diffusion"
    corrector: str = "langevin"
    snr: float = 0.16
    corrector_steps: int = 1
    rtol: float = 1e-5
    atol: float = 1e-5
    num: int = 64
    eps: float | None = None
    seed: int = 0


@dataclass
class EvalConfig:
    """``eval``: the evaluation NLL through the probability-flow ODE.

    split: data split (``test``); num: held-out points (None: all); batch_size: points per solve;
    divergence: ``hutchinson`` or ``exact``; probes: Hutchinson probes; rtol, atol: ODE tolerances
    (1e-5, official); eps: starting time (1e-5); seed: probe seed.
    """

    split: str = "test"
    num: int | None = 256
    batch_size: int = 256
    divergence: str = "hutchinson"
    probes: int = 1
    rtol: float = 1e-5
    atol: float = 1e-5
    eps: float = 1e-5
    seed: int = 0


@dataclass
class Config:
    """A whole experiment: six typed sections (see the module docstring)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sde: SDEConfig = field(default_factory=SDEConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        """Plain nested dict of str/int/float/bool/None/list (safe for YAML and weights_only checkpoints)."""
        return dataclasses.asdict(self)

    def get(self, key: str) -> Any:
        """The value of a dotted key such as ``training.lr``."""
        section, name = _split_key(key)
        return getattr(getattr(self, section), name)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


# ---------------------------------------------------------------------------------------------
# type coercion


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _section_cls(name: str):
    return _hints(Config)[name]


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _is_optional(tp) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:  # X | None
            return True, args[0]
    return False, tp


def coerce(key: str, value: Any, tp, from_string: bool = False) -> Any:
    """Coerce ``value`` to the annotated type ``tp`` of config key ``key``.

    Accepts int for float, integral floats for int (``1e5``), and, when ``from_string`` (values
    from ``--set``), strings such as ``"1e-3"``, ``"true"``, ``"none"``, ``"[1,2,2]"``/``"1,2,2"``.
    Raises ``TypeError`` naming the key otherwise.
    """
    optional, inner = _is_optional(tp)
    if from_string and isinstance(value, str) and value.strip().lower() in ("none", "null", "~", ""):
        if optional:
            return None
    if value is None:
        if optional:
            return None
        raise TypeError(f"config key {key!r} must be {_type_name(inner)}, not None")
    tp = inner
    origin = typing.get_origin(tp)
    bad = TypeError(f"config key {key!r} must be {_type_name(tp)}; got {value!r} ({type(value).__name__})")
    if origin is list:
        (item,) = typing.get_args(tp)
        if from_string and isinstance(value, str):
            s = value.strip()
            parsed = yaml.safe_load(s) if s.startswith("[") else [v for v in s.split(",") if v.strip()]
            value = parsed if isinstance(parsed, list) else [parsed]
            return [coerce(f"{key}[{i}]", v, item, from_string=True) for i, v in enumerate(value)]
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            value = [value]  # a single resolution, e.g. attn_resolutions: 16
        if not isinstance(value, list | tuple):
            raise bad
        return [coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_string and isinstance(value, str):
            low = value.strip().lower()
            if low in ("true", "yes", "on", "1"):
                return True
            if low in ("false", "no", "off", "0"):
                return False
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):  # "2e3": YAML 1.1 reads exponents without a dot as strings
            try:
                f = float(value)
            except ValueError:
                raise bad from None
            if f.is_integer():
                return int(f)
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    raise TypeError(f"config key {key!r} has an unsupported type {tp}")  # pragma: no cover


def _split_key(key: str) -> tuple[str, str]:
    parts = key.split(".")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"config key {key!r} must be 'section.name' with section one of {sorted(SECTIONS)}")
    section, name = parts
    if section not in SECTIONS:
        raise ValueError(f"unknown config key {key!r}: no section {section!r}{_suggest(section, SECTIONS)}")
    fields = {f.name for f in dataclasses.fields(_section_cls(section))}
    if name not in fields:
        raise ValueError(f"unknown config key {key!r}{_suggest(name, fields, section + '.')}")
    return section, name


def _suggest(name: str, options, prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {prefix + close[0]!r}?)" if close else f"; valid: {sorted(options)}"


# ---------------------------------------------------------------------------------------------
# building configs


def default_config() -> Config:
    """The defaults of every section (the official CIFAR-10 defaults for the optimiser)."""
    return Config()


def config_from_dict(d: dict | None, base: Config | None = None) -> Config:
    """Apply a nested dict ``{section: {key: value}}`` to ``base`` (default: :func:`default_config`).

    Unknown sections/keys raise ``ValueError`` and wrong types ``TypeError``, naming the dotted key.
    """
    cfg = config_from_plain((base if base is not None else default_config()).to_dict())  # a deep copy
    if d is None:
        return cfg
    if not isinstance(d, dict):
        raise TypeError(f"a config must be a mapping of sections; got {type(d).__name__}")
    for section, values in d.items():
        if section not in SECTIONS:
            raise ValueError(f"unknown config key {section!r}{_suggest(str(section), SECTIONS)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise TypeError(f"config section {section!r} must be a mapping; got {values!r}")
        for name, value in values.items():
            key = f"{section}.{name}"
            _split_key(key)
            hints = _hints(_section_cls(section))
            setattr(getattr(cfg, section), name, coerce(key, value, hints[name]))
    return cfg


def config_from_plain(d: dict) -> Config:
    """Rebuild a :class:`Config` from :meth:`Config.to_dict` output (as stored in checkpoints)."""
    cfg = Config()
    for section in SECTIONS:
        cls = _section_cls(section)
        hints = _hints(cls)
        vals = d.get(section, {})
        for name in vals:
            _split_key(f"{section}.{name}")
        setattr(cfg, section, cls(**{k: coerce(f"{section}.{k}", v, hints[k]) for k, v in vals.items()}))
    return cfg


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...] | None) -> Config:
    """Apply ``key=value`` strings (``training.lr=1e-3``, ``model.ch_mult=1,2,2``) to a copy of ``cfg``."""
    cfg = config_from_plain(cfg.to_dict())
    for item in overrides or ():
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"an override must look like section.key=value; got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        section, name = _split_key(key)
        tp = _hints(_section_cls(section))[name]
        value = raw if _is_optional(tp)[1] is str else _parse_scalar(raw)
        setattr(getattr(cfg, section), name, coerce(key, value, tp, from_string=True))
    return cfg


def _parse_scalar(raw: str):
    try:
        v = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    return v if isinstance(v, int | float | bool | list) and v is not None else raw


class ConfigYAMLError(ValueError, yaml.YAMLError):
    """A config file that ``yaml.safe_load`` refuses (bad syntax, or a tag that would build a Python object)."""


def load_yaml(path: str | os.PathLike, _chain: tuple[str, ...] = ()) -> dict:
    """Read a YAML config file with ``yaml.safe_load`` and resolve its ``base:`` chain into one dict.

    A ``base:`` chain that comes back to a file already in it raises ``ValueError`` listing the chain."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path!r}")
    real = os.path.realpath(path)
    if real in _chain:
        raise ValueError(f"config key 'base' makes a cycle: {' -> '.join([*_chain, real])}")
    try:
        with open(path) as f:
            d = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigYAMLError(f"config file {path!r} is not valid (safe) YAML: {e}") from None
    if not isinstance(d, dict):
        raise TypeError(f"config file {path!r} must hold a mapping of sections; got {type(d).__name__}")
    base = d.pop("base", None)
    if base is None:
        return d
    if not isinstance(base, str):
        raise TypeError(f"config key 'base' in {path!r} must be a file name; got {base!r}")
    parent = load_yaml(os.path.join(os.path.dirname(path), base), (*_chain, real))
    for section, values in d.items():
        if isinstance(values, dict) and isinstance(parent.get(section), dict):
            parent[section] = {**parent[section], **values}
        else:
            parent[section] = values
    return parent


def load_config(path: str | os.PathLike | None = None, overrides=None, validate_files: bool = False) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``key=value`` overrides; validated."""
    cfg = config_from_dict(load_yaml(path) if path is not None else None)
    cfg = apply_overrides(cfg, overrides)
    validate(cfg, check_files=validate_files)
    return cfg


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (``yaml.safe_dump``), atomically (temp file + rename)."""
    from .workdir import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def missing_keys(d: dict) -> list[str]:
    """The dotted keys of a full config that the nested dict ``d`` lacks (a resolved ``config.yaml``
    written by :func:`save_config` holds every key; an empty or cut-off file does not)."""
    full = default_config().to_dict()
    if not isinstance(d, dict):
        return [f"{s}.{k}" for s, v in full.items() for k in v]
    out = []
    for section, values in full.items():
        have = d.get(section)
        out += [f"{section}.{k}" for k in values if not isinstance(have, dict) or k not in have]
    return out


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
    from ..score import PREDICTIONS, TIME_LABELS

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


def _check_dataset(cfg: Config, check_files: bool) -> None:
    d = cfg.data
    from .data import DATASETS

    _choice("data.dataset", d.dataset, sorted(DATASETS))
    if d.dataset in FILE_DATASETS and d.root is None:
        raise ValueError(f"config key 'data.root' must name the file or folder of data.dataset = {d.dataset!r}")
    if check_files and d.root is not None and not os.path.exists(os.path.expanduser(d.root)):
        raise ValueError(f"config key 'data.root': dataset file or folder not found: {d.root!r}")


__all__ = [
    "Config",
    "DataConfig",
    "ModelConfig",
    "SDEConfig",
    "TrainingConfig",
    "SamplingConfig",
    "EvalConfig",
    "default_config",
    "config_from_dict",
    "config_from_plain",
    "apply_overrides",
    "load_yaml",
    "load_config",
    "save_config",
    "missing_keys",
    "validate",
    "coerce",
]
