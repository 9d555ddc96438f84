"""Failure modes of reverse denoising, each reproduced and measured on an exact problem.

Six common ways reverse diffusion goes wrong (blurry outputs, oversmoothing, poor prompt
adherence, repeated artifacts, mode-collapse-like behaviour, slow generation). Each is produced here on a
2-D Gaussian mixture whose score, densities and class posteriors are exact (float64), next to a healthy
setting that differs in the one cause named for it, and is measured with a number that exposes it:

- blurry outputs (weak denoising accuracy): an under-fitted score, half the exact one and half that of one
  Gaussian fitted to the data; measured by the share of samples below the data's 1% log-density quantile.
- oversmoothing (loss of high-frequency detail): the reverse SDE stopped at t = 0.1 without the final
  denoising step; measured by the spread of the narrow component's samples over its true spread.
- poor prompt adherence (weak conditioning): classifier-free guidance at scale 0.3 instead of 1; measured
  by the share of samples whose exact class posterior picks the requested class.
- repeated artifacts (sampling instability): Heun's method (EDM) with 5 NFE on the Karras grid, against
  DPM-Solver++(2M) with 5 NFE; measured by the share below the data's 0.1% log-density quantile.
- mode collapse-like behaviour (guidance imbalance): guidance scale 6 on a two-mode class whose minor mode
  lies near other classes; measured by the minor mode's share (true 0.4) and the within-mode spread.
- slow generation (excessive denoising steps): 1000 ancestral steps against 20 NFE of DPM-Solver++(2M);
  measured by NFE and wall time at a similar sliced-W2 distance to the data.

    .venv/bin/python examples/failure_modes.py [--n 4000] [--out out/failure_modes]

writes ``failure_modes.md`` (the table of measured numbers) and ``failure_modes.png`` (healthy vs failing
samples, one column per failure) to ``--out``; ``run(n)`` returns the numbers (``tests/test_failure_modes.py``
runs it small and checks that every failing setting is worse than its healthy twin).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import score_sde as ss
from score_sde import metrics
from score_sde.guidance import ClassifierFreeGuidance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# three classes: class 0 = two modes (weights 0.6 / 0.4 inside the class; the minor one near the other
# classes), class 1 and class 2 one mode each; component 3 is narrow (std 0.1) to show fine-scale detail
MEANS = [[-2.5, 1.5], [-0.2, -1.0], [1.5, 2.0], [2.0, -1.5]]
COVS = [
    [[0.25, 0.0], [0.0, 0.25]],
    [[0.25, 0.0], [0.0, 0.25]],
    [[0.35, 0.1], [0.1, 0.2]],
    [[0.01, 0.0], [0.0, 0.01]],
]
WEIGHTS = [0.24, 0.16, 0.3, 0.3]
CLASSES = [[0, 1], [2], [3]]  # components of each class


def problem():
    """(the data mixture, its classes as sub-mixtures) in float64."""
    d = torch.float64
    full = ss.GaussianMixture(torch.tensor(WEIGHTS, dtype=d), torch.tensor(MEANS, dtype=d), torch.tensor(COVS, dtype=d))
    sub = [ss.GaussianMixture(full.weights[c] / full.weights[c].sum(), full.means[c], full.covs[c]) for c in CLASSES]
    return full, sub


class ClassScore:
    """Exact class-conditional score score(x, t, y) of the sub-mixtures; y = K (null) gives the full mixture."""

    def __init__(self, full, sub, sde):
        self.full, self.sub, self.sde, self.num_classes = full, sub, sde, len(sub)

    def __call__(self, x, t, cond=None):
        t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])
        y = torch.full((x.shape[0],), self.num_classes) if cond is None else torch.as_tensor(cond).expand(x.shape[0])
        out = torch.empty_like(x)
        for k, m in enumerate([*self.sub, self.full]):
            sel = y == k
            if sel.any():
                out[sel] = m.score(x[sel], t[sel], self.sde)
        return out


def _low_density_share(x, full, q_low):
    return float((full.log_prob(x) < q_low).double().mean())


def _data_quantile(full, q, n=100_000):
    lp = full.log_prob(full.sample(n, generator=torch.Generator().manual_seed(123)))
    return float(torch.quantile(lp, q))


def run(n: int = 4000, seed: int = 0) -> dict:
    """Measure every failure against its healthy twin (float64); returns {failure: {...numbers...}} plus samples."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return _run(n, seed)
    finally:
        torch.set_default_dtype(old)


