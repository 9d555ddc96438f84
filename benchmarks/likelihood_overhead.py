"""Per-call overhead of ``ss.log_likelihood`` against one bare forward-and-backward of the score network.

Problem (issue 18): a Hutchinson estimate (one Rademacher probe) of log p_eps(x) under VP on a 64-D
time-conditioned MLP score (random weights, 64-512-512-512-64 with Fourier time features: the ``MLPScore`` of
benchmarks/likelihood_vs_official.py), batch 128, float32 data, rtol = atol = 1e-5, 2 threads.

Printed, each a median of ``--repeats`` interleaved runs:

1. ``F+B``: one bare forward of the network and one vector-Jacobian product with the probe
   (``torch.autograd.grad(s, x, v)``), the least any augmented right-hand side can cost;
2. our time per right-hand-side call (the whole ``ss.log_likelihood`` call divided by its NFE) and its ratio
   to (1) (target <= 1.1);
3. the official recipe (``official_style_log_likelihood`` of benchmarks/likelihood_vs_official.py: scipy RK45,
   float32 numpy round trips, a no-grad forward for the drift and a forward + backward for the divergence)
   against ``ss.log_likelihood`` at the same tolerance: total time, NFE, time per call, and the speed-up
   (target >= 1.3), (a) for our default (torchdiffeq's ``dopri5`` through score_sde.solvers.lean_rk; error norm:
   the larger of the RMS error ratios of x and of Delta), (b) in the official recipe's norm
   (``options={"norm": "rms"}``: the RMS over the whole flat state) for ``dopri5`` and for ``method="scipy_rk45"``
   (scipy's RK45, the official recipe's integrator), and for ``method="scipy_rk45"`` with our norm and for
   ``state_dtype=torch.float32``;
4. where one call's time goes (inside our right-hand side or in the ODE solver), the errors at that tolerance
   against the same ODE solved in float64 at 1e-10, (c) our default at equal accuracy, and a what-if that is not
   a score_sde path: our right-hand side integrated by scipy's RK45 (the official recipe's step-size controller
   and error norm), which separates the cost of a right-hand side from the number of them;
5. a hand-written augmented solve of the same problem (the least right-hand side, dopri5 in our default norm)
   through ``torchdiffeq.odeint`` and through the lean stages, and our default against the latter (paired): the
   cost of score_sde's layers over the floor of any implementation on that solver; (d) the most any right-hand side
   could give at our default's NFE (one bare F+B per call, no solver at all) against the official recipe;
6. the ODE solver alone on a flat state of the same size with a cheap right-hand side: torchdiffeq's ``dopri5``
   (``torchdiffeq.odeint``) against the lean stages, per call.

Run: ``.venv/bin/python benchmarks/likelihood_overhead.py --repeats 9`` (output:
benchmarks/results/likelihood_overhead.txt).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
from pathlib import Path

import torch
from scipy.integrate import solve_ivp

import score_sde as ss

HERE = Path(__file__).resolve().parent


def load_peer():
    """benchmarks/likelihood_vs_official.py as a module (its official-recipe runner and MLP score)."""
    spec = importlib.util.spec_from_file_location("_likelihood_vs_official", HERE / "likelihood_vs_official.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def medians(fns, repeats, clock=time.process_time, raw=None):
    """Median time of each callable (round-robin after one warm-up each) and each one's last result; ``raw``, a
    list, receives every callable's times (one per round)."""
    times, outs = [[] for _ in fns], [None] * len(fns)
    if raw is not None:
        raw[:] = times
    for fn in fns:
        fn()
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = clock()
            outs[k] = fn()
            times[k].append(clock() - t0)
    return [statistics.median(t) for t in times], outs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cpu: the process's CPU time (robust on a shared machine; the default), wall: elapsed time",
    )
    ap.add_argument("--fb-calls", type=int, default=40, help="bare F+B (and bare RHS) calls per timed repeat")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    peer = load_peer()
    d, B, tol = args.dim, args.batch, args.tol
    sde = ss.VPSDE()
    net = peer.MLPScore(d, args.width)
    x = torch.randn(B, d, generator=torch.Generator().manual_seed(0))
    probe = (torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(3)) * 2 - 1).float()
    tv = torch.full((B,), 0.5)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), CPU; VP, MLP {d}-{args.width}x3-{d}, batch {B}, "
        f"float32 data, Hutchinson (1 Rademacher probe), rtol = atol = {tol:g}; {args.clock} time, medians of "
        f"{args.repeats} interleaved runs; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )

    def bare_fb():
        for _ in range(args.fb_calls):
            xin = x.detach().requires_grad_(True)
            torch.autograd.grad(net(xin, tv), xin, probe)

    rhs = augmented_rhs(sde, net, x, probe)
    y = torch.cat((x.double().reshape(-1), torch.zeros(B, dtype=torch.float64)))
    t_half = torch.tensor(0.5, dtype=torch.float64)

    def bare_rhs():
        for _ in range(args.fb_calls):
            rhs(t_half, y)

    def official():
        return peer.official_style_log_likelihood(sde, net, x, tol, tol, probe=probe)

    hand_td, hand_lean = (hand_written(sde, net, x, probe, tol, solver) for solver in ("torchdiffeq", "lean"))

    def ours(**kw):
        def run():
            return ss.log_likelihood(sde, net, x, divergence="hutchinson", probes=probe, rtol=tol, atol=tol, **kw)

        return run

    # (label, keywords, group): (a) our default at the official recipe's tolerance; (b) the same tolerance in the
    # same error norm as the official recipe (the RMS over the whole flat state); other paths
    variants = [
        ("default (dopri5, split norm)", {}, "a"),
        ("dopri5, norm='rms'", {"options": {"norm": "rms"}}, "b"),
        ("scipy_rk45, norm='rms'", {"method": "scipy_rk45", "options": {"norm": "rms"}}, "b"),
        ("scipy_rk45 (split norm)", {"method": "scipy_rk45"}, " "),
        ("dopri5, state_dtype=float32", {"state_dtype": torch.float32}, " "),
    ]
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    fns = [bare_fb, bare_rhs, official] + [ours(**kw) for _, kw, _ in variants] + [hand_td, hand_lean]
    rounds = []
    secs, outs = medians(fns, args.repeats, clock, raw=rounds)
    fb, one_rhs = secs[0] / args.fb_calls, secs[1] / args.fb_calls
    print(f"\n  one bare forward + vector-Jacobian product of the net (F+B): {fb * 1e3:7.3f} ms")
    print(f"  our augmented right-hand side alone, called at a fixed state: {one_rhs * 1e3:7.3f} ms = "
          f"{one_rhs / fb:5.3f} x F+B")
    sec_o, (z_o, dl_o, calls_o, _) = secs[2], outs[2]
    nfe_o = calls_o // 2  # the recipe calls the net twice per right-hand side
    print(f"  official recipe (scipy RK45, 2 net calls per RHS): {sec_o * 1e3:8.1f} ms, {nfe_o:4d} RHS, "
          f"{sec_o / nfe_o * 1e3:6.3f} ms/RHS = {sec_o / nfe_o / fb:5.2f} x F+B")
    print("  score_sde.log_likelihood (whole call / NFE; targets: <= 1.10 x F+B per RHS, >= 1.30x the official speed)")
    print(f"  (a) at the official's tolerance {tol:g}, our default error norm (the larger RMS of x's and of Delta's "
          "errors);\n  (b) the same tolerance in the official's norm (the RMS over the whole flat state [x, Delta])")
    print("  (paired: the median over rounds of the ratio within a round, F+B and the official recipe timed in it)")
    k_hand = 3 + len(variants)  # the two hand-written solves: torchdiffeq.odeint, the lean stages
    print("  hand-written augmented solve (a minimal right-hand side: one F+B, the VP drift in place; dopri5, our "
          "default norm), the floor of any implementation on that solver:")
    for k, name in ((k_hand, "through torchdiffeq.odeint"), (k_hand + 1, "through the lean stages")):
        nfe_h = outs[k][2]
        pair_fb = statistics.median(t / nfe_h / (f / args.fb_calls) for t, f in zip(rounds[k], rounds[0]))
        print(f"     {name:<28s} {secs[k] * 1e3:8.1f} ms, {nfe_h:4d} RHS, {secs[k] / nfe_h * 1e3:6.3f} ms/RHS = "
              f"{secs[k] / nfe_h / fb:5.3f} x F+B (paired {pair_fb:5.3f})")
    for k, ((name, _, group), sec, res) in enumerate(zip(variants, secs[3:], outs[3:]), start=3):
        per = sec / res.nfe
        pair_fb = statistics.median(t / res.nfe / (f / args.fb_calls) for t, f in zip(rounds[k], rounds[0]))
        pair_o = statistics.median(o / t for t, o in zip(rounds[k], rounds[2]))
        pair_h = statistics.median(t / h for t, h in zip(rounds[k], rounds[k_hand + 1]))
        print(
            f"   {group} {name:<28s} {sec * 1e3:8.1f} ms, {res.nfe:4d} RHS, {per * 1e3:6.3f} ms/RHS = {per / fb:5.3f} "
            f"x F+B (paired {pair_fb:5.3f}); speed-up vs official x{sec_o / sec:5.2f} (paired {pair_o:4.2f})"
            + (f"; x{pair_h:5.3f} the hand-written lean solve (paired)" if k == 3 else "")
        )
    nfe_a = outs[3].nfe
    print(f"  (d) the most any right-hand side could give at the default's {nfe_a} RHS, one bare F+B each "
          f"and no solver at all: {sec_o * 1e3:.1f} / ({nfe_a} x {fb * 1e3:.3f}) ms = x{sec_o / (nfe_a * fb):5.2f} "
          f"the official speed (the official recipe takes {nfe_o} RHS of {sec_o / nfe_o / fb:4.2f} F+B)")
    # where the time of the whole call goes: inside our right-hand side (score, divergence, drift) or in the solver
    for name, kw, _ in variants[:3]:
        splits = [split_time(clock, ours(**kw)) for _ in range(args.repeats)]
        inside, total, nfe = (statistics.median(v) for v in zip(*splits))
        print(f"  {name}, the call split (medians): {inside / nfe * 1e3:6.3f} ms/RHS inside our right-hand side "
              f"({inside / nfe / fb:5.3f} x F+B), {(total - inside) / nfe * 1e3:6.3f} ms/RHS in the ODE solver "
              f"and its wrapper ({(total - inside) / nfe / fb:5.3f} x F+B)")
    # accuracy at this tolerance, against the same ODE (same probe) solved in float64 at 1e-10
    net64 = peer.MLPScore(d, args.width).double()
    ref = ss.log_likelihood(sde, net64, x.double(), divergence="hutchinson", probes=probe, rtol=1e-10, atol=1e-10)

    def err(z, delta):
        return float((sde.prior_logp(z.double()) + delta.double() - ref.logp).abs().max()) / d

    e_o = err(z_o, dl_o)
    print(f"\n  max |error| / dim at rtol = atol = {tol:g}: official {e_o:.2e}; "
          + "; ".join(f"{name} {err(r.z, r.delta):.2e}" for (name, _, _), r in zip(variants, outs[3:])))
    # equal accuracy: our default at its loosest tolerance whose error is at most the official recipe's
    ladder = [v * tol for v in (20, 10, 5, 2, 1)]
    for t_s in ladder:
        r = ss.log_likelihood(sde, net, x, divergence="hutchinson", probes=probe, rtol=t_s, atol=t_s)
        if err(r.z, r.delta) <= e_o:
            break
    def ours_at():
        return ss.log_likelihood(sde, net, x, divergence="hutchinson", probes=probe, rtol=t_s, atol=t_s)

    (sec_o, sec_s), (_, res) = medians([official, ours_at], args.repeats, clock)
    print(f"  (c) equal accuracy: our default at rtol = atol = {t_s:g} (loosest of {[f'{v:g}' for v in ladder]} with "
          f"error <= the official's): {res.nfe} RHS, error {err(res.z, res.delta):.2e}, {sec_s * 1e3:.1f} ms against "
          f"{sec_o * 1e3:.1f} ms: speed-up x{sec_o / sec_s:5.2f}")
    # what-if (not a score_sde path): our right-hand side under plain scipy RK45, i.e. the official recipe's
    # step-size controller and its error norm (RMS over the whole [x, Delta], where our default takes the larger
    # of the RMS over x and over Delta) with one net call per right-hand side instead of two
    rhs_sp = augmented_rhs(sde, net, x, probe)
    y0 = torch.cat((x.double().reshape(-1), torch.zeros(B, dtype=torch.float64))).numpy()

    def ours_scipy():
        def f(t, y):
            t = torch.tensor(min(max(t, peer.EPS), sde.T), dtype=torch.float64)
            return rhs_sp(t, torch.from_numpy(y)).numpy()

        sol = solve_ivp(f, (peer.EPS, sde.T), y0, rtol=tol, atol=tol, method="RK45")
        end = torch.from_numpy(sol.y[:, -1])
        return end[: B * d].view(B, d), end[B * d :], sol.nfev

    (sec_o, sec_p), (_, (z_p, dl_p, nfe_p)) = medians([official, ours_scipy], args.repeats, clock)
    print(
        f"  what-if, our right-hand side under plain scipy RK45 (the official's norm) at {tol:g}: "
        f"{nfe_p} RHS, error {err(z_p, dl_p):.2e}, {sec_p * 1e3:.1f} ms against {sec_o * 1e3:.1f} ms: "
        f"speed-up x{sec_o / sec_p:5.2f}"
    )
    solver_alone(B * d, B, tol, args.repeats, clock)


