"""PF-ODE log-likelihood: score_sde vs the official code's scipy loop and vs k-diffusion.

All three solve the same augmented ODE d(x, Delta)/dt = (f~, div f~) with an exact score, so their
answers can be held against the analytic truth log p_eps(x) (prior mismatch removed exactly, as in the
tests). Printed: wall time, NFE (score-network calls) and the error, with ratios against each peer.

(a) "official": the official score_sde likelihood recipe (likelihood.py of yang-song/score_sde_pytorch)
    as that code runs it, re-written from its description: Hutchinson only (one Rademacher probe drawn
    once), flatten, float32 numpy round trips every call, scipy ``solve_ivp(RK45)`` on the augmented
    system; per right-hand side one drift call without gradients and one more drift call inside the
    divergence's autograd graph (forward + backward). The official code has no exact divergence, so
    our exact divergence is not compared with it here.
(b) k-diffusion's ``sampling.log_likelihood`` (torchdiffeq dopri5 in sigma, one Rademacher probe), loaded
    standalone (its sampling.py needs only ``utils.append_dims``; the package's other imports need
    torchvision). It runs on VE, where x~ = x and sigma~ = sigma, on a problem with a diagonal score
    Jacobian (independent coordinates), where one Rademacher probe gives the exact divergence, so its
    answer can be held against the truth too.

(c) the official recipe again with a time-conditioned MLP score network (random weights,
    32-512-512-512-32 with Fourier time features), where the network, not the solver, dominates; the
    reference is the same ODE (same probe) solved by score_sde in float64 at 1e-10.

Method. Every row is timed side by side with its peer (round-robin, one warm-up run each, median of
``--repeats``), so load from other processes hits both alike. "Equal tolerance" runs both at the same
rtol = atol. "Equal accuracy" is symmetric: one target error per problem (``--target-mixture``,
``--target-mlp``, nats/dim, above the float32 round-off of ~2e-7 on the MLP), and each side runs at its
own loosest tolerance on a ladder (1e-2 down to 1e-7) whose error meets it; the errors along both ladders
are printed. In (a) every number is over ``--batches`` batches of ``--batch`` samples (errors: max over
all samples): on a single batch the two adaptive solvers' errors scatter by up to ~10x from batch to batch.

Why the Hutchinson ratios stay near 1x (measured; README "Likelihood"): per right-hand side the official
loop pays a no-grad forward + a forward + a backward, we pay a forward + a backward, so even with no
other overhead the ratio at equal NFE is at most ~1.5x for a network and ~1.3x for the cheap analytic
mixture score; and torchdiffeq's dopri5 needs ~10-25% more NFE than scipy's RK45 (the same
Dormand-Prince pair) for the same error, because its controller never shrinks the step after an accepted
step. Integrating in log-SNR, -ln alpha or sqrt(t) (with or without x~ = x / alpha) moved along the same
error-vs-NFE curve. The exact divergence is where the single, batched evaluation pays: D
vector-Jacobian products in one vmapped backward instead of D separate backward passes.

Every comparison runs both of our schemes: ``scheme="augmented"`` (the default: (x, Delta) solved jointly) and
``scheme="quadrature"`` (x alone with forward passes only, Delta by adaptive Clenshaw–Curtis quadrature at
batched nodes on the path), which wins where the divergence dominates (exact divergence of a network) and
loses with one Hutchinson probe. Output of a full run: benchmarks/results/likelihood_vs_official.txt.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/likelihood_vs_official.py [--quick]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import sys
import time
import types
from functools import partial

import numpy as np
import torch
from scipy.integrate import solve_ivp

import score_sde as ss
from score_sde import testing

EPS = 1e-5
SCHEMES = ("augmented", "quadrature")  # score_sde.log_likelihood(scheme=...)


# ---- problems -------------------------------------------------------------------------------------
random_mixture = testing.random_mixture  # K = 3 components with full covariances (the tests' recipe)
ProductOfMixtures = testing.ProductOfMixtures  # d independent 1-D mixtures: a diagonal score Jacobian


# ---- (a) the official loop, written from its description ---------------------------------------------
def official_style_log_likelihood(sde, score_fn, x, rtol, atol, eps=EPS, divergence="hutchinson", probe=None):
    """scipy RK45 on the flattened augmented state with float32 numpy round trips at every call."""
    shape, B = x.shape, x.shape[0]
    rsde = sde.reverse(score_fn, probability_flow=True)
    calls = [0]

    def drift_fn(xx, t):
        calls[0] += 1
        return rsde.drift(xx, t)

    def div_fn(xx, t):
        with torch.enable_grad():
            xx = xx.detach().requires_grad_(True)
            fn = drift_fn(xx, t)
            if divergence == "hutchinson":
                g = torch.autograd.grad((fn * probe).sum(), xx)[0]
                return (g * probe).reshape(B, -1).sum(1)
            D = xx[0].numel()
            flat = fn.reshape(B, -1)
            div = torch.zeros(B, dtype=xx.dtype)
            for i in range(D):
                g = torch.autograd.grad(flat[:, i].sum(), xx, retain_graph=i < D - 1)[0]
                div = div + g.reshape(B, -1)[:, i]
            return div

    def ode_func(t, y):
        sample = torch.from_numpy(y[:-B].reshape(shape)).to(torch.float32)
        vec_t = torch.ones(B, dtype=torch.float32) * t
        drift = drift_fn(sample, vec_t).detach().cpu().numpy().reshape(-1)
        logp_grad = div_fn(sample, vec_t).detach().cpu().numpy().reshape(-1)
        return np.concatenate([drift, logp_grad], axis=0)

    init = np.concatenate([x.detach().cpu().numpy().reshape(-1), np.zeros(B)], axis=0)
    with torch.no_grad():  # as the official likelihood_fn; div_fn re-enables grad for its own forward
        sol = solve_ivp(ode_func, (eps, sde.T), init, rtol=rtol, atol=atol, method="RK45")
    zp = sol.y[:, -1]
    z = torch.from_numpy(zp[:-B].reshape(shape)).to(torch.float32)
    delta = torch.from_numpy(zp[-B:]).to(torch.float32)
    return z, delta, calls[0], sol.nfev


# ---- (b) k-diffusion, standalone --------------------------------------------------------------------
def load_k_diffusion_sampling():
    """k_diffusion.sampling without the package's heavy imports, or (None, reason)."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None, "k-diffusion is not installed (pip install --no-deps k-diffusion)"
    path = list(spec.submodule_search_locations)[0] + "/sampling.py"
    pkg = types.ModuleType("_kd_standalone")
    pkg.__path__ = []
    utils = types.ModuleType("_kd_standalone.utils")

    def append_dims(x, target_dims):
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims
    pkg.utils = utils
    sys.modules["_kd_standalone"], sys.modules["_kd_standalone.utils"] = pkg, utils
    try:
        sspec = importlib.util.spec_from_file_location("_kd_standalone.sampling", path)
        mod = importlib.util.module_from_spec(sspec)
        sspec.loader.exec_module(mod)
    except Exception as e:  # an import it needs is missing
        return None, f"k_diffusion/sampling.py does not load standalone: {e!r}"
    return mod, None


