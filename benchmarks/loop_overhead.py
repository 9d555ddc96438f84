"""Overhead of the one loop: each own stepper vs a bare hand-written loop doing the same math.

For every fixed-grid stepper of score_sde.solvers (ancestral, reverse diffusion, Euler–Maruyama,
probability flow, PC with Langevin / annealed Langevin) this times ``ss.sample`` for 1000 steps
with a toy MLP score network against a bare Python loop that makes the same number of MLP calls
and the same update arithmetic (coefficients precomputed, as a hand-written sampler would), and
prints the ratio (target <= 1.02). It also times the torchsde path (``sampler="sde"``, Euler) and
the torchdiffeq path (``sampler="ode"``, fixed-step Euler, and adaptive dopri5 per NFE) against
the own steppers doing the same work, and the adaptive ``ode`` sampler (dopri5) against a bare
``torchdiffeq.odeint`` call on the same right-hand side with the same options (target <= 1.05).

Timings: own and bare runs alternate; the table shows the minimum of each and the median of the
paired ratios (own / bare of back-to-back runs, robust to a shared, busy machine), under
``torch.no_grad`` for both sides. ``paired`` is a run over a grid already run once (its per-step tensors kept by
:mod:`score_sde.solvers.constants`, as when sampling batch after batch); ``first run`` is the paired ratio of a run
that makes them afresh. A second table repeats the comparison on the 64-D MLP score network (512 wide, batch 128)
of ``benchmarks/likelihood_overhead.py``. Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/loop_overhead.py``
(``--quick`` for fewer repeats; ``--batch``, ``--hidden`` to change the MLP's cost; ``--clock cpu`` times the
thread's CPU time instead of wall time, for a machine shared with other jobs).
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

import score_sde as ss
from score_sde.solvers import constants
from score_sde.solvers.coefficients import GridCoefficients


class ToyMLP(nn.Module):
    """score(x, t) = MLP([x, t]) on [B, D] data: D+1 -> hidden -> hidden -> D, SiLU."""

    def __init__(self, dim: int = 2, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, dim)
        )

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None]], dim=1))


def load_mlp_score():
    """``MLPScore`` of benchmarks/likelihood_vs_official.py (the issue's reference score network)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent / "likelihood_vs_official.py"
    spec = importlib.util.spec_from_file_location("_likelihood_vs_official", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.MLPScore


# ------------------------------------------------------------------ bare hand-written loops


def bare(kind, f, sde, x, grid, gen, snr=0.16):
    """The update rules of the own steppers written out by hand (same grid, same final denoising)."""
    c = GridCoefficients.build(sde, grid)
    tv = grid.to(x.dtype)[:, None].expand(-1, x.shape[0])
    n = grid.numel() - 1
    for i in range(n):
        t = tv[i]
        last = i == n - 1
        if kind in ("pc_langevin", "pc_annealed"):
            ai = c.a[i] * c.a[i]
            s = f(x, t)
            z = torch.randn(x.shape, generator=gen, dtype=x.dtype)
            if kind == "pc_langevin":
                step = 2 * ai * (snr * z.norm(dim=-1).mean() / s.norm(dim=-1).mean()) ** 2
                x = x + step * s + torch.sqrt(2 * step) * z
            else:
                step = 2 * ai * (snr * c.sigma[i]) ** 2
                x = x + step * s + math.sqrt(2 * step) * z
        s = f(x, t)
        if kind == "euler_maruyama":
            dt = c.dt[i]
            mean = x * (1.0 + c.f[i] * dt) - (c.g2[i] * dt) * s
            std = math.sqrt(-c.g2[i] * dt)
        elif kind == "ancestral":
            mean = (x + c.G2[i] * s) / c.a[i]
            std = c.sqrt_G2[i]
        elif kind == "probability_flow":
            x = x * (2.0 - c.a[i]) + (0.5 * c.G2[i]) * s
            continue
        else:  # reverse diffusion (also the PC predictor)
            mean = x * (2.0 - c.a[i]) + c.G2[i] * s
            std = c.sqrt_G2[i]
        x = mean if last else mean + std * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    return x


OWN = {
    "ancestral": dict(sampler="ancestral"),
    "reverse_diffusion": dict(sampler="reverse_diffusion"),
    "euler_maruyama": dict(sampler="euler_maruyama"),
    "probability_flow": dict(sampler="probability_flow"),
    "pc_langevin": dict(sampler="pc", predictor="reverse_diffusion", corrector="langevin", snr=0.16),
    "pc_annealed": dict(sampler="pc", predictor="reverse_diffusion", corrector="annealed_langevin", snr=0.16),
}


def stepper_table(emit, f, sde, x_T, grid, repeats) -> dict:
    """Time every own stepper (``ss.sample`` over ``grid``) against its bare loop with the score ``f``; print the
    table and return the median paired ratio of each."""
    N = grid.numel() - 1
    emit(
        f"{'stepper':<22} {'own (min)':>10} {'bare (min)':>10} {'ratio':>7} {'paired':>7} {'NFE':>6} "
        f"{'us/step extra':>14} {'first run':>10}"
    )
    ratios = {}
    for kind, opts in OWN.items():
        own_nfe = []

        def run_own(opts=opts, own_nfe=own_nfe):
            res = ss.sample(sde, f, x_T=x_T, grid=grid, generator=torch.Generator().manual_seed(0), **opts)
            own_nfe.append(res.nfe)

        def run_bare(kind=kind):
            bare(kind, f, sde, x_T, grid, torch.Generator().manual_seed(0))

        def run_cold(run_own=run_own):
            constants.clear()  # the per-step tensors made afresh, as in a first run over this grid
            run_own()

        samples = {}
        t = best_of({"own": run_own, "bare": run_bare, "cold": run_cold}, repeats, samples)
        # the median of the paired ratios (own and bare run back to back) is robust to a busy machine
        paired = median([a / b for a, b in zip(samples["own"], samples["bare"])])
        cold = median([a / b for a, b in zip(samples["cold"], samples["bare"])])
        ratios[kind] = paired
        extra = (t["own"] - t["bare"]) / N * 1e6
        emit(
            f"{kind:<22} {t['own'] * 1e3:8.1f}ms {t['bare'] * 1e3:8.1f}ms {t['own'] / t['bare']:7.3f} "
            f"{paired:7.3f} {own_nfe[-1]:6d} {extra:14.1f} {cold:10.3f}"
        )
    # same numbers: the bare loops compute what the steppers compute
    own_x = ss.sample(sde, f, x_T=x_T, grid=grid, generator=torch.Generator().manual_seed(0), **OWN["ancestral"]).x
    bare_x = bare("ancestral", f, sde, x_T, grid, torch.Generator().manual_seed(0))
    emit(f"\nmax |own - bare| (ancestral, same generator): {(own_x - bare_x).abs().max().item():.2e}")
    return ratios


CLOCK = {"wall": time.perf_counter, "cpu": time.thread_time}
clock = CLOCK["wall"]


def best_of(fns: dict, repeats: int, samples: dict | None = None) -> dict:
    """Minimum time (``clock``) of each callable over interleaved repeats (all times go to ``samples``)."""
    best = {k: math.inf for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = clock()
            fn()
            dt = clock() - t0
            best[k] = min(best[k], dt)
            if samples is not None:
                samples.setdefault(k, []).append(dt)
    return best


def median(v):
    v = sorted(v)
    return 0.5 * (v[(len(v) - 1) // 2] + v[len(v) // 2])


def adaptive_vs_bare(sde, f, x_T, repeats: int, calls: list, rtol: float = 1e-5, atol: float = 1e-5) -> str:
    """``ss.sample(sampler="ode")`` (dopri5) against ``torchdiffeq.odeint`` called by hand on the same
    probability-flow right-hand side f x - 1/2 g^2 s with the same tolerances and the same ``step_t`` option
    (the last step ends on eps); returns the table rows (min times, the median paired ratio, NFE of both)."""
    import torchdiffeq

    eps = sde.default_eps
    times = torch.tensor([sde.T, eps], dtype=torch.float64).to(x_T.dtype)

    def rhs(t, x):
        return sde.reverse_drift(x, t.to(torch.float64), f(x, t.expand(x.shape[0])))

    nfe = {}

    def run_own():
        nfe["own"] = ss.sample(sde, f, x_T=x_T, sampler="ode", rtol=rtol, atol=atol).nfe

    def run_bare():
        c0 = calls[0]
        torchdiffeq.odeint(rhs, x_T, times, rtol=rtol, atol=atol, method="dopri5", options={"step_t": times[-1:]})
        nfe["bare"] = calls[0] - c0

    samples = {}
    t = best_of({"own": run_own, "bare": run_bare}, repeats, samples)
    paired = median([a / b for a, b in zip(samples["own"], samples["bare"])])
    return (
        f"{'adaptive ODE (dopri5, tol 1e-5)':<34} {'own (min)':>10} {'bare (min)':>10} {'ratio':>7} {'paired':>7} "
        f"{'NFE own/bare':>13}\n"
        f"{'ss.sample(sampler=ode) vs odeint':<34} {t['own'] * 1e3:8.1f}ms {t['bare'] * 1e3:8.1f}ms "
        f"{t['own'] / t['bare']:7.3f} {paired:7.3f} {nfe['own']:6d}/{nfe['bare']:<6d}\n"
        f"adaptive paired ratio: {paired:.3f} (target <= 1.05)"
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--repeats", type=int, default=25)
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--reference-steps",
        type=int,
        default=200,
        help="steps of the second table, on the reference 64-D MLP score (0 = leave it out)",
    )
    p.add_argument(
        "--clock",
        choices=sorted(CLOCK),
        default="wall",
        help="wall: time.perf_counter; cpu: the thread's CPU time (time.thread_time), which leaves out "
        "the time other processes hold the core (torch computes in this thread at 1 thread)",
    )
    p.add_argument("--out", default="benchmarks/results/loop_overhead.txt", help="also write the table here ('' = no)")
    args = p.parse_args(argv)
    global clock
    clock = CLOCK[args.clock]
    lines = []

    def emit(text=""):
        print(text)
        lines.extend(str(text).split("\n"))

    repeats = 3 if args.quick else args.repeats
    torch.manual_seed(0)
    net = ToyMLP(2, args.hidden)
    sde = ss.VPSDE()
    N, B = args.steps, args.batch
    grid = ss.make_grid(sde, "uniform", N)
    x_T = torch.randn(B, 2)
    calls = [0]

    def f(x, t):
        calls[0] += 1
        return net(x, t)

    emit(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, toy MLP 3->{args.hidden}->{args.hidden}->2, "
        f"batch {B}, {N} steps, float32, min of {repeats} interleaved repeats, clock {args.clock}\n"
    )
    with torch.no_grad():
        # the MLP alone: N calls
        t_mlp = best_of({"mlp": lambda: [net(x_T, torch.full((B,), 0.5)) for _ in range(N)]}, repeats)["mlp"]
        emit(f"{'MLP alone (N calls)':<22} {t_mlp * 1e3:8.1f} ms  ({t_mlp / N * 1e6:.1f} us/call)\n")
        ratios = stepper_table(emit, f, sde, x_T, grid, repeats)
        emit(
            f"worst paired ratio (median of own/bare, back-to-back runs): {max(ratios.values()):.3f} (target <= 1.02)\n"
        )

        # back-ends
        emit(f"{'back-end':<34} {'time':>10} {'vs own':>8} {'NFE':>6}")
        info = {}

        def run_sde():
            info["sde"] = ss.sample(sde, f, x_T=x_T, sampler="sde", steps=N, generator=torch.Generator().manual_seed(0))

        def run_em():
            info["em"] = ss.sample(sde, f, x_T=x_T, sampler="euler_maruyama", grid=grid)

        def run_ode_euler():
            info["ode_euler"] = ss.sample(sde, f, x_T=x_T, sampler="ode", method="euler", steps=N)

        def run_pf():
            info["pf"] = ss.sample(sde, f, x_T=x_T, sampler="probability_flow", grid=grid)

        def run_dopri():
            info["dopri5"] = ss.sample(sde, f, x_T=x_T, sampler="ode")

        t = best_of(
            {"sde": run_sde, "em": run_em, "ode_euler": run_ode_euler, "pf": run_pf, "dopri5": run_dopri}, repeats
        )
        emit(
            f"{'torchsde euler (sampler=sde)':<34} {t['sde'] * 1e3:8.1f}ms {t['sde'] / t['em']:8.3f} "
            f"{info['sde'].nfe:6d}   (vs own euler_maruyama {t['em'] * 1e3:.1f} ms)"
        )
        emit(
            f"{'torchdiffeq euler (sampler=ode)':<34} {t['ode_euler'] * 1e3:8.1f}ms {t['ode_euler'] / t['pf']:8.3f} "
            f"{info['ode_euler'].nfe:6d}   (vs own probability_flow {t['pf'] * 1e3:.1f} ms)"
        )
        per_nfe = t["dopri5"] / info["dopri5"].nfe
        emit(
            f"{'torchdiffeq dopri5 (sampler=ode)':<34} {t['dopri5'] * 1e3:8.1f}ms {per_nfe / (t_mlp / N):8.3f} "
            f"{info['dopri5'].nfe:6d}   (time per NFE vs one bare MLP call)"
        )
        # the adaptive ODE through the core against a bare torchdiffeq.odeint call on the same right-hand side
        emit("")
        emit(adaptive_vs_bare(sde, f, x_T, repeats, calls))

        if args.reference_steps > 0:
            # the score network of the likelihood's overhead line: 64-D, 512 wide, batch 128
            ref = load_mlp_score()(64, 512)
            x_ref = torch.randn(128, 64, generator=torch.Generator().manual_seed(1))
            grid_ref = ss.make_grid(sde, "uniform", args.reference_steps)
            n_ref = args.reference_steps
            t_ref = best_of({"mlp": lambda: [ref(x_ref, torch.full((128,), 0.5)) for _ in range(n_ref)]}, repeats)
            emit(
                f"\nreference network: the 64-D MLP score of benchmarks/likelihood_overhead.py "
                f"(64+32 -> 512 x 3 -> 64, Fourier time features), batch 128, {n_ref} steps: "
                f"{t_ref['mlp'] / n_ref * 1e6:.0f} us/call\n"
            )
            ref_ratios = stepper_table(emit, ref, sde, x_ref, grid_ref, repeats)
            emit(f"worst paired ratio, reference network: {max(ref_ratios.values()):.3f} (target <= 1.02)")
    if args.out:
        import os

        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
