"""The YAML form of an official score_sde config (``configs/official/<sde>/<name>.yaml``).

Each file mirrors one Python config of the official code (same relative path and name, e.g.
``configs/official/vp/ddpm/cifar10_continuous.yaml`` for ``configs/vp/ddpm/cifar10_continuous.py``)
with the official key names, so a reader can check it line by line::

    official_config: configs/vp/cifar10_ddpmpp_continuous.py     # the file it mirrors
    paper: {source: ..., bpd: 3.16}                               # the number it should reproduce
    training: {sde: vpsde, continuous: true}
    data: {dataset: CIFAR10, image_size: 32, num_channels: 3, centered: true}
    model: {name: ncsnpp, nf: 128, ch_mult: [1, 2, 2, 2], ..., beta_min: 0.1, beta_max: 20.0, num_scales: 1000}
    sampling: {method: pc, predictor: euler_maruyama, corrector: none, snr: 0.16, n_steps_each: 1, ...}

Files are read with ``yaml.safe_load``; every key is checked against the lists below, and a
missing or unknown key raises ``ValueError`` naming it (``model.fir``). These files have their
own small schema (not :mod:`score_sde.training.config`): they describe networks the official code
trained, with options (FIR resampling, progressive branches) that our training configs do not need.
"""

from __future__ import annotations

import os

import yaml

SDES = ("vpsde", "subvpsde", "vesde")
NETWORKS = ("ncsnpp", "ddpm")

# section -> {key: type}; every key is required unless listed in OPTIONAL
_SCHEMA: dict[str, dict[str, type | tuple]] = {
    "training": {"sde": str, "continuous": bool},
    "data": {"dataset": str, "image_size": int, "num_channels": int, "centered": bool},
    "model": {
        "name": str, "nf": int, "ch_mult": list, "num_res_blocks": int, "attn_resolutions": list,
        "dropout": (int, float), "resamp_with_conv": bool, "conditional": bool, "nonlinearity": str,
        "normalization": str, "scale_by_sigma": bool, "ema_rate": (int, float), "sigma_min": (int, float),
        "sigma_max": (int, float), "num_scales": int, "beta_min": (int, float), "beta_max": (int, float),
        "fir": bool, "fir_kernel": list, "skip_rescale": bool, "resblock_type": str, "progressive": str,
        "progressive_input": str, "progressive_combine": str, "attention_type": str, "embedding_type": str,
        "fourier_scale": (int, float), "init_scale": (int, float), "conv_size": int,
    },
    "sampling": {"method": str, "predictor": str, "corrector": str, "snr": (int, float), "n_steps_each": int,
                 "noise_removal": bool, "probability_flow": bool},
}  # fmt: skip
# NCSN++ options that the DDPM net does not have
_NCSNPP_ONLY = ("fir", "fir_kernel", "skip_rescale", "resblock_type", "progressive", "progressive_input",
                "progressive_combine", "attention_type", "embedding_type", "fourier_scale", "init_scale")  # fmt: skip
_OPTIONAL = {"model": ("conv_size", "normalization", "attention_type", "fourier_scale", "beta_min", "beta_max")}
_TOP = ("official_config", "paper", "training", "data", "model", "sampling")

PREDICTOR_NAMES = {"euler_maruyama": "euler_maruyama", "reverse_diffusion": "reverse_diffusion",
                   "ancestral_sampling": "ancestral", "none": "none"}  # fmt: skip
CORRECTOR_NAMES = {"langevin": "langevin", "ald": "annealed_langevin", "none": "none"}


