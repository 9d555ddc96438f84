"""The main job (small demo for now): sample a 2-D Gaussian mixture with its exact score.

Writes out/main_job.png and prints a summary. The training issue turns this into
train -> sample -> likelihood.
"""

from __future__ import annotations

import argparse
import os

import torch

import score_sde as ss


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="out")
    p.add_argument("--n", type=int, default=4000)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float64)
    gmm = ss.GaussianMixture([0.2, 0.5, 0.3], [[-2.0, -1.0], [1.5, 0.5], [0.0, 2.5]], [0.1, 0.15, 0.08])
    sde = ss.VPSDE()
    results = {}
    for name, kw in [("pc", dict(steps=500)), ("ancestral", dict(steps=500))]:
        res = ss.sample(sde, gmm.score_fn(sde), shape=(args.n, 2), sampler=name, **kw)
        m, C = gmm.moments()
        err = (res.x.mean(0) - m).norm().item()
        results[name] = (res, err)
        print(f"{name:>10s}: NFE {res.nfe:5d}   |mean error| {err:.3f}")
    os.makedirs(args.out, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharex=True, sharey=True)
    axes[0].scatter(*gmm.sample(args.n).T, s=1)
    axes[0].set_title("data")
    for ax, (name, (res, _)) in zip(axes[1:], results.items()):
        ax.scatter(*res.x.T, s=1)
        ax.set_title(f"{name} ({res.nfe} NFE)")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "main_job.png"), dpi=100)
    print(f"wrote {os.path.join(args.out, 'main_job.png')}")


if __name__ == "__main__":
    main()
