"""Small trained models for the figures, trained with the package trainer and cached on disk.

``train(ctx, name, config)`` builds a :class:`score_sde.training.Config` from a nested dict,
trains it with :class:`score_sde.training.trainer.Trainer` in ``<workdir>/<fast|full>/<name>-<hash>``
(the hash covers the config, so a changed config retrains) and returns the EMA model through
``load_workdir``. A second call finds the checkpoint and trains nothing. Delete the workdir (or pass
``--fresh`` to the runner) to train from scratch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from paper_figures import common


def _workdir(ctx: common.Context, name: str, cfg_dict: dict) -> Path:
    key = hashlib.sha1(json.dumps(cfg_dict, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return ctx.workdir / ("fast" if ctx.fast else "full") / f"{name}-{key}"


def train(ctx: common.Context, name: str, cfg_dict: dict, verbose: bool = True):
    """(config, sde, ScoreModel with EMA weights, info) of a cached or freshly trained model."""
    from score_sde.training.checkpoint import latest_checkpoint
    from score_sde.training.config import config_from_dict
    from score_sde.training.trainer import Trainer, load_workdir

    wd = _workdir(ctx, name, cfg_dict)
    cfg = config_from_dict(cfg_dict)
    n_iters = cfg.training.n_iters
    info = {"workdir": str(wd), "n_iters": n_iters, "cached": True}
    have = latest_checkpoint(str(wd / "checkpoints")) if wd.exists() else None
    if have is None or not have.endswith(f"_{n_iters}.pt"):
        info["cached"] = False
        torch_threads = torch.get_num_threads()
        trainer = Trainer(cfg, wd)
        summary = trainer.fit(n_iters)
        torch.set_num_threads(torch_threads)
        info.update(train_seconds=round(summary["wall_s"], 1), final_loss=summary.get("loss"))
        if verbose:
            print(f"  trained {name}: {n_iters} steps in {summary['wall_s']:.1f} s (loss {summary.get('loss')})")
    cfg, sde, model, _ = load_workdir(str(wd), device="cpu")
    return cfg, sde, model, info


def no_grad_score(model, dtype=None):
    """``score(x, t[, cond])`` of a ScoreModel without autograd (samplers need no graph)."""

    def score(x, t, *args):
        with torch.no_grad():
            xin = x if dtype is None else x.to(dtype)
            return model.score(xin, t.to(xin.dtype), *args).to(x.dtype)

    return score


def _training(n_iters: int, seed: int, batch_size: int, warmup: int) -> dict:
    """The ``training`` section shared by the figure models (CPU, one checkpoint at the end)."""
    return {
        "batch_size": batch_size,
        "n_iters": n_iters,
        "lr": 2e-3,
        "warmup": warmup,
        "ema_rate": 0.999,
        "seed": seed,
        "log_every": max(1, n_iters // 4),
        "ckpt_every": n_iters,
        "progress": False,
        "device": "cpu",
    }


def toy_config(sde_kind: str, n_iters: int, npz: str, seed: int = 0) -> dict:
    """An MLP score model for 2-D data in ``npz`` (key ``x``)."""
    return {
        "data": {"dataset": "npz", "root": npz},
        "model": {"kind": "mlp", "hidden": 128, "depth": 3, "emb_dim": 64, "prediction": "eps"},
        "sde": {"kind": sde_kind},
        "training": _training(n_iters, seed, batch_size=256, warmup=200),
    }


def toy_model(sde_kind: str, n_iters: int, ctx: common.Context, gmm, n_data: int = 20000, seed: int = 0):
    """A 2-D MLP trained on ``n_data`` exact samples of ``gmm``; returns ((sde, model), info)."""
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    npz = ctx.workdir / f"mixture2d_{n_data}.npz"
    if not npz.exists():
        x = gmm.sample(n_data, generator=torch.Generator().manual_seed(777)).numpy()
        np.savez(npz, x=x)
    cfg, sde, model, info = train(ctx, f"toy-{sde_kind}", toy_config(sde_kind, n_iters, str(npz), seed))
    return (sde, model), info


def digits_config(sde_kind: str, n_iters: int, seed: int = 0, ch: int = 32, data: dict | None = None) -> dict:
    """A small U-Net (DDPM++-style blocks, two resolutions, no attention) on 8 x 8 digits in [-1, 1]."""
    return {
        "data": data or {"dataset": "digits"},
        "model": {
            "kind": "unet",
            "ch": ch,
            "ch_mult": [1, 2],
            "num_res_blocks": 1,
            "attn_resolutions": [],
            "dropout": 0.0,
            "prediction": "eps",
        },
        "sde": {"kind": sde_kind},
        "training": _training(n_iters, seed, batch_size=64, warmup=min(200, max(1, n_iters // 5))),
    }


def digits_model(sde_kind: str, n_iters: int, ctx: common.Context, seed: int = 0, ch: int = 32, name: str = ""):
    """(config, sde, model, info) of a digits U-Net (cached)."""
    return train(ctx, name or f"digits-{sde_kind}-s{seed}-c{ch}", digits_config(sde_kind, n_iters, seed, ch))


def tinted_digits_npz(ctx: common.Context, seed: int = 0) -> Path:
    """Digits tinted with one random saturated colour each: x_c = 2 k_c y - 1 with y in [0, 1] the
    grey level and k in [0, 1]^3 a colour of maximal channel 1, as [N, 3, 8, 8] (train/test split)."""
    from score_sde.training.data import get_dataset

    path = ctx.workdir / f"tinted_digits_s{seed}.npz"
    if path.exists():
        return path
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    arrays = {}
    for split in ("train", "test"):
        ds = get_dataset("digits", split, dtype=torch.float64)
        y = (ds.data + 1) / 2  # [N, 1, 8, 8] in [0, 1]
        k = torch.rand(y.shape[0], 3, generator=g, dtype=torch.float64)
        k = k / k.max(1, keepdim=True).values
        arrays[f"x_{split}"] = (2 * k[:, :, None, None] * y - 1).numpy()
        arrays[f"y_{split}"] = ds.labels.numpy()
    np.savez(path, **arrays)
    return path


def tinted_model(n_iters: int, ctx: common.Context, seed: int = 0, ch: int = 32):
    npz = tinted_digits_npz(ctx)
    cfg = digits_config("vp", n_iters, seed, ch, data={"dataset": "npz", "root": str(npz)})
    return train(ctx, f"tinted-vp-s{seed}-c{ch}", cfg)


def noisy_classifier(sde, steps: int, ctx: common.Context, seed: int = 0):
    """A noise-conditional digits classifier p_t(y | x_t) (``guidance.train_noisy_classifier``), cached."""
    from score_sde.guidance import train_noisy_classifier
    from score_sde.nets.classifier import NoiseConditionalClassifier
    from score_sde.training.data import get_dataset

    torch.manual_seed(seed)
    clf = NoiseConditionalClassifier((1, 8, 8), 10, ch=32, depth=2)
    path = ctx.workdir / ("fast" if ctx.fast else "full") / f"classifier-{type(sde).__name__}-{steps}-s{seed}.pt"
    info = {"path": str(path), "steps": steps, "cached": path.exists()}
    if path.exists():
        clf.load_state_dict(torch.load(path, weights_only=True))
    else:
        ds = get_dataset("digits", "train", dtype=torch.float32)
        losses = train_noisy_classifier(
            clf, sde, ds.data, ds.labels, steps=steps, generator=torch.Generator().manual_seed(seed)
        )
        info["final_loss"] = sum(losses[-50:]) / len(losses[-50:])
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(clf.state_dict(), path)
    clf.eval()
    return clf, info


def frozen_score(model):
    """``score(x, t)`` of a ScoreModel with frozen parameters: differentiable in x (for the PF-ODE
    divergence of the likelihood) without building graphs for the weights."""
    for p in model.parameters():
        p.requires_grad_(False)
    return lambda x, t, *args: model.score(x, t, *args)
