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


def toy_config(sde_kind: str, n_iters: int, npz: str, seed: int = 0) -> dict:
    """An MLP score model for 2-D data in ``npz`` (key ``x``)."""
    return {
        "data": {"dataset": "npz", "root": npz},
        "model": {"kind": "mlp", "hidden": 128, "depth": 3, "emb_dim": 64, "prediction": "eps"},
        "sde": {"kind": sde_kind},
        "training": {
            "batch_size": 256,
            "n_iters": n_iters,
            "lr": 2e-3,
            "warmup": 200,
            "ema_rate": 0.999,
            "seed": seed,
            "log_every": max(1, n_iters // 4),
            "ckpt_every": n_iters,
            "progress": False,
            "device": "cpu",
        },
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