# ---- timing ---------------------------------------------------------------------------------------
def timed_pair(fns, repeats):
    """Median wall times of the callables in ``fns``, run round-robin ``repeats`` times after one warm-up run
    each (so that load from other processes hits all of them alike), and each one's last result."""
    times, outs = [[] for _ in fns], [None] * len(fns)
    for fn in fns:  # warm-up: first-call costs (allocations, autograd set-up) are not what is compared
        fn()
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            outs[k] = fn()
            times[k].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times], outs


def err_per_dim(est, true, d):
    return ((est.double() - true.double()).abs().max() / d).item()


def row(name, sec, nfe, err, ref_sec=None, ref_nfe=None):
    ratio = f"  speed-up x{ref_sec / sec:5.2f}" if ref_sec else ""
    ratio += f"  nfe ratio x{ref_nfe / nfe:5.2f}" if ref_nfe else ""
    print(f"  {name:<50s} {sec * 1e3:9.1f} ms  nfe {nfe:6d}  max|err|/dim {err:.2e}{ratio}")


LADDER = (1e-2, 5e-3, 2e-3, 1e-3, 5e-4, 2e-4, 1e-4, 5e-5, 2e-5, 1e-5, 5e-6, 2e-6, 1e-6, 5e-7, 2e-7, 1e-7)


