"""Flow matching on digits: a rectified-flow velocity model against the VP eps model of the same size.

Two networks of the same residual MLP (hidden 128, depth 2), data (scikit-learn 8x8 digits, dequantized,
[-1, 1]), optimiser and 20k steps, trained by the project's Trainer (retrained when the checkpoint is missing):

- flow: ``configs/digits_rf.yaml`` -- rectified flow x_t = (1 - t) x_0 + t eps, velocity prediction,
  flow-matching loss (DSM with the ``flow_matching`` weighting);
- baseline: ``configs/digits_bench.yaml`` -- VP SDE (beta 0.1..20), eps prediction, the eps loss.

Both are sampled through ``ss.sample`` from the same prior draws (N(0, I), seed 0) at NFE budgets 1, 2, 4, 8,
50 by Euler and Heun in t on the uniform grid (the ``ode`` sampler's fixed-step ``euler`` / ``heun2``: for the flow
model x_{t'} = x_t + (t' - t) u, the rectified-flow samplers; Heun takes 2 NFE a step, so no 1-NFE entry), and
by DDIM, DPM-Solver++(2M) and EDM's Heun (Karras et al. 2022 Alg. 1, final step Euler) on their default grids,
the VP model's usual fast samplers. Measures, all in one run:

- FD-digits (Fréchet distance in the features of the project's digits classifier, not FID) of the samples
  against the dequantized training digits, with the held-out digits' own FD as the floor; flow / VP ratio;
- held-out bits/dim through ``ss.log_likelihood`` (``ss.dataset_bits_per_dim``: PF-ODE, Hutchinson with one
  Rademacher probe, rtol = atol = 1e-5, eps = 1e-5, the whole test split), with its standard error;
- straightness (``ss.metrics.straightness``, Liu et al. 2022) of each model's PF-ODE paths.

    OMP_NUM_THREADS=1 python benchmarks/flow_matching_digits.py [--n 1000]

Writes benchmarks/results/flow_matching_digits.{md,json} and flow_matching_digits.png (sample grids).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

import score_sde as ss

F64 = torch.float64
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
NFES = (1, 2, 4, 8, 50)
MODELS = {"flow": ("digits_rf", "digits_rf"), "VP": ("digits_bench", "digits_bench")}  # config, workdir under --runs
# label -> (model, sampler, options, NFE per fixed step of the ode sampler or None for an NFE budget). Euler and
# Heun in t: torchdiffeq's fixed-step "euler" / "heun2" on the PF-ODE dx/dt = f x - 1/2 g^2 s (for the flow model
# the velocity) with uniform steps in t
PER_MODEL = {
    "Euler in t": ("ode", dict(method="euler"), 1),
    "Heun in t": ("ode", dict(method="heun2"), 2),
    "DDIM": ("ddim", {}, None),
    "DPM-Solver++(2M)": ("dpmpp_2m", {}, None),
    "EDM Heun (Karras grid)": ("heun", dict(final="euler"), None),
}
METHODS = {f"{m} {lab}": (m, *v) for m in ("flow", "VP") for lab, v in PER_MODEL.items()}

def trained(config: str, workdir: str, overrides: list[str]):
    """(config, sde, float64 ScoreModel, step, training wall seconds from metrics.csv); trains when missing."""
    from score_sde.training import Trainer, load_config
    from score_sde.training.trainer import load_workdir

    ckpts = os.path.join(workdir, "checkpoints")
    if not (os.path.isdir(ckpts) and any(f.endswith(".pt") for f in os.listdir(ckpts))):
        cfg = load_config(str(ROOT / "configs" / f"{config}.yaml"), ["training.progress=false", *overrides])
        Trainer(cfg, workdir).fit()
    cfg, sde, model, state = load_workdir(workdir, device="cpu")
    model.net.double()
    with open(os.path.join(workdir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    return cfg, sde, model, int(state["step"]), float(rows[-1]["time_s"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="number of samples per configuration")
    ap.add_argument("--cache-dir", default=None, help="FD-digits feature-net cache (default: the user cache)")
    ap.add_argument("--out", default=str(RESULTS), help="folder of the result files")
    ap.add_argument("--runs", default=str(ROOT / "runs"), help="folder of the two training workdirs")
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides (smoke runs only)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t_start = time.time()
    from score_sde.evaluation import feature_statistics, frechet_distance, load_feature_net
    from score_sde.evaluation.feature_nets import load_split

    nets = {k: trained(c, os.path.join(args.runs, w), args.overrides) for k, (c, w) in MODELS.items()}
    fn = load_feature_net("fd-digits", cache_dir=args.cache_dir)
    train = load_split("digits", "train")
    test = load_split("digits", "test")
    ref_stats = feature_statistics(fn.features(train.dequantize(torch.Generator().manual_seed(0), torch.float32)))
    held_out = test.dequantize(torch.Generator().manual_seed(1), torch.float32)
    fd_floor = frechet_distance(*feature_statistics(fn.features(held_out)), *ref_stats)

    def fd(x):
        x = x.float()
        if not torch.isfinite(x).all():
            return math.nan
        return frechet_distance(*feature_statistics(fn.features(x)), *ref_stats)

    x_T = torch.randn(args.n, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    results, grids = {}, {}
    for label, (key, sampler, opts, per_step) in METHODS.items():
        _, sde, model, _, _ = nets[key]
        for nfe in NFES:
            if per_step is not None and nfe % per_step:
                continue
            budget = dict(nfe=nfe)
            if per_step is not None:  # uniform steps of h = (T - eps) / steps from T to eps = sde.default_eps
                budget = dict(options=dict(step_size=(sde.T - sde.default_eps) / (nfe // per_step)))
            with torch.no_grad():
                res = ss.sample(sde, model, x_T=x_T * sde.prior_std, sampler=sampler, **budget, **opts)
            assert res.nfe <= nfe, (label, nfe, res.nfe)
            results.setdefault(label, {})[nfe] = dict(fd=fd(res.x), nfe=res.nfe)
            grids.setdefault(label, {})[nfe] = res.x[:16].float()
        print(f"{label}: " + ", ".join(f"{k}: {v['fd']:.3f}" for k, v in results[label].items()), flush=True)

    info = {}
    for key, (_cfg, sde, model, step, train_s) in nets.items():
        t0 = time.time()
        with torch.no_grad():
            s = float(ss.metrics.straightness(sde, model, x_T[:500] * sde.prior_std, steps=32))
        bpd = ss.dataset_bits_per_dim(sde, model, test.quantized, test.scaling, batch_size=400,
                                      generator=torch.Generator().manual_seed(0), dtype=F64, divergence="hutchinson",
                                      rtol=1e-5, atol=1e-5, eps=1e-5)  # fmt: skip
        info[key] = dict(config=MODELS[key][0], step=step, train_s=train_s, straightness=s, bpd=bpd.mean,
                         bpd_stderr=bpd.stderr, bpd_nfe=bpd.nfe_per_sample, eval_s=time.time() - t0)  # fmt: skip
        print(key, info[key], flush=True)
    meta = dict(n=args.n, nfes=list(NFES), fd_floor=fd_floor, feature_net_accuracy=fn.test_accuracy,
                seconds=time.time() - t_start, models=info)  # fmt: skip
    out = Path(args.out)
    report(results, meta, out)
    plot(grids, out)
    return 0


def report(results: dict, meta: dict, out: Path) -> None:
    m = meta["models"]
    lines = [
        "# Flow matching on digits: rectified flow (velocity, flow-matching loss) against VP (eps loss)",
        "",
        f"Generated by `benchmarks/flow_matching_digits.py` ({meta['n']} samples per entry, same prior draws; "
        f"{meta['seconds']:.0f} s). Same MLP, data, optimiser and steps for both networks; training wall time on "
        f"one (shared) CPU core: flow {m['flow']['train_s'] / 60:.1f} min (`configs/digits_rf.yaml`, step "
        f"{m['flow']['step']}), VP {m['VP']['train_s'] / 60:.1f} min (`configs/digits_bench.yaml`, step "
        f"{m['VP']['step']}). FD-digits: Fréchet distance in the features of the project's digits classifier "
        f"(test accuracy {meta['feature_net_accuracy']:.3f}; not FID) against the dequantized training digits; "
        f"floor (held-out digits) {meta['fd_floor']:.3f}, from only 359 held-out digits against {meta['n']} samples "
        f"(FD's finite-sample bias grows as the sample shrinks, so entries below it are not better than data). "
        f"Entries are FD-digits (NFE used).",
        "",
        "| sampler | " + " | ".join(f"NFE {f}" for f in meta["nfes"]) + " |",
        "|---|" + "---|" * len(meta["nfes"]),
    ]
    for lab, row in results.items():
        cells = [f"{row[f]['fd']:.3f} ({row[f]['nfe']})" if f in row else "—" for f in meta["nfes"]]
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    head = "| sampler | " + " | ".join(f"NFE {f}" for f in meta["nfes"]) + " |"
    lines += ["", "Ratio flow / VP of FD-digits with the same sampler and budget (< 1: the flow model is better), "
              "and of the best entry of each model at each budget:", "", head, "|---|" + "---|" * len(meta["nfes"])]
    for lab in PER_MODEL:
        fl, vp = results.get(f"flow {lab}", {}), results.get(f"VP {lab}", {})
        cells = [f"{fl[f]['fd'] / vp[f]['fd']:.3f}" if f in fl and f in vp else "—" for f in meta["nfes"]]
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")

    def best(model, f):
        vals = [v[f]["fd"] for lab, v in results.items() if lab.startswith(model + " ") and f in v]
        return min((x for x in vals if math.isfinite(x)), default=math.nan)

    bf, bv = [best("flow", f) for f in meta["nfes"]], [best("VP", f) for f in meta["nfes"]]
    cells = [f"{a:.3f} / {b:.3f} = {a / b:.3f}" for a, b in zip(bf, bv, strict=True)]
    lines.append("| best of each | " + " | ".join(cells) + " |")
    lines += ["", "| model | held-out bits/dim (± s.e.) | NFE per sample | straightness S (32 Heun steps, 500 paths) |",
              "|---|---|---|---|"]  # fmt: skip
    for key, v in m.items():
        lines.append(f"| {key} (`{v['config']}`) | {v['bpd']:.3f} ± {v['bpd_stderr']:.3f} | {v['bpd_nfe']:.0f} | "
                     f"{v['straightness']:.2f} |")  # fmt: skip
    lines += ["", "Straightness S = int_0^1 E||(x_eps - x_T) - v(x_tau)||^2 dtau (Liu et al. 2022) of the PF-ODE "
              "paths from the same prior draws (sum over the 64 pixels); 0 for straight paths.",
              "Sample grids: `flow_matching_digits.png` (16 samples per panel; rows: flow Euler and Heun in t, VP DDIM "
              "and DPM-Solver++(2M); columns: NFE)."]
    text = "\n".join(lines) + "\n"
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "flow_matching_digits.md").write_text(text)
    (out / "flow_matching_digits.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))


def plot(grids: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from score_sde.training.services import image_grid

    labels = [lab for lab in ("flow Euler in t", "flow Heun in t", "VP DDIM", "VP DPM-Solver++(2M)") if lab in grids]
    fig, axes = plt.subplots(len(labels), len(NFES), figsize=(2 * len(NFES), 2.2 * len(labels)))
    for i, lab in enumerate(labels):
        for j, nfe in enumerate(NFES):
            ax = axes[i, j]
            ax.axis("off")
            if nfe in grids[lab]:
                img = image_grid(((grids[lab][nfe] + 1) / 2).clamp(0, 1), nrow=4)[..., 0]
                ax.imshow(img.numpy(), cmap="gray", vmin=0, vmax=1)
            if i == 0:
                ax.set_title(f"NFE {nfe}", fontsize=9)
            if j == 0:
                ax.text(-0.1, 0.5, lab, transform=ax.transAxes, ha="right", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "flow_matching_digits.png", dpi=110)


if __name__ == "__main__":
    sys.exit(main())
