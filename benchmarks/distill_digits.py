"""Few-step students of a trained digits teacher: FD-digits at 1, 2, 4 steps per method beside the teacher's
solvers at 1, 2, 4 and 50 NFE, with sample grids (issue 13 acceptance, digits line).

The teacher is the configs/digits_vp.yaml MLP (128 wide, 2 blocks) with v-prediction (progressive distillation
needs an x0 / v parameterisation: an eps network's x_0 = (x - sigma eps) / alpha amplifies its error by
1 / alpha(T) ~ 150 in a one-step student), trained here for ``--teacher-iters`` steps (runs/distill_digits/,
reused when present). The students run through ``score-sde distill``'s code path (``Teacher.from_workdir``,
``DistillRun`` with a workdir each). FD-digits: ``load_feature_net("fd-digits")`` features of ``--n`` samples
against the dequantized training digits; the floor is the held-out digits' FD.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/distill_digits.py [--teacher-iters 8000 --iters 1500 --n 1000]

Writes benchmarks/results/distill_digits.md, .json and distill_digits_<method>.png grids.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

import score_sde as ss
from score_sde import cli
from score_sde.training.distill import DistillConfig, DistillRun, Teacher

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")


def train_teacher(wd: str, iters: int) -> float:
    from score_sde.training.checkpoint import latest_checkpoint

    if latest_checkpoint(os.path.join(wd, "checkpoints")) is not None:
        return float("nan")
    t0 = time.process_time()
    args = ["train", "--config", os.path.join(ROOT, "configs", "digits_vp.yaml"), "--workdir", wd, "--set",
            "model.prediction=v", f"training.n_iters={iters}", f"training.ckpt_every={iters}",
            "training.progress=false", "training.log_every=500"]  # fmt: skip
    assert cli.main(args) == 0
    return time.process_time() - t0


def report(res: dict, a) -> None:
    """Write the markdown table of ``res`` to ``a.out``.md."""
    tc, ti = res["teacher"]["cpu_s"], res["teacher"]["iters"]
    L = ["# Few-step students of a digits teacher (FD-digits, lower is better)", "",
         "Produced by `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/distill_digits.py` "
         f"`--teacher-iters {ti} --iters {a.iters} --n {a.n}`. FD-digits of {a.n} samples against the "
         f"training digits; held-out digits: {res['floor_held_out']:.3f}. CPU time: the process's CPU seconds.", "",
         f"Teacher: digits_vp MLP, v-prediction, {ti} steps" + (f" ({tc:.0f} s CPU)" if tc == tc else "") + ".",
         "", "| teacher sampler | NFE 1 | NFE 2 | NFE 4 | NFE 50 |", "|---|---|---|---|---|"]  # fmt: skip
    for s in ("ddim", "dpmpp_2m", "unipc"):
        cells = [f"{r['fd']:.3f}" for r in res["teacher"]["rows"] if r["sampler"] == s]
        L.append(f"| {s} | " + " | ".join(cells) + " |")
    L += ["", "| student | 1 step | 2 steps | 4 steps | training steps | CPU time |", "|---|---|---|---|---|---|"]
    for m in ("progressive", "consistency", "reflow"):
        if m in res:
            cells = {r["steps"]: f"{r['fd']:.3f}" for r in res[m]["rows"]}
            L.append(f"| {m} | {cells.get(1, '-')} | {cells.get(2, '-')} | {cells.get(4, '-')} | "
                     f"{res[m]['iters']} x {res[m]['rounds']} | {res[m]['cpu_s']:.0f} s |")  # fmt: skip
    L += ["", "Sample grids: `distill_digits_teacher.png` (DDIM, 50 NFE) and `distill_digits_<method>.png` (1 step)."]
    open(a.out + ".md", "w").write("\n".join(L) + "\n")
    print("\n".join(L))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher-iters", type=int, default=8000)
    p.add_argument("--iters", type=int, default=1500, help="training steps per round (progressive) / per method")
    p.add_argument("--methods", default="progressive,consistency,reflow")
    p.add_argument("--n", type=int, default=1000, help="samples per FD-digits estimate")
    p.add_argument("--runs", default=os.path.join(ROOT, "runs", "distill_digits"))
    p.add_argument("--out", default=os.path.join(RESULTS, "distill_digits"))
    p.add_argument("--report-only", action="store_true", help="rewrite the .md from the .json and stop")
    a = p.parse_args(argv)
    if a.report_only:
        return report(json.load(open(a.out + ".json")), a)
    torch.set_num_threads(1)
    from score_sde.evaluation import feature_statistics, frechet_distance, load_feature_net
    from score_sde.evaluation.feature_nets import load_split
    from score_sde.training.services import save_samples

    wd_teacher = os.path.join(a.runs, "teacher")
    teacher_cpu = train_teacher(wd_teacher, a.teacher_iters)
    teacher = Teacher.from_workdir(wd_teacher)
    sde, model = teacher.sde, teacher.model
    fn = load_feature_net("fd-digits")
    ref = feature_statistics(fn.features(load_split("digits", "train").dequantize(torch.Generator().manual_seed(0),
                                                                                 torch.float32)))  # fmt: skip
    held = load_split("digits", "test").dequantize(torch.Generator().manual_seed(1), torch.float32)

    def fd(x):
        x = x.detach().float()
        return frechet_distance(*feature_statistics(fn.features(x)), *ref) if torch.isfinite(x).all() else float("nan")

    x_T = sde.prior_sampling((a.n, 1, 8, 8), generator=torch.Generator().manual_seed(7), dtype=torch.float32)
    res = json.load(open(a.out + ".json")) if os.path.isfile(a.out + ".json") else {}
    res["floor_held_out"] = fd(held)
    if teacher_cpu != teacher_cpu and "teacher" in res:  # a reused teacher keeps the time of its training run
        teacher_cpu = res["teacher"]["cpu_s"]
    res["teacher"] = {"iters": a.teacher_iters, "cpu_s": teacher_cpu, "rows": []}
    for sampler in ("ddim", "dpmpp_2m", "unipc"):
        for nfe in (1, 2, 4, 50):
            with torch.no_grad():
                x = ss.sample(sde, model, x_T=x_T, sampler=sampler, nfe=nfe).x
            res["teacher"]["rows"].append({"sampler": sampler, "nfe": nfe, "fd": fd(x)})
            print("teacher", sampler, nfe, res["teacher"]["rows"][-1]["fd"], flush=True)
            if sampler == "ddim" and nfe == 50:
                save_samples(x[:64], a.out + "_teacher.png")
    for method in a.methods.split(","):
        opts = dict(progressive=dict(teacher_steps=16, steps=1), consistency=dict(steps=1, mode="cd"),
                    reflow=dict(steps=1, pairs=5000, pair_sampler="heun", pair_steps=32))[method]  # fmt: skip
        iters = a.iters if method == "progressive" else 2 * a.iters
        dcfg = DistillConfig(method=method, iters=iters, batch_size=128, lr=5e-4, ckpt_every=500, **opts)
        wd = os.path.join(a.runs, method)
        kept = {}
        t0 = time.process_time()
        run = DistillRun(teacher, dcfg, sde=sde, model=teacher.cfg.model, workdir=wd)
        def keep(r, i, kept=kept):
            res_r = r.result()
            kept[res_r.steps] = res_r

        out = run.run(on_round_end=keep)
        cpu = time.process_time() - t0
        rows = []
        for k in (1, 2, 4):
            student = kept.get(k, out) if method == "progressive" else out
            if method == "progressive" and k not in kept:
                continue
            with torch.no_grad():
                x = ss.sample(sde, student.model, x_T=x_T, sampler=student.sampler, steps=k, eps=student.eps,
                              generator=torch.Generator().manual_seed(3)).x  # fmt: skip
            rows.append({"steps": k, "fd": fd(x)})
            print(method, k, rows[-1]["fd"], flush=True)
            if k == 1:
                save_samples(x[:64], f"{a.out}_{method}.png")
        res[method] = {"rows": rows, "cpu_s": cpu, "iters": iters, "rounds": dcfg.n_rounds}
        json.dump(res, open(a.out + ".json", "w"), indent=1)
    report(res, a)



if __name__ == "__main__":
    main()