def _run(n: int, seed: int) -> dict:
    sde = ss.VPSDE()
    full, sub = problem()
    exact = full.score_fn(sde)
    data = full.sample(n, generator=torch.Generator().manual_seed(seed + 1))
    q01, q001 = _data_quantile(full, 0.01), _data_quantile(full, 0.001)

    def gen(k=0):
        return torch.Generator().manual_seed(seed + 10 + k)

    def draw(score, k=0, **kw):
        return ss.sample(sde, score, shape=(n, 2), generator=gen(k), **kw)

    out, samples = {}, {}

    # 1. blurry outputs: an under-fitted score (halfway to a single Gaussian's) puts mass between the modes
    mu, cov = full.moments()
    gauss = ss.GaussianMixture(torch.ones(1), mu[None], cov[None])
    weak = lambda x, t: 0.5 * exact(x, t) + 0.5 * gauss.score(x, t, sde)  # noqa: E731
    good, bad = draw(exact, sampler="euler_maruyama", steps=500).x, draw(weak, sampler="euler_maruyama", steps=500).x
    out["blurry outputs"] = {
        "metric": "share of samples with log p below the data's 1% quantile",
        "healthy": _low_density_share(good, full, q01),
        "failing": _low_density_share(bad, full, q01),
        "reference": 0.01,
    }
    samples["blurry outputs"] = (good, bad)

    # 2. oversmoothing: stopping at t = 0.1 without the denoising step leaves the data convolved with N(0, sigma^2)
    good = draw(exact, sampler="euler_maruyama", steps=500).x
    bad = draw(exact, sampler="euler_maruyama", steps=500, eps=0.1, denoise=False).x

    def narrow_spread(x):
        resp = full.responsibilities(x)
        sel = resp.argmax(1) == 3
        return float(x[sel].std(0).mean() / full.covs[3].diagonal().sqrt().mean())

    out["oversmoothing"] = {
        "metric": "spread of the narrow component's samples / its true spread",
        "healthy": narrow_spread(good),
        "failing": narrow_spread(bad),
        "reference": 1.0,
    }
    samples["oversmoothing"] = (good, bad)

    # 3. poor prompt adherence: guidance scale 0.3 mixes in the unconditional score
    cs = ClassScore(full, sub, sde)
    y = torch.full((n,), 1)

    def adherence(x, k):  # share of samples whose exact class posterior picks class k
        post = torch.stack([s.log_prob(x).exp() * full.weights[c].sum() for s, c in zip(sub, CLASSES)], 1)
        return float((post.argmax(1) == k).double().mean())

    good = draw(ClassifierFreeGuidance(cs, 1.0), 1, sampler="euler_maruyama", steps=500, cond=y).x
    bad = draw(ClassifierFreeGuidance(cs, 0.3), 1, sampler="euler_maruyama", steps=500, cond=y).x
    out["poor prompt adherence"] = {
        "metric": "share of samples in the requested class",
        "healthy": adherence(good, 1),
        "failing": adherence(bad, 1),
        "reference": 1.0,
    }
    samples["poor prompt adherence"] = (good, bad)

    # 4. repeated artifacts: Heun (EDM) with 5 NFE overshoots; DPM-Solver++(2M) with 5 NFE stays on the data
    good = draw(exact, 2, sampler="dpmpp_2m", nfe=5).x
    bad = draw(exact, 2, sampler="heun", nfe=5, grid="karras").x
    out["repeated artifacts"] = {
        "metric": "share of samples with log p below the data's 0.1% quantile",
        "healthy": _low_density_share(good, full, q001),
        "failing": _low_density_share(bad, full, q001),
        "reference": 0.001,
    }
    samples["repeated artifacts"] = (good, bad)

    # 5. mode collapse-like: strong guidance on the two-mode class 0 starves its minor mode and shrinks both
    y0 = torch.zeros(n, dtype=torch.long)
    good = draw(ClassifierFreeGuidance(cs, 1.0), 3, sampler="euler_maruyama", steps=500, cond=y0).x
    bad = draw(ClassifierFreeGuidance(cs, 6.0), 3, sampler="euler_maruyama", steps=500, cond=y0).x

    def minor_share(x):
        r = sub[0].responsibilities(x)
        return float((r.argmax(1) == 1).double().mean())

    def within_spread(x):
        r = sub[0].responsibilities(x).argmax(1)
        s = [x[r == k].std(0).mean() / sub[0].covs[k].diagonal().sqrt().mean() for k in (0, 1) if (r == k).sum() > 2]
        return float(torch.stack(s).mean())

    out["mode collapse-like"] = {
        "metric": "minor-mode share of the class (true 0.4); within-mode spread ratio",
        "healthy": minor_share(good),
        "failing": minor_share(bad),
        "reference": 0.4,
        "spread healthy": within_spread(good),
        "spread failing": within_spread(bad),
    }
    samples["mode collapse-like"] = (good, bad)

    # 6. slow generation: 1000 ancestral steps vs 20 NFE of DPM-Solver++(2M), at a similar distance to the data
    t0 = time.perf_counter()
    slow = draw(exact, 4, sampler="ancestral", steps=1000)
    t_slow = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = draw(exact, 4, sampler="dpmpp_2m", nfe=20)
    t_fast = time.perf_counter() - t0
    ref = full.sample(4 * n, generator=torch.Generator().manual_seed(seed + 99))
    floor = metrics.sliced_w2(data, ref)
    out["slow generation"] = {
        "metric": "NFE and wall time (s) for sliced W2 to the data",
        "healthy": fast.nfe,
        "failing": slow.nfe,
        "reference": None,
        "time healthy": t_fast,
        "time failing": t_slow,
        "sw2 healthy": metrics.sliced_w2(fast.x, ref),
        "sw2 failing": metrics.sliced_w2(slow.x, ref),
        "sw2 of fresh data": floor,
    }
    samples["slow generation"] = (fast.x, slow.x)
    return {"rows": out, "samples": samples, "data": data, "n": n}


