"""``score-sde optimize-grid``: fit a sampler's time grid to a trained workdir, saved as JSON in the workdir.

::

    score-sde optimize-grid --workdir runs/digits_bench --sampler unipc --nfe 10 --opt order=2 [--method bound]
    score-sde sample --workdir runs/digits_bench --grid runs/digits_bench/grids/unipc_10_teacher.json --out x.png

The fitting starts are prior draws from ``--fit-seed`` (a generator of its own, apart from the per-sample
seeds of ``score-sde sample`` / ``evaluate``); the grid goes to ``--out`` (default
``WORKDIR/grids/<sampler>_<nfe>_<method>.json``) and its fitting cost is printed.
"""

from __future__ import annotations

import argparse
import os

from .cli import UsageError, register_subcommand

FIT_STREAM = 0xF17  # mixed into --fit-seed: the fitting starts' own random stream


def _args(p: argparse.ArgumentParser) -> None:
    from .gridfit import METHODS

    p.add_argument("--workdir", required=True, help="a trained workdir (config.yaml, checkpoints/)")
    p.add_argument("--sampler", required=True, help="a fixed-grid sampler: ddim, dpmpp_2m, dpmpp_3m, unipc, heun, ...")
    p.add_argument("--nfe", type=int, required=True, help="the NFE budget the grid is for")
    p.add_argument("--method", default="teacher", choices=METHODS,
                   help="teacher trajectories or the teacher-free step-doubling bound")
    p.add_argument("--out", default=None, help="JSON file (default WORKDIR/grids/<sampler>_<nfe>_<method>.json)")
    p.add_argument("--num-fit", type=int, default=256, help="fitting starts (prior draws)")
    p.add_argument("--fit-seed", type=int, default=0, help="seed of the fitting starts")
    p.add_argument("--max-evals", type=int, default=300, help="loss evaluations per optimiser start")
    p.add_argument("--eps", type=float, default=None, help="end time (default: the SDE's)")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the sampler (repeatable, YAML value), e.g. --opt order=3")  # fmt: skip
    p.add_argument("--device", default="auto")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")


def fitted_grid_or_none(text: str | None):
    """The :class:`~score_sde.gridfit.FittedGrid` in file ``text`` (a .json path), or None for a grid kind."""
    if text is None or not (text.endswith(".json") or os.path.isfile(text)):
        return None
    from .gridfit import FittedGrid

    if not os.path.isfile(text):
        raise UsageError(f"--grid {text!r}: no such file")
    return FittedGrid.load(text)


def _run(args) -> int:
    import torch

    from .gridfit import grid_path, optimize_grid
    from .sample_cli import parse_opts
    from .solvers import available_samplers
    from .training.builders import _mix_seed
    from .training.services import load_workdir

    if args.sampler not in available_samplers():
        raise UsageError(f"unknown sampler {args.sampler!r}; valid samplers: {available_samplers()}")
    for name in ("nfe", "num_fit", "max_evals"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    opts = parse_opts(args.opt)
    cfg, sde, model, state = load_workdir(args.workdir, device=args.device, ema=not args.no_ema)
    p = next(model.parameters())
    shape = (args.num_fit, *(int(s) for s in state["data_shape"]))
    g = torch.Generator(device=p.device).manual_seed(_mix_seed(args.fit_seed, FIT_STREAM))
    x_T = sde.prior_sampling(shape, generator=g, dtype=p.dtype, device=p.device)
    with torch.no_grad():
        fitted = optimize_grid(sde, model, args.sampler, args.nfe, x_T=x_T, method=args.method, eps=args.eps,
                               max_evals=args.max_evals, **opts)  # fmt: skip
    fitted.info["workdir_step"] = int(state["step"])
    out = args.out or grid_path(args.workdir, args.sampler, args.nfe, args.method)
    fitted.save(out)
    times = ", ".join(f"{t:.4g}" for t in fitted.times)
    print(f"wrote {out}: {args.sampler} at {args.nfe} NFE, {fitted.steps} steps, loss {fitted.info['loss']:.4g} "
          f"(base grid {fitted.info['base']}: {fitted.info['per_base'][fitted.info['base']]['loss_base']:.4g}); "
          f"{fitted.cost_text()}\ntimes: [{times}]")  # fmt: skip
    return 0


def register() -> None:
    register_subcommand("optimize-grid", "fit a sampler's time grid to a trained workdir (ss.optimize_grid)",
                        _args, _run)  # fmt: skip


__all__ = ["register", "fitted_grid_or_none"]
