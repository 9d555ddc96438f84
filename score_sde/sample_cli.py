"""``score-sde sample``: every registered sampler, its options, guidance and inpainting from the command line.

::

    score-sde sample --workdir runs/digits_vp --sampler pc --predictor reverse_diffusion \\
        --corrector langevin --snr 0.16 --steps 500 --num 64 --out samples.png --nrow 8 --scale 4
    score-sde sample --workdir runs/toy_vp --sampler unipc --nfe 10 --opt order=3 --out toy.png
    score-sde sample --workdir runs/digits_vp --sampler ddim --steps 50 --mask mask.png --image digit.png
    score-sde sample --workdir runs/digits_cond --guidance-scale 3 --class-labels 0,1,2 --out cfg.png
    score-sde sample --plugin my_samplers --sampler my_sampler --workdir runs/toy_vp --out x.npz

Options reach the sampler in this order (later wins): the workdir config's ``sampling`` section (for the
sampler it names), the common flags (``--predictor``, ``--corrector``, ``--snr``, ``--corrector-steps``,
``--eta``, ``--rtol``, ``--atol``), then ``--opt key=value`` (any option of the sampler; the value is read
as a YAML scalar: ``3``, ``0.5``, ``1e-3``, ``true``, ``null``, ``[0.1, 2.0]``). A key the sampler does not
take is an error that lists the ones it does (:func:`score_sde.solvers.sampler_option_names`).
``--plugin MODULE`` imports a Python module first (repeatable; the current directory is on the path), so a
sampler or corrector it registers (``register_sampler`` / ``register_corrector``) can be named.

Sample ``i`` (counted over the whole run, on every rank) draws its noise from its own generator seeded
with a mix of ``--seed`` and ``i`` (:func:`score_sde.per_sample_generators`), so the samples do not
depend on ``--batch-size`` or the number of ranks, except where a sampler couples the batch: Langevin
with the official batch-averaged norms (``--opt per_sample_norms=true`` or ``annealed_langevin`` decouple
it) and the adaptive ``ode`` step shared by the batch (``--opt per_sample=true``).
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys

# common sampler options given as flags: argparse dest -> option name of ss.sample
OPTION_FLAGS = {
    "predictor": "predictor",
    "corrector": "corrector",
    "snr": "snr",
    "corrector_steps": "corrector_steps",
    "eta": "eta",
    "rtol": "rtol",
    "atol": "atol",
}


class SampleUsageError(ValueError):
    """A bad ``sample`` command line (printed as ``score-sde: error: ...``)."""


def sampler_listing() -> str:
    """``name: options; ...`` of every registered sampler (the ``sample --help`` epilog)."""
    from .solvers import available_samplers, sampler_option_names

    parts = []
    for name in available_samplers():
        opts = sampler_option_names(name)
        parts.append(f"{name} ({', '.join(opts) if opts else 'no options'})" if opts is not None else f"{name} (any)")
    return "samplers and their --opt keys: " + "; ".join(parts) + "."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = sampler_listing()
    p.add_argument("--workdir", required=True)
    p.add_argument("--sampler", default=None, help="a name of ss.available_samplers() (default: the config's)")
    p.add_argument("--steps", type=int, default=None, help="grid steps (default: the config's)")
    p.add_argument("--nfe", type=int, default=None, help="a budget of score evaluations instead of --steps")
    p.add_argument("--grid", default=None, help="time grid: uniform, quadratic, discrete, karras, logsnr, auto, "
                   "or a fitted grid's JSON file (score-sde optimize-grid)")
    p.add_argument("--eps", type=float, default=None, help="end time (default 1e-3 VP/sub-VP, 1e-5 VE)")
    p.add_argument(
        "--num",
        "--num-samples",
        dest="num",
        type=int,
        default=64,
        help="number of samples (under torchrun write --num-samples: torchrun reads --num as its own)",
    )
    p.add_argument("--out", default="samples.png", help="a .png (grid or scatter plot) or .npz (array 'samples')")
    p.add_argument("--seed", type=int, default=0, help="sample i is seeded by (seed, i): batch-size independent")
    p.add_argument("--batch-size", type=int, default=None, help="samples per solve on each rank")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    g = p.add_argument_group("sampler options (checked against the sampler's own)")
    g.add_argument("--predictor", default=None, help="pc: predictor name")
    g.add_argument("--corrector", default=None, help="pc: corrector name (none, langevin, annealed_langevin, ...)")
    g.add_argument("--snr", type=float, default=None, help="pc: Langevin signal-to-noise ratio")
    g.add_argument("--corrector-steps", type=int, default=None, help="pc: corrector steps per grid time")
    g.add_argument("--eta", type=float, default=None, help="ddim, dpmpp_2m_sde: noise level")
    g.add_argument("--rtol", type=float, default=None, help="ode: relative tolerance")
    g.add_argument("--atol", type=float, default=None, help="ode: absolute tolerance")
    g.add_argument(
        "--opt",
        dest="opts",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any option of the sampler (repeatable), value read as YAML, e.g. --opt order=3 --opt S_churn=40",
    )
    g.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (it may register samplers or correctors); repeatable")  # fmt: skip
    c = p.add_argument_group("conditioning and inpainting")
    c.add_argument("--class-labels", default=None, help="class labels of a conditional model, e.g. 3 or 0,1,2 "
                   "(sample i gets label i mod the list; default: all classes in turn)")  # fmt: skip
    c.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance scale s (1: none)")
    c.add_argument("--mask", default=None, help="inpainting mask image (.png, white = known; or .npy, True = known)")
    c.add_argument("--image", default=None, help="the image to inpaint (.png in [0, 1] or .npy in data units)")
    o = p.add_argument_group("output")
    o.add_argument("--nrow", type=int, default=None, help="images per row of the PNG grid (default ~sqrt(num))")
    o.add_argument("--scale", type=int, default=None, help="PNG grid upsampling (default: images to >= 32 px)")
    o.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: on when stderr is a terminal)")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# options


def parse_value(text: str):
    """A ``--opt`` value as a YAML scalar (or list); plain numbers YAML keeps as text (``1e-3``) become floats."""
    import yaml

    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SampleUsageError(f"cannot read the value {text!r}: {e}") from None
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def parse_opts(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SampleUsageError(f"--opt takes KEY=VALUE; got {pair!r}")
        out[key.strip()] = parse_value(value)
    return out


def resolve_options(cfg, sampler: str, args) -> dict:
    """The sampler's options: the config's (for that sampler), then the flags, then ``--opt``; checked."""
    from .solvers import CORRECTORS, sampler_option_names
    from .solvers.api import _factory_params
    from .training.config import config_from_plain
    from .training.trainer import sampler_options

    c = config_from_plain(cfg.to_dict())
    c.sampling.sampler = sampler
    base = sampler_options(c)
    given = {opt: getattr(args, dest) for dest, opt in OPTION_FLAGS.items() if getattr(args, dest) is not None}
    given.update(parse_opts(args.opts))
    valid = sampler_option_names(sampler)
    if valid is not None:
        bad = sorted(set(given) - set(valid))
        if bad:
            flags = [f"--{k.replace('_', '-')}" if k in OPTION_FLAGS.values() else f"--opt {k}=..." for k in bad]
            raise SampleUsageError(
                f"sampler {sampler!r} has no option(s) {bad} (from {', '.join(flags)}); its options are {valid}"
            )
    opts = {**base, **given}
    if sampler == "pc":  # config defaults a registered corrector does not take are dropped (explicit ones are not)
        factory = CORRECTORS.get(opts.get("corrector"))
        takes = _factory_params(factory) if factory is not None else None
        if takes is not None:
            internal = {"snr": "snr", "corrector_steps": "n_steps", "per_sample_norms": "per_sample"}
            for k, name in internal.items():
                if k in base and k not in given and name not in takes:
                    opts.pop(k)
    return opts


def _load_from_cwd(name: str) -> bool:
    """Load the top package/module of ``name`` from the current directory (``NAME.py`` or
    ``NAME/__init__.py``) without touching ``sys.path``; False when neither file is there."""
    import importlib.util

    top = name.split(".")[0]
    single, package = os.path.join(os.getcwd(), top + ".py"), os.path.join(os.getcwd(), top, "__init__.py")
    if os.path.isfile(package):
        folder = os.path.dirname(package)
        spec = importlib.util.spec_from_file_location(top, package, submodule_search_locations=[folder])
    elif os.path.isfile(single):
        spec = importlib.util.spec_from_file_location(top, single)
    else:
        return False
    module = importlib.util.module_from_spec(spec)
    sys.modules[top] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(top, None)
        raise
    return True


def load_plugins(modules: list[str]) -> None:
    """Import each ``--plugin`` module (importable, or a file/package in the current directory) so that
    it registers its samplers."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name.split(".")[0] and _load_from_cwd(name):
                try:
                    importlib.import_module(name)
                    continue
                except ModuleNotFoundError as e2:
                    e = e2
            raise SampleUsageError(f"--plugin {name!r}: cannot import it ({e})") from None


