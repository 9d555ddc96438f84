"""``score-sde evaluate``: sample quality of a trained workdir from N samples drawn in resumable shards.

::

    score-sde evaluate --workdir runs/digits [--num 2000] [--sampler ode] [--steps 100] [--out DIR]
    torchrun --nproc_per_node=4 -m score_sde evaluate --workdir runs/digits --num-samples 10000

Samples are drawn with one seed per sample into shard files under ``DIR/shards`` (see
:mod:`score_sde.evaluation.shards`): a rerun after a crash or a kill skips the finished shards, and the
samples do not depend on the number of processes. Rank 0 then writes ``DIR/metrics.json`` and
``DIR/samples.png``. Metrics: a Fréchet distance, KID (with its standard error) and precision/recall in
the feature space named by ``feature_net`` (``fd-digits`` / ``fd-mnist``: a classifier trained by the
project, see docs/evaluation.md; ``data``: the raw data space, for vector data), and FID / KID / IS on
Inception features when torch-fidelity and its weights file are available.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from .cli import UsageError, register_subcommand

AUTO_FEATURE_NETS = {"digits": "fd-digits", "mnist": "fd-mnist"}


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", required=True, help="a trained workdir (config.yaml, checkpoints/)")
    p.add_argument("--num", "--num-samples", dest="num", type=int, default=1000,
                   help="number of samples N (under torchrun write --num-samples)")  # fmt: skip
    p.add_argument("--sampler", default=None, help="a name of ss.available_samplers() (default: the config's)")
    p.add_argument("--steps", type=int, default=None, help="grid steps (default: the config's)")
    p.add_argument("--seed", type=int, default=0, help="run seed; sample i uses a seed mixed from (seed, i)")
    p.add_argument("--batch-size", type=int, default=250, help="samples per solve")
    p.add_argument("--shard-size", type=int, default=500, help="samples per shard file")
    p.add_argument("--out", default=None, help="output folder (default WORKDIR/eval/<sampler>-<steps>-n<N>-s<seed>)")
    p.add_argument("--reference", default="train", choices=("train", "test"), help="reference data split")
    p.add_argument("--feature-net", default="auto", choices=("auto", "fd-digits", "fd-mnist", "data", "none"),
                   help="feature space of the FD/KID/precision-recall (auto: by data set)")  # fmt: skip
    p.add_argument("--inception-weights", default=None, help="TF-Inception weights file for FID/KID/IS")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--cache-dir", default=None, help="cache of the FD-digits / FD-MNIST nets")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--no-progress", action="store_true")


def _check_args(args) -> None:
    for name in ("num", "batch_size", "shard_size", "kid_subsets"):
        v = getattr(args, name)
        if v < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1; got {v}")
    if args.kid_subset_size < 2:
        raise UsageError(f"--kid-subset-size must be >= 2; got {args.kid_subset_size}")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be >= 1; got {args.steps}")


def _sampling_config(cfg, sampler: str | None, steps: int | None):
    from .solvers import available_samplers
    from .training.config import config_from_plain

    if sampler is not None and sampler not in available_samplers():
        raise UsageError(f"unknown sampler {sampler!r}; valid samplers: {available_samplers()}")
    cfg = config_from_plain(cfg.to_dict())
    cfg.sampling.sampler = sampler or cfg.sampling.sampler
    cfg.sampling.steps = steps if steps is not None else cfg.sampling.steps
    return cfg


def _drawer(cfg, sde, model, shape, seed: int, batch_size: int):
    """draw(indices) -> (samples, nfe): per-sample generators, solved ``batch_size`` at a time."""
    from .evaluation.shards import sample_seed
    from .solvers import sample
    from .training.trainer import sampler_options
    from .utils import per_sample_generators

    p = next(model.parameters())
    s = cfg.sampling

    def score(x, t, *a):
        with torch.no_grad():
            return model.score(x, t, *a)

    def draw(idx):
        gens = per_sample_generators([sample_seed(seed, i) for i in idx], device=p.device)
        xs, nfe = [], 0
        for j in range(0, len(idx), batch_size):
            g = gens[j : j + batch_size]
            res = sample(sde, score, shape=(len(g), *shape), sampler=s.sampler, steps=s.steps, eps=s.eps,
                         generator=g, dtype=p.dtype, device=p.device, **sampler_options(cfg))  # fmt: skip
            xs.append(res.x.detach().cpu())
            nfe = max(nfe, int(res.nfe))
        return torch.cat(xs), nfe

    return draw


def _reference_data(cfg, split: str) -> torch.Tensor:
    """The reference split in model space, dequantized (seed 0) when the model was trained on dequantized data."""
    from .training.trainer import load_split

    ds = load_split(cfg, split, dtype=torch.float32)
    if cfg.data.uniform_dequantization and ds.quantized is not None:
        return ds.dequantize(torch.Generator().manual_seed(0), torch.float32)
    return ds.data


def sample_metrics(x: torch.Tensor, cfg, args) -> tuple[dict, list[str]]:
    """Metrics of samples ``x`` [N, ...] against the config's reference split; (metrics, notes)."""
    from .evaluation import feature_metrics, load_feature_net

    notes = []
    ref = _reference_data(cfg, args.reference)
    kid = dict(kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size)
    name = args.feature_net
    if name == "auto":
        name = AUTO_FEATURE_NETS.get(cfg.data.dataset, "data" if x.ndim == 2 else "none")
    out = {"feature_net": name, "reference": f"{cfg.data.dataset}:{args.reference} ({ref.shape[0]} points)"}
    if name in ("fd-digits", "fd-mnist"):
        fn = load_feature_net(name, cache_dir=args.cache_dir)
        out["feature_net_test_accuracy"] = fn.test_accuracy
        out.update(feature_metrics(fn.features(x), fn.features(ref), name.replace("-", "_"), **kid))
    elif name == "data":
        out.update(feature_metrics(x.flatten(1).double(), ref.flatten(1).double(), "fd_data", **kid))
    if x.ndim == 4 and x.shape[1] in (1, 3):
        out.update(_inception_metrics(x, ref, cfg, args, notes, suffix="" if name == "none" else "_inception"))
    return out, notes


