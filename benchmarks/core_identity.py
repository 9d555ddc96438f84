"""Behaviour lock for refactors of the integrator core: every sampler's output and the likelihood, bit for bit.

Records, on fixed exact-score problems (a 3-component 2-D Gaussian mixture under VP, sub-VP and VE, float64,
fixed seeds), the output of every registered sampler that fits the SDE (10 grid steps; the adaptive ``ode``
and ``sde`` back-ends at their defaults) and ``ss.log_likelihood`` (exact and Hutchinson divergence,
augmented and quadrature schemes). ``--record FILE`` writes them (floats as exact hex strings);
``--check FILE`` recomputes and prints, per entry, whether it is bit-identical and the largest absolute
difference, and exits 1 when an entry differs by more than ``--tol`` (default 0: bit-identity).

    .venv/bin/python benchmarks/core_identity.py --record benchmarks/results/core_identity_before.json
    .venv/bin/python benchmarks/core_identity.py --check benchmarks/results/core_identity_before.json
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import torch

import score_sde as ss

SDES = {
    "vp": lambda: ss.VPSDE(0.1, 20.0, N=1000),
    "subvp": lambda: ss.SubVPSDE(0.1, 20.0, N=1000),
    "ve": lambda: ss.VESDE(0.01, 10.0, N=1000),
}
B, STEPS = 8, 10
# option variants run beside each sampler's defaults (a variant the SDE does not fit is recorded as refused)
VARIANTS = {
    "ancestral": [{"variance": "fixed_large"}, {"clip_denoised": True}],
    "ddim": [{"eta": 1.0}, {"eta": 0.5, "clip_denoised": True}],
    "dpmpp_2m": [{"variant": "bh1"}, {"lower_order_final": False}],
    "dpmpp_2m_sde": [{"eta": 0.5}],
    "edm": [{"S_churn": 40.0}],
    "pc": [{"predictor": "euler_maruyama", "corrector": "annealed_langevin", "corrector_steps": 2},
           {"predictor": "ancestral", "corrector": "none"}, {"snr": 0.1, "per_sample_norms": True}],
    "reverse_diffusion": [{"discretization": "chain"}],
    "restart": [{"K": 2}],
    "sde": [{"method": "milstein"}],
    "unipc": [{"order": 3}],
}


def mixture() -> ss.analytic.GaussianMixture:
    weights = torch.tensor([0.5, 0.3, 0.2])
    means = torch.tensor([[-1.0, 0.5], [1.0, -0.5], [0.0, 1.5]])
    covs = torch.stack([torch.eye(2) * 0.05, torch.tensor([[0.1, 0.03], [0.03, 0.08]]), torch.eye(2) * 0.02])
    return ss.analytic.GaussianMixture(weights, means, covs)


def _hex(t: torch.Tensor) -> list[str]:
    return [float(v).hex() for v in t.detach().to(torch.float64).flatten().tolist()]


def sampler_runs(gmm) -> dict:
    out = {}
    for sde_name, make in SDES.items():
        sde = make()
        score = gmm.score_fn(sde)
        x_T = sde.prior_sampling((B, 2), generator=torch.Generator().manual_seed(1))
        runs = [(name, {}) for name in ss.available_samplers()]
        runs += [(name, v) for name in ss.available_samplers() for v in VARIANTS.get(name, [])]
        for name, variant in runs:
            opts = {"rtol": 1e-5, "atol": 1e-5} if name == "ode" else {}
            opts.update(variant)
            steps = None if name == "ode" else STEPS
            key = f"sample/{sde_name}/{name}" + "".join(f",{k}={v}" for k, v in sorted(variant.items()))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = ss.sample(sde, score, x_T=x_T.clone(), sampler=name, steps=steps,
                                    generator=torch.Generator().manual_seed(2), **opts)  # fmt: skip
            except ValueError as e:  # the sampler does not fit this SDE (e.g. ancestral on sub-VP)
                out[key] = {"refused": str(e).split(";")[0]}
                continue
            out[key] = {"x": _hex(res.x), "nfe": int(res.nfe)}
    return out


def likelihood_runs(gmm) -> dict:
    out = {}
    x = gmm.sample(6, generator=torch.Generator().manual_seed(3))
    for sde_name, make in SDES.items():
        sde = make()
        score = gmm.score_fn(sde)
        for div in ("exact", "hutchinson"):
            for scheme in ("augmented", "quadrature"):
                res = ss.log_likelihood(sde, score, x, divergence=div, scheme=scheme,
                                        generator=torch.Generator().manual_seed(4))  # fmt: skip
                out[f"likelihood/{sde_name}/{div}/{scheme}"] = {"x": _hex(res.logp), "nfe": int(res.nfe)}
    return out


def compute() -> dict:
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    gmm = mixture()
    return {**sampler_runs(gmm), **likelihood_runs(gmm)}


def compare(before: dict, after: dict, tol: float) -> int:
    bad = 0
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if a is None:  # a sampler registered after the record was made: nothing to compare
            print(f"{key:70s} new (not in the record)")
            continue
        if b is None:
            print(f"{key:70s} MISSING AFTER")
            bad += 1
            continue
        if "refused" in a or "refused" in b:
            same = ("refused" in a) == ("refused" in b)
            print(f"{key:70s} {'refused (both)' if same else 'REFUSAL CHANGED'}")
            bad += not same
            continue
        va = torch.tensor([float.fromhex(v) for v in a["x"]])
        vb = torch.tensor([float.fromhex(v) for v in b["x"]])
        if va.shape != vb.shape:
            print(f"{key:70s} SHAPE CHANGED {tuple(va.shape)} -> {tuple(vb.shape)}")
            bad += 1
            continue
        diff = (va - vb).abs().max().item() if va.numel() else 0.0
        ident = a["x"] == b["x"]
        nfe = "" if a["nfe"] == b["nfe"] else f"  NFE {a['nfe']} -> {b['nfe']}"
        print(f"{key:70s} {'bit-identical' if ident else f'max |diff| {diff:.3e}'}{nfe}")
        bad += (diff > tol) or bool(nfe)
    print(f"{len(set(before) | set(after))} entries, {bad} outside tolerance {tol:g}")
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--record", metavar="FILE")
    g.add_argument("--check", metavar="FILE")
    ap.add_argument("--tol", type=float, default=0.0, help="largest allowed absolute difference (default 0)")
    args = ap.parse_args(argv)
    now = compute()
    if args.record:
        with open(args.record, "w") as f:
            json.dump(now, f, indent=0, sort_keys=True)
        print(f"recorded {len(now)} entries to {args.record}")
        return 0
    with open(args.check) as f:
        before = json.load(f)
    return 1 if compare(before, now, args.tol) else 0


if __name__ == "__main__":
    sys.exit(main())
