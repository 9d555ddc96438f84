"""The fast samplers' denoiser view: a ScoreModel's native prediction against the score round trip.

The same ScoreModel is sampled two ways from the same x_T and seeds: passed as itself (the samplers read
its network's own x0 / eps / v / velocity through ``Problem.predict``: the *native* path) and wrapped as a
plain function ``lambda x, t: model.score(x, t)`` (the samplers convert its score to the denoiser: the
*converted* path, what every run did before the denoiser view). Printed:

1. agreement: max |native - converted| over every fast sampler, per SDE (VP, sub-VP, VE) and prediction
   type, in float64 and float32, on an exact 3-component 2-D Gaussian mixture written as a network
   (10 steps, 64 samples); in float32 also each path's max distance to the float64 native run
   (deterministic samplers), which shows whether skipping the round trip loses accuracy;
2. conversions: score views formed (``convert_at`` to ``score`` inside the ScoreModel) per run, native vs
   converted, with the run's NFE;
3. time: CPU time per step of both paths for an eps MLP (2 -> 128 -> 128 -> 2 with time input, batch 64,
   500 steps); runs alternate and the table gives each path's minimum and the median of paired ratios.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/denoiser_view.py [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch import nn

import score_sde as ss
import score_sde.score as score_mod
from score_sde.score import ScoreModel, convert_at

FAST = [("ddim", {}), ("ddim", {"eta": 1.0}), ("ddim", {"eta": 0.5, "clip_denoised": True}), ("dpm_solver_1", {}),
        ("dpm_solver_2", {}), ("dpm_solver_3", {}), ("dpmpp_2m", {}), ("dpmpp_3m", {}), ("dpmpp_2m_sde", {}),
        ("unipc", {}), ("unipc", {"order": 3}), ("heun", {}), ("edm", {"S_churn": 40.0}), ("restart", {}),
        ("consistency", {})]  # fmt: skip
STOCHASTIC = {"dpmpp_2m_sde", "edm", "restart", "consistency"}
SDES = {"vp": lambda: ss.VPSDE(0.1, 20.0), "subvp": lambda: ss.SubVPSDE(0.1, 20.0), "ve": lambda: ss.VESDE(0.01, 10.0)}
KINDS = ("eps", "x0", "v", "velocity")


def mixture() -> ss.analytic.GaussianMixture:
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    m = torch.tensor([[-1.0, 0.5], [1.0, -0.5], [0.0, 1.5]], dtype=torch.float64)
    c = torch.stack([torch.eye(2, dtype=torch.float64) * 0.05,
                     torch.tensor([[0.1, 0.03], [0.03, 0.08]], dtype=torch.float64),
                     torch.eye(2, dtype=torch.float64) * 0.02])  # fmt: skip
    return ss.analytic.GaussianMixture(w, m, c)


def exact_model(gmm, sde, kind) -> ScoreModel:
    """A ScoreModel whose network predicts ``kind`` exactly for the mixture (computed in float64, returned in
    x's dtype, so that float32 runs see a float32 network)."""

    def net(x, t):
        x64, t64 = x.to(torch.float64), t.to(torch.float64)
        return convert_at(sde, t64, gmm.score(x64, t64, sde), x64, "score", kind).to(x.dtype)

    return ScoreModel(net, sde, prediction=kind)


def sample(sde, fn, x_T, name, opts, steps=10):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ss.sample(sde, fn, x_T=x_T, sampler=name, steps=steps, generator=torch.Generator().manual_seed(2),
                         **opts)  # fmt: skip


def agreement(lines: list[str], n: int) -> None:
    gmm = mixture()
    lines += ["## 1. agreement: max |native - converted| over all fast samplers (worst sampler in brackets)", "",
              "| SDE | prediction | float64 | float32 | float32 native vs float64 | float32 converted vs float64 |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for sde_name, make in SDES.items():
        sde = make()
        x64 = sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        for kind in KINDS:
            model = exact_model(gmm, sde, kind)
            plain = lambda x, t, model=model: model.score(x, t)
            worst = {k: (0.0, "") for k in ("64", "32", "n_ref", "c_ref")}
            for name, opts in FAST:
                label = name + "".join(f",{k}={v}" for k, v in opts.items())
                a64, b64 = sample(sde, model, x64, name, opts), sample(sde, plain, x64, name, opts)
                a32, b32 = sample(sde, model, x64.float(), name, opts), sample(sde, plain, x64.float(), name, opts)
                assert a64.nfe == b64.nfe == a32.nfe == b32.nfe
                d = {"64": (a64.x - b64.x).abs().max().item(), "32": (a32.x - b32.x).abs().max().item()}
                if name not in STOCHASTIC and not opts.get("eta"):  # float32 and float64 draw different noise
                    d["n_ref"] = (a32.x.double() - a64.x).abs().max().item()
                    d["c_ref"] = (b32.x.double() - a64.x).abs().max().item()
                for k, v in d.items():
                    if v >= worst[k][0]:
                        worst[k] = (v, label)
            cells = [f"{v:.2e} ({lab})" for v, lab in worst.values()]
            lines.append(f"| {sde_name} | {kind} | " + " | ".join(cells) + " |")
    lines.append("")


def conversions(lines: list[str]) -> None:
    gmm, sde = mixture(), ss.VPSDE()
    calls = []
    real = score_mod.convert_at

    def counting(*a, **k):
        calls.append(a[4:6])
        return real(*a, **k)

    score_mod.convert_at = counting
    lines += ["## 2. score views formed per run (VP, 10 steps)", "",
              "| sampler | prediction | NFE | native | converted |", "|---|---|---|---|---|"]  # fmt: skip
    try:
        x_T = sde.prior_sampling((8, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        for name in ("ddim", "dpm_solver_3", "dpmpp_2m", "unipc", "heun"):
            for kind in ("eps", "x0"):
                model = exact_model(gmm, sde, kind)
                counts = []
                for fn in (model, lambda x, t, model=model: model.score(x, t)):
                    calls.clear()
                    res = sample(sde, fn, x_T, name, {})
                    counts.append(sum(c == (kind, "score") for c in calls))
                lines.append(f"| {name} | {kind} | {res.nfe} | {counts[0]} | {counts[1]} |")
    finally:
        score_mod.convert_at = real
    lines.append("")


class EpsMLP(nn.Module):
    def __init__(self, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 2))  # fmt: skip

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None]], dim=1))


