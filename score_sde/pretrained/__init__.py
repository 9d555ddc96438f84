"""Pretrained networks of the field as :class:`score_sde.ScoreModel` s.

``load_official(checkpoint, config)`` reads an official score_sde (PyTorch) checkpoint with its
``configs/official/...yaml``; ``load_diffusers(folder)`` reads a diffusers ``save_pretrained`` folder of a
DDPM, DDIM or score-SDE-VE pipeline (see ``docs/diffusers.md``); ``load_pretrained("official:PATH",
config=...)`` / ``load_pretrained("diffusers:DIR")`` are the same behind a source prefix, as the command
line's ``--pretrained`` takes it (see ``docs/pretrained.md``).
"""

from __future__ import annotations

from collections.abc import Callable

from .adapters import DenoiserModel, DiffusersUNet, unet2d_score_model
from .diffusers import load_diffusers
from .official import (
    OfficialScoreNet,
    build_official_net,
    build_official_sde,
    check_state_dict,
    load_ema,
    load_official,
    read_official_checkpoint,
)
from .official_config import load_official_config, network_kwargs, sampling_recipe


def _official(path: str, config=None, device="cpu", **kwargs):
    if config is None:
        raise ValueError(
            "an official checkpoint does not record its network: give its config, e.g. "
            "config='configs/official/ve/cifar10_ncsnpp_deep_continuous.yaml' (--config on the command line)"
        )
    return load_official(path, config, device=device, **kwargs)


# source prefix -> loader(path, config=None, device=..., **kwargs) -> ScoreModel
def _diffusers(path: str, config=None, device="cpu", ema=True, **kwargs):
    if not ema:
        raise ValueError("a diffusers folder holds one set of weights (its EMA weights, as published); ema=False "
                         "(--no-ema) does not apply")  # fmt: skip
    if config is not None:
        raise ValueError(f"a diffusers folder carries its own configs; got config={config!r} (leave --config out)")
    return load_diffusers(path, device=device, **kwargs)


LOADERS: dict[str, Callable] = {"official": _official, "diffusers": _diffusers}


def load_pretrained(spec: str, config=None, device="cpu", **kwargs):
    """Load ``"<source>:<path>"`` (e.g. ``"official:ckpt/checkpoint_26.pth"``) with the loader of
    :data:`LOADERS` registered for that source; ``config`` and keyword arguments go to the loader."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"a pretrained model is given as '<source>:<path>' with source one of {sorted(LOADERS)}; "
                         f"got {spec!r}")  # fmt: skip
    source, path = spec.split(":", 1)
    if source not in LOADERS:
        raise ValueError(f"unknown pretrained source {source!r} in {spec!r}; choose one of {sorted(LOADERS)}")
    if not path:
        raise ValueError(f"no path after {source + ':'!r} in {spec!r}")
    return LOADERS[source](path, config=config, device=device, **kwargs)


__all__ = [
    "DenoiserModel",
    "DiffusersUNet",
    "unet2d_score_model",
    "load_diffusers",
    "load_pretrained",
    "LOADERS",
    "load_official",
    "load_official_config",
    "build_official_net",
    "build_official_sde",
    "OfficialScoreNet",
    "read_official_checkpoint",
    "check_state_dict",
    "load_ema",
    "network_kwargs",
    "sampling_recipe",
]
