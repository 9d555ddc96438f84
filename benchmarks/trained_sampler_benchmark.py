"""Samplers on a trained network: pathwise error and FD-digits against NFE, ours against k-diffusion and diffusers.

The network: the eps-prediction MLP of ``configs/digits_bench.yaml`` (VP SDE, beta 0.1..20, scikit-learn
8x8 digits), trained by the project (``runs/digits_bench``; retrained when the checkpoint is missing, about
10-20 minutes on one shared CPU core), EMA weights, evaluated in float64.

Every sampler solves the same probability-flow ODE from the same starts. In x~ = x / alpha and
sigma~ = sigma / alpha it reads dx~/dsigma~ = (x~ - D(x~, sigma~)) / sigma~, with the network's denoiser
D(x~, sigma~) = x0-hat(alpha x~, t(sigma~)); every sampler integrates it from sigma~(1) to sigma~(eps),
eps = 1e-3, starting at x~_T = x_T / alpha(1), x_T ~ N(0, I) (seed 0):

- ours: ``ss.sample`` with the configurations of ``benchmarks/sampler_error_vs_nfe.py`` (same labels);
- k-diffusion: its samplers with ``model(x, sigma) = D`` and sigmas from sigma~(1) to sigma~(eps);
- diffusers: DPMSolverMultistep / UniPCMultistep / DEISMultistep given ``trained_betas`` that put their
  1000-entry alpha-bar table on our SDE (alpha-bar_k = alpha(t_k)^2, t_k = (k + 1)/1000), so their table
  ends are sigma~(eps) and sigma~(1); eps = (x~ - D)/sigma~ at the scheduler's sigma.

Measures: pathwise error = mean over samples of ||x~_end - x~_ref||_2, x~_ref from scipy DOP853
(rtol = atol = 1e-9, float64) from the same x~_T; FD-digits (score_sde.evaluation; the Fréchet distance in
the project's digits-classifier features, not FID) of alpha(eps) x~_end against the dequantized training
digits, next to the FD-digits of the reference solution and of the held-out digits.

    OMP_NUM_THREADS=1 python benchmarks/trained_sampler_benchmark.py [--n 1000] [--workdir runs/digits_bench]

Writes benchmarks/results/trained_sampler_benchmark.{md,json,png}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

import score_sde as ss

F64 = torch.float64
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
NFES = (5, 10, 20, 50)
EPS = 1e-3


def _peer_module():
    """The peer wrappers and our configurations of benchmarks/sampler_error_vs_nfe.py."""
    spec = importlib.util.spec_from_file_location("_sampler_error_vs_nfe", HERE / "sampler_error_vs_nfe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def trained_model(workdir: str):
    """(config, sde, ScoreModel in float64, checkpoint step, training seconds); trains when missing."""
    from score_sde.training import Trainer, load_config
    from score_sde.training.trainer import load_workdir

    ckpts = os.path.join(workdir, "checkpoints")
    train_s = None
    if not (os.path.isdir(ckpts) and any(f.endswith(".pt") for f in os.listdir(ckpts))):
        cfg = load_config(str(ROOT / "configs" / "digits_bench.yaml"), ["training.progress=false"])
        t0 = time.perf_counter()
        Trainer(cfg, workdir).fit()
        train_s = time.perf_counter() - t0
    cfg, sde, model, state = load_workdir(workdir, device="cpu")
    model.net.double()
    return cfg, sde, model, int(state["step"]), train_s


class NetOracle:
    """The trained network's denoiser D(x~, sigma~) in x~ space, counted (one call = one NFE)."""

    def __init__(self, model, sde):
        self.model, self.sde, self.nfe = model, sde, 0

    @torch.no_grad()
    def D(self, xt: torch.Tensor, sig) -> torch.Tensor:
        self.nfe += 1
        sig = torch.as_tensor(sig, dtype=F64).reshape(-1)[:1]
        t = self.sde.t_from_sigma_tilde(sig).clamp(EPS * (1 - 1e-9), 1.0).expand(xt.shape[0])
        a = self.sde.alpha(t[:1])
        return self.model.denoise(a * xt.double(), t).double()


