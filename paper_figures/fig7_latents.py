"""Song et al. 2021, Fig. 7 / Fig. 8 analogue: the probability-flow encoding is (nearly) identifiable.

Two models trained independently, with different architectures and seeds, on 8 x 8 digits under
the same VP SDE: model A the U-Net of ``models.digits_config`` (shared with Table 2 / Fig. 4),
model B an MLP. Both encode the same test digits with the probability-flow ODE,
z = x(T) = ``ss.likelihood.encode``. If both learned the data score, their flows coincide and so do
the latents. Measured as in the paper's Fig. 8: the dimension-wise |z_A - z_B| against a shuffled
baseline (z_B of a different image), and the per-dimension correlation of z_A and z_B across
images (the shuffled baseline's is ~0). Fig. 7's panel: the first 64 latent dimensions of one image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import score_sde as ss
from paper_figures import common

NAME = "fig7"


@dataclass
class Config:
    digits_iters: int = 1500  # model A: the shared VP digits U-Net
    mlp_iters: int = 3000
    mlp_hidden: int = 512
    n: int = 128
    rtol: float = 1e-5
    atol: float = 1e-5
    seed: int = 0


FAST = dict(digits_iters=40, mlp_iters=40, mlp_hidden=128, n=16, rtol=1e-3, atol=1e-3)


def mlp_config(n_iters: int, hidden: int, seed: int) -> dict:
    from paper_figures import models

    cfg = models.digits_config("vp", n_iters, seed)
    cfg["model"] = {"kind": "mlp", "hidden": hidden, "depth": 3, "emb_dim": 128, "prediction": "eps"}
    return cfg


def run(cfg: Config, ctx: common.Context) -> common.Report:
    from paper_figures import models
    from score_sde.training.data import get_dataset

    torch.set_default_dtype(torch.float32)
    test = get_dataset("digits", "test", n=cfg.n, dtype=torch.float32)
    _, sde_a, model_a, info_a = models.digits_model("vp", cfg.digits_iters, ctx)
    _, sde_b, model_b, info_b = models.train(ctx, f"digits-mlp-h{cfg.mlp_hidden}", mlp_config(
        cfg.mlp_iters, cfg.mlp_hidden, cfg.seed + 1))  # fmt: skip
    x = test.data
    z = {}
    for name, sde, model in (("A", sde_a, model_a), ("B", sde_b, model_b)):
        z[name] = ss.likelihood.encode(sde, models.no_grad_score(model), x, rtol=cfg.rtol, atol=cfg.atol)
    za, zb = z["A"].reshape(cfg.n, -1).double(), z["B"].reshape(cfg.n, -1).double()
    perm = torch.roll(torch.arange(cfg.n), 1)  # a derangement: each image paired with another one
    diff = (za - zb).abs()
    diff_shuf = (za - zb[perm]).abs()

    def corr(a, b):
        a = a - a.mean(0)
        b = b - b.mean(0)
        return (a * b).sum(0) / (a.norm(dim=0) * b.norm(dim=0))

    c, c_shuf = corr(za, zb), corr(za, zb[perm])
    # round trip as a sanity check of the encoder: decode z_A with model A
    xr = ss.likelihood.decode(sde_a, models.no_grad_score(model_a), z["A"][:8], rtol=cfg.rtol, atol=cfg.atol)
    roundtrip = float((xr - x[:8]).abs().max())

    plt = common.plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    ax = axes[0]
    ax.plot(za[0].numpy(), "o-", ms=3, label="model A (U-Net)")
    ax.plot(zb[0].numpy(), "s--", ms=3, label="model B (MLP)")
    ax.set_xlabel("latent dimension")
    ax.set_title("(Fig. 7) latent code of one test digit")
    ax.legend(fontsize=7)
    ax = axes[1]
    bins = torch.linspace(0, float(diff_shuf.max()), 40)
    ax.hist(diff.flatten().numpy(), bins=bins.numpy(), alpha=0.6, density=True, label=f"A vs B: {diff.mean():.3f}")
    ax.hist(diff_shuf.flatten().numpy(), bins=bins.numpy(), alpha=0.6, density=True,
            label=f"shuffled: {diff_shuf.mean():.3f}")  # fmt: skip
    ax.set_xlabel("dimension-wise |z_A − z_B|")
    ax.set_title("(Fig. 8 left) encoding differences")
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.hist(c.numpy(), bins=30, alpha=0.6, label=f"A vs B: mean {c.mean():.2f}")
    ax.hist(c_shuf.numpy(), bins=30, alpha=0.6, label=f"shuffled: mean {c_shuf.mean():.2f}")
    ax.set_xlabel("per-dimension correlation across images")
    ax.set_title("(Fig. 8 right) correlation of encodings")
    ax.legend(fontsize=7)
    fig.tight_layout()
    common.savefig(fig, ctx)

    numbers = dict(
        mean_abs_diff=float(diff.mean()),
        mean_abs_diff_shuffled=float(diff_shuf.mean()),
        ratio=float(diff.mean() / diff_shuf.mean()),
        mean_corr=float(c.mean()),
        mean_corr_shuffled=float(c_shuf.mean()),
        decode_roundtrip_max_error=roundtrip,
        models=dict(A=info_a, B=info_b),
    )
    md = common.md_table(
        ["quantity", "ours: A vs B", "shuffled baseline", "paper"],
        [
            ["mean dimension-wise abs(z_A − z_B)", f"{diff.mean():.3f}", f"{diff_shuf.mean():.3f}",
             "A vs B far below shuffled (Fig. 8, CIFAR-10)"],
            ["mean per-dimension correlation", f"{c.mean():.3f}", f"{c_shuf.mean():.3f}",
             "close to 1 vs ~0 (Fig. 8)"],
            ["decode(encode(x)) max error, model A", f"{roundtrip:.1e}", "–", "–"],
        ],
    )  # fmt: skip
    md += (
        f"\n\nModel A: U-Net ({cfg.digits_iters} steps); model B: MLP, width {cfg.mlp_hidden} ({cfg.mlp_iters} steps)."
    )
    return common.Report(numbers, paper={"figure": "qualitative (Fig. 7, Fig. 8)"}, markdown=md)


def main(argv=None):
    return common.script_main(NAME, Config, FAST, run, argv, __doc__)


if __name__ == "__main__":
    main()
