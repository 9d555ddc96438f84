"""Fitted time grids on a trained network: pathwise error and FD-digits against the best peer configuration.

The network, problem, reference and peers of ``benchmarks/trained_sampler_benchmark.py`` (loaded from it):
the digits MLP of ``configs/digits_bench.yaml`` (retrained into ``--workdir`` when its checkpoint is
missing), float64, the probability-flow ODE in x~ from x~_T = x_T / alpha(1), x_T ~ N(0, I); pathwise error
against DOP853 (rtol = atol = 1e-9); FD-digits of alpha(eps) x~_end against the dequantized training digits.

Ours: ``ss.optimize_grid`` fitted on ``--n-fit`` starts of seed 1000 and evaluated on ``--n`` held-out starts
of seed 0 (the other benchmark's starts), as in ``benchmarks/fitted_grids.py``: teacher (UniPC order 2 at 5 NFE, 3 at
20, at 10 whichever has the lower fitting loss) and bound (the teacher-free step-doubling loss, UniPC order 2 up to
10 NFE and 3 above). Best peer and ours fixed: the best k-diffusion / diffusers configuration and the best
of our fixed-grid configurations on the held-out starts, per NFE and per measure.

    OMP_NUM_THREADS=1 python benchmarks/fitted_grids_digits.py [--n 500] [--workdir runs/digits_bench]

Writes benchmarks/results/fitted_grids_digits.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import score_sde as ss

F64 = torch.float64
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
NFES = (5, 10, 20)
CANDIDATES = {"unipc2": {"order": 2}, "unipc3": {"order": 3}}
TEACHER = {5: ("unipc2",), 10: ("unipc2", "unipc3"), 20: ("unipc3",)}  # orders tried per NFE (teacher)
RECIPE = {5: "unipc2", 10: "unipc2", 20: "unipc3"}


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_{name}", HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500, help="held-out starts (seed 0)")
    ap.add_argument("--n-fit", type=int, default=128, help="fitting starts (seed 1000)")
    ap.add_argument("--max-evals", type=int, default=100, help="loss evaluations per optimiser start")
    ap.add_argument("--workdir", default=str(HERE.parent / "runs" / "digits_bench"))
    ap.add_argument("--cache-dir", default=None, help="FD-digits feature-net cache (default: the user cache)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t_start = time.time()
    T = _load("trained_sampler_benchmark")
    P = T._peer_module()
    K = P.load_k_diffusion_sampling()
    if K is None:
        print("peers missing: pip install 'score_sde[peers]' (k-diffusion --no-deps, diffusers)")
        return 1
    from score_sde.evaluation import feature_statistics, frechet_distance, load_feature_net
    from score_sde.evaluation.feature_nets import load_split

    cfg, sde, model, step, _ = T.trained_model(args.workdir)
    eps = T.EPS
    t1 = torch.tensor(1.0, dtype=F64)
    s_max, s_min = float(sde.sigma_tilde(t1)), float(sde.sigma_tilde(torch.tensor(eps, dtype=F64)))
    a_T, a_min = float(sde.alpha(t1)), float(sde.alpha(torch.tensor(eps, dtype=F64)))
    fn = load_feature_net("fd-digits", cache_dir=args.cache_dir)
    ref_stats = feature_statistics(fn.features(load_split("digits", "train").dequantize(
        torch.Generator().manual_seed(0), torch.float32)))  # fmt: skip

    def fd(x_tilde):
        x = (a_min * x_tilde).float()
        if not torch.isfinite(x).all():
            return math.nan
        return frechet_distance(*feature_statistics(fn.features(x)), *ref_stats)

    def score(x, t):
        with torch.no_grad():
            return model.score(x, t)

    # fitting starts: seed 1000; held-out starts: seed 0 (never seen by a fit)
    fit_x = torch.randn(args.n_fit, 1, 8, 8, generator=torch.Generator().manual_seed(1000), dtype=F64)
    x_T = torch.randn(args.n, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64) / a_T
    fits = {}
    for nfe in NFES:
        for lab in TEACHER[nfe]:
            opts = CANDIDATES[lab]
            fits[(nfe, "teacher", lab)] = ss.optimize_grid(sde, score, "unipc", nfe, x_T=fit_x, eps=eps,
                                                           max_evals=args.max_evals, **opts)  # fmt: skip
        lab = RECIPE[nfe]
        fits[(nfe, "bound", lab)] = ss.optimize_grid(sde, score, "unipc", nfe, x_T=fit_x, eps=eps, method="bound",
                                                     max_evals=args.max_evals, **CANDIDATES[lab])  # fmt: skip
        print(f"NFE {nfe}: fitted ({time.time() - t_start:.0f} s)", flush=True)
    oracle = T.NetOracle(model, sde)
    ref = T.reference(oracle, x_T, s_max, s_min, 1e-9)
    ref_nfe = oracle.nfe
    err = lambda x: float((x.double() - ref).flatten(1).norm(dim=1).mean())
    teacher_x, _ = T.run_ours(sde, model, x_T, "unipc", None, "auto", order=3, steps=400)
    teacher_err = err(teacher_x)
    floors = {"reference ODE": fd(ref)}
    rows = []
    for nfe in NFES:
        peer, fixed = {}, {}
        for name, kind, kw in P.PEERS_KD:
            x, _, used = P.run_kdiff(K, oracle, x_T, name, nfe, kind, s_min, s_max, **kw)
            if x is not None:
                assert used <= nfe
                peer[f"k-diff {name}" + (f"/{kind}" if kind else "") + ("(eta=0)" if "eta" in kw else "")] = x
        for kind, order, spacing, variant in P.PEERS_DF:
            x, _, used = P.run_diffusers(T.diffusers_scheduler(sde, kind, order, spacing, variant), oracle, x_T, nfe)
            assert used <= nfe
            peer[f"diffusers {kind}{order}" + (f"-{variant}" if variant else "") + f"/{spacing}"] = x
        for label, (sampler, opts, grid) in P.OURS.items():
            x, used = T.run_ours(sde, model, x_T, sampler, nfe, grid, **opts)
            assert used <= nfe
            fixed[label] = x
        measure = lambda d: {k: (err(x), fd(x)) for k, x in d.items()}
        peer, fixed = measure(peer), measure(fixed)
        pick = min(TEACHER[nfe], key=lambda lab: fits[(nfe, "teacher", lab)].info["loss"])
        fitted = {}
        for method, lab in (("teacher", pick), ("bound", RECIPE[nfe])):
            g = fits[(nfe, method, lab)]
            x, used = T.run_ours(sde, model, x_T, "unipc", None, g, **CANDIDATES[lab])
            assert used <= nfe
            fitted[method] = (lab, err(x), fd(x), g)
        rows.append((nfe, peer, fixed, fitted))
        print(f"NFE {nfe}: evaluated ({time.time() - t_start:.0f} s)", flush=True)
    meta = dict(step=step, n=args.n, n_fit=args.n_fit, max_evals=args.max_evals, ref_nfe=ref_nfe, floors=floors,
                teacher_err=teacher_err, seconds=time.time() - t_start, acc=fn.test_accuracy)  # fmt: skip
    report(rows, meta)
    return 0


def _best(d: dict, key: int):
    return min((v[key], k) for k, v in d.items() if math.isfinite(v[key]))


def report(rows, meta) -> None:
    lines = ["# Fitted time grids on the trained digits network: pathwise error and FD-digits", ""]
    lines += [
        f"Generated by `benchmarks/fitted_grids_digits.py --n {meta['n']}` (network `configs/digits_bench.yaml`, "
        f"step {meta['step']}; {meta['n']} held-out starts of seed 0; fits on {meta['n_fit']} starts of seed "
        f"1000, up to {meta['max_evals']} loss evaluations per optimiser start; {meta['seconds']:.0f} s). Pathwise "
        f"error = mean ||x~_end - x~_ref||_2 against DOP853 (rtol = atol = 1e-9, {meta['ref_nfe']} NFE); the "
        f"teacher of the fits (UniPC-3, 400 steps) is {meta['teacher_err']:.1e} from that reference on the "
        f"held-out starts. FD-digits: Fréchet distance in the project's digits-classifier features (test accuracy "
        f"{meta['acc']:.3f}; not FID) against the dequantized training digits; the reference ODE solution has "
        f"{meta['floors']['reference ODE']:.3f}. Best peer / ours fixed: the best k-diffusion or diffusers "
        "configuration / the best of our fixed-grid configurations, chosen per NFE and per measure on the "
        "held-out starts.",
        "",
        "## Pathwise error",
        "",
        "| NFE | best peer | error | ours fixed | error | fitted (teacher) | error | / peer | fitted (bound) | error "
        "| / peer | fitting cost (teacher; bound) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for nfe, peer, fixed, fitted in rows:
        (ep, lp), (ef, lf) = _best(peer, 0), _best(fixed, 0)
        lt, et, _, gt = fitted["teacher"]
        lb, eb, _, gb = fitted["bound"]
        lines.append(f"| {nfe} | {lp} | {ep:.3e} | {lf} | {ef:.3e} | {lt} | {et:.3e} | {et / ep:.3f} | {lb} | "
                     f"{eb:.3e} | {eb / ep:.3f} | {gt.cost_text()}; {gb.cost_text()} |")  # fmt: skip
    lines += ["", "## FD-digits", ""]
    lines += ["| NFE | best peer | FD | ours fixed | FD | fitted (teacher) | FD | / peer | fitted (bound) | FD "
              "| / peer |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for nfe, peer, fixed, fitted in rows:
        (dp, lp), (df, lf) = _best(peer, 1), _best(fixed, 1)
        lt, _, dt, _ = fitted["teacher"]
        lb, _, db, _ = fitted["bound"]
        lines.append(f"| {nfe} | {lp} | {dp:.3f} | {lf} | {df:.3f} | {lt} | {dt:.3f} | {dt / dp:.3f} | {lb} | "
                     f"{db:.3f} | {db / dp:.3f} |")  # fmt: skip
    lines += ["", "FD-digits of the samplers is compared with the reference ODE solution's above: a lower FD than the",
              "reference is not a more accurate solve (the pathwise error measures that).", ""]  # fmt: skip
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fitted_grids_digits.md").write_text(text)


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
