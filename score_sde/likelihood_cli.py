"""``score-sde likelihood``: bits/dim of held-out data with error bars, its terms, and the solver's cost.

Each rank evaluates a contiguous shard of the split (``torchrun``: gloo on CPU, nccl on GPU), ``--repeats``
times with fresh dequantization noise and Hutchinson probes; rank 0 gathers the per-sample terms and
reports (see :class:`score_sde.likelihood.DatasetBitsPerDim`):

- bits/dim of the discrete data (the dequantized bound), with two standard errors: over the data points
  (how well the data set's expected bpd is known) and from the estimator's randomness alone (how much a
  rerun with another seed moves it; needs --repeats >= 2);
- its three terms (prior, ODE integral, dequantization), and separately the continuous NLL in model space
  (nats), a different quantity that is never to be compared with bits/dim;
- NFE per sample and the solver's error estimate where the scheme has one.
"""

from __future__ import annotations

import json
import math

import torch


def compute(args, ctx):
    """(DatasetBitsPerDim over the whole split on rank 0 (None on the others), dict of the settings used)."""
    from .likelihood import dataset_bits_per_dim, summarize_bits_per_dim
    from .training.distributed import gather_cat, shard_range
    from .training.trainer import _mix_seed, load_split, load_workdir

    cfg, sde, model, state = load_workdir(args.workdir, device=args.device, ema=not args.no_ema)
    e = cfg.eval
    p = next(model.parameters())
    n = e.num if args.num is None else args.num
    ds = load_split(cfg, args.split, None, dtype=torch.float64)
    ds = ds.subset(min(n, len(ds))) if n is not None else ds
    discrete = ds.quantized is not None and ds.scaling is not None
    settings = dict(
        divergence=args.divergence or e.divergence, probes=args.probes or e.probes,
        rtol=e.rtol if args.rtol is None else args.rtol, atol=e.atol if args.atol is None else args.atol,
        eps=e.eps, repeats=args.repeats, batch_size=args.batch_size or e.batch_size,
        seed=e.seed if args.seed is None else args.seed, scheme=args.scheme,
    )  # fmt: skip
    for k in ("rtol", "atol"):
        if not settings[k] > 0:
            raise ValueError(f"--{k} must be > 0; got {settings[k]}")
    for k in ("repeats", "batch_size"):
        if settings[k] < 1:
            raise ValueError(f"--{k.replace('_', '-')} must be >= 1; got {settings[k]}")
    net_dtype = p.dtype

    def score(x, t):  # the ODE state is float64; the network runs in its own dtype
        return model.score(x.to(net_dtype), t.to(net_dtype)).to(x.dtype)

    lo, hi = shard_range(len(ds), ctx.rank, ctx.world_size)
    g = torch.Generator(device=p.device).manual_seed(_mix_seed(settings["seed"], ctx.rank))
    R, D = settings["repeats"], math.prod(ds.shape)
    kw = dict(divergence=settings["divergence"], probes=settings["probes"], rtol=settings["rtol"],
              atol=settings["atol"], eps=settings["eps"], scheme=settings["scheme"], create_graph=False)  # fmt: skip
    if hi > lo:
        data = ds.quantized[lo:hi] if discrete else ds.data[lo:hi]
        scaling = ds.scaling if discrete else None
        res = dataset_bits_per_dim(sde, score, data, scaling, batch_size=settings["batch_size"], repeats=R,
                                   generator=g, dtype=torch.float64, device=p.device,
                                   progress=not args.no_progress and ctx.is_main, **kw)  # fmt: skip
        prior, delta, nfe = res.prior_logp, res.delta, res.nfe
        solves = math.ceil((hi - lo) / settings["batch_size"]) * R
        err = res.delta_error
    else:
        prior = delta = torch.zeros(0, R, dtype=torch.float64)
        nfe = solves = 0
        err = None
    has_err = torch.tensor([0.0 if (err is None and hi > lo) else 1.0])
    prior, delta = gather_cat(prior, ctx), gather_cat(delta, ctx)
    counts = gather_cat(torch.tensor([[float(nfe), float(solves)]]), ctx).sum(0)
    all_err = bool(gather_cat(has_err, ctx).min() > 0)
    err = gather_cat(err if err is not None else torch.zeros(0, R, dtype=torch.float64), ctx) if all_err else None
    if not ctx.is_main:
        return None, settings, state
    out = summarize_bits_per_dim(prior, delta, D, ds.scaling if discrete else None, int(counts[0]), int(counts[1]),
                                 err)  # fmt: skip
    return out, settings, state


def report(res, args, settings, state, ranks: int) -> dict:
    """Print the result with labels that cannot be misread; return the JSON dict."""
    discrete = res.dequantization_bpd != 0.0
    unit = "bits/dim of the discrete data (dequantized bound)" if discrete else "NLL / (D ln 2) of continuous data"
    mc = f"; a rerun with another seed moves it by about {res.mc_stderr:.4f}" if res.repeats > 1 else ""
    print(f"{args.split} split, {res.num} points x {res.repeats} repeat(s), checkpoint step {int(state['step'])}, "
          f"{ranks} rank(s):")  # fmt: skip
    print(f"  {unit}: {res.mean:.4f} +- {res.stderr:.4f} (standard error over the points{mc})")
    terms = f"prior {res.prior_bpd:.4f} + ODE integral {res.integral_bpd:.4f}"
    if discrete:
        terms += f" + dequantization (log2 K - log2 a) {res.dequantization_bpd:.4f}"
    print(f"    = {terms}  [bits/dim]")
    print(f"  continuous NLL in model space, -log p_eps(x): {res.nll_nats:.4f} nats/point "
          f"({res.nll_nats / res.dim:.5f} nats/dim; a density, not comparable with bits/dim)")  # fmt: skip
    est = (f"solver error estimate {res.solver_error_bpd:.2e} bits/dim" if res.solver_error_bpd is not None
           else "no solver error estimate with --scheme augmented (use --scheme quadrature)")  # fmt: skip
    print(f"  solver: {settings['scheme']} (rtol {settings['rtol']:g}, atol {settings['atol']:g}), "
          f"{res.nfe_per_sample:.1f} NFE per point and repeat; {est}; {settings['divergence']} divergence"
          + (f", {settings['probes']} probe(s)" if settings["divergence"] == "hutchinson" else ""))  # fmt: skip
    out = {"eval_nll": res.nll_nats, "eval_bpd": res.mean, "eval_n": res.num, "split": args.split,
           "step": int(state["step"]), "ranks": ranks, **res.to_dict(), "settings": settings}  # fmt: skip
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def run(args) -> int:
    from .cli import UsageError
    from .training.distributed import cleanup, init_distributed

    for name in ("num", "probes", "repeats", "batch_size"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1; got {value}")
    ctx = init_distributed(args.device)
    try:
        res, settings, state = compute(args, ctx)
        if ctx.is_main:
            out = report(res, args, settings, state, ctx.world_size)
            if args.out:
                with open(args.out, "w") as f:
                    json.dump(out, f, indent=2)
    finally:
        cleanup(ctx)
    return 0


__all__ = ["compute", "report", "run"]
