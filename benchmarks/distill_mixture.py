"""Few-step students against the solvers, with exact Gaussian-mixture teachers (issue 13 acceptance).

1. 2-D: the 8-Gaussian ring (``score_sde.training.data.mixture_distribution``). Solvers on the exact score
   (VP and rectified-flow paths; DDIM, DPM-Solver-2/3, DPM-Solver++(2M/3M), UniPC, Heun, Euler-Maruyama)
   at 1, 2, 4, 8, 50 NFE, and the 1- and 2-step students of progressive distillation (VP, DDIM teacher
   32 -> 1 steps), consistency distillation and consistency training (VP) and one round of reflow
   (rectified-flow path), all in sliced W2 to n exact samples (the table also gives the W2 between two exact
   sample sets of the same size, the floor). Reflow also reports straightness and the 1-step error of the
   flow before (the exact teacher) and after one round.
2. 1-D: a consistency-distilled student against the exact PF-ODE map (CDF matching,
   ``GaussianMixture.transport``): RMS error of f(x_t, t) by time t, beside the error of the posterior mean
   E[x_0 | x_t] (what one solver step returns).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/distill_mixture.py [--only solvers,progressive,...] [--iters 1500]

Writes benchmarks/results/distill_mixture.json (sections merge across runs) and distill_mixture.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

import score_sde as ss
from score_sde.analytic import GaussianMixture
from score_sde.metrics import sliced_w2
from score_sde.training.config import ModelConfig
from score_sde.training.data import mixture_distribution
from score_sde.training.distill import DistillConfig, DistillRun, Teacher

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
NFES = (1, 2, 4, 8, 50)
SOLVERS = ("ddim", "dpm_solver_2", "dpm_solver_3", "dpmpp_2m", "dpmpp_3m", "unipc", "heun", "euler_maruyama")
BATCH = 256
SECTIONS = ("solvers", "progressive", "consistency_cd", "consistency_ct", "consistency_ct_short", "reflow", "onedim")


def sdes():
    return {"vp": ss.VPSDE(), "rf": ss.GeneralLinearSDE.rectified_flow()}


def reference(n):
    gmm = mixture_distribution()
    return gmm, gmm.sample(n, generator=torch.Generator().manual_seed(1234))


def error(x, ref):
    return sliced_w2(x.detach().double(), ref, n_proj=256, seed=0)


def starts(sde, n, dtype=torch.float64):
    return sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(7), dtype=dtype)


def run_solvers(n):
    gmm, ref = reference(n)
    floor = error(gmm.sample(n, generator=torch.Generator().manual_seed(99)), ref)
    rows = []
    for name, sde in sdes().items():
        x_T = starts(sde, n)
        for solver in SOLVERS:
            for nfe in NFES:
                try:
                    res = ss.sample(sde, gmm.score_fn(sde), x_T=x_T, sampler=solver, nfe=nfe,
                                    generator=torch.Generator().manual_seed(3))  # fmt: skip
                except ValueError:  # one step needs more NFE than the budget
                    continue
                e = error(res.x, ref) if torch.isfinite(res.x).all() else math.inf
                rows.append({"sde": name, "solver": solver, "nfe": res.nfe, "budget": nfe, "sw2": e})
                print(f"{name} {solver} nfe {res.nfe}: {e:.4f}", flush=True)
    return {"rows": rows, "floor": floor, "n": n}


def student_rows(label, sde, model, sampler, eps, n, ref, steps=(1, 2)):
    out = []
    x_T = starts(sde, n, torch.float32)
    for k in steps:
        with torch.no_grad():
            res = ss.sample(sde, model, x_T=x_T, sampler=sampler, steps=k, eps=eps,
                            generator=torch.Generator().manual_seed(3))  # fmt: skip
        out.append({"method": label, "steps": k, "nfe": res.nfe, "sw2": error(res.x, ref)})
        print(label, k, out[-1]["sw2"], flush=True)
    return out


def student_model():
    return ModelConfig(kind="mlp", prediction="v", hidden=128, depth=3, emb_dim=64)


def run_progressive(n, iters):
    gmm, ref = reference(n)
    sde = ss.VPSDE()
    teacher = Teacher.from_mixture(gmm, sde)
    dcfg = DistillConfig(method="progressive", teacher_steps=32, steps=1, iters=iters, batch_size=BATCH, lr=1e-3)
    kept, rows = {}, []

    def keep(run, r):
        res = run.result()
        kept[res.steps] = res
        print(f"progressive round {r}: {res.steps}-step student", flush=True)

    t0 = time.process_time()
    DistillRun(teacher, dcfg, model=student_model()).run(on_round_end=keep)
    cpu = time.process_time() - t0
    for k in (2, 1):
        r = kept[k]
        rows += student_rows("progressive (DDIM 32 -> 1)", sde, r.model, "ddim", r.eps, n, ref, steps=(k,))
    return {"rows": rows, "cpu_s": cpu, "iters_per_round": iters, "rounds": dcfg.n_rounds}


def run_consistency(n, iters, mode, ct_s1=150):
    gmm, ref = reference(n)
    sde = ss.VPSDE()
    teacher = Teacher.from_mixture(gmm, sde)
    dcfg = DistillConfig(method="consistency", mode=mode, steps=1, iters=iters, batch_size=BATCH, lr=1e-3,
                         cm_points=17, ct_s1=ct_s1)  # fmt: skip
    t0 = time.process_time()
    res = DistillRun(teacher, dcfg, model=student_model()).run()
    cpu = time.process_time() - t0
    label = "consistency distillation (Heun teacher, N = 17)"
    if mode == "ct":
        label = f"consistency training (s1 = {ct_s1})"
    rows = student_rows(label, sde, res.model, "consistency", res.eps, n, ref)
    return {"rows": rows, "cpu_s": cpu, "iters": iters, "ct_s1": ct_s1}


def run_reflow(n, iters, pairs):
    gmm, ref = reference(n)
    sde = ss.GeneralLinearSDE.rectified_flow()
    teacher = Teacher.from_mixture(gmm, sde)
    dcfg = DistillConfig(method="reflow", steps=1, iters=iters, batch_size=BATCH, lr=1e-3, pairs=pairs,
                         pair_sampler="heun", pair_steps=128)  # fmt: skip
    t0 = time.process_time()
    res = DistillRun(teacher, dcfg, model=student_model()).run()
    cpu = time.process_time() - t0
    rows = student_rows("reflow, 1 round (rectified-flow path)", sde, res.model, "ddim", res.eps, n, ref)
    x_T = starts(sde, 2000)

    def score32(x, t):
        return res.model.score(x.float(), t.float()).double()

    with torch.no_grad():
        s_before = float(ss.metrics.straightness(sde, teacher.score, x_T, steps=64))
        s_after = float(ss.metrics.straightness(sde, score32, x_T, steps=64))
    one_before = error(ss.sample(sde, teacher.score, x_T=starts(sde, n), sampler="ddim", steps=1).x, ref)
    return {"rows": rows, "cpu_s": cpu, "iters": iters, "pairs": pairs, "straightness_before": s_before,
            "straightness_after": s_after, "one_step_before": one_before,
            "one_step_after": rows[0]["sw2"]}  # fmt: skip


def run_onedim(iters):
    gmm = GaussianMixture([0.3, 0.7], torch.tensor([[-1.5], [1.0]]), torch.tensor([0.05, 0.2]))
    sde = ss.VPSDE()
    eps = sde.default_eps
    teacher = Teacher.from_mixture(gmm, sde)
    dcfg = DistillConfig(method="consistency", mode="cd", steps=1, iters=iters, batch_size=BATCH, lr=1e-3)
    t0 = time.process_time()
    res = DistillRun(teacher, dcfg, model=student_model()).run()
    cpu = time.process_time() - t0
    a_eps = float(sde.alpha(torch.tensor(eps)))
    rows = []
    for t in (0.01, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0):
        x = gmm.marginal_sample(4000, t, sde, generator=torch.Generator().manual_seed(int(1000 * t)))
        exact = gmm.transport(x, t, eps, sde) / a_eps
        tv = torch.full((x.shape[0],), t, dtype=torch.float64)
        with torch.no_grad():
            f = res.model.denoise(x.float(), tv.float()).double()
        mean = teacher.denoise(x, tv)
        spread = float(exact.std())
        rms_f, rms_mean = (float(((y - exact) ** 2).mean().sqrt()) for y in (f, mean))
        rows.append({"t": t, "rms_student": rms_f, "rms_posterior_mean": rms_mean, "std_target": spread})
        print(rows[-1], flush=True)
    return {"rows": rows, "cpu_s": cpu, "iters": iters}


# ---------------------------------------------------------------------------------------------
def best_solver(sol, nfe):
    cands = [r for r in sol["rows"] if r["budget"] == nfe and math.isfinite(r["sw2"])]
    return min(cands, key=lambda r: r["sw2"]) if cands else None


def markdown(res: dict) -> str:
    L = ["# Few-step students vs solvers on exact Gaussian mixtures", "",
         "Produced by `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/distill_mixture.py "
         f"--iters {res.get('iters', 1500)}` (its sections can run as separate processes, `--only`, merged with "
         "`--merge`; every number is seeded, so the split does not change them). CPU time: the process's CPU "
         "seconds of the training.", ""]  # fmt: skip
    sol = res.get("solvers")
    if sol:
        L += [f"## 2-D ring: sliced W2 to {sol['n']} exact samples (floor: two exact sample sets, "
              f"{sol['floor']:.4f})", "", "Best solver within each NFE budget (exact score; over the samplers and "
              "the VP and rectified-flow paths):", "", "| NFE | best solver | sliced W2 |",
              "|---|---|---|"]  # fmt: skip
        for nfe in NFES:
            b = best_solver(sol, nfe)
            if b:
                L.append(f"| {nfe} | {b['solver']} ({b['sde']}) | {b['sw2']:.4f} |")
        L += ["", "Students (1 network evaluation per step):", "", "| student | steps = NFE | sliced W2 | "
              "best solver at that NFE | CPU time to train |", "|---|---|---|---|---|"]  # fmt: skip
        for key in ("progressive", "consistency_cd", "consistency_ct", "consistency_ct_short", "reflow"):
            sec = res.get(key)
            if not sec:
                continue
            for r in sec["rows"]:
                b = best_solver(sol, r["nfe"])
                L.append(f"| {r['method']} | {r['nfe']} | {r['sw2']:.4f} | {b['sw2']:.4f} ({b['solver']}) | "
                         f"{sec['cpu_s']:.0f} s |")  # fmt: skip
        L += ["", "All solver rows (sliced W2 at an NFE budget; a solver whose step costs 2 or 3 NFE uses the "
              "largest step count within it, and '-' marks a budget below one step):", "",
              "| path | solver | " + " | ".join(f"NFE {n}" for n in NFES)
              + " |", "|---|---|" + "---|" * len(NFES)]  # fmt: skip
        for sde in ("vp", "rf"):
            for s in SOLVERS:
                cells = []
                for n in NFES:
                    r = [x for x in sol["rows"] if x["sde"] == sde and x["solver"] == s and x["budget"] == n]
                    cells.append(f"{r[0]['sw2']:.3f}" if r else "-")
                L.append(f"| {sde} | {s} | " + " | ".join(cells) + " |")
    rf = res.get("reflow")
    if rf:
        L += ["", "## Reflow: one round on the rectified-flow path", "",
              "| flow | straightness S (64 Heun steps, 2000 paths) | 1-step sliced W2 |", "|---|---|---|",
              f"| exact teacher (1-rectified flow) | {rf['straightness_before']:.4f} | {rf['one_step_before']:.4f} |",
              f"| reflow student (2-rectified flow) | {rf['straightness_after']:.4f} | {rf['one_step_after']:.4f} |",
              "", f"({rf['pairs']} pairs coupled by 128 Heun steps of the exact PF-ODE, {rf['iters']} training "
              "steps.)"]  # fmt: skip
    od = res.get("onedim")
    if od:
        L += ["", "## 1-D: consistency-distilled f(x_t, t) against the exact PF-ODE map to eps", "",
              "Mixture 0.3 N(-1.5, 0.05) + 0.7 N(1, 0.2), VP; 4000 draws of p_t per row; the exact map is "
              "F_eps^{-1}(F_t(x)) (CDF matching). The posterior mean E[x_0 | x_t] is what one solver step returns.",
              "", "| t | RMS error of the student | RMS error of E[x_0 \\| x_t] | std of the exact x_eps |",
              "|---|---|---|---|"]  # fmt: skip
        for r in od["rows"]:
            L.append(f"| {r['t']} | {r['rms_student']:.4f} | {r['rms_posterior_mean']:.4f} | {r['std_target']:.3f} |")
        L += ["", f"(CD, {od['iters']} steps, {od['cpu_s']:.0f} s CPU.)"]
    return "\n".join(L) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    p.add_argument("--n", type=int, default=20000, help="samples per sliced-W2 estimate")
    p.add_argument("--iters", type=int, default=1500, help="training steps per round / per method")
    p.add_argument("--pairs", type=int, default=20000)
    p.add_argument("--ct-s1", type=int, default=150, help="CT's final discretisation N(K) - 1 (the paper's s1)")
    p.add_argument("--batch", type=int, default=256, help="training batch size")
    p.add_argument("--out", default=os.path.join(RESULTS, "distill_mixture"))
    p.add_argument("--merge", nargs="*", default=[], help="JSON files of runs with other --out (sections in parallel) "
                   "to merge into this one")  # fmt: skip
    a = p.parse_args(argv)
    global BATCH
    BATCH = a.batch
    torch.set_num_threads(1)
    path = a.out + ".json"
    res = json.load(open(path)) if os.path.isfile(path) else {}
    for other in a.merge:
        res.update(json.load(open(other)))
    res["iters"] = a.iters
    for sec in [s for s in a.only.split(",") if s]:
        print(f"== {sec}", flush=True)
        if sec == "solvers":
            res[sec] = run_solvers(a.n)
        elif sec == "progressive":
            res[sec] = run_progressive(a.n, a.iters)
        elif sec in ("consistency_cd", "consistency_ct"):
            res[sec] = run_consistency(a.n, 2 * a.iters, sec[-2:], a.ct_s1)
        elif sec == "consistency_ct_short":
            res[sec] = run_consistency(a.n, 2 * a.iters, "ct", 20)
        elif sec == "reflow":
            res[sec] = run_reflow(a.n, 2 * a.iters, a.pairs)
        elif sec == "onedim":
            res[sec] = run_onedim(2 * a.iters)
        else:
            raise SystemExit(f"unknown section {sec!r}; choose from {SECTIONS}")
        write(res, a.out)
    write(res, a.out)
    print(markdown(res))


def write(res: dict, out: str) -> None:
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(res, f, indent=1)
    with open(out + ".md", "w") as f:
        f.write(markdown(res))


if __name__ == "__main__":
    main()