def _cell(r: dict, which: str) -> str:
    """One measured cell (``which``: "healthy" or "failing"), as the table and the figure print it."""
    if "time healthy" in r:
        return f"{r[which]} NFE, {r['time ' + which]:.2f} s, SW2 {r['sw2 ' + which]:.3f}"
    return f"{r[which]:.3f}" + (f"; spread {r['spread ' + which]:.2f}" if "spread healthy" in r else "")


def _target(r: dict) -> str:
    if "sw2 of fresh data" in r:
        return f"SW2 of fresh data {r['sw2 of fresh data']:.3f}"
    return "0.4; 1" if "spread healthy" in r else f"{r['reference']:g}"


def table(res: dict) -> str:
    lines = [
        f"Measured by `examples/failure_modes.py` ({res['n']} samples per setting, exact 2-D mixture, VP SDE).",
        "",
        "| failure | measured | healthy | failing | target |",
        "|---|---|---|---|---|",
    ]
    for name, r in res["rows"].items():
        lines.append(f"| {name} | {r['metric']} | {_cell(r, 'healthy')} | {_cell(r, 'failing')} | {_target(r)} |")
    return "\n".join(lines) + "\n"


def figure(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res["rows"])
    fig, axes = plt.subplots(2, len(names), figsize=(3.1 * len(names), 6.2), sharex=True, sharey=True)
    for j, name in enumerate(names):
        for i, (x, label) in enumerate(zip(res["samples"][name], ("healthy", "failing"))):
            ax = axes[i, j]
            d = res["data"][:2000]
            ax.scatter(d[:, 0], d[:, 1], s=1, c="0.8", rasterized=True)
            x = x[:2000]
            ax.scatter(x[:, 0], x[:, 1], s=1, c="tab:blue" if i == 0 else "tab:red", rasterized=True)
            ax.set_xlim(-5, 4.5)
            ax.set_ylim(-4, 4.5)
            ax.text(0.03, 0.03, _cell(res["rows"][name], label), transform=ax.transAxes, fontsize=8, va="bottom")
            if i == 0:
                ax.set_title(name, fontsize=10)
            if j == 0:
                ax.set_ylabel(label)
    fig.suptitle("Failure modes of reverse denoising (grey: data; top: healthy setting; bottom: the failure)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4000, help="samples per setting")
    p.add_argument("--out", default=os.path.join(ROOT, "out", "failure_modes"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    res = run(args.n)
    md = table(res)
    print(md)
    with open(os.path.join(args.out, "failure_modes.md"), "w") as f:
        f.write("# Failure modes of reverse denoising\n\n" + md)
    figure(res, os.path.join(args.out, "failure_modes.png"))
    print(f"wrote {args.out}/failure_modes.md and failure_modes.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