def loosest(fn, error, which, target):
    """The loosest tolerance on LADDER whose error is at most ``target`` (None if none); prints the errors."""
    seen = []
    for tol in LADDER:
        out, nfe = fn(tol)
        e = error(out, which)
        seen.append(f"{tol:g}: {e:.1e}")
        if e <= target:
            print(f"    {which:<8s} error by tolerance  " + ", ".join(seen))
            return tol
    print(f"    {which:<8s} error by tolerance  " + ", ".join(seen) + "  (target not reached)")
    return None


def compare(label, official, ours, error, tols, repeats, summary, target):
    """Equal-tolerance rows at each of ``tols``, then the equal-accuracy row: each side at its own loosest tolerance
    on LADDER whose error is at most ``target`` (the same target for both), timed again side by side.

    official(tol) -> (results, nfe); ours(tol) -> (results, nfe); error(results, which) -> max error/dim."""
    for tol in tols:
        (sec_o, sec_s), ((out_o, nfe_o), (out_s, nfe_s)) = timed_pair(
            [partial(official, tol), partial(ours, tol)], repeats
        )
        e_o, e_s = error(out_o, "official"), error(out_s, "ours")
        print(f" {label}, rtol = atol = {tol:g}")
        row("official recipe (scipy RK45, float32 net, 2 calls/RHS)", sec_o, nfe_o, e_o)
        row("score_sde.log_likelihood", sec_s, nfe_s, e_s, sec_o, nfe_o)
        summary.append((label, "equal tol", f"{tol:g}", f"{tol:g}", nfe_o, nfe_s, sec_o / sec_s, e_o, e_s))
    print(f" {label}, equal accuracy: each side at its loosest tolerance with error <= {target:g} nats/dim")
    t_o, t_s = loosest(official, error, "official", target), loosest(ours, error, "ours", target)
    if t_o is None or t_s is None:
        return
    (sec_o, sec_s), ((out_o, nfe_o), (out_s, nfe_s)) = timed_pair([partial(official, t_o), partial(ours, t_s)], repeats)
    e_o, e_s = error(out_o, "official"), error(out_s, "ours")
    row(f"official recipe at {t_o:g}", sec_o, nfe_o, e_o)
    row(f"score_sde.log_likelihood at {t_s:g}", sec_s, nfe_s, e_s, sec_o, nfe_o)
    summary.append((label, f"acc. <= {target:g}", f"{t_o:g}", f"{t_s:g}", nfe_o, nfe_s, sec_o / sec_s, e_o, e_s))


def part_a(d, B, nb, repeats, tols, summary, target):
    print(
        f"\n(a) vs the official scipy RK45 loop: VP, {d}-D 3-component mixture, {nb} batches of {B}, float32 data, "
        f"eps = {EPS}\n    (times and NFE summed over the batches; errors: max over all samples, nats/dim)"
    )
    sde = ss.VPSDE()
    gmm = random_mixture(d, seed=1)
    score = gmm.score_fn(sde)
    xs = [gmm.sample(B, generator=torch.Generator().manual_seed(b)).float() for b in range(nb)]
    probes = [
        (torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(100 + b)) * 2 - 1).float()
        for b, x in enumerate(xs)
    ]

    def corrected(z, delta):  # Delta + log p_T(z): the prior mismatch taken out exactly
        return delta.double() + gmm.log_prob(z.double(), sde.T, sde)

    truth = {"hutchinson": []}
    for x, v in zip(xs, probes):  # one fixed probe: the target is that probe's ODE, solved in float64 at 1e-10
        ref = ss.log_likelihood(sde, score, x.double(), divergence="hutchinson", probes=v, rtol=1e-10, atol=1e-10)
        truth["hutchinson"].append(corrected(ref.z, ref.delta))

    for divergence in ("hutchinson",):  # the official likelihood is Hutchinson-only

        def official(tol, divergence=divergence):
            outs = [
                official_style_log_likelihood(sde, score, x, tol, tol, divergence=divergence, probe=v)
                for x, v in zip(xs, probes)
            ]
            return [(z, dl) for z, dl, _, _ in outs], sum(o[2] for o in outs)

        def error(outs, _which, divergence=divergence):
            return max(err_per_dim(corrected(z, dl), t, d) for (z, dl), t in zip(outs, truth[divergence]))

        for scheme in SCHEMES:

            def ours(tol, divergence=divergence, scheme=scheme):
                res = [
                    ss.log_likelihood(sde, score, x, divergence=divergence, probes=v, rtol=tol, atol=tol, scheme=scheme)
                    for x, v in zip(xs, probes)
                ]
                return [(r.z, r.delta) for r in res], sum(r.nfe for r in res)

            compare(f"mixture, {divergence}, {scheme[:5]}", official, ours, error, tols, repeats, summary, target)