# ---------------------------------------------------------------------------------------------
# conditioning and inpainting


def class_labels(text: str | None, num_classes: int | None, guided: bool):
    """The label list of ``--class-labels`` (None for an unconditional model)."""
    if num_classes is None:
        if text is not None or guided:
            what = "--class-labels" if text is not None else "--guidance-scale"
            raise SampleUsageError(f"{what} needs a class-conditional model (model.num_classes); this one has none")
        return None
    if text is None:
        return list(range(num_classes))
    try:
        labels = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SampleUsageError(f"--class-labels takes integers like 3 or 0,1,2; got {text!r}") from None
    bad = [v for v in labels if not 0 <= v < num_classes]
    if not labels or bad:
        raise SampleUsageError(f"--class-labels must lie in [0, {num_classes}); got {text!r}")
    return labels


def read_image(path: str, shape: tuple[int, ...], what: str):
    """An image file as a float64 array of the data shape [C, H, W] with values in [0, 1] (.png, resized
    to H x W if needed) or as stored (.npy, which must have the data shape)."""
    import numpy as np

    if not os.path.isfile(path):
        raise SampleUsageError(f"--{what} {path!r}: no such file")
    if path.lower().endswith(".npy"):
        a = np.load(path)
        if a.shape != shape and a.shape != shape[1:]:
            raise SampleUsageError(f"--{what} {path!r} has shape {a.shape}; the data shape is {shape}")
        return np.broadcast_to(a, shape).astype(np.float64)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise SampleUsageError(f"--{what} as a PNG needs image data [C, H, W] with C = 1 or 3; data shape {shape}")
    from PIL import Image

    C, H, W = shape
    img = Image.open(path).convert("L" if C == 1 or what == "mask" else "RGB")
    if img.size != (W, H):
        img = img.resize((W, H), Image.NEAREST if what == "mask" else Image.BOX)
    a = np.asarray(img, dtype=np.float64) / 255.0
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return np.broadcast_to(a, shape).copy()


