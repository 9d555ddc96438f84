"""Services on a model and its workdir, shared by the trainer and the command line: sampling with the
config's sampler, the held-out NLL / bits/dim, image grids and PNGs, and loading a trained workdir back."""

from __future__ import annotations

import math
import os

import torch

from ..score import ScoreModel
from .builders import _mix_seed, build_network, build_sde, resolve_device
from .checkpoint import CheckpointError, checkpoint_path, latest_valid_checkpoint, load_checkpoint
from .config import Config, config_from_plain
from .distributed import DistContext
from .ema import ExponentialMovingAverage
from .guards import load_weights
from .workdir import atomic_path


def sampler_options(cfg: Config) -> dict:
    """The keyword options of ``ss.sample`` for ``cfg.sampling.sampler``."""
    s = cfg.sampling
    if s.sampler == "pc":
        return dict(predictor=s.predictor, corrector=s.corrector, snr=s.snr, corrector_steps=s.corrector_steps)
    if s.sampler == "ode":
        return dict(rtol=s.rtol, atol=s.atol)
    return {}


def sample_model(
    cfg: Config,
    sde,
    model: ScoreModel,
    shape,
    num: int,
    *,
    device=None,
    dtype=None,
    generator=None,
    sampler: str | None = None,
    steps: int | None = None,
) -> torch.Tensor:
    """``num`` samples [num, *shape] of ``model`` with the sampler of ``cfg.sampling`` (or ``sampler``)."""
    from ..solvers import sample

    if sampler is not None or steps is not None:
        cfg = config_from_plain(cfg.to_dict())
        cfg.sampling.sampler = sampler or cfg.sampling.sampler
        cfg.sampling.steps = steps if steps is not None else cfg.sampling.steps
    s = cfg.sampling

    def score(x, t, *args):
        with torch.no_grad():
            return model.score(x, t, *args)

    res = sample(
        sde,
        score,
        shape=(num, *shape),
        sampler=s.sampler,
        steps=s.steps,
        eps=s.eps,
        generator=generator,
        dtype=dtype,
        device=device,
        **sampler_options(cfg),
    )
    return res.x


def load_split(cfg: Config, split: str, n: int | None = None, dtype=None):
    """The data set of ``cfg.data`` for ``split`` (``n`` points; default data.n_train / data.n_test)."""
    from .data import get_dataset

    d = cfg.data
    if n is None:
        n = d.n_train if split == "train" else d.n_test
    return get_dataset(d.dataset, split, n=n, seed=d.seed, root=d.root, centered=d.centered, dtype=dtype)


def evaluate_nll(
    cfg: Config,
    sde,
    model: ScoreModel,
    *,
    device=None,
    dtype=torch.float64,
    dist: DistContext | None = None,
    cache: dict | None = None,
    split: str | None = None,
    n: int | None = None,
    divergence: str | None = None,
    probes: int | None = None,
) -> dict:
    """NLL of held-out data through the probability-flow ODE, sharded across ranks and gathered.

    Continuous data (toy sets): ``eval_nll`` = mean -log p_eps(x) in nats per sample and
    ``eval_bpd`` = eval_nll / (D ln 2). Discrete data (images): the levels are uniformly
    dequantized and ``eval_bpd`` is the dequantized bits/dim bound of the data set's stored
    :class:`~score_sde.data_scaling.DataScaling`; ``eval_nll`` is the matching -log p(x) in nats.
    Options (divergence, probes, rtol, atol, eps, batch_size, seed) come from ``cfg.eval``.
    ``dtype`` is the dtype of the ODE state (float64 by default; the network runs in its own dtype).
    Returns ``{"eval_nll", "eval_bpd", "eval_n"}``.
    """
    from ..likelihood import bits_per_dim, log_likelihood
    from .distributed import gather_cat, shard_range

    dist = dist or DistContext()
    e = cfg.eval
    split = split or e.split
    n = e.num if n is None else n
    key = (split, n)
    if cache is not None and key in cache:
        ds = cache[key]
    else:
        ds = load_split(cfg, split, None, dtype=dtype)
        ds = ds.subset(min(n, len(ds))) if n is not None else ds
        if cache is not None:
            cache[key] = ds
    N, D = len(ds), math.prod(ds.shape)
    lo, hi = shard_range(N, dist.rank, dist.world_size)
    g = torch.Generator(device=device or "cpu").manual_seed(_mix_seed(e.seed, dist.rank))
    kw = dict(divergence=divergence or e.divergence, probes=probes or e.probes, rtol=e.rtol, atol=e.atol, eps=e.eps)
    kw["create_graph"] = False  # an evaluation: no graph through the parameters

    p = next(model.parameters(), None)
    net_dtype = p.dtype if p is not None else None

    def score(x, t):  # the ODE may run in a wider dtype than the network
        if net_dtype is None or x.dtype == net_dtype:
            return model.score(x, t)
        return model.score(x.to(net_dtype), t.to(net_dtype)).to(x.dtype)

    discrete = ds.quantized is not None and ds.scaling is not None
    out = []
    for i in range(lo, hi, e.batch_size):
        j = min(i + e.batch_size, hi)
        if discrete:
            levels = ds.quantized[i:j].to(device)
            out.append(bits_per_dim(sde, score, levels, ds.scaling, generator=g, dtype=dtype, **kw).detach())
        else:
            x = ds.data[i:j].to(device=device, dtype=dtype)
            out.append(-log_likelihood(sde, score, x, generator=g, **kw).logp.detach() / (D * math.log(2)))
    per = torch.cat(out) if out else torch.zeros(0, device=device, dtype=dtype or torch.get_default_dtype())
    bpd = gather_cat(per, dist).double()
    if discrete:  # bpd = nll / (D ln 2) - log2 a + log2 K
        nll = (bpd + math.log2(ds.scaling.scale) - math.log2(ds.scaling.levels)) * D * math.log(2)
    else:
        nll = bpd * D * math.log(2)
    return {"eval_nll": float(nll.mean()), "eval_bpd": float(bpd.mean()), "eval_n": int(bpd.numel())}


