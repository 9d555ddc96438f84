"""Song et al. 2021, Fig. 4 / Fig. 13 analogues on 8 x 8 digits: controllable generation.

Models (``paper_figures.models``, cached): the VP digits U-Net (shared with Table 2 and Fig. 7),
a noise-conditional classifier p_t(y | x_t) trained under the same VP SDE
(``guidance.train_noisy_classifier``), and a VP U-Net trained on digits tinted with a random colour.
Panels:

(a) class-conditional samples by classifier guidance, ``guidance.ClassifierGuidance`` (eq. 14 of the
    paper, s + w grad log p_t(y | x)), one row per class;
(b) inpainting, ``guidance.impute``: the left half of test digits is known, the right half sampled;
(c) colorization, ``guidance.colorize``: tinted test digits given only their grey level (channel mean);
(d) the noisy classifier's accuracy against the noise level t (``guidance.accuracy_vs_noise``).

An independent judge scores (a) and (b): a scikit-learn logistic regression trained on the clean
training digits. Baselines: unguided samples for (a) (chance ~10%), the per-pixel training mean for
(b), the grey image copied to all channels for (c).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import score_sde as ss
from paper_figures import common

NAME = "fig4"


@dataclass
class Config:
    digits_iters: int = 1500  # same as Table 2 so the VP model is shared
    tinted_iters: int = 1500
    classifier_steps: int = 1500
    scale: float = 1.0
    per_class: int = 10
    n_inpaint: int = 100
    n_color: int = 64
    sampler: str = "pc"  # reverse diffusion + Langevin
    steps: int = 250
    snr: float = 0.16
    seed: int = 0


FAST = dict(digits_iters=40, tinted_iters=20, classifier_steps=30, per_class=2, n_inpaint=10, n_color=6, steps=20)


def judge(train_set):
    """A clean-data classifier (scikit-learn logistic regression on the 64 grey levels)."""
    from sklearn.linear_model import LogisticRegression

    X = train_set.data.reshape(len(train_set), -1).double().numpy()
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(X, train_set.labels.numpy())
    return lambda x: torch.as_tensor(clf.predict(x.reshape(x.shape[0], -1).double().clamp(-1, 1).numpy()))


def grid_image(x: torch.Tensor, nrow: int) -> torch.Tensor:
    """[B, C, H, W] in [-1, 1] -> an [H', W', C] image grid in [0, 1] (a numpy array for imshow),
    filled column by column with ``nrow`` rows (the package's ``image_grid`` fills row by row)."""
    from score_sde.training.trainer import image_grid

    B, C = x.shape[:2]
    ncol = math.ceil(B / nrow)
    x = torch.cat([x, x.new_ones(nrow * ncol - B, *x.shape[1:])])  # blank (white) cells
    x = x.reshape(ncol, nrow, *x.shape[1:]).transpose(0, 1).flatten(0, 1)
    img = image_grid(((x + 1) / 2).clamp(0, 1), nrow=ncol)
    return (img[..., 0] if C == 1 else img).numpy()


def run(cfg: Config, ctx: common.Context) -> common.Report:
    from paper_figures import models
    from score_sde import guidance
    from score_sde.training.data import get_dataset

    torch.set_default_dtype(torch.float32)
    g = torch.Generator().manual_seed(cfg.seed)
    train_set = get_dataset("digits", "train", dtype=torch.float32)
    test_set = get_dataset("digits", "test", dtype=torch.float32)
    judge_fn = judge(train_set)
    judge_test_acc = float((judge_fn(test_set.data) == test_set.labels).double().mean())
    _, sde, model, info_vp = models.digits_model("vp", cfg.digits_iters, ctx)
    score = models.no_grad_score(model)
    clf, info_clf = models.noisy_classifier(sde, cfg.classifier_steps, ctx, seed=cfg.seed)
    kw = dict(sampler=cfg.sampler, steps=cfg.steps, snr=cfg.snr) if cfg.sampler == "pc" else dict(
        sampler=cfg.sampler, steps=cfg.steps)  # fmt: skip

    # (a) class-conditional samples by classifier guidance, and unguided samples as the baseline
    labels = torch.arange(10).repeat_interleave(cfg.per_class)
    guided = guidance.ClassifierGuidance(score, lambda x, t: clf(x, t), scale=cfg.scale)
    xa = ss.sample(sde, guided, shape=(labels.numel(), 1, 8, 8), cond=labels, generator=g, **kw).x
    acc_guided = float((judge_fn(xa) == labels).double().mean())
    xu = ss.sample(sde, score, shape=(labels.numel(), 1, 8, 8), generator=g, **kw).x
    acc_unguided = float((judge_fn(xu) == labels).double().mean())

    # (b) inpainting: left half known
    y = test_set.data[: cfg.n_inpaint]
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[..., :4] = True
    xb = guidance.impute(sde, score, y, mask, generator=g, **kw).x
    unknown = ~mask.expand_as(y)
    mse_inpaint = float(((xb - y)[unknown] ** 2).mean())
    mean_fill = torch.where(mask, y, train_set.data.mean(0, keepdim=True))
    mse_meanfill = float(((mean_fill - y)[unknown] ** 2).mean())
    acc_inpaint = float((judge_fn(xb) == test_set.labels[: cfg.n_inpaint]).double().mean())
    acc_meanfill = float((judge_fn(mean_fill) == test_set.labels[: cfg.n_inpaint]).double().mean())
    # a draw that ignores the observation: the right half of random training digits
    pick = torch.randint(0, len(train_set), (y.shape[0],), generator=g)
    rand_fill = torch.where(mask, y, train_set.data[pick])
    mse_randfill = float(((rand_fill - y)[unknown] ** 2).mean())
    acc_randfill = float((judge_fn(rand_fill) == test_set.labels[: cfg.n_inpaint]).double().mean())
    known_err = float((xb - y)[mask.expand_as(y)].abs().max())

    # (c) colorization of tinted digits from their grey level
    _, sde_c, model_c, info_tint = models.tinted_model(cfg.tinted_iters, ctx)
    tinted = get_dataset("npz", "test", root=str(models.tinted_digits_npz(ctx)), dtype=torch.float32)
    rgb = tinted.data[: cfg.n_color]
    gray = rgb.mean(1)
    xc = guidance.colorize(sde_c, models.no_grad_score(model_c), gray, generator=g, **kw).x
    gray_err = float((xc.mean(1) - gray).abs().max())
    mse_color = float(((xc - rgb) ** 2).mean())
    mse_graycopy = float(((gray[:, None].expand_as(rgb) - rgb) ** 2).mean())

    def saturation(v):  # tint estimate per image: channel sums of (v + 1) / 2, scaled to max 1
        k = ((v + 1) / 2).clamp(0, 1).sum((2, 3))
        k = k / k.max(1, keepdim=True).values.clamp(min=1e-8)
        return float((k.max(1).values - k.min(1).values).mean())

    sat_samples, sat_truth = saturation(xc), saturation(rgb)

    # (d) noisy classifier accuracy against noise level
    times = torch.linspace(1e-3, 1.0, 11)
    acc_t = guidance.accuracy_vs_noise(lambda x, t: clf(x, t), sde, test_set.data, test_set.labels, times,
                                       generator=torch.Generator().manual_seed(1))  # fmt: skip

    plt = common.plt()
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.9), gridspec_kw=dict(width_ratios=[1.3, 1, 1, 1, 1.2]))
    axes[0].imshow(grid_image(xa, cfg.per_class), cmap="gray")  # one column per class
    axes[0].set_title(f"(a) classifier guidance, w = {cfg.scale} (columns 0–9)\njudge accuracy {acc_guided:.0%}")
    k = min(cfg.n_inpaint, 10)
    axes[1].imshow(grid_image(torch.cat([torch.where(mask, y[:k], -1.0), xb[:k], y[:k]]), k), cmap="gray")
    axes[1].set_title(f"(b) inpainting: known | sampled | truth\nMSE {mse_inpaint:.3f} (mean fill {mse_meanfill:.3f})")
    kc = min(cfg.n_color, 8)
    axes[2].imshow(grid_image(torch.cat([gray[:kc, None].expand(-1, 3, -1, -1), xc[:kc], rgb[:kc]]), kc))
    axes[2].set_title(f"(c) colorization: grey | sampled | truth\nMSE {mse_color:.3f} (grey copy {mse_graycopy:.3f})")
    axes[3].imshow(grid_image(xu[: 10 * min(cfg.per_class, 4)], 10), cmap="gray")
    axes[3].set_title(f"unguided samples\njudge 'accuracy' {acc_unguided:.0%} (chance)")
    axes[4].plot(times, acc_t, "o-")
    axes[4].axhline(0.1, color="gray", ls=":")
    axes[4].set_xlabel("t (VP)")
    axes[4].set_ylabel("accuracy on x_t")
    axes[4].set_title("(d) noise-conditional classifier")
    for ax in axes[:4]:
        ax.axis("off")
    fig.tight_layout()
    common.savefig(fig, ctx)

    numbers = dict(
        judge_test_accuracy=judge_test_acc,
        class_conditional_accuracy=acc_guided,
        unguided_accuracy=acc_unguided,
        inpaint_mse=mse_inpaint,
        inpaint_mse_mean_fill=mse_meanfill,
        inpaint_accuracy=acc_inpaint,
        inpaint_accuracy_mean_fill=acc_meanfill,
        inpaint_known_max_error=known_err,
        inpaint_mse_random_fill=mse_randfill,
        inpaint_accuracy_random_fill=acc_randfill,
        colorize_saturation=sat_samples,
        colorize_saturation_truth=sat_truth,
        colorize_mse=mse_color,
        colorize_mse_gray_copy=mse_graycopy,
        colorize_gray_max_error=gray_err,
        classifier_accuracy_vs_t={f"{float(t):.3f}": float(a) for t, a in zip(times, acc_t)},
        models=dict(vp=info_vp, classifier=info_clf, tinted=info_tint),
    )
    acc_str = " / ".join(f"{float(acc_t[i]):.2f}" for i in (0, 5, 10))
    md = common.md_table(
        ["task", "ours (8×8 digits)", "baseline", "paper"],
        [
            ["class-conditional (judge accuracy)", f"{acc_guided:.1%}", f"unguided {acc_unguided:.1%}",
             "CIFAR-10 samples (Fig. 4, qualitative)"],
            ["inpainting, right half (MSE on unknown pixels)", f"{mse_inpaint:.3f}",
             f"mean fill {mse_meanfill:.3f}; random digit {mse_randfill:.3f}", "Fig. 4/13 (qualitative)"],
            ["inpainting (judge accuracy)", f"{acc_inpaint:.1%}",
             f"mean fill {acc_meanfill:.1%}; random digit {acc_randfill:.1%}", "–"],
            ["inpainting: max change of known pixels", f"{known_err:.1e}", "0", "–"],
            ["colorization (MSE to true colours)", f"{mse_color:.3f}", f"grey copy {mse_graycopy:.3f}",
             "Fig. 4/13 (qualitative)"],
            ["colorization: max abs(channel mean − grey)", f"{gray_err:.1e}", "0", "–"],
            ["colorization: tint saturation (max − min channel)", f"{sat_samples:.2f}",
             f"true colours {sat_truth:.2f}; grey copy 0", "–"],
            ["noisy classifier accuracy at t = 1e-3 / 0.5 / 1", acc_str, "chance 0.10", "–"],
        ],
    )  # fmt: skip
    md += f"\n\nJudge: logistic regression on clean training digits, test accuracy {judge_test_acc:.1%}."
    return common.Report(numbers, paper={"figures": "qualitative (Fig. 4, Fig. 13)"}, markdown=md)


def main(argv=None):
    return common.script_main(NAME, Config, FAST, run, argv, __doc__)


if __name__ == "__main__":
    main()
