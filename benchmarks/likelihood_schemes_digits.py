"""The likelihood's two schemes on a trained digits MLP: when does ``scheme="quadrature"`` pay?

Loads a digits workdir (default: the VP model that ``benchmarks/digits_bpd.py`` trains), dequantizes
``--num`` held-out digits once, and computes their bits/dim through the probability-flow ODE with
``scheme="augmented"`` (the default: x and the log-determinant in one adaptive solve) and
``scheme="quadrature"`` (x-path alone, then the divergence integral by adaptive quadrature), for the
one-probe Hutchinson estimator (the digits configs' default, same probes in both schemes; and, with
``--divergences hutchinson exact``, the exact divergence: 64 vector-Jacobian products per evaluation).
Prints mean bits/dim, NFE (score evaluations, as ``res.nfe``) and wall time of each, measured here,
one thread, interleaved rounds (median wall time).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/likelihood_schemes_digits.py \\
        [--workdir runs/digits_bpd/digits_vp] [--num 64] [--rounds 3] [--divergences hutchinson exact]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default=os.path.join(ROOT, "runs", "digits_bpd", "digits_vp"))
    p.add_argument("--num", type=int, default=64, help="held-out digits (one batch)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tol", type=float, default=1e-5, help="rtol = atol of both schemes")
    p.add_argument("--divergences", nargs="+", default=["hutchinson"], choices=("hutchinson", "exact"),
                   help="exact costs D = 64 vector-Jacobian products per evaluation (minutes per case)")  # fmt: skip
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    import score_sde as ss
    from score_sde.training import load_workdir
    from score_sde.training.trainer import load_split

    cfg, sde, model, state = load_workdir(args.workdir, device="cpu")
    test = load_split(cfg, "test", n=args.num, dtype=torch.float32)
    x = test.dequantize(torch.Generator().manual_seed(0), torch.float32)
    D = x[0].numel()

    model.requires_grad_(False)  # the divergence differentiates in x only
    score = model.score

    cases = [(div, scheme) for div in args.divergences for scheme in ("augmented", "quadrature")]
    walls = {c: [] for c in cases}
    out = {}
    for _ in range(args.rounds):
        for div, scheme in cases:
            kw = dict(divergence=div, scheme=scheme, rtol=args.tol, atol=args.tol, eps=1e-5)
            if div == "hutchinson":
                kw.update(probes=1, generator=torch.Generator().manual_seed(1))
            t0 = time.perf_counter()
            res = ss.log_likelihood(sde, score, x, **kw)
            walls[(div, scheme)].append(time.perf_counter() - t0)
            bpd = test.scaling.bits_per_dim(res.logp.double(), D)
            out[(div, scheme)] = (float(bpd.mean()), res.nfe, res.info.get("nodes"))
    print(f"torch {torch.__version__}, 1 thread; {args.workdir} (step {state['step']}), {args.num} held-out digits, "
          f"rtol = atol = {args.tol:g}, median of {args.rounds} interleaved rounds")  # fmt: skip
    print("\n| divergence | scheme | bits/dim | NFE | quadrature nodes | wall (s) | wall / augmented |")
    print("|---|---|---|---|---|---|---|")
    for div, scheme in cases:
        bpd, nfe, nodes = out[(div, scheme)]
        wall = statistics.median(walls[(div, scheme)])
        base = statistics.median(walls[(div, "augmented")])
        print(f"| {div} | {scheme} | {bpd:.4f} | {nfe} | {nodes if nodes is not None else '-'} | {wall:.2f} | "
              f"{wall / base:.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