def part_b(d, B, repeats, tols):
    print(f"\n(b) vs k-diffusion log_likelihood: VE, {d} independent 1-D mixtures, batch {B}, float32, eps = {EPS}")
    kd, why = load_k_diffusion_sampling()
    if kd is None:
        print(f"  skipped: {why}")
        return []
    sde = ss.VESDE()
    prob = ProductOfMixtures(d)
    x = prob.sample(B, torch.Generator().manual_seed(0)).float()
    true = prob.log_prob(x.double(), EPS, sde)

    def score(y, t):
        return prob.score(y, t, sde)

    # k-diffusion returns no latent: the prior mismatch log p_T - log pi is taken out at a float64 latent
    z_ref = ss.encode(sde, score, x.double(), rtol=1e-10, atol=1e-10)
    mismatch = prob.log_prob(z_ref, sde.T, sde) - sde.prior_logp(z_ref)
    s_min, s_max = float(sde.sigma(torch.tensor(EPS))), float(sde.sigma(torch.tensor(1.0)))

    def denoiser(xx, sigma):  # D(x, sigma) = x + sigma^2 grad log p_sigma(x); VE: sigma~ = sigma, t = t(sigma)
        t = sde.t_from_log_snr(-torch.log(sigma.double())).to(xx.dtype)
        return xx + (sigma**2)[:, None] * score(xx, t)

    def kdiff(tol):
        torch.manual_seed(0)
        return kd.log_likelihood(denoiser, x, s_min, s_max, atol=tol, rtol=tol)

    def ours(tol, scheme):
        gen = torch.Generator().manual_seed(0)
        return ss.log_likelihood(
            sde, score, x, divergence="hutchinson", rtol=tol, atol=tol, generator=gen, scheme=scheme
        )

    summary = []
    for tol in tols:
        print(f" rtol = atol = {tol:g} (one Rademacher probe each: exact for a diagonal Jacobian)")
        for scheme in SCHEMES:
            (sec_k, sec_s), ((ll_k, info), res) = timed_pair([partial(kdiff, tol), partial(ours, tol, scheme)], repeats)
            e_k = err_per_dim(ll_k.double() + mismatch, true, d)
            e_s = err_per_dim(res.logp.double() + mismatch, true, d)
            row("k-diffusion log_likelihood (dopri5 in sigma)", sec_k, info["fevals"], e_k)
            row(f"score_sde.log_likelihood ({scheme}, dopri5 in t)", sec_s, res.nfe, e_s, sec_k, info["fevals"])
            summary.append((f"{tol:g} {scheme[:5]}", sec_k / sec_s, e_k, e_s))
    return summary