def image_grid(x: torch.Tensor, nrow: int | None = None, pad: int = 1) -> torch.Tensor:
    """Tile images [N, C, H, W] in [0, 1] into one [H', W', C] array (C = 1 or 3)."""
    N, C, H, W = x.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(N))))
    ncol = int(math.ceil(N / nrow))
    grid = torch.ones(C, ncol * (H + pad) + pad, nrow * (W + pad) + pad, dtype=x.dtype)
    for i in range(N):
        r, c = divmod(i, nrow)
        grid[:, pad + r * (H + pad) : pad + r * (H + pad) + H, pad + c * (W + pad) : pad + c * (W + pad) + W] = x[i]
    return grid.permute(1, 2, 0)


def save_samples(x: torch.Tensor, path: str, centered: bool = True, title: str | None = None) -> str:
    """Write samples as a PNG: an image grid for [N, C, H, W], a scatter plot otherwise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = x.detach().float().cpu()
    if x.ndim == 4:
        img = ((x + 1) / 2 if centered else x).clamp(0, 1)
        grid = image_grid(img)
        if grid.shape[-1] == 1:
            return atomic_path(path, lambda p: plt.imsave(p, grid[..., 0].numpy(), cmap="gray", vmin=0, vmax=1))
        return atomic_path(path, lambda p: plt.imsave(p, grid.numpy()))
    flat = x.reshape(x.shape[0], -1)
    fig, ax = plt.subplots(figsize=(4, 4))
    if flat.shape[1] >= 2:
        ax.scatter(flat[:, 0], flat[:, 1], s=1)
    else:
        ax.hist(flat[:, 0].numpy(), bins=100)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    try:
        atomic_path(path, lambda p: fig.savefig(p, dpi=100))
    finally:
        plt.close(fig)
    return path



def load_workdir(workdir: str | os.PathLike, *, device: str = "auto", ema: bool = True, step: int | None = None):
    """(config, sde, ScoreModel with EMA weights, checkpoint dict) of a trained workdir.

    Reads the newest checkpoint (or ``checkpoints/checkpoint_<step>.pt``) with weights_only=True.
    """
    workdir = os.fspath(workdir)
    folder = os.path.join(workdir, "checkpoints")
    dev = resolve_device(device)
    if step is not None:
        path = checkpoint_path(folder, step)
        state = load_checkpoint(path, map_location=dev)
    else:  # the newest checkpoint that verifies (a damaged newer one is skipped with a warning)
        path, state = latest_valid_checkpoint(folder, map_location=dev)
    if path is None:
        raise FileNotFoundError(f"no checkpoint in {folder!r} that loads; train first (score-sde train --workdir ...)")
    try:
        cfg = config_from_plain(state["config"])
        shape = tuple(int(s) for s in state["data_shape"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path!r} lacks its config or data shape ({e})") from None
    sde = build_sde(cfg)
    net = build_network(cfg.model, shape)
    load_weights(net, state["model"], what=f"model of {path!r}")
    floats = {k: v for k, v in state["model"].items() if torch.is_tensor(v) and v.is_floating_point()}
    bad = [k for k, v in floats.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint {path!r} holds non-finite weights ({', '.join(bad[:3])}); training diverged")
    net = net.to(dev, getattr(torch, cfg.training.dtype))
    if ema:
        e = ExponentialMovingAverage(net, state["ema"]["decay"])
        e.load_state_dict(state["ema"])
        e.copy_to(net)
    net.eval()
    model = ScoreModel(net, sde, prediction=cfg.model.prediction, time_labels=cfg.model.time_labels)
    if state.get("consistency") is not None:  # a consistency-model student (score_sde.training.distill)
        from .distill.boundary import from_marker

        model = from_marker(net, sde, state["consistency"])
    return cfg, sde, model, state


