"""Song et al. 2021, Table 1 analogue: predictors x {P, P with twice the steps, C only, PC}, VE and VP.

Rows: the ancestral, reverse-diffusion and probability-flow predictors. Columns (the paper's
P1000 / P2000 / C2000 / PC1000 at CPU scale): the predictor with N steps; with 2N steps; the
Langevin corrector alone for 2N steps (one value per SDE, shown in the probability-flow row as in
the paper); predictor + one Langevin corrector step for N steps (2N NFE). All through
``ss.sample`` (``sampler=<predictor>`` or ``sampler="pc"``). Metric: sliced W2 to a large exact
sample, mean +- std over seeds (each seed fixes the prior draws and all noise).

Two score functions: (1) the exact score of the 2-D mixture ``common.mixture_2d``; (2) a small MLP
trained on samples of the same mixture with the package trainer (``paper_figures.models``,
cached under the workdir), with the same metric against the same exact reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from paper_figures import common

NAME = "table1"
PREDICTORS = ("ancestral", "reverse_diffusion", "probability_flow")
COLUMNS = ("P", "P2", "C2", "PC")


@dataclass
class Config:
    steps: int = 20  # N: few steps so that the samplers differ
    snr_ve: float = 0.16
    snr_vp: float = 0.16
    n: int = 4000
    n_ref: int = 40000
    seeds: tuple = (0, 1, 2, 3, 4)
    trained: bool = True  # also run the trained toy model
    train_iters: int = 6000
    seed: int = 0


FAST = dict(steps=10, n=500, n_ref=10000, seeds=(0, 1), train_iters=100)  # the trained columns: a smoke run


def column_kwargs(col: str, predictor: str, steps: int, snr: float) -> dict:
    """``ss.sample`` arguments of one table cell."""
    if col == "P":
        return dict(sampler=predictor, steps=steps)
    if col == "P2":
        return dict(sampler=predictor, steps=2 * steps)
    if col == "C2":
        return dict(sampler="pc", predictor="none", corrector="langevin", snr=snr, steps=2 * steps)
    if col == "PC":
        return dict(sampler="pc", predictor=predictor, corrector="langevin", snr=snr, steps=steps)
    raise ValueError(f"unknown column {col!r}")


def table(score_for, sdes: dict, ref, cfg: Config) -> dict:
    """{sde: {predictor: {column: (mean, std, nfe)}}}; C2 is computed once per SDE."""
    out = {}
    for kind, sde in sdes.items():
        snr = cfg.snr_ve if kind == "ve" else cfg.snr_vp
        score = score_for(kind, sde)
        out[kind] = {}
        c2 = None
        for p in PREDICTORS:
            out[kind][p] = {}
            for col in COLUMNS:
                if col == "C2" and c2 is not None:
                    out[kind][p][col] = c2
                    continue
                vals, nfe = [], 0
                for s in cfg.seeds:
                    v, nfe = common.sw2_of_sampler(sde, score, ref, cfg.n, s, **column_kwargs(col, p, cfg.steps, snr))
                    vals.append(v)
                out[kind][p][col] = (*common.mean_std(vals), nfe)
                if col == "C2":
                    c2 = out[kind][p][col]
    return out


def to_markdown(res: dict, steps: int) -> str:
    N = steps
    header = ["SDE", "predictor", f"P{N}", f"P{2 * N}", f"C{2 * N}", f"PC{N}"]
    rows = []
    for kind, by_p in res.items():
        for p, cells in by_p.items():
            row = [kind.upper(), p]
            for col in COLUMNS:
                if col == "C2" and p != "probability_flow":
                    row.append("–")
                else:
                    m, s, _ = cells[col]
                    row.append(common.fmt_ms(m, s))
            rows.append(row)
    return common.md_table(header, rows)


PAPER = {  # Song et al. 2021 Table 1, CIFAR-10 FID (P1000 / P2000 / C2000 / PC1000)
    "ve": {
        "ancestral": [4.98, 4.88, None, 3.62],
        "reverse_diffusion": [4.79, 4.74, None, 3.60],
        "probability_flow": [15.41, 10.54, 20.43, 3.51],
    },
    "vp": {
        "ancestral": [3.24, 3.24, None, 3.21],
        "reverse_diffusion": [3.21, 3.19, None, 3.18],
        "probability_flow": [3.59, 3.23, 19.06, 3.06],
    },
}


def paper_markdown() -> str:
    rows = []
    for kind, by_p in PAPER.items():
        for p, vals in by_p.items():
            rows.append([kind.upper(), p] + ["–" if v is None else f"{v:.2f}" for v in vals])
    return common.md_table(["SDE", "predictor", "P1000", "P2000", "C2000", "PC1000"], rows)


def run(cfg: Config, ctx: common.Context) -> common.Report:
    torch.set_default_dtype(torch.float64)
    gmm = common.mixture_2d()
    ref = common.reference_sample(gmm, cfg.n_ref)
    sdes = {"ve": common.make_sde("ve"), "vp": common.make_sde("vp")}
    floor = common.floor_sw2(gmm, ref, cfg.n, cfg.seeds)
    results = {"exact": table(lambda kind, sde: gmm.score_fn(sde), sdes, ref, cfg)}
    trained_info = {}
    if cfg.trained:
        from paper_figures import models

        nets = {}
        for kind in sdes:
            nets[kind], trained_info[kind] = models.toy_model(kind, cfg.train_iters, ctx, gmm)

        trained_sdes = {k: nets[k][0] for k in sdes}
        results["trained"] = table(
            lambda kind, sde: models.no_grad_score(nets[kind][1]), trained_sdes, ref.float(), cfg
        )

    plt = common.plt()
    fig, axes = plt.subplots(1, 2 * len(results), figsize=(4.2 * 2 * len(results), 3.4), squeeze=False)
    axes = axes[0]
    labels = {"P": f"P{cfg.steps}", "P2": f"P{2 * cfg.steps}", "C2": f"C{2 * cfg.steps}", "PC": f"PC{cfg.steps}"}
    k = 0
    for src, res in results.items():
        for kind in res:
            ax = axes[k]
            k += 1
            w = 0.2
            for j, col in enumerate(COLUMNS):
                ps = [i for i, p in enumerate(PREDICTORS) if col != "C2" or p == "probability_flow"]
                xs = [i + (j - 1.5) * w for i in ps]
                ms = [res[kind][PREDICTORS[i]][col][0] for i in ps]
                sd = [res[kind][PREDICTORS[i]][col][1] for i in ps]
                ax.bar(xs, ms, w, yerr=sd, capsize=2, label=labels[col], color=f"C{j}")
            ax.set_yscale("log")
            ax.axhline(floor[0], color="gray", ls=":", label="exact-sample floor")
            ax.set_xticks(range(len(PREDICTORS)))
            ax.set_xticklabels(["ancestral", "rev. diffusion", "prob. flow"])
            ax.set_title(f"{kind.upper()} SDE, {src} score")
            ax.set_ylabel("sliced W2 to data")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    common.savefig(fig, ctx)

    md = ""
    for src, res in results.items():
        md += f"**{src} score** (sliced W2 to data, mean ± std over {len(cfg.seeds)} seeds, {cfg.n} samples):\n\n"
        md += to_markdown(res, cfg.steps) + "\n\n"
    md += f"Exact-sample floor: {common.fmt_ms(*floor)}.\n\n**Paper** (CIFAR-10 FID, lower is better):\n\n"
    md += paper_markdown()
    numbers = {
        src: {
            kind: {p: {c: list(v) for c, v in cells.items()} for p, cells in by_p.items()} for kind, by_p in res.items()
        }
        for src, res in results.items()
    }
    numbers["floor"] = floor
    numbers["trained_models"] = trained_info
    return common.Report(numbers, paper=PAPER, markdown=md)


def main(argv=None):
    return common.script_main(NAME, Config, FAST, run, argv, __doc__)


if __name__ == "__main__":
    main()