def timing(lines: list[str], rounds: int, steps: int) -> None:
    torch.manual_seed(0)
    sde = ss.VPSDE()
    model = ScoreModel(EpsMLP(), sde, prediction="eps")
    plain = lambda x, t: model.score(x, t)
    x_T = sde.prior_sampling((64, 2), generator=torch.Generator().manual_seed(1))
    lines += [f"## 3. CPU time per step (eps MLP, batch 64, {steps} steps, {rounds} alternating rounds)", "",
              "| sampler | native us/step | converted us/step | median paired ratio native / converted |",
              "|---|---|---|---|"]  # fmt: skip
    with torch.no_grad():
        for name in ("ddim", "dpm_solver_3", "dpmpp_2m", "unipc", "heun"):
            tn, tc = [], []
            for _ in range(rounds):
                for fn, acc in ((model, tn), (plain, tc)):
                    t0 = time.process_time()
                    sample(sde, fn, x_T, name, {}, steps=steps)
                    acc.append((time.process_time() - t0) / steps * 1e6)
            ratio = statistics.median(a / b for a, b in zip(tn, tc))
            lines.append(f"| {name} | {min(tn):.1f} | {min(tc):.1f} | {ratio:.3f} |")
    lines.append("")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples, rounds and steps")
    ap.add_argument("--out", default="benchmarks/results/denoiser_view.txt")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    lines = ["# denoiser view: native prediction vs score round trip (benchmarks/denoiser_view.py)", ""]
    agreement(lines, 16 if args.quick else 64)
    conversions(lines)
    timing(lines, 3 if args.quick else 7, 100 if args.quick else 500)
    text = "\n".join(lines)
    print(text)
    with open(args.out, "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
