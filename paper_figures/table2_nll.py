"""Song et al. 2021, Table 2 analogue: negative log-likelihoods through the probability-flow ODE.

(A) Exact scores. For Gaussian mixtures in D = 2, 8 and 32 dimensions under VP, sub-VP and VE, the
ODE log-likelihood ``ss.log_likelihood`` (dopri5, exact divergence and the one-probe Hutchinson
estimator) is compared with the true log p_eps(x) (``GaussianMixture.log_prob`` at t = eps) on
held-out samples: mean |error| in nats at the official tolerance 1e-5 and at a tight one.

(B) Trained models. Two small U-Nets trained the same way on the 8 x 8 digits (17 grey levels),
one under VP and one under sub-VP; test-set bits/dim with uniform dequantization
(``ss.bits_per_dim``, Hutchinson, rtol = atol = 1e-5, eps = 1e-5 as in the paper; 1e-3 in --fast). The paper's
finding to check: sub-VP gives a better (lower) likelihood than VP for the same model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import score_sde as ss
from paper_figures import common
from score_sde import testing

NAME = "table2"


@dataclass
class Config:
    dims: tuple = (2, 8, 32)
    sdes: tuple = ("vp", "subvp", "ve")
    n_points: int = 64
    tols: tuple = (1e-5, 1e-7)
    hutchinson_probes: int = 1
    digits: bool = True
    digits_iters: int = 1500
    digits_test: int = 256
    digits_seeds: tuple = (0,)
    digits_tol: float = 1e-5  # rtol = atol of the digits NLL (official 1e-5)
    seed: int = 0


FAST = dict(dims=(2, 8), n_points=16, tols=(1e-5,), digits_iters=40, digits_test=8, digits_tol=1e-3)


def random_mixture(d: int, k: int = 3, seed: int = 0) -> ss.GaussianMixture:
    """A K-component mixture in d dimensions with random means (scale 2) and full covariances
    (:func:`score_sde.testing.random_mixture`); in 2-D the tables' fixed mixture."""
    if d == 2:
        return common.mixture_2d()
    return testing.random_mixture(d, k, seed)


def exact_part(cfg: Config) -> dict:
    rows = {}
    for d in cfg.dims:
        gmm = random_mixture(d, seed=cfg.seed + d)
        x = gmm.sample(cfg.n_points, generator=torch.Generator().manual_seed(cfg.seed))
        for kind in cfg.sdes:
            sde = common.make_sde(kind)
            eps = 1e-5
            true = gmm.log_prob(x, eps, sde)
            score = gmm.score_fn(sde)
            row = {"true_nll": float(-true.mean())}
            for tol in cfg.tols:
                res = ss.log_likelihood(sde, score, x, divergence="exact", rtol=tol, atol=tol, eps=eps)
                row[f"exact_err_{tol:g}"] = float((res.logp - true).abs().mean())
                row[f"exact_nfe_{tol:g}"] = res.nfe
                # the solver's own error: the exact p_T at the latent instead of the prior N(0, s^2 I)
                solver = gmm.log_prob(res.z, sde.T, sde) + res.delta
                row[f"solver_err_{tol:g}"] = float((solver - true).abs().mean())
            row["prior_mismatch"] = float((gmm.log_prob(res.z, sde.T, sde) - res.prior_logp).abs().mean())
            g = torch.Generator().manual_seed(cfg.seed + 1)
            res = ss.log_likelihood(
                sde, score, x, divergence="hutchinson", probes=cfg.hutchinson_probes, generator=g, rtol=1e-5, atol=1e-5
            )
            diff = res.logp - true
            row["hutch_bias"] = float(diff.mean())
            row["hutch_se"] = float(diff.std() / math.sqrt(diff.numel()))
            row["hutch_abs"] = float(diff.abs().mean())
            rows[f"D={d} {kind}"] = row
    return rows


def digits_part(cfg: Config, ctx: common.Context) -> dict:
    from paper_figures import models
    from score_sde.training.data import get_dataset

    test = get_dataset("digits", "test", n=cfg.digits_test, dtype=torch.float32)
    out = {}
    for kind in ("vp", "subvp"):
        vals, infos = [], []
        for seed in cfg.digits_seeds:
            _, sde, model, info = models.digits_model(kind, cfg.digits_iters, ctx, seed=seed)
            g = torch.Generator().manual_seed(cfg.seed)
            bpd = ss.bits_per_dim(
                sde, models.frozen_score(model), test.quantized, test.scaling, generator=g,
                divergence="hutchinson", rtol=cfg.digits_tol, atol=cfg.digits_tol, eps=1e-5, dtype=torch.float32,
            )  # fmt: skip
            vals.append(bpd)
            infos.append(info)
        b = torch.cat(vals).double()
        out[kind] = dict(bpd=float(b.mean()), se=float(b.std() / math.sqrt(b.numel())), models=infos)
    return out