def solver_alone(n_x: int, batch: int, tol: float, repeats: int, clock) -> None:
    """The ODE solver's own time per right-hand-side call on a flat float64 state of the likelihood's size
    n = n_x + batch ([x.flatten(), Delta]), with
    a cheap right-hand side (a decaying linear field, a few vector operations, timed alone and subtracted):
    torchdiffeq's dopri5 (``torchdiffeq.odeint``) against the lean stages of score_sde.solvers.lean_rk, the
    same options (the last step landing on the end time, the split error norm of the likelihood)."""
    import torchdiffeq

    from score_sde.likelihood.augmented import _split_norm
    from score_sde.solvers.lean_rk import odeint_lean

    n = n_x + batch
    rate = torch.linspace(0.5, 2.0, n, dtype=torch.float64)
    y0, times = torch.ones(n, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    calls = [0]

    def f(t, y):
        calls[0] += 1
        return -rate * y * torch.cos(t)

    def solve(odeint):
        def run():
            opts = {"step_t": times[-1:].clone(), "norm": _split_norm(n_x)}
            return odeint(f, y0, times, rtol=tol / 100, atol=tol / 100, method="dopri5", options=opts)

        return run

    solve(torchdiffeq.odeint)()
    nfe, calls[0] = calls[0], 0
    solve(odeint_lean)()
    same = calls[0] == nfe

    def rhs_alone():
        for _ in range(nfe):
            f(times[0], y0)

    (s_rhs, s_td, s_lean), _ = medians([rhs_alone, solve(torchdiffeq.odeint), solve(odeint_lean)], 5 * repeats, clock)
    print(
        f"  the ODE solver alone on a flat state of {n} (cheap right-hand side, {nfe} calls, same NFE: {same}): "
        f"torchdiffeq's dopri5 {(s_td - s_rhs) / nfe * 1e6:6.1f} us per call, the lean stages "
        f"{(s_lean - s_rhs) / nfe * 1e6:6.1f} us per call"
    )


def split_time(clock, run):
    """(time inside the augmented right-hand side, total time, NFE) of one call of ``run``: the right-hand side's
    ``__call__`` is wrapped with a timer for the call and put back afterwards."""
    from score_sde.likelihood.augmented import _AugmentedPFODE

    spent = [0.0]
    original = _AugmentedPFODE.__call__

    def timed(self, t, y):
        t0 = clock()
        out = original(self, t, y)
        spent[0] += clock() - t0
        return out

    _AugmentedPFODE.__call__ = timed
    try:
        t0 = clock()
        res = run()
        total = clock() - t0
    finally:
        _AugmentedPFODE.__call__ = original
    return spent[0], total, res.nfe


def hand_written(sde, net, x, probe, tol, solver):
    """A hand-written augmented solve of the same problem, as short as it gets: the right-hand side is one forward
    and one vector-Jacobian product of the net (float32), the Hutchinson sum and VP's drift formed in place in float64
    at Python-float coefficients; dopri5 with our default (split) error norm and the last step on T, through
    ``torchdiffeq.odeint`` or through the lean stages of score_sde.solvers.lean_rk. Returns a callable giving
    (z, Delta, NFE). Not a score_sde path: the floor our right-hand side and wrappers are measured against."""
    import torchdiffeq

    from score_sde.likelihood.augmented import _split_norm
    from score_sde.solvers.lean_rk import odeint_lean

    B, n = x.shape[0], x.numel()
    p64, dims = probe.double(), torch.full((B,), float(x[0].numel()), dtype=torch.float64)
    y0 = torch.cat((x.double().reshape(-1), torch.zeros(B, dtype=torch.float64)))
    times = torch.tensor([1e-5, sde.T], dtype=torch.float64)
    odeint = torchdiffeq.odeint if solver == "torchdiffeq" else odeint_lean
    calls = [0]

    def rhs(t, y):
        calls[0] += 1
        beta = sde.beta_0 + t.item() * (sde.beta_1 - sde.beta_0)
        xx = y[:n].view(x.shape).float().requires_grad_(True)
        with torch.enable_grad():
            s = net(xx, t.float().expand(B))
        (g,) = torch.autograd.grad(s, xx, probe)
        sd = torch.cat((s.detach().reshape(-1), (g * p64).reshape(B, -1).sum(1)))
        return torch.cat((y[:n], dims)).mul_(-0.5 * beta).sub_(sd.mul_(0.5 * beta))

    def run():
        calls[0] = 0
        opts = {"norm": _split_norm(n), "step_t": times[-1:].clone()}
        end = odeint(rhs, y0, times, rtol=tol, atol=tol, method="dopri5", options=opts)[-1]
        return end[:n].view(x.shape), end[n:], calls[0]

    return run


def augmented_rhs(sde, net, x, probe):
    """The right-hand side ``ss.log_likelihood`` integrates (Hutchinson, float64 state), built as it builds it."""
    from score_sde.likelihood import DivergenceOptions
    from score_sde.likelihood.augmented import _AugmentedPFODE
    from score_sde.solvers.base import CountingScore
    from score_sde.utils import ScoreGuard

    score = CountingScore(ScoreGuard(net, "likelihood_overhead"))
    div = DivergenceOptions("hutchinson", probes=probe[None].double(), chunk_size=1, create_graph=False)
    return _AugmentedPFODE(sde, score, div, x.dtype, tuple(x.shape))


if __name__ == "__main__":
    main()
