"""Train score models on scikit-learn's 8x8 digits and report bits/dim of the held-out digits.

For each config (default: configs/digits_vp.yaml and configs/digits_subvp.yaml) this trains with
the library's Trainer, then evaluates the EMA model's dequantized bits/dim on the whole test split
through the probability-flow ODE (Hutchinson, one Rademacher probe, rtol = atol = 1e-5), and
prints it next to the bits/dim of a full-covariance Gaussian fitted to the dequantized training
digits (a baseline that any working density model must beat). Wall times are measured here.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/digits_bpd.py [--configs digits_vp digits_subvp]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gaussian_bpd(train, test) -> float:
    """Dequantized bits/dim of the test digits under a Gaussian fitted to dequantized training digits."""
    g = torch.Generator().manual_seed(0)
    xtr = train.dequantize(g, torch.float64).flatten(1)
    xte = test.dequantize(g, torch.float64).flatten(1)
    mu = xtr.mean(0)
    cov = torch.cov(xtr.T) + 1e-6 * torch.eye(xtr.shape[1], dtype=torch.float64)
    logp = torch.distributions.MultivariateNormal(mu, cov).log_prob(xte)
    return float(test.scaling.bits_per_dim(logp, xte.shape[1]).mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["digits_vp", "digits_subvp"])
    p.add_argument("--workdir", default=os.path.join(ROOT, "runs", "digits_bpd"))
    p.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides for every run")
    p.add_argument("--fresh", action="store_true", help="delete earlier runs instead of resuming them")
    args = p.parse_args(argv)

    from score_sde.training import Trainer, load_config
    from score_sde.training.trainer import evaluate_nll, load_split

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    rows = []
    for name in args.configs:
        path = name if name.endswith(".yaml") else os.path.join(ROOT, "configs", f"{name}.yaml")
        cfg = load_config(path, ["training.progress=false", *args.overrides])
        wd = os.path.join(args.workdir, os.path.splitext(os.path.basename(path))[0])
        if args.fresh and os.path.isdir(wd):
            import shutil

            shutil.rmtree(wd)
        trainer = Trainer(cfg, wd)
        t0 = time.perf_counter()
        summary = trainer.fit()
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with trainer.averaged():
            ev = evaluate_nll(cfg, trainer.sde, trainer.eval_model, device=trainer.device)
        eval_s = time.perf_counter() - t0
        base = gaussian_bpd(load_split(cfg, "train", dtype=torch.float64), load_split(cfg, "test", dtype=torch.float64))
        rows.append((name, cfg.training.n_iters, train_s, ev["eval_bpd"], ev["eval_n"], eval_s, base))
        print(
            f"{name}: {cfg.training.n_iters} steps in {train_s:.0f} s ({summary['steps_per_s']:.1f} steps/s), "
            f"test bits/dim {ev['eval_bpd']:.3f} over {ev['eval_n']} digits ({eval_s:.0f} s); "
            f"Gaussian baseline {base:.3f}",
            flush=True,
        )
    print("\n| config | steps | train wall (s) | test bits/dim (ODE) | Gaussian bits/dim | eval wall (s) |")
    print("|---|---|---|---|---|---|")
    for name, n, ts, bpd, num, es, base in rows:
        print(f"| {name} | {n} | {ts:.0f} | {bpd:.3f} (n={num}) | {base:.3f} | {es:.0f} |")
    bad = [r for r in rows if not (math.isfinite(r[3]) and r[3] < r[6])]
    if bad:
        print(f"FAILED: not better than the Gaussian baseline: {[r[0] for r in bad]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