def run(cfg: Config, ctx: common.Context) -> common.Report:
    torch.set_default_dtype(torch.float64)
    exact = exact_part(cfg)
    digits = digits_part(cfg, ctx) if cfg.digits else {}

    plt = common.plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    ax = axes[0]
    labels = list(exact)
    xs = torch.arange(len(labels))
    w = 0.8 / (len(cfg.tols) + 1)
    for j, tol in enumerate(cfg.tols):
        ax.bar(xs + j * w, [exact[k][f"solver_err_{tol:g}"] for k in labels], w, label=f"exact div., tol {tol:g}")
    ax.bar(xs + len(cfg.tols) * w, [exact[k]["hutch_abs"] for k in labels], w, label="Hutchinson (1 probe), 1e-5")
    ax.set_yscale("log")
    ax.set_xticks(xs + 0.4 - w / 2)
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
    ax.plot(xs + 0.4 - w / 2, [exact[k]["prior_mismatch"] for k in labels], "k_", ms=14, label="prior mismatch")
    ax.set_ylabel("mean |log p_ODE − log p_true| (nats)")
    ax.set_title("(A) PF-ODE likelihood vs exact log-density (exact p_T at the latent)")
    ax.legend(fontsize=7)
    ax = axes[1]
    if digits:
        ks = list(digits)
        ax.bar(ks, [digits[k]["bpd"] for k in ks], yerr=[2 * digits[k]["se"] for k in ks], capsize=4,
               color=["C0", "C1"])  # fmt: skip
        lo = min(digits[k]["bpd"] for k in ks)
        ax.set_ylim(max(0.0, lo - 1.0), None)
        ax.set_ylabel("test bits/dim (uniform dequant.)")
        ax.set_title(f"(B) 8×8 digits, U-Net, {cfg.digits_iters} steps (±2 s.e.)")
    fig.tight_layout()
    common.savefig(fig, ctx)

    rows = []
    for k, r in exact.items():
        rows.append(
            [k, f"{r['true_nll']:.3f}"]
            + [
                f"{r[f'exact_err_{t:g}']:.1e} / {r[f'solver_err_{t:g}']:.1e} ({r[f'exact_nfe_{t:g}']})"
                for t in cfg.tols
            ]
            + [f"{r['prior_mismatch']:.1e}", f"{r['hutch_bias']:+.1e} ± {r['hutch_se']:.1e}"]
        )
    md = (
        "**(A) exact scores**: mean abs(log p_ODE − log p_eps) in nats with the prior N(0, σ_T² I) as the "
        "paper uses it / with the exact p_T at the latent (the solver's own error), (NFE); the prior "
        "mismatch abs(log p_T − log π) at the latent; Hutchinson (1 probe): mean error ± s.e.\n\n"
    )
    md += common.md_table(
        ["mixture / SDE", "true NLL (nats)"]
        + [f"exact div., tol {t:g}" for t in cfg.tols]
        + ["prior mismatch", "Hutchinson, 1e-5"],
        rows,
    )
    if digits:
        md += "\n\n**(B) digits** (test bits/dim, mean ± s.e.; lower is better):\n\n"
        md += common.md_table(
            ["model", "ours: 8×8 digits", "paper: CIFAR-10 DDPM++ cont.", "paper: DDPM cont."],
            [
                ["VP", f"{digits['vp']['bpd']:.3f} ± {digits['vp']['se']:.3f}", "3.16", "3.21"],
                ["sub-VP", f"{digits['subvp']['bpd']:.3f} ± {digits['subvp']['se']:.3f}", "3.02", "3.05"],
            ],
        )
    numbers = dict(exact=exact, digits=digits)
    paper = {"cifar10_bpd": {"ddpm": 3.28, "ddpm_cont_vp": 3.21, "ddpm_cont_subvp": 3.05, "ddpmpp_cont_vp": 3.16,
                             "ddpmpp_cont_subvp": 3.02, "ddpmpp_deep_vp": 3.13, "ddpmpp_deep_subvp": 2.99}}  # fmt: skip
    return common.Report(numbers, paper=paper, markdown=md)


def main(argv=None):
    return common.script_main(NAME, Config, FAST, run, argv, __doc__)


if __name__ == "__main__":
    main()
