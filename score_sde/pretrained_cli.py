"""Command line for pretrained models: ``--pretrained`` on ``sample`` / ``likelihood``, and ``convert``.

::

    score-sde sample     --pretrained official:ckpt/checkpoint_26.pth \
        --config configs/official/ve/cifar10_ncsnpp_deep_continuous.yaml --num 64 --out samples.png
    score-sde likelihood --pretrained official:ckpt/checkpoint_26.pth \
        --config configs/official/vp/cifar10_ddpmpp_deep_continuous.yaml --data-root data/cifar-10-batches-py
    score-sde convert    --pretrained official:ckpt/checkpoint_26.pth \
        --config configs/official/vp/cifar10_ddpmpp_continuous.yaml --workdir runs/ddpmpp_vp

``sample`` runs the source's own sampling recipe (``model.sampling``) unless ``--sampler`` /
``--steps`` say otherwise; ``likelihood`` reports the dequantized bits/dim of the data set.
``convert`` writes a project workdir (``config.yaml`` + ``checkpoints/``) for the networks our
training configs can express (DDPM++ / DDPM without FIR resampling, continuous VP or sub-VP);
such a workdir samples and evaluates with ``--workdir`` like a trained one (it holds no optimiser
state, so ``train`` can not resume it).
"""

from __future__ import annotations

import argparse
import json
import os

import torch

_OPTIONS = (
    ("--pretrained", dict(default=None, metavar="SOURCE:PATH",
                          help="a pretrained model instead of --workdir, e.g. official:ckpt/checkpoint_26.pth")),
    ("--config", dict(default=None, help="the model's config for --pretrained official:..., "
                                         "e.g. configs/official/ve/cifar10_ncsnpp_deep_continuous.yaml")),
)  # fmt: skip


def _add_options(p: argparse.ArgumentParser, extra=()) -> None:
    for flag, kw in (*_OPTIONS, *extra):
        if flag not in p._option_string_actions:
            p.add_argument(flag, **kw)
    for a in p._actions:  # --workdir or --pretrained: checked when the command runs
        if a.dest == "workdir":
            a.required = False


def _device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))


def _load(args, device):
    from .pretrained import load_pretrained

    return load_pretrained(args.pretrained, config=args.config, device=device, ema=not getattr(args, "no_ema", False))


def run_sample(args) -> int:
    import numpy as np

    from .cli import UsageError
    from .solvers import available_samplers, sample
    from .training.trainer import _mix_seed, save_samples
    from .utils import per_sample_generators

    if args.num < 1:
        raise UsageError(f"--num must be >= 1; got {args.num}")
    ext = os.path.splitext(args.out)[1].lower()
    if ext not in (".png", ".npz"):
        raise UsageError(f"--out must end in .png or .npz; got {args.out!r}")
    if args.sampler is not None and args.sampler not in available_samplers():
        raise UsageError(f"unknown sampler {args.sampler!r}; valid samplers: {available_samplers()}")
    dev = _device(args.device)
    model = _load(args, dev)
    opts = dict(model.sampling) if args.sampler is None else {"sampler": args.sampler}
    if args.steps is not None:
        opts["steps"] = args.steps
    shape = tuple(model.data_shape)
    dtype = next(model.parameters()).dtype
    bs, parts = args.batch_size or args.num, []
    with torch.no_grad():
        for i in range(0, args.num, bs):
            n = min(bs, args.num - i)
            # one generator per sample, seeded from (--seed, sample index): samples do not depend on --batch-size
            g = per_sample_generators([_mix_seed(args.seed, j) for j in range(i, i + n)], device=dev)
            res = sample(model.sde, model, shape=(n, *shape), generator=g, device=dev, dtype=dtype, **opts)
            parts.append(res.x.cpu())
    y = model.data_scaling.from_model(torch.cat(parts)).clamp(0, 1)  # images on [0, 1]
    if ext == ".npz":
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        np.savez(args.out, samples=y.float().numpy())
    else:
        save_samples(y, args.out, centered=False)
    print(f"wrote {y.shape[0]} samples of shape {tuple(y.shape[1:])} on [0, 1] to {args.out} "
          f"({args.pretrained}; sampler {opts})")  # fmt: skip
    return 0


def run_likelihood(args) -> int:
    from .cli import UsageError
    from .training.config import config_from_dict
    from .training.distributed import cleanup, init_distributed
    from .training.trainer import evaluate_nll

    if args.data_root is None:
        raise UsageError("give --data-root: the folder or file of the evaluation data (e.g. cifar-10-batches-py)")
    dev = _device(args.device)
    model = _load(args, dev)
    official = getattr(model, "official_config", {}).get("data", {})
    dataset = (args.dataset or official.get("dataset", "")).lower()
    if not dataset:
        raise UsageError("give --dataset: the data set to evaluate on (e.g. cifar10)")
    centered = model.data_scaling.shift < 0  # [-1, 1] data
    cfg = config_from_dict({"data": {"dataset": dataset, "root": args.data_root, "centered": centered}})
    ctx = init_distributed(args.device)
    try:
        res = evaluate_nll(cfg, model.sde, model, device=dev, dist=ctx, split=args.split, n=args.num,
                           divergence=args.divergence, probes=args.probes)  # fmt: skip
        res.update(split=args.split, pretrained=args.pretrained, ranks=ctx.world_size)
        if ctx.is_main:
            print(f"{args.split} NLL {res['eval_nll']:.4f} nats/sample, {res['eval_bpd']:.4f} bits/dim over "
                  f"{res['eval_n']} points ({args.pretrained})")  # fmt: skip
            if args.out:
                with open(args.out, "w") as f:
                    json.dump(res, f, indent=2)
    finally:
        cleanup(ctx)
    return 0


def _wrap(name: str, ours, extra=()):
    from .cli import SUBCOMMANDS, UsageError, register_subcommand

    sub = SUBCOMMANDS.get(name)
    if sub is None or getattr(sub.run, "_with_pretrained", False):
        return

    def add_arguments(p):
        sub.add_arguments(p)
        _add_options(p, extra)

    def run(args):
        if getattr(args, "pretrained", None):
            if getattr(args, "workdir", None):
                raise UsageError("give --workdir or --pretrained, not both")
            return ours(args)
        if not getattr(args, "workdir", None):
            raise UsageError("give --workdir (a trained run) or --pretrained SOURCE:PATH")
        return sub.run(args)

    run._with_pretrained = True
    register_subcommand(name, sub.help, add_arguments, run)


def register() -> None:
    """Add ``--pretrained`` to ``sample`` and ``likelihood``, and the ``convert`` sub-command."""
    from .cli import register_subcommand
    from .convert_cli import add_convert_arguments, run_convert

    _wrap("sample", run_sample)
    data_opts = (
        ("--data-root", dict(default=None, help="evaluation data for --pretrained (cifar-10-batches-py)")),
        ("--dataset", dict(default=None, help="data set name for --pretrained (default: the config's)")),
    )
    _wrap("likelihood", run_likelihood, data_opts)
    register_subcommand("convert", "write a pretrained model as a project workdir checkpoint",
                        add_convert_arguments, run_convert)  # fmt: skip


__all__ = ["register", "run_sample", "run_likelihood"]
