"""Objects from the sections of a :class:`~score_sde.training.config.Config`: the SDE, the score network, the
loss, the device, the data scaling's plain form, and the seed mixing that makes the trainer's random draws
functions of ``(seed, step, shard)``."""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable

import torch
from torch import nn

from ..sde import VESDE, VPSDE, GeneralLinearSDE, SubVPSDE
from .config import SDE_KINDS, Config, ModelConfig

IMAGE_NETS = ("unet", "ddpmpp", "ncsnpp")


# ---------------------------------------------------------------------------------------------
# objects from config sections


def build_sde(cfg: Config):
    """The forward SDE of ``cfg.sde``."""
    s = cfg.sde
    kind = SDE_KINDS[s.kind]
    if kind == "vpsde":
        return VPSDE(s.beta_min, s.beta_max, N=s.N)
    if kind == "subvpsde":
        return SubVPSDE(s.beta_min, s.beta_max, N=s.N)
    if kind == "rectified_flow":
        return GeneralLinearSDE.rectified_flow(T=0.999 if s.T is None else s.T, N=s.N)
    if kind == "edm":
        return GeneralLinearSDE.edm(s.sigma_min, s.sigma_max, N=s.N)
    return VESDE(s.sigma_min, s.sigma_max, N=s.N)


def _label_scale(m: ModelConfig) -> float:
    """PE(label_scale * label): 1000 for continuous t in [0, 1], 1 for t999 / discrete labels."""
    if m.label_scale is not None:
        return m.label_scale
    return 1.0 if m.time_labels in ("t999", "discrete") else 1000.0


def net_kwargs(m: ModelConfig, shape: tuple[int, ...]) -> dict:
    """Keyword arguments of ``build_net(m.kind, ...)`` for data of per-sample ``shape``."""
    common = dict(
        embedding=m.embedding,
        num_classes=m.num_classes or None,
        fourier_scale=m.fourier_scale,
        label_scale=_label_scale(m),
        act=m.act,
        sinusoidal_layout=m.sinusoidal_layout,
    )
    if m.kind == "mlp":
        return dict(dim=math.prod(shape), hidden=m.hidden, depth=m.depth, emb_dim=m.emb_dim, **common)
    if m.kind in IMAGE_NETS:
        if len(shape) != 3:
            raise ValueError(f"model.kind = {m.kind!r} needs image data [C, H, W]; the data set has shape {shape}")
        return dict(
            in_channels=shape[0],
            ch=m.ch,
            ch_mult=tuple(m.ch_mult),
            num_res_blocks=m.num_res_blocks,
            attn_resolutions=tuple(m.attn_resolutions),
            dropout=m.dropout,
            resolution=shape[-1],
            context_dim=m.context_dim or None,
            resblock=m.resblock,
            skip_rescale=m.skip_rescale,
            resamp_with_conv=m.resamp_with_conv,
            init_scale=m.init_scale,
            **common,
        )
    raise ValueError(f"config key 'model.kind' = {m.kind!r} is not one of ['mlp', 'unet', 'ddpmpp', 'ncsnpp']")


def build_network(m: ModelConfig, shape: tuple[int, ...]) -> nn.Module:
    """The score network of config section ``model`` for data of per-sample ``shape`` ([D] or [C, H, W])."""
    from ..nets import NETS, build_net

    kwargs = net_kwargs(m, shape)
    params = inspect.signature(NETS[m.kind][0]).parameters
    kwargs = {k: v for k, v in kwargs.items() if k in params}
    defaults = ModelConfig()
    for f in dataclasses.fields(ModelConfig):
        if f.name in ("kind", "prediction", "time_labels") or f.name in kwargs:
            continue
        if getattr(m, f.name) != getattr(defaults, f.name):
            raise ValueError(f"config key 'model.{f.name}' is not used by model.kind = {m.kind!r}")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)  # the same initial weights whatever the caller's default dtype
    try:
        return build_net(m.kind, **kwargs)
    finally:
        torch.set_default_dtype(previous)


def build_loss(cfg: Config) -> Callable:
    """``loss(model, x0, generator=, cond=)`` of ``cfg.training`` (DSM / DDPM / SMLD)."""
    from .losses import get_loss

    t = cfg.training
    fn = get_loss(t.loss)
    opts = dict(
        weighting=t.weighting, target=t.target, importance_sampling=t.importance_sampling, reduce=t.reduce, eps=t.eps
    )
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        opts = {k: v for k, v in opts.items() if k in params}

    def loss(model, x0, generator=None, cond=None):
        return fn(model, x0, generator=generator, cond=cond, **opts)

    return loss


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:i``; ValueError for anything else
    and for a CUDA device this build or machine does not have."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(name, str) or not (name == "cpu" or name == "cuda" or name.startswith("cuda:")):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<i>'; got device = {name!r}")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<i>'; got device = {name!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device = {name!r} but CUDA is not available (this torch build or machine has no GPU)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device = {name!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def scaling_to_plain(scaling) -> dict | None:
    """A :class:`~score_sde.data_scaling.DataScaling` as a plain dict (for weights_only checkpoints)."""
    if scaling is None:
        return None
    if not dataclasses.is_dataclass(scaling):
        raise TypeError(f"can not store a data scaling of type {type(scaling).__name__}")
    return dataclasses.asdict(scaling)


def scaling_from_plain(d: dict | None):
    """The :class:`~score_sde.data_scaling.DataScaling` stored by :func:`scaling_to_plain` (None stays None)."""
    if d is None:
        return None
    from ..data_scaling import DataScaling

    return DataScaling(**d)


def _mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix-style mixing, deterministic across runs)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