def reference(oracle: NetOracle, x_T: torch.Tensor, s_max: float, s_min: float, tol: float) -> torch.Tensor:
    """x~ at sigma~_min by DOP853 (rtol = atol = tol) on dx~/dlambda = D - x~, lambda = -ln sigma~."""
    shape = x_T.shape

    def f(lam, y):
        xt = torch.from_numpy(y).reshape(shape)
        return (oracle.D(xt, math.exp(-lam)) - xt).reshape(-1).numpy()

    sol = solve_ivp(f, (-math.log(s_max), -math.log(s_min)), x_T.reshape(-1).numpy(), "DOP853", rtol=tol, atol=tol)
    return torch.from_numpy(sol.y[:, -1]).reshape(shape)


def run_ours(sde, model, x_T_tilde, sampler, nfe, grid, **opts):
    a_T = sde.alpha(torch.tensor(1.0, dtype=F64))

    def score(x, t):
        with torch.no_grad():
            return model.score(x, t)

    res = ss.sample(sde, score, sampler=sampler, x_T=a_T * x_T_tilde, nfe=nfe, grid=grid, eps=EPS, **opts)
    t_end = res.grid[-1]
    return res.x / sde.alpha(t_end), res.nfe


def diffusers_scheduler(sde, kind: str, order: int, spacing: str, variant: str | None = None):
    """A diffusers multistep scheduler whose alpha-bar table lies on our SDE at t_k = (k + 1) / 1000."""
    import diffusers

    t = torch.arange(1, 1001, dtype=F64) / 1000
    abar = sde.alpha(t) ** 2
    betas = 1 - abar / torch.cat([torch.ones(1, dtype=F64), abar[:-1]])
    common = dict(trained_betas=betas.numpy(), num_train_timesteps=1000, solver_order=order)
    sp = {"linspace": {}, "karras": {"use_karras_sigmas": True}, "exponential": {"use_exponential_sigmas": True},
          "lu": {"use_lu_lambdas": True}}[spacing]  # fmt: skip
    if kind == "dpmsolver++":
        return diffusers.DPMSolverMultistepScheduler(**common, **sp, algorithm_type="dpmsolver++",
                                                     final_sigmas_type="sigma_min")  # fmt: skip
    if kind == "unipc":
        return diffusers.UniPCMultistepScheduler(**common, **sp, solver_type=variant, final_sigmas_type="sigma_min")
    return diffusers.DEISMultistepScheduler(**common, **sp)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="number of starts (samples)")
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "digits_bench"))
    ap.add_argument("--ref-tol", type=float, default=1e-9)
    ap.add_argument("--nfes", type=int, nargs="+", default=list(NFES), help="NFE budgets (default 5 10 20 50)")
    ap.add_argument("--cache-dir", default=None, help="FD-digits feature-net cache (default: the user cache)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t_start = time.time()
    P = _peer_module()
    K = P.load_k_diffusion_sampling()
    if K is None:
        print("peers missing: pip install 'score_sde[peers]' (k-diffusion --no-deps, diffusers)")
        return 1
    from score_sde.evaluation import feature_statistics, frechet_distance, load_feature_net
    from score_sde.evaluation.feature_nets import load_split

    cfg, sde, model, step, train_s = trained_model(args.workdir)
    s_max = float(sde.sigma_tilde(torch.tensor(1.0, dtype=F64)))
    s_min = float(sde.sigma_tilde(torch.tensor(EPS, dtype=F64)))
    a_min = float(sde.alpha(torch.tensor(EPS, dtype=F64)))
    fn = load_feature_net("fd-digits", cache_dir=args.cache_dir)
    ref_stats = feature_statistics(fn.features(load_split("digits", "train").dequantize(
        torch.Generator().manual_seed(0), torch.float32)))  # fmt: skip
    held_out = load_split("digits", "test").dequantize(torch.Generator().manual_seed(1), torch.float32)

    def fd(x_tilde):
        x = (a_min * x_tilde).float()
        if not torch.isfinite(x).all():
            return float("nan")
        return frechet_distance(*feature_statistics(fn.features(x)), *ref_stats)

    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(args.n, 1, 8, 8, generator=g, dtype=F64) / float(sde.alpha(torch.tensor(1.0, dtype=F64)))
    oracle = NetOracle(model, sde)
    t0 = time.time()
    ref = reference(oracle, x_T, s_max, s_min, args.ref_tol)
    ref_nfe, ref_s = oracle.nfe, time.time() - t0
    ref_half = reference(oracle, x_T, s_max, s_min, args.ref_tol * 100)  # how converged the reference is
    err = lambda x: float((x.double() - ref).flatten(1).norm(dim=1).mean())
    floors = {"reference ODE": fd(ref), "held-out digits": frechet_distance(
        *feature_statistics(fn.features(held_out)), *ref_stats)}  # fmt: skip
    print(f"network step {step}; sigma~ [{s_min:.5f}, {s_max:.2f}]; reference DOP853 {args.ref_tol:g}: {ref_nfe} "
          f"NFE, {ref_s:.0f} s; its error at 100x the tolerance {err(ref_half):.2e}; FD-digits {floors}")  # fmt: skip

    results = {}  # label -> {nfe: (error, fd, nfe_used)}
    for nfe in args.nfes:
        for label, (sampler, opts, grid) in P.OURS.items():
            x, used = run_ours(sde, model, x_T, sampler, nfe, grid, **opts)
            results.setdefault("ours:" + label, {})[nfe] = (err(x), fd(x), used)
        for name, kind, kw in P.PEERS_KD:
            x, _, used = P.run_kdiff(K, oracle, x_T, name, nfe, kind, s_min, s_max, **kw)
            if x is None:
                continue
            label = f"k-diff {name}" + (f"/{kind}" if kind else "") + ("(eta=0)" if "eta" in kw else "")
            results.setdefault(label, {})[nfe] = (err(x), fd(x), used)
        for kind, order, spacing, variant in P.PEERS_DF:
            x, _, used = P.run_diffusers(diffusers_scheduler(sde, kind, order, spacing, variant), oracle, x_T, nfe)
            label = f"diffusers {kind}{order}" + (f"-{variant}" if variant else "") + f"/{spacing}"
            results.setdefault(label, {})[nfe] = (err(x), fd(x), used)
        print(f"NFE {nfe} done ({time.time() - t_start:.0f} s)", flush=True)
    for label, row in results.items():
        for nfe, (_, _, used) in row.items():
            assert used <= nfe, (label, nfe, used)
    meta = dict(nfes=args.nfes, n=args.n, step=step, train_s=train_s, ref_tol=args.ref_tol, ref_nfe=ref_nfe,
                ref_self_error=err(ref_half), fd_floors=floors, seconds=time.time() - t_start,
                feature_net=fn.name, feature_net_accuracy=fn.test_accuracy)  # fmt: skip
    report(results, meta)
    return 0


def _nfes(results) -> list[int]:
    return sorted({f for row in results.values() for f in row})


def _best(results, nfe, ours: bool, key: int):
    cands = [(v[nfe][key], lab) for lab, v in results.items() if nfe in v and lab.startswith("ours:") == ours
             and math.isfinite(v[nfe][key])]  # fmt: skip
    return min(cands)


def report(results: dict, meta: dict) -> None:
    lines = ["# Samplers on a trained network (digits MLP): pathwise error and FD-digits vs NFE", ""]
    lines += [
        f"Generated by `benchmarks/trained_sampler_benchmark.py` (network `configs/digits_bench.yaml`, step "
        f"{meta['step']}; {meta['n']} starts; {meta['seconds']:.0f} s). Pathwise error = mean ||x~_end - x~_ref||_2 "
        f"at sigma~(eps) against DOP853 (rtol = atol = {meta['ref_tol']:g}, {meta['ref_nfe']} NFE) from the same "
        f"x~_T; that reference moves by {meta['ref_self_error']:.1e} when its tolerance is 100x looser. FD-digits: "
        f"Fréchet distance in the features of the project's digits classifier (test accuracy "
        f"{meta['feature_net_accuracy']:.3f}; not FID) against the dequantized training digits; floors: reference "
        f"ODE solution {meta['fd_floors']['reference ODE']:.3f}, held-out digits "
        f"{meta['fd_floors']['held-out digits']:.3f}.",
        "",
        "## Best of ours vs best peer",
        "",
        "| NFE | our best (error) | error | best peer (error) | error | ours / peer (error) | our best FD-digits | FD "
        "| best peer FD-digits | FD | ours / peer (FD) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    nfes = _nfes(results)
    for nfe in nfes:
        eo, lo = _best(results, nfe, True, 0)
        ep, lp = _best(results, nfe, False, 0)
        fo, flo = _best(results, nfe, True, 1)
        fp, flp = _best(results, nfe, False, 1)
        lines.append(f"| {nfe} | {lo[5:]} | {eo:.3e} | {lp} | {ep:.3e} | {eo / ep:.3f} | {flo[5:]} | {fo:.3f} | "
                     f"{flp} | {fp:.3f} | {fo / fp:.3f} |")  # fmt: skip
    lines += ["", "## All configurations: pathwise error / FD-digits", ""]
    lines += ["| sampler | " + " | ".join(f"err @{f}" for f in nfes) + " | " + " | ".join(f"FD @{f}" for f in nfes)
              + " |", "|---|" + "---|" * (2 * len(nfes))]  # fmt: skip
    for lab in sorted(results):
        row = results[lab]
        e = " | ".join(f"{row[f][0]:.2e}" if f in row else "" for f in nfes)
        d = " | ".join(f"{row[f][1]:.3f}" if f in row else "" for f in nfes)
        lines.append(f"| {lab.replace('ours:', 'ours ')} | {e} | {d} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "trained_sampler_benchmark.md").write_text(text)
    js = {"meta": meta, "results": {lab: {str(f): {"error": v[0], "fd_digits": v[1], "nfe": v[2]}
                                          for f, v in row.items()} for lab, row in results.items()}}  # fmt: skip
    (RESULTS / "trained_sampler_benchmark.json").write_text(json.dumps(js, indent=1))
    plot(results, meta)


def plot(results: dict, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    NFES = _nfes(results)  # noqa: N806
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, name in ((axes[0], 0, "pathwise error (mean L2 of x~)"), (axes[1], 1, "FD-digits")):
        bo = [_best(results, f, True, key)[0] for f in NFES]
        bp = [_best(results, f, False, key)[0] for f in NFES]
        for lab in ("ours:unipc3/logsnr", "ours:dpmpp_2m/logsnr", "ours:ddim/logsnr", "k-diff dpmpp_2m/karras",
                    "k-diff heun/karras", "diffusers unipc3-bh2/karras"):  # fmt: skip
            if lab in results:
                v = [results[lab].get(f, (np.nan, np.nan))[key] for f in NFES]
                ax.loglog(NFES, v, "-o" if lab.startswith("ours") else "--s", ms=3, label=lab.replace("ours:", "ours "))
        ax.loglog(NFES, bo, "k-", lw=2, label="best of ours")
        ax.loglog(NFES, bp, "k:", lw=2, label="best peer")
        if key == 1:
            ax.axhline(meta["fd_floors"]["reference ODE"], color="grey", lw=1, label="reference ODE")
            ax.axhline(meta["fd_floors"]["held-out digits"], color="grey", lw=1, ls="--", label="held-out digits")
        ax.set_xticks(NFES)
        ax.set_xticklabels([str(f) for f in NFES])
        ax.minorticks_off()
        ax.set_xlabel("NFE")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=6)
    fig.suptitle(f"digits MLP (step {meta['step']}), {meta['n']} starts")
    fig.tight_layout()
    fig.savefig(RESULTS / "trained_sampler_benchmark.png", dpi=120)


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