def observation(args, shape, centered: bool):
    """(y, mask) tensors of ``--image`` / ``--mask`` in model units, or None."""
    import torch

    if (args.mask is None) != (args.image is None):
        raise SampleUsageError("inpainting needs both --mask and --image")
    if args.mask is None:
        return None
    mask = torch.from_numpy(read_image(args.mask, shape, "mask")) > 0.5
    y = torch.from_numpy(read_image(args.image, shape, "image"))
    if args.image.lower().endswith(".png") and centered:
        y = 2 * y - 1
    return y, mask


# ---------------------------------------------------------------------------------------------
# output


def default_scale(height: int) -> int:
    """Upsampling that makes each image at least 32 pixels high."""
    return max(1, math.ceil(32 / height))


def save_png(x, path: str, *, centered: bool, nrow: int | None, scale: int | None, title: str) -> None:
    """An image grid (``nrow`` per row, each pixel ``scale`` x ``scale``) for [N, C, H, W]; else a titled
    scatter plot (2-D data) or histogram (1-D)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .training.trainer import image_grid, save_samples

    if x.ndim != 4:
        save_samples(x, path, centered=centered, title=title)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img = ((x + 1) / 2 if centered else x).float().clamp(0, 1)
    grid = image_grid(img, nrow=nrow)  # [H', W', C]
    k = scale or default_scale(x.shape[-2])
    grid = grid.repeat_interleave(k, 0).repeat_interleave(k, 1)
    if grid.shape[-1] == 1:
        plt.imsave(path, grid[..., 0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        plt.imsave(path, grid.numpy())


def _warn_if_batch_coupled(sampler: str, opts: dict) -> None:
    if sampler == "pc" and opts.get("corrector") == "langevin" and not opts.get("per_sample_norms"):
        why = "the Langevin corrector's batch-averaged norms couple the batch (--opt per_sample_norms=true or "
        why += "--corrector annealed_langevin decouple it)"
    elif sampler == "ode" and not opts.get("per_sample"):
        why = "the adaptive ODE step is shared by the batch (--opt per_sample=true solves each sample alone)"
    else:
        return
    print(f"score-sde: note: samples depend on --batch-size here: {why}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# run


def run(args) -> int:
    import numpy as np
    import torch

    from . import guidance as G
    from .gridfit_cli import fitted_grid_or_none
    from .solvers import available_samplers, sample
    from .training.distributed import cleanup, gather_cat, init_distributed, shard_range
    from .training.trainer import _mix_seed, load_workdir
    from .utils import per_sample_generators

    if args.num < 1:
        raise SampleUsageError(f"--num must be >= 1; got {args.num}")
    for flag in ("batch_size", "nrow", "scale"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise SampleUsageError(f"--{flag.replace('_', '-')} must be >= 1; got {v}")
    ext = os.path.splitext(args.out)[1].lower()
    if ext not in (".png", ".npz"):
        raise SampleUsageError(f"--out must end in .png or .npz; got {args.out!r}")
    load_plugins(args.plugin)
    if args.sampler is not None and args.sampler not in available_samplers():
        raise SampleUsageError(f"unknown sampler {args.sampler!r}; valid samplers: {available_samplers()}")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    ctx = init_distributed(args.device)
    try:
        cfg, sde, model, state = load_workdir(args.workdir, device=args.device, ema=not args.no_ema)
        fitted = fitted_grid_or_none(args.grid)  # a FittedGrid file sets the sampler, NFE and eps it was fitted for
        sampler = args.sampler or (fitted.sampler if fitted else cfg.sampling.sampler)
        opts = resolve_options(cfg, sampler, args)
        steps = args.steps if args.steps is not None or args.nfe is not None or fitted else cfg.sampling.steps
        shape = tuple(int(s) for s in state["data_shape"])
        info = G.conditioning_of(model)
        labels = class_labels(args.class_labels, info["num_classes"], args.guidance_scale is not None)
        obs = observation(args, shape, cfg.data.centered)
        score = model
        if args.guidance_scale is not None:
            score = G.ClassifierFreeGuidance(model, args.guidance_scale)
        p = next(model.parameters())
        lo, hi = shard_range(args.num, ctx.rank, ctx.world_size)
        bs = args.batch_size or max(hi - lo, 1)
        if ctx.is_main and (bs < hi - lo or ctx.world_size > 1):
            _warn_if_batch_coupled(sampler, opts)
        eps = args.eps if args.eps is not None or fitted else cfg.sampling.eps
        common = dict(steps=steps, nfe=args.nfe, eps=eps,
                      progress=progress and ctx.is_main, dtype=p.dtype, device=p.device)  # fmt: skip
        if args.grid is not None:
            common["grid"] = fitted or args.grid

        def solve(i, b):
            gens = per_sample_generators([_mix_seed(args.seed, j) for j in range(i, i + b)], device=p.device)
            cond = None if labels is None else torch.tensor([labels[j % len(labels)] for j in range(i, i + b)],
                                                              device=p.device)  # fmt: skip
            with torch.no_grad():
                if obs is None:
                    return sample(sde, score, shape=(b, *shape), sampler=sampler, generator=gens, cond=cond,
                                  **common, **opts)  # fmt: skip
                y, mask = obs[0].to(p.device, p.dtype), obs[1].to(p.device)
                return G.impute(sde, score, y, mask, shape=(b, *shape), sampler=sampler, generator=gens, cond=cond,
                                **common, **opts)  # fmt: skip

        results = [solve(i, min(bs, hi - i)) for i in range(lo, hi, bs)]
        x = torch.cat([r.x for r in results]) if results else torch.zeros((0, *shape), dtype=p.dtype, device=p.device)
        nfe = max((r.nfe for r in results), default=0)
        x = gather_cat(x, ctx).cpu()
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x.reshape(x.shape[0], -1))).any(1).sum())
            raise SampleUsageError(f"{bad} of {x.shape[0]} samples hold NaN/inf (nothing written to {args.out!r})")
        if ctx.is_main:
            if ext == ".npz":
                os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
                extra = {} if labels is None else {"labels": np.array([labels[j % len(labels)] for j in range(len(x))])}
                np.savez(args.out, samples=x.float().numpy(), **extra)
            else:
                title = f"{sampler}, {nfe} NFE, {x.shape[0]} samples (step {state['step']})"
                save_png(x, args.out, centered=cfg.data.centered, nrow=args.nrow, scale=args.scale, title=title)
            print(
                f"wrote {x.shape[0]} samples of shape {tuple(x.shape[1:])} to {args.out} "
                f"(sampler {sampler}, {nfe} NFE per batch, step {state['step']}, {ctx.world_size} rank(s))"
            )
    finally:
        cleanup(ctx)
    return 0


__all__ = ["add_arguments", "run", "resolve_options", "parse_value", "class_labels", "read_image", "save_png"]
