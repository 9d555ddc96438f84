"""The config schema: the six sections as dataclasses with documented defaults, and the lists of choices
their keys accept (shared with the losses), and the lookup of a dotted key ``section.name`` in them."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import Any

SDE_KINDS = {
    "vpsde": "vpsde",
    "vp": "vpsde",
    "subvpsde": "subvpsde",
    "subvp": "subvpsde",
    "vesde": "vesde",
    "ve": "vesde",
    "rectified_flow": "rectified_flow",
    "edm": "edm",
}
LOSSES = ("dsm", "ddpm", "smld")
WEIGHTINGS = ("sigma2", "g2", "none", "flow_matching")
TARGETS = ("eps", "x0", "v", "velocity", "score")
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
    prediction: what the net predicts (``eps``, ``x0``, ``v``, ``velocity``, ``score``, ``edm``); see ScoreModel.
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
    """``sde``: the forward SDE. kind: ``vpsde``, ``subvpsde`` or ``vesde`` (also ``vp``/``subvp``/``ve``), or a
    general linear path: ``rectified_flow`` (alpha = 1 - t, sigma = t; ``GeneralLinearSDE.rectified_flow``) or
    ``edm`` (alpha = 1, sigma = sigma_max t on [sigma_min / sigma_max, 1]; ``GeneralLinearSDE.edm``).

    beta_min, beta_max: VP / sub-VP schedule (0.1, 20). sigma_min, sigma_max: VE (0.01, 50) and EDM (set them;
    EDM's paper uses 0.002, 80). T: end time of ``rectified_flow`` only (None: 0.999; must lie in (0, 1)).
    N: number of steps of the matching discrete chain (1000).
    """

    kind: str = "vpsde"
    beta_min: float = 0.1
    beta_max: float = 20.0
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    N: int = 1000
    T: float | None = None


@dataclass
class TrainingConfig:
    """``training``: optimisation, loss and bookkeeping (official defaults where they exist).

    batch_size: global batch (all ranks and accumulation steps together), 128.
    n_iters: optimiser steps. lr: Adam learning rate (2e-4). beta1, beta2, adam_eps, weight_decay: Adam.
    warmup: linear warmup steps of the learning rate (5000). grad_clip: max gradient norm (1.0; < 0 off).
    ema_rate: EMA decay; None picks the official default, 0.9999 for VP / sub-VP and 0.999 for VE.
    accum_steps: gradient-accumulation micro-batches per step (batch_size must divide evenly).
    loss: ``dsm`` (continuous), ``ddpm`` (L_simple, VP only), ``smld`` (VE only). weighting: ``sigma2`` (eps
        loss), ``g2`` (likelihood weighting), ``none``, ``flow_matching`` (||u_theta - u||^2, the conditional
        flow-matching loss as a weighting of DSM; see :mod:`score_sde.training.losses`). target: ``eps``,
        ``x0``, ``v``, ``velocity``, ``score``.
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


# ---- dotted keys against the schema ----------------------------------------------------------


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _section_cls(name: str):
    return _hints(Config)[name]


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
