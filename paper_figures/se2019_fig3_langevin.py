"""Song & Ermon 2019, Fig. 3: Langevin dynamics gets the mode weights wrong, annealed Langevin does not.

Data p = 1/5 N((-5,-5), I) + 4/5 N((5,5), I), with exact scores. Both samplers start from the
same uniform draws on [-8, 8]^2:

- Langevin dynamics with the data score: x <- x + (a/2) grad log p(x) + sqrt(a) z, a = ``step``,
  ``levels * steps_per_level`` steps. The modes are separated by a region of tiny density, so the
  chains stay in the basin they start in and the weights come out near the basins' areas (~1/2).
- Annealed Langevin (SE2019, Alg. 1): geometric noise levels sigma_1 > ... > sigma_L, at each
  ``steps_per_level`` steps of size a_i = step * sigma_i^2 / sigma_L^2 with the score of the data
  perturbed by N(0, sigma_i^2 I).

Both run through the package: ``ss.sample(ve, score, sampler="pc", predictor="none",
corrector="annealed_langevin", ...)`` on a VE SDE, whose corrector step 2 r^2 sigma(t)^2 equals
a_i / 2 when r = sqrt(step / (4 sigma_L^2)); plain Langevin is the same corrector held at one time
where sigma(t) is ~1e-3 (the data score). Key number: the weight of the (-5,-5) mode, 0.2 +- 0.03
for annealed Langevin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import score_sde as ss
from paper_figures import common

NAME = "se2019_fig3"


@dataclass
class Config:
    n: int = 4000
    sigma_first: float = 20.0
    sigma_last: float = 1.0
    levels: int = 10
    steps_per_level: int = 300
    step: float = 0.1  # Langevin step a (and a_L of the last annealed level)
    box: float = 8.0  # uniform initialisation on [-box, box]^2
    seed: int = 0


FAST = dict(n=2000)


def mode_weight(x: torch.Tensor) -> float:
    """Fraction of samples in the half plane of the (-5, -5) mode (x1 + x2 < 0)."""
    return float((x.sum(1) < 0).double().mean())


def run(cfg: Config, ctx: common.Context) -> common.Report:
    torch.set_default_dtype(torch.float64)
    g = torch.Generator().manual_seed(cfg.seed)
    gmm = ss.GaussianMixture([0.2, 0.8], [[-5.0, -5.0], [5.0, 5.0]], [1.0, 1.0])
    x0 = (2 * torch.rand(cfg.n, 2, generator=g) - 1) * cfg.box

    # annealed Langevin: a VE SDE whose sigma(t) passes through the L geometric levels
    sig_min = 1e-3
    ve = ss.VESDE(sig_min, cfg.sigma_first, N=cfg.levels)
    sigmas = torch.exp(torch.linspace(math.log(cfg.sigma_first), math.log(cfg.sigma_last), cfg.levels))
    t_levels = ve.t_from_sigma_tilde(sigmas)  # VE: sigma~ = sigma, inverted in closed form
    grid = torch.cat([t_levels, torch.tensor([1e-6])])  # the last step only carries x to the end
    r = math.sqrt(cfg.step / (4 * cfg.sigma_last**2))
    common_kw = dict(sampler="pc", predictor="none", corrector="annealed_langevin", generator=g)
    ann = ss.sample(
        ve, gmm.score_fn(ve), x_T=x0.clone(), grid=grid, snr=r, corrector_steps=cfg.steps_per_level, **common_kw
    )

    # plain Langevin with (essentially) the data score: the corrector held at t0 = 1e-5, sigma(t0) ~ 1e-3
    t0 = torch.tensor([1e-5, 1e-7])
    r0 = math.sqrt(cfg.step / (4 * float(ve.sigma(t0[0])) ** 2))
    lan = ss.sample(
        ve,
        gmm.score_fn(ve),
        x_T=x0.clone(),
        grid=t0,
        snr=r0,
        corrector_steps=cfg.levels * cfg.steps_per_level,
        **common_kw,
    )

    exact = gmm.sample(cfg.n, generator=g)
    w_exact, w_lan, w_ann = mode_weight(exact), mode_weight(lan.x), mode_weight(ann.x)
    w_init = mode_weight(x0)

    plt = common.plt()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.7), sharex=True, sharey=True)
    for ax, (title, x) in zip(
        axes,
        [
            (f"exact samples (weight {w_exact:.3f})", exact),
            (f"Langevin dynamics ({lan.nfe} steps; weight {w_lan:.3f})", lan.x),
            (f"annealed Langevin ({ann.nfe} steps; weight {w_ann:.3f})", ann.x),
        ],
    ):
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
        ax.set_title(title)
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
        ax.set_aspect("equal")
    fig.suptitle("1/5 N((−5,−5), I) + 4/5 N((5,5), I): weight of the lower-left mode (true 0.2)")
    common.savefig(fig, ctx)

    numbers = dict(
        weight_true=0.2,
        weight_exact_samples=w_exact,
        weight_langevin=w_lan,
        weight_annealed=w_ann,
        weight_initial_uniform=w_init,
        nfe_langevin=lan.nfe,
        nfe_annealed=ann.nfe,
        snr_annealed=r,
        n=cfg.n,
    )
    se = math.sqrt(0.2 * 0.8 / cfg.n)
    md = common.md_table(
        ["sampler", "weight of N((−5,−5), I)", "paper (SE2019 Fig. 3)"],
        [
            ["true", "0.200", "0.2"],
            [f"exact samples (n = {cfg.n}, s.e. {se:.3f})", f"{w_exact:.3f}", "–"],
            [f"Langevin, data score ({lan.nfe} steps)", f"{w_lan:.3f}", "wrong relative density (figure)"],
            [f"annealed Langevin ({cfg.levels} levels × {cfg.steps_per_level})", f"{w_ann:.3f}", "≈ correct (figure)"],
            ["uniform initialisation", f"{w_init:.3f}", "–"],
        ],
    )
    return common.Report(numbers, paper={"weight_true": 0.2}, markdown=md)


def main(argv=None):
    return common.script_main(NAME, Config, FAST, run, argv, __doc__)


if __name__ == "__main__":
    main()