class MLPScore(torch.nn.Module):
    """A time-conditioned MLP score network (random weights): the network, not the problem, dominates.

    Time enters through 16 Gaussian Fourier features sin/cos(2 pi w t), w ~ N(0, 4^2) (as NCSN++'s
    time embedding), so that the field changes along the path and the solvers' errors, not float32
    round-off, set the accuracy at loose tolerances."""

    def __init__(self, d: int, width: int, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.register_buffer("w", 4.0 * torch.randn(16))
        self.net = torch.nn.Sequential(
            torch.nn.Linear(d + 32, width),
            torch.nn.SiLU(),
            torch.nn.Linear(width, width),
            torch.nn.SiLU(),
            torch.nn.Linear(width, width),
            torch.nn.SiLU(),
            torch.nn.Linear(width, d),
        )
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x, t):
        a = 2 * math.pi * t.to(x.dtype)[:, None] * self.w.to(x.dtype)
        return self.net(torch.cat([x, a.sin(), a.cos()], 1)) - x


def part_c(d, B, width, repeats, tol, summary, target):
    print(f"\n(c) vs the official loop, MLP score network ({d}-{width}-{width}-{width}-{d}), VP, batch {B}, float32")
    print("    error against the same ODE solved by score_sde in float64 at 1e-10 (float64 copy of the network)")
    sde = ss.VPSDE()
    net = MLPScore(d, width)
    x = torch.randn(B, d, generator=torch.Generator().manual_seed(0))
    probe = (torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(3)) * 2 - 1).float()
    net64 = MLPScore(d, width).double()
    for divergence in ("hutchinson",):  # the official likelihood is Hutchinson-only
        ref = ss.log_likelihood(sde, net64, x.double(), divergence=divergence, probes=probe, rtol=1e-10, atol=1e-10)

        def official(t, divergence=divergence):
            z, dl, nfe, _ = official_style_log_likelihood(sde, net, x, t, t, divergence=divergence, probe=probe)
            return (z, dl), nfe

        def error(out, _which, ref=ref):  # both sides: log pi(z) + Delta from the float32 outputs, in float64
            z, dl = out
            return err_per_dim(sde.prior_logp(z.double()) + dl.double(), ref.logp, d)

        for scheme in SCHEMES:

            def ours(t, divergence=divergence, scheme=scheme):
                r = ss.log_likelihood(sde, net, x, divergence=divergence, probes=probe, rtol=t, atol=t, scheme=scheme)
                return (r.z, r.delta), r.nfe

            compare(f"MLP net, {divergence}, {scheme[:5]}", official, ours, error, (tol,), repeats, summary, target)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8-D, one batch of 8, one tolerance, one repeat")
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--target-mixture", type=float, default=1e-4, help="equal-accuracy target (nats/dim), (a)")
    ap.add_argument("--target-mlp", type=float, default=1e-5, help="equal-accuracy target (nats/dim), (c)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    d, B, nb = (8, 8, 1) if args.quick else (args.dim, args.batch, args.batches)
    repeats = 1 if args.quick else args.repeats
    tols = (1e-5,) if args.quick else (1e-5, 1e-4)
    print(
        f"torch {torch.__version__}, 1 thread, CPU; times are medians of {repeats} run(s), ours and theirs interleaved"
    )
    summary = []
    part_a(d, B, nb, repeats, tols, summary, args.target_mixture)
    b = part_b(d, B, repeats, tols)
    part_c(d, B, 128 if args.quick else 512, repeats, 1e-5, summary, args.target_mlp)
    print("\nsummary: speed-up = official-style time / our time (target >= 2x); errors max over samples, nats/dim")
    print(
        f"  {'problem':<30s} {'comparison':<15s} {'tol theirs':>10s} {'tol ours':>9s} {'NFE theirs':>10s} "
        f"{'NFE ours':>8s} {'speed-up':>9s} {'err theirs':>10s} {'err ours':>9s}"
    )
    for label, kind, t_o, t_s, n_o, n_s, r, e_o, e_s in summary:
        ok = "" if r >= 2 else "  (< 2x)"
        print(
            f"  {label:<30s} {kind:<15s} {t_o:>10s} {t_s:>9s} {n_o:>10d} {n_s:>8d} {r:>8.2f}x "
            f"{e_o:>10.1e} {e_s:>9.1e}{ok}"
        )
    for tol, r, e_k, e_s in b:
        print(f"  vs k-diffusion (VE, diagonal Jacobian, 1 probe) tol {tol}: x{r:5.2f}; err {e_k:.1e}, ours {e_s:.1e}")


if __name__ == "__main__":
    main()