def _inception_metrics(x, ref, cfg, args, notes: list, suffix: str) -> dict:
    from .evaluation import (
        feature_metrics,
        inception_feature_extractor,
        inception_features,
        inception_score,
        to_uint8_rgb,
    )

    try:
        net = inception_feature_extractor(args.inception_weights)
    except (FileNotFoundError, ImportError) as e:
        if args.inception_weights is not None:
            raise
        notes.append(f"no FID/KID/IS on Inception features: {e}")
        return {}
    pool, logits = inception_features(to_uint8_rgb(x, cfg.data.centered), net)
    ref_pool, _ = inception_features(to_uint8_rgb(ref, cfg.data.centered), net)
    out = feature_metrics(pool, ref_pool, "fid", suffix, args.kid_subsets, args.kid_subset_size)
    out["inception_score"], out["inception_score_std"] = inception_score(logits)
    return out


def _run(args) -> int:
    from .evaluation.shards import check_manifest, draw_shards, load_shards
    from .training.distributed import barrier, cleanup, init_distributed
    from .training.trainer import load_workdir, save_samples

    _check_args(args)
    ctx = init_distributed(args.device)
    try:
        cfg, sde, model, state = load_workdir(args.workdir, device=args.device, ema=not args.no_ema)
        cfg = _sampling_config(cfg, args.sampler, args.steps)
        s = cfg.sampling
        out = args.out or os.path.join(args.workdir, "eval", f"{s.sampler}-{s.steps}-n{args.num}-s{args.seed}")
        shards = os.path.join(out, "shards")
        manifest = {"num_samples": args.num, "sampler": s.sampler, "steps": s.steps, "seed": args.seed,
                    "shard_size": args.shard_size, "checkpoint_step": int(state["step"]), "ema": not args.no_ema,
                    "dtype": cfg.training.dtype}  # fmt: skip
        if ctx.is_main:
            check_manifest(shards, manifest)
        barrier(ctx)
        if not ctx.is_main:
            check_manifest(shards, manifest)
        shape = tuple(int(d) for d in state["data_shape"])
        draw = _drawer(cfg, sde, model, shape, args.seed, args.batch_size)
        st = draw_shards(shards, args.num, args.shard_size, draw, ctx.rank, ctx.world_size,
                         progress=not args.no_progress and ctx.is_main)  # fmt: skip
        if st["skipped"]:
            print(f"rank {ctx.rank}: skipped {st['skipped']} finished shard(s), drew {st['drawn']}")
        barrier(ctx)
        if ctx.is_main:
            x, nfe = load_shards(shards, args.num, args.shard_size)
            metrics, notes = sample_metrics(x, cfg, args)
            result = {"num_samples": args.num, "sampler": s.sampler, "steps": s.steps, "nfe": nfe,
                      "seed": args.seed, "checkpoint_step": int(state["step"]), **metrics, "notes": notes}  # fmt: skip
            path = os.path.join(out, "metrics.json")
            with open(path + ".tmp", "w") as f:
                json.dump(result, f, indent=2)
            os.replace(path + ".tmp", path)
            save_samples(x[:64], os.path.join(out, "samples.png"), centered=cfg.data.centered)
            shown = {k: v for k, v in result.items() if isinstance(v, float)}
            print(f"{out}: {args.num} samples ({s.sampler}, {nfe} NFE, {ctx.world_size} rank(s)); "
                  + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))  # fmt: skip
            for n in notes:
                print(f"note: {n}")
    finally:
        cleanup(ctx)
    return 0


def register() -> None:
    register_subcommand("evaluate", "sample quality (FD-digits/FD-MNIST, KID, precision/recall, FID) of a workdir",
                        _args, _run)  # fmt: skip


__all__ = ["register", "sample_metrics"]
