"""``score-sde distill``: distil a trained workdir into a few-step student workdir.

::

    score-sde distill --method progressive|consistency|reflow --teacher runs/<teacher> --workdir runs/<student>
                      [--set steps=1 iters=2000 teacher_steps=64 ... model.hidden=256 ...] [--device cpu]

``--set key=value`` without a section sets a distillation option
(:class:`~score_sde.training.distill.config.DistillConfig`); ``section.key=value`` sets a key of the
student's config, which starts as the teacher's. The student workdir holds ``config.yaml`` (its
``sampling`` section names the sampler, steps and end time it was distilled for), atomic checkpoints,
``metrics.csv`` and ``distill.yaml``; ``score-sde sample`` and ``score-sde evaluate`` read it like any
workdir. Running the same command again on a workdir resumes it (a killed run ends bit-identical).
"""

from __future__ import annotations

import argparse

from .cli import UsageError, register_subcommand


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, choices=("progressive", "consistency", "reflow"))
    p.add_argument("--teacher", required=True, help="a trained workdir (score-sde train --workdir ...)")
    p.add_argument("--workdir", required=True, help="the student's workdir (resumed when it holds checkpoints)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="distill options (steps=1 iters=2000 ...) or student config keys (model.hidden=64)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:<i> or auto")
    p.add_argument("--no-progress", action="store_true")


def split_overrides(items: list[str]) -> tuple[dict, list[str]]:
    """(distill options as typed values, student config overrides ``section.key=value``)."""
    from .training.distill.config import coerce_option

    options, config = {}, []
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set needs key=value; got {item!r}")
        key, value = item.split("=", 1)
        if "." in key:
            config.append(item)
        else:
            options[key] = coerce_option(key, value)
    return options, config


def _run(args) -> int:
    import os

    import torch

    from .training.builders import build_sde, resolve_device
    from .training.config import apply_overrides, validate
    from .training.distill import DistillConfig, DistillRun, Teacher, distill_config_from_dict

    if os.path.abspath(args.teacher) == os.path.abspath(args.workdir):
        raise UsageError(f"--workdir must differ from --teacher; both are {args.teacher!r}")
    options, overrides = split_overrides(args.overrides)
    base = DistillConfig(method=args.method).to_dict()
    stored = os.path.join(args.workdir, "distill.yaml")
    if os.path.isfile(stored):  # a resumed run keeps its options unless --set changes them
        import yaml

        with open(stored) as f:
            base = {**base, **(yaml.safe_load(f) or {}).get("distill", {})}
        if base.get("method") != args.method:
            raise UsageError(f"workdir {args.workdir!r} holds a {base.get('method')!r} distillation, "
                             f"not {args.method!r}")
    dcfg = distill_config_from_dict({**base, **options, "method": args.method})
    device = resolve_device(args.device)
    teacher = Teacher.from_workdir(args.teacher, device=str(device))
    cfg = validate(apply_overrides(teacher.cfg, overrides))
    sde = build_sde(cfg)
    if args.method != "reflow" or any(o.startswith("sde.") for o in overrides):
        teacher.check_student(sde, teacher.data_shape, "the student config")
    dtype = getattr(torch, cfg.training.dtype)
    run = DistillRun(teacher, dcfg, sde=sde, model=cfg.model, cfg=cfg, workdir=args.workdir, device=device,
                     dtype=dtype, progress=not args.no_progress)  # fmt: skip
    res = run.run()
    print(f"distilled ({args.method}, {run.step} steps) into {args.workdir!r}: sample with "
          f"sampler={res.sampler!r}, steps={res.steps}, eps={res.eps:g}")  # fmt: skip
    return 0


def register() -> None:
    register_subcommand("distill", "distil a trained workdir into a few-step student (progressive, consistency, "
                        "reflow)", _args, _run)  # fmt: skip


__all__ = ["register", "split_overrides"]
