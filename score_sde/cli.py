"""The ``score-sde`` command (also ``python -m score_sde``; under ``torchrun`` for several processes).

::

    score-sde train      --config configs/<experiment>.yaml --workdir runs/<name> [--set key=value ...]
    score-sde sample     --workdir runs/<name> [--sampler pc] [--steps 1000] [--num 64] --out samples.png|.npz
                         [--predictor ... --corrector ... --snr ... --nfe ... --opt key=value ...]
                         [--guidance-scale 3 --class-labels 0,1] [--mask m.png --image x.png] [--plugin mod]
    score-sde likelihood --workdir runs/<name> [--split test] [--divergence hutchinson --probes 1]
    score-sde distill    --method progressive|consistency|reflow --teacher runs/<name> --workdir runs/<student>
    score-sde figures    [--fast] [--only fig2,table1]   (source checkout: writes out/paper_figures/)
    torchrun --nproc_per_node=N -m score_sde train ...      (DistributedDataParallel; same flags)

Under torchrun write ``--num-samples`` / ``--num-points`` for ``--num`` (torchrun's own parser
takes ``--num`` for an abbreviation of its ``--numa-binding``).

``train`` on a workdir that already holds checkpoints resumes from the newest one, with the
workdir's ``config.yaml`` (``--set`` may change keys deliberately, e.g. ``training.n_iters``).
Strings (sampler names, config keys) are mapped to objects here and in the config module only.

Sub-commands live in :data:`SUBCOMMANDS`; another module adds one with
:func:`register_subcommand` (name, help, a function adding its arguments, a function running it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Subcommand:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


SUBCOMMANDS: dict[str, Subcommand] = {}


def register_subcommand(name: str, help: str, add_arguments: Callable, run: Callable) -> None:
    """Add (or replace) a sub-command of ``score-sde``."""
    SUBCOMMANDS[name] = Subcommand(name, help, add_arguments, run)


class UsageError(Exception):
    """A bad command line or config: printed as ``score-sde: error: ...``, exit status 2."""


# ---------------------------------------------------------------------------------------------
# train


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="experiment YAML (optional when --workdir already holds config.yaml)")
    p.add_argument("--workdir", required=True, help="folder of config, checkpoints, metrics, samples")
    p.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys, e.g. --set training.lr=1e-3 training.n_iters=2000",
    )
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume even though the model or SDE config differs from the checkpoint's (recorded in events.log)",
    )


def resolve_train_config(config: str | None, workdir: str, overrides: list[str]):
    """The config of a ``train`` call: the YAML file (or the workdir's stored one) plus ``--set``.

    On an existing workdir the stored ``config.yaml`` wins; a ``--config`` that disagrees with it
    in keys not named by ``--set`` raises ``ValueError`` listing them.
    """
    from .training.config import apply_overrides, config_from_dict, load_yaml, validate

    stored_path = os.path.join(workdir, "config.yaml")
    stored = _stored_config(workdir) if os.path.isfile(stored_path) else None
    if config is None and stored is None:
        raise UsageError(f"give --config: the workdir {workdir!r} holds no config.yaml to resume from")
    given = apply_overrides(config_from_dict(load_yaml(config)), overrides) if config is not None else None
    if stored is not None:
        cfg = apply_overrides(stored, overrides)
        if given is not None:
            named = {o.split("=", 1)[0].strip() for o in overrides}
            a, b = _flat(given.to_dict()), _flat(cfg.to_dict())
            diff = sorted(k for k in a if a[k] != b[k] and k not in named)
            if diff:
                raise ValueError(
                    f"--config {config!r} differs from {stored_path!r} in {', '.join(diff)}; resume without "
                    "--config, change keys with --set, or use a new --workdir"
                )
    else:
        cfg = given
    validate(cfg, check_files=True)
    return cfg


def _stored_config(workdir: str):
    """The workdir's ``config.yaml``; when it is empty, cut off or unreadable, the config of the newest valid
    checkpoint (with a warning), never the library defaults; UsageError when neither exists."""
    import warnings

    from .training.checkpoint import latest_valid_checkpoint
    from .training.config import config_from_dict, config_from_plain, load_yaml, missing_keys

    path = os.path.join(workdir, "config.yaml")
    try:
        d = load_yaml(path)
        problem = f"it lacks {', '.join(missing_keys(d)[:4])}" if missing_keys(d) else None
        cfg = config_from_dict(d) if problem is None else None
    except (ValueError, TypeError) as e:
        problem, cfg = str(e), None
    if problem is None:
        return cfg
    ckpt, state = latest_valid_checkpoint(os.path.join(workdir, "checkpoints"))
    if ckpt is None or not isinstance(state.get("config"), dict):
        raise UsageError(
            f"{path!r} is damaged ({problem}) and no checkpoint holds a config to resume from; "
            "give --config or use a new --workdir"
        )
    warnings.warn(f"{path!r} is damaged ({problem}); using the config stored in {ckpt!r}", RuntimeWarning, stacklevel=2)
    return config_from_plain(state["config"])


def _flat(d: dict) -> dict:
    from .training.guards import flat_keys

    return flat_keys(d)


def _run_train(args) -> int:
    from .training.distributed import cleanup, init_distributed
    from .training.trainer import Trainer

    cfg = resolve_train_config(args.config, args.workdir, args.overrides)
    ctx = init_distributed(cfg.training.device)
    try:
        trainer = Trainer(cfg, args.workdir, dist=ctx, allow_config_change=args.allow_config_change)
        if trainer.step >= cfg.training.n_iters:
            if ctx.is_main:
                print(
                    f"{args.workdir}: already trained to step {trainer.step} (training.n_iters = "
                    f"{cfg.training.n_iters}); nothing to do"
                )
            return 0
        resumed = trainer.step
        summary = trainer.fit()
        if ctx.is_main:
            start = f"resumed at step {resumed}, " if resumed else ""
            print(
                f"{args.workdir}: {start}trained to step {summary['step']} in {summary['wall_s']:.1f} s "
                f"({summary['steps_per_s']:.1f} steps/s); last loss {summary.get('loss', float('nan')):.4g}"
            )
    finally:
        cleanup(ctx)
    return 0


# ---------------------------------------------------------------------------------------------
# sample


def _sample_args(p: argparse.ArgumentParser) -> None:
    """The ``sample`` options (all in :mod:`score_sde.sample_cli`)."""
    from .sample_cli import add_arguments

    add_arguments(p)


def _run_sample(args) -> int:
    from .sample_cli import run

    return run(args)


# ---------------------------------------------------------------------------------------------
# likelihood


def _likelihood_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", required=True)
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument(
        "--num",
        "--num-points",
        dest="num",
        type=int,
        default=None,
        help="number of points (default: the config's eval.num; under torchrun write --num-points)",
    )
    p.add_argument("--divergence", default=None, choices=("hutchinson", "exact"))
    p.add_argument("--probes", type=int, default=None, help="Hutchinson probes per point")
    p.add_argument("--repeats", type=int, default=1,
                   help="evaluations per point (fresh dequantization and probes); >= 2 also gives the estimator's "
                   "own standard error")  # fmt: skip
    p.add_argument("--rtol", type=float, default=None, help="ODE solver rtol (default: the config's eval.rtol)")
    p.add_argument("--atol", type=float, default=None, help="ODE solver atol (default: the config's eval.atol)")
    p.add_argument("--batch-size", type=int, default=None, help="points per ODE solve (default: eval.batch_size)")
    p.add_argument("--seed", type=int, default=None, help="seed of the dequantization and probes (default: eval.seed)")
    p.add_argument("--scheme", default="augmented", choices=("augmented", "quadrature"),
                   help="quadrature also reports the solver's error estimate")  # fmt: skip
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="also write the result as JSON here")
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def _run_likelihood(args) -> int:
    from .likelihood_cli import run

    return run(args)


register_subcommand("train", "train a score model (resumes an existing workdir)", _train_args, _run_train)
register_subcommand("sample", "draw samples from a trained workdir", _sample_args, _run_sample)
register_subcommand(
    "likelihood", "NLL / bits-per-dim of held-out data via the PF-ODE", _likelihood_args, _run_likelihood
)


def _figures_module():
    """``paper_figures.run_all`` when importable, or found next to the package in a source checkout.

    In a checkout, ``paper_figures/`` sits beside ``score_sde/``; that one package is loaded from its
    folder (``sys.path`` is left alone, so no other folder of the checkout becomes importable).
    None when neither holds (an installed package has no paper figures).
    """
    import importlib
    import importlib.util

    try:
        return importlib.import_module("paper_figures.run_all")
    except ModuleNotFoundError as e:
        if e.name not in ("paper_figures", "paper_figures.run_all"):
            raise
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "paper_figures")
    init = os.path.join(folder, "__init__.py")
    if not (os.path.isfile(init) and os.path.isfile(os.path.join(folder, "run_all.py"))):
        return None
    spec = importlib.util.spec_from_file_location("paper_figures", init, submodule_search_locations=[folder])
    package = importlib.util.module_from_spec(spec)
    sys.modules["paper_figures"] = package
    try:
        spec.loader.exec_module(package)
        return importlib.import_module("paper_figures.run_all")
    except BaseException:
        sys.modules.pop("paper_figures", None)
        raise


def register_plugins() -> None:
    """Sub-commands that live in other modules: ``train-classifier`` (score_sde.guidance_cli) and
    ``figures`` (paper_figures/run_all.py of a source checkout: ``add_arguments``, ``run_from_args``)."""
    import importlib

    try:
        importlib.import_module(f"{__package__}.guidance_cli").register()
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.guidance_cli":
            raise
    importlib.import_module(f"{__package__}.evaluate_cli").register()
    importlib.import_module(f"{__package__}.pretrained_cli").register()  # --pretrained, convert
    importlib.import_module(f"{__package__}.distill_cli").register()
    importlib.import_module(f"{__package__}.gridfit_cli").register()  # optimize-grid
    if "figures" not in SUBCOMMANDS:
        mod = _figures_module()
        if mod is not None:
            register_subcommand("figures", "regenerate the paper's figures and tables (paper_figures/)",
                                mod.add_arguments, mod.run_from_args)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    register_plugins()
    parser = argparse.ArgumentParser(prog="score-sde", description="Score-based generative modelling with SDEs.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"score-sde {__version__}")
    parser.add_argument(
        "--traceback", action="store_true", help="show the full traceback of an error (also SCORE_SDE_TRACEBACK=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in SUBCOMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def _known_errors() -> tuple[type[BaseException], ...]:
    """Errors of our own checks, printed as one line (CheckpointError is a ValueError)."""
    from .solvers.ode import NFEBudgetExceeded, ODESolveError
    from .training.guards import TrainingDiverged
    from .training.workdir import LauncherDied, WorkdirLocked

    return (UsageError, ValueError, TypeError, OSError, TrainingDiverged, WorkdirLocked, LauncherDied,
            ODESolveError, NFEBudgetExceeded)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``score-sde`` console script; returns the exit status.

    An error of a check (bad option, bad config, damaged checkpoint, locked workdir, diverged training, ...)
    is printed as one line ``score-sde: error: ...`` with exit status 2; ``--traceback`` (or the environment
    variable ``SCORE_SDE_TRACEBACK=1``) shows the traceback instead.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except _known_errors() as e:
        if args.traceback or os.environ.get("SCORE_SDE_TRACEBACK"):
            raise
        print(f"score-sde: error: {e}", file=sys.stderr)
        return 2


__all__ = [
    "main",
    "build_parser",
    "register_subcommand",
    "register_plugins",
    "SUBCOMMANDS",
    "Subcommand",
    "resolve_train_config",
]
