"""``score-sde convert``: a pretrained model as a project workdir (``config.yaml`` + ``checkpoints/``).

The workdir is read back by :func:`score_sde.training.trainer.load_workdir`, which rebuilds the net
from the project config, so only networks that config can express convert: official DDPM++ (no FIR
resampling, no progressive branches, positional embedding) and DDPM nets (widths >= 128) trained as
continuous VP or sub-VP models (labels t * 999, eps prediction), centered data, N = 1000. Others
raise a ``ValueError`` saying why; load them with ``--pretrained`` instead. After writing, the
converted model is compared with the loaded one (relative score difference below 1e-4; it is
~1e-6, the round-off of the sinusoidal features, which our U-Net forms in float64).
"""

from __future__ import annotations

import os

import torch


def add_convert_arguments(p) -> None:
    p.add_argument("--pretrained", required=True, metavar="SOURCE:PATH", help="e.g. official:ckpt/checkpoint_26.pth")
    p.add_argument("--config", default=None, help="the model's config (configs/official/...yaml for official:)")
    p.add_argument("--workdir", required=True, help="new folder for config.yaml and checkpoints/")
    p.add_argument("--data-root", default=None, help="data.root written into config.yaml (for likelihood)")
    p.add_argument("--no-ema", action="store_true", help="convert the raw weights instead of the EMA")


def _why_not(cfg: dict) -> str | None:
    """Why the project's U-Net config can not express this official network (None if it can)."""
    m, t, d = cfg["model"], cfg["training"], cfg["data"]
    if not (t["continuous"] or t["sde"] == "subvpsde") or t["sde"] == "vesde":
        return "only continuous VP / sub-VP models (labels t * 999) convert"
    if not d["centered"] or not m["conditional"] or m["scale_by_sigma"] or m["num_scales"] != 1000:
        return "the project U-Net needs centered data, a conditional net, no scale_by_sigma and N = 1000"
    if m["nonlinearity"] != "swish":
        return f"nonlinearity {m['nonlinearity']!r} (the project U-Net uses swish here)"
    if m["name"] == "ncsnpp":
        if m["fir"] or m["progressive"] != "none" or m["progressive_input"] != "none":
            return "FIR resampling and progressive branches are NCSN++-only (not in the project U-Net)"
        if m["embedding_type"] != "positional":
            return "Fourier embeddings of continuous VP time are not in the project U-Net"
    elif min(m["nf"] * c for c in m["ch_mult"]) < 128:
        return "the DDPM net normalises with 32 groups; the project U-Net does so only for widths >= 128"
    return None


def _project_config(cfg: dict, data_root):
    from .pretrained.official_config import sampling_recipe
    from .training.config import config_from_dict

    m, d = cfg["model"], cfg["data"]
    ddpm = m["name"] == "ddpm"

    rec = sampling_recipe(cfg)
    return config_from_dict({
        "data": {"dataset": d["dataset"].lower(), "root": data_root, "centered": True},
        "model": {"kind": "unet", "prediction": "eps", "time_labels": "t999", "embedding": "sinusoidal",
                  "ch": m["nf"], "ch_mult": list(m["ch_mult"]), "num_res_blocks": m["num_res_blocks"],
                  "attn_resolutions": list(m["attn_resolutions"]), "dropout": float(m["dropout"]),
                  "resblock": "ddpm" if ddpm else m["resblock_type"],
                  "skip_rescale": False if ddpm else m["skip_rescale"],
                  "resamp_with_conv": m["resamp_with_conv"], "init_scale": 0.0 if ddpm else float(m["init_scale"]),
                  "label_scale": 1.0, "sinusoidal_layout": "concat"},
        "sde": {"kind": cfg["training"]["sde"], "beta_min": float(m["beta_min"]), "beta_max": float(m["beta_max"]),
                "N": m["num_scales"]},
        "training": {"ema_rate": float(m["ema_rate"])},
        "sampling": {"sampler": "pc", "predictor": rec["predictor"], "corrector": rec["corrector"],
                     "snr": rec["snr"], "corrector_steps": rec["corrector_steps"]},
    })  # fmt: skip


def run_convert(args) -> int:
    from .pretrained import load_pretrained
    from .score import ScoreModel
    from .training.checkpoint import checkpoint_path, list_checkpoints, save_checkpoint
    from .training.config import save_config
    from .training.trainer import build_network, build_sde, scaling_to_plain

    if list_checkpoints(os.path.join(args.workdir, "checkpoints")):
        raise ValueError(f"--workdir {args.workdir!r} already holds checkpoints; give a new folder")
    model = load_pretrained(args.pretrained, config=args.config, ema=not args.no_ema)
    off = model.official_config
    why = _why_not(off)
    if why is not None:
        raise ValueError(f"can not convert {args.pretrained!r} into a project workdir: {why}; use --pretrained "
                         "with sample / likelihood instead")  # fmt: skip
    cfg = _project_config(off, args.data_root)
    d = off["data"]
    shape = (d["num_channels"], d["image_size"], d["image_size"])
    net = build_network(cfg.model, shape)
    net.load_official_state_dict(model.net.net.state_dict())
    net.eval()
    check = ScoreModel(net, build_sde(cfg), prediction=cfg.model.prediction, time_labels=cfg.model.time_labels)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, *shape, generator=g, dtype=torch.float32), torch.tensor([0.3, 0.8], dtype=torch.float32)
    with torch.no_grad():
        a, b = check(x, t), model(x, t)
    err = float(((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).max())
    if not err < 1e-4:
        raise ValueError(f"the converted network differs from the loaded one (relative score difference {err:.2e})")
    os.makedirs(args.workdir, exist_ok=True)
    save_config(cfg, os.path.join(args.workdir, "config.yaml"))
    params = [p.detach().clone() for p in net.parameters() if p.requires_grad]
    state = {"format": "score_sde.checkpoint/1", "step": 0, "model": net.state_dict(),
             "ema": {"decay": cfg.training.ema_rate, "num_updates": 0, "shadow": params},
             "config": cfg.to_dict(), "data_scaling": scaling_to_plain(model.data_scaling),
             "data_shape": list(shape), "world_size": 1, "source": args.pretrained}  # fmt: skip
    path = save_checkpoint(checkpoint_path(os.path.join(args.workdir, "checkpoints"), 0), state)
    print(f"wrote {path} and config.yaml ({args.pretrained}; score relative difference {err:.1e} after conversion)")
    return 0


__all__ = ["add_convert_arguments", "run_convert"]