def _check(cfg: dict, where: str) -> dict:
    if not isinstance(cfg, dict):
        raise TypeError(f"an official config must be a mapping of sections; got {type(cfg).__name__} ({where})")
    unknown = sorted(set(cfg) - set(_TOP))
    if unknown:
        raise ValueError(f"unknown top-level key(s) {unknown} in {where}; valid: {list(_TOP)}")
    for section, keys in _SCHEMA.items():
        vals = cfg.get(section)
        if not isinstance(vals, dict):
            raise ValueError(f"official config {where} needs a mapping {section!r}; got {vals!r}")
        net = cfg.get("model", {}).get("name")
        allowed = {k: tp for k, tp in keys.items() if not (section == "model" and net == "ddpm" and k in _NCSNPP_ONLY)}
        unknown = sorted(set(vals) - set(allowed))
        if unknown:
            raise ValueError(f"unknown key(s) {[f'{section}.{k}' for k in unknown]} in {where}")
        missing = sorted(k for k in allowed if k not in vals and k not in _OPTIONAL.get(section, ()))
        if missing:
            raise ValueError(f"official config {where} lacks {[f'{section}.{k}' for k in missing]}")
        for k, v in vals.items():
            tp = allowed[k]
            if isinstance(v, bool) and tp is not bool or not isinstance(v, tp):
                raise TypeError(f"official config key '{section}.{k}' in {where} has the wrong type: {v!r}")
    if cfg["training"]["sde"] not in SDES:
        raise ValueError(f"official config key 'training.sde' = {cfg['training']['sde']!r} is not one of {SDES}")
    if cfg["training"]["sde"] != "vesde" and not {"beta_min", "beta_max"} <= set(cfg["model"]):
        raise ValueError(f"official config {where} trains a {cfg['training']['sde']} and needs model.beta_min and "
                         "model.beta_max")  # fmt: skip
    if cfg["model"]["name"] not in NETWORKS:
        raise ValueError(f"official config key 'model.name' = {cfg['model']['name']!r} is not one of {NETWORKS} "
                         "(the networks this loader builds)")  # fmt: skip
    s = cfg["sampling"]
    if s["predictor"] not in PREDICTOR_NAMES:
        raise ValueError(f"official config key 'sampling.predictor' = {s['predictor']!r} is not one of "
                         f"{sorted(PREDICTOR_NAMES)}")  # fmt: skip
    if s["corrector"] not in CORRECTOR_NAMES:
        raise ValueError(f"official config key 'sampling.corrector' = {s['corrector']!r} is not one of "
                         f"{sorted(CORRECTOR_NAMES)}")  # fmt: skip
    return cfg


def load_official_config(config: str | os.PathLike | dict) -> dict:
    """Read and check an official config (a YAML path, or the same content as a dict); see the module docstring."""
    if isinstance(config, dict):
        return _check(config, "the given dict")
    path = os.fspath(config)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"official config file not found: {path!r}")
    with open(path) as f:
        cfg = yaml.safe_load(f)
    return _check(cfg, repr(path))


def network_kwargs(cfg: dict) -> dict:
    """Keyword arguments of :class:`score_sde.nets.NCSNpp` or :class:`score_sde.nets.DDPM` for a config."""
    m, d = cfg["model"], cfg["data"]
    kw = dict(
        num_channels=d["num_channels"], image_size=d["image_size"], nf=m["nf"], ch_mult=tuple(m["ch_mult"]),
        num_res_blocks=m["num_res_blocks"], attn_resolutions=tuple(m["attn_resolutions"]), dropout=m["dropout"],
        resamp_with_conv=m["resamp_with_conv"], conditional=m["conditional"], centered=d["centered"],
        nonlinearity=m["nonlinearity"], scale_by_sigma=m["scale_by_sigma"], sigma_min=m["sigma_min"],
        sigma_max=m["sigma_max"], num_scales=m["num_scales"],
    )  # fmt: skip
    if m["name"] == "ncsnpp":
        kw.update({k: m[k] for k in _NCSNPP_ONLY if k not in ("attention_type", "fourier_scale")})
        kw["fourier_scale"] = m.get("fourier_scale", 16.0)
        kw["fir_kernel"] = tuple(kw["fir_kernel"])
    return kw


def sampling_recipe(cfg: dict) -> dict:
    """The config's sampling section as ``ss.sample`` keyword arguments.

    ``pc`` with the official predictor / corrector (``ancestral_sampling`` -> ``ancestral``,
    ``ald`` -> ``annealed_langevin``), ``snr``, ``corrector_steps = n_steps_each``,
    ``denoise = noise_removal``, on the SDE's N-step chain grid (``steps`` left to its default);
    ``probability_flow`` turns the predictor into the fixed-step probability-flow one.
    """
    s = cfg["sampling"]
    if s["method"] != "pc":
        raise ValueError(f"official config key 'sampling.method' = {s['method']!r}: only 'pc' maps to a sampler")
    predictor = "probability_flow" if s["probability_flow"] else PREDICTOR_NAMES[s["predictor"]]
    return {
        "sampler": "pc",
        "predictor": predictor,
        "corrector": CORRECTOR_NAMES[s["corrector"]],
        "snr": float(s["snr"]),
        "corrector_steps": int(s["n_steps_each"]),
        "denoise": bool(s["noise_removal"]),
    }


__all__ = ["load_official_config", "network_kwargs", "sampling_recipe", "SDES", "NETWORKS"]
