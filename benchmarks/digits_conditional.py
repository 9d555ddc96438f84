"""Conditional and controllable generation: exact-mixture checks and the 8x8 digits experiment.

Run:  OMP_NUM_THREADS=2 .venv/bin/python benchmarks/digits_conditional.py [--fast] [--skip-digits]

Part A (analytic, float64, exact scores of a labelled 2-D / 4-D Gaussian mixture):
  A1. exact classifier guidance at scale 1: fraction of samples in the requested component, moments;
  A2. classifier-free guidance, s in {0, 1, 2, 4}: how the samples change with s;
  A3. imputation by replacement (Song et al. 2021, App. I.2) against the exact conditional
      p(x_u | x_k = y): bias of the mean, spread ratio, MMD p-value, per sampler, next to the oracle
      sampler that uses the exact conditional score (separates method bias from discretization).
Part B (8x8 digits, scikit-learn's set, trained here in float32 on the CPU):
  B1. an independent clean classifier (logistic regression on clean training digits);
  B2. a class-conditional MLP score model trained with condition dropout -> classifier-free guidance;
  B3. an unconditional model + a noise-conditional classifier trained under the same VP noise ->
      classifier guidance; the classifier's held-out accuracy against the noise level (Fig. 13);
  B4. inpainting of the lower half of held-out digits with the unconditional model (PNG grid).
Writes benchmarks/results/digits_conditional.json and PNGs guidance_*.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

import score_sde as ss
from score_sde import guidance as G
from score_sde.metrics import mmd_permutation_pvalue

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def _mmd_p(x, y, seed=0):
    return mmd_permutation_pvalue(x, y, n_perm=100, seed=seed, max_n=1500)


# ---------------------------------------------------------------------------------------------
# Part A: exact mixtures
# ---------------------------------------------------------------------------------------------


def part_a(fast: bool) -> dict:
    from score_sde.testing import mixture_2d, random_mixture

    torch.set_default_dtype(torch.float64)
    out = {}
    sde = ss.VPSDE()
    gmm = mixture_2d()
    n, steps = (1000, 200) if fast else (3000, 500)

    print(f"\nA1. exact classifier guidance, scale 1 (reverse diffusion, {steps} steps, {n} samples per class)")
    cg = G.ClassifierGuidance(gmm.score_fn(sde), G.mixture_classifier(gmm, sde), 1.0)
    y = torch.arange(gmm.K).repeat_interleave(n)
    x = ss.sample(
        sde,
        cg,
        shape=(gmm.K * n, 2),
        sampler="reverse_diffusion",
        steps=steps,
        cond=y,
        generator=torch.Generator().manual_seed(0),
    ).x
    ref = []
    print(f"{'class':>5} {'% in comp':>10} {'exact-sample %':>15} {'|mean err|':>11} {'|cov err|max':>13}")
    for k in range(gmm.K):
        xk = x[y == k]
        frac = (gmm.responsibilities(xk).argmax(1) == k).double().mean().item()
        xs = gmm.component(k).sample(n, torch.Generator().manual_seed(k))
        frac_exact = (gmm.responsibilities(xs).argmax(1) == k).double().mean().item()
        m, C = gmm.component(k).moments()
        me = (xk.mean(0) - m).norm().item()
        ce = (torch.cov(xk.T) - C).abs().max().item()
        print(f"{k:>5} {100 * frac:>9.2f}% {100 * frac_exact:>14.2f}% {me:>11.4f} {ce:>13.4f}")
        ref.append(
            {"class": k, "frac_in_component": frac, "frac_exact_samples": frac_exact, "mean_err": me, "cov_err_max": ce}
        )
    out["classifier_guidance_exact"] = ref

    print("\nA2. classifier-free guidance with the exact conditional / unconditional scores, class 1")
    exact = G.MixtureClassScore(gmm, sde)
    k = 1
    xT = sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(3))
    m_k, C_k = gmm.component(k).moments()
    print(f"component mean {m_k.tolist()}, trace cov {C_k.trace().item():.3f}")
    print(f"{'s':>4} {'% in comp':>10} {'mean dist to mu_k':>18} {'trace cov':>10} {'sample mean':>22}")
    rows = []
    for s in (0.0, 1.0, 2.0, 4.0):
        xs = ss.sample(
            sde,
            G.ClassifierFreeGuidance(exact, s),
            x_T=xT,
            sampler="reverse_diffusion",
            steps=steps,
            cond=k,
            generator=torch.Generator().manual_seed(4),
        ).x
        frac = (gmm.responsibilities(xs).argmax(1) == k).double().mean().item()
        dist = (xs - m_k).norm(dim=1).mean().item()
        tr = torch.cov(xs.T).trace().item()
        mean = xs.mean(0).tolist()
        print(f"{s:>4.1f} {100 * frac:>9.2f}% {dist:>18.4f} {tr:>10.4f}   [{mean[0]:+.3f}, {mean[1]:+.3f}]")
        rows.append(
            {"scale": s, "frac_in_component": frac, "mean_dist_to_component_mean": dist, "trace_cov": tr, "mean": mean}
        )
    out["cfg_scale_sweep"] = rows

    print("\nA3. imputation by replacement vs the exact conditional p(x_u | x_k = y)")
    cases = [
        ("2-D, x1 = 1.5", mixture_2d(), torch.tensor([True, False]), torch.tensor([1.5, 0.0])),
        ("2-D, x1 = 0.3 (between modes)", mixture_2d(), torch.tensor([True, False]), torch.tensor([0.3, 0.0])),
    ]
    g4 = random_mixture(4, 3, seed=1)
    cases.append(
        (
            "4-D, x1, x3 known",
            g4,
            torch.tensor([True, False, True, False]),
            g4.sample(1, torch.Generator().manual_seed(0))[0],
        )
    )
    print(f"{'case':<32} {'sampler':<26} {'|mean bias|':>11} {'std ratio':>10} {'MMD p':>7} {'known exact':>12}")
    rows = []
    for name, gm, mask, yv in cases:
        cm = G.mixture_conditional(gm, mask, yv)
        m, C = cm.moments()
        exact_u = cm.sample(n, torch.Generator().manual_seed(11))
        post = G.mixture_posterior(gm, mask, yv)
        for sampler, kw in [
            ("pc", {"snr": 0.16}),
            ("reverse_diffusion", {}),
            ("probability_flow", {}),
            ("oracle (exact cond. score)", {}),
        ]:
            gen = torch.Generator().manual_seed(5)
            if sampler.startswith("oracle"):
                xs = ss.sample(
                    sde, post.score_fn(sde), shape=(n, gm.D), sampler="reverse_diffusion", steps=steps, generator=gen
                ).x
                known = float("nan")
            else:
                xs = G.impute(
                    sde, gm.score_fn(sde), yv, mask, shape=(n, gm.D), sampler=sampler, steps=steps, generator=gen, **kw
                ).x
                known = float(torch.equal(xs[:, mask], yv[mask].expand(n, int(mask.sum()))))
            xu = xs[:, ~mask]
            bias = (xu.mean(0) - m).norm().item()
            std_ratio = xu.var(0).sqrt() / torch.diagonal(C).sqrt()
            std_ratio = std_ratio.mean().item()
            p = _mmd_p(xu, exact_u)
            known_s = "-" if math.isnan(known) else ("yes" if known else "NO")
            print(f"{name:<32} {sampler:<26} {bias:>11.4f} {std_ratio:>10.3f} {p:>7.3f} {known_s:>12}")
            rows.append(
                {
                    "case": name,
                    "sampler": sampler,
                    "mean_bias": bias,
                    "std_ratio": std_ratio,
                    "mmd_p": p,
                    "known_exact": known,
                }
            )
    out["imputation_bias"] = rows
    return out


# ---------------------------------------------------------------------------------------------
# Part B: digits
# ---------------------------------------------------------------------------------------------


def _train_score(net, sde, x, y, steps, drop_p, seed, lr=2e-3, batch=128):
    """DSM (eps loss) with Adam + cosine decay and an EMA (0.999); optional condition dropout."""
    from score_sde.training.ema import ExponentialMovingAverage
    from score_sde.training.losses import dsm_loss

    model = ss.ScoreModel(net, sde, prediction="eps")
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    ema = ExponentialMovingAverage(net, 0.999)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        cond = None if y is None else G.drop_condition(y[idx], drop_p, null_label=net.num_classes, generator=g)
        loss = dsm_loss(model, x[idx], cond=cond, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema.update()
    ema.copy_to(net)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return model, loss.item()


def _grid_png(rows, path, titles=None):
    """rows: list of [n, 1, 8, 8] tensors in [-1, 1] -> one PNG (one row per tensor)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nr, nc = len(rows), max(r.shape[0] for r in rows)
    fig, axes = plt.subplots(nr, nc, figsize=(nc * 0.6, nr * 0.66))
    for i, r in enumerate(rows):
        for j in range(nc):
            ax = axes[i][j] if nr > 1 else axes[j]
            ax.axis("off")
            if j < r.shape[0]:
                ax.imshow(((r[j, 0] + 1) / 2).clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
        if titles:
            (axes[i][0] if nr > 1 else axes[0]).set_title(titles[i], fontsize=6, loc="left")
    fig.tight_layout(pad=0.1)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def part_b(fast: bool, results: str = RESULTS, sizes: dict | None = None) -> dict:
    """Digits: classifier-free and classifier guidance, the noisy classifier's accuracy against the noise, and
    inpainting. ``sizes`` overrides the run's sizes (keys ``steps_train``, ``steps_sample``, ``per_class`` >= 10,
    ``n_in`` >= 10; a smoke test runs the whole part at a size whose numbers mean nothing)."""
    from sklearn.linear_model import LogisticRegression

    from score_sde.guidance_cli import build_classifier
    from score_sde.nets import MLPScoreNet
    from score_sde.training.data import get_dataset

    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    out = {}
    tr, te = get_dataset("digits", "train"), get_dataset("digits", "test")
    xtr, ytr, xte, yte = tr.data, tr.labels, te.data, te.labels
    sde = ss.VPSDE()
    size = dict(steps_train=600, steps_sample=100, per_class=20, n_in=40) if fast else {}
    size = {**dict(steps_train=3000, steps_sample=300, per_class=50, n_in=100), **size, **(sizes or {})}
    bad = sorted(set(size) - {"steps_train", "steps_sample", "per_class", "n_in"})
    if bad or size["per_class"] < 10 or size["n_in"] < 10:
        raise ValueError(f"sizes: unknown keys {bad} or per_class / n_in below 10 in {size}")
    steps_train, steps_sample, per_class = size["steps_train"], size["steps_sample"], size["per_class"]

    t0 = time.time()
    clean = LogisticRegression(max_iter=3000).fit(xtr.reshape(len(xtr), -1).numpy(), ytr.numpy())
    clean_acc = clean.score(xte.reshape(len(xte), -1).numpy(), yte.numpy())

    def clean_label(x):
        return torch.as_tensor(clean.predict(x.clamp(-1, 1).reshape(x.shape[0], -1).numpy()))

    print(f"\nB1. clean classifier (logistic regression): held-out accuracy {clean_acc:.4f} ({time.time() - t0:.1f} s)")
    out["clean_classifier_test_accuracy"] = clean_acc

    t0 = time.time()
    cond_net = MLPScoreNet(64, hidden=256, depth=3, num_classes=10)
    cond_model, cond_loss = _train_score(cond_net, sde, xtr, ytr, steps_train, drop_p=0.15, seed=1)
    t_cond = time.time() - t0
    t0 = time.time()
    unc_net = MLPScoreNet(64, hidden=256, depth=3)
    unc_model, unc_loss = _train_score(unc_net, sde, xtr, None, steps_train, drop_p=0.0, seed=2)
    t_unc = time.time() - t0
    t0 = time.time()
    clf = build_classifier((1, 8, 8), 10, arch="mlp", hidden=256, depth=2)
    G.train_noisy_classifier(
        clf, sde, xtr, ytr, steps=steps_train, batch_size=128, lr=2e-3, generator=torch.Generator().manual_seed(3)
    )
    for p in clf.parameters():
        p.requires_grad_(False)
    t_clf = time.time() - t0
    print(
        f"trained: conditional score model {t_cond:.0f} s (last loss {cond_loss:.4f}), unconditional "
        f"{t_unc:.0f} s (last loss {unc_loss:.4f}), noisy classifier {t_clf:.0f} s; {steps_train} steps each"
    )
    out["train_seconds"] = {"conditional": t_cond, "unconditional": t_unc, "classifier": t_clf}

    y = torch.arange(10).repeat_interleave(per_class)
    B = y.shape[0]

    def run(score, name, cond):
        t0 = time.time()
        with torch.no_grad():
            res = ss.sample(
                sde,
                score,
                shape=(B, 1, 8, 8),
                sampler="reverse_diffusion",
                steps=steps_sample,
                cond=cond,
                generator=torch.Generator().manual_seed(7),
            )
        acc = (clean_label(res.x) == y).double().mean().item()
        return res.x, acc, time.time() - t0

    print(
        f"\nB2. classifier-free guidance ({B} samples, {per_class} per class, reverse diffusion {steps_sample} steps)"
    )
    print(f"{'scale':>6} {'clean-classifier accuracy':>26} {'seconds':>8}")
    rows, grids = [], []
    for s in (0.0, 1.0, 2.0, 3.0):
        x, acc, sec = run(G.ClassifierFreeGuidance(cond_model, s), f"cfg{s}", y)
        print(f"{s:>6.1f} {acc:>26.4f} {sec:>8.1f}")
        rows.append({"scale": s, "accuracy": acc})
        grids.append(x.reshape(10, per_class, 1, 8, 8)[:, :10].transpose(0, 1).reshape(-1, 1, 8, 8)[:100])
    out["cfg"] = rows
    _grid_png([grids[2][i * 10 : (i + 1) * 10] for i in range(10)], os.path.join(results, "guidance_digits_cfg.png"))

    print("\nB3. classifier guidance: unconditional model + noise-conditional classifier")
    print(f"{'scale':>6} {'clean-classifier accuracy':>26} {'seconds':>8}")
    rows = []
    for w in (0.0, 1.0, 2.0, 4.0):
        x, acc, sec = run(G.ClassifierGuidance(unc_model, clf, w), f"cg{w}", y)
        print(f"{w:>6.1f} {acc:>26.4f} {sec:>8.1f}")
        rows.append({"scale": w, "accuracy": acc})
        if w == 2.0:
            g2 = x.reshape(10, per_class, 1, 8, 8)[:, :10]
    out["classifier_guidance"] = rows
    _grid_png([g2[:, i] for i in range(10)], os.path.join(results, "guidance_digits_classifier.png"))

    times = torch.linspace(1e-5, 1.0, 21, dtype=torch.float64)
    acc_noisy = G.accuracy_vs_noise(clf, sde, xte, yte, times, generator=torch.Generator().manual_seed(1))

    class _Clean:
        def __call__(self, x, t):
            return torch.as_tensor(clean.predict_log_proba(x.reshape(x.shape[0], -1).numpy()))

    acc_clean = G.accuracy_vs_noise(_Clean(), sde, xte, yte, times, generator=torch.Generator().manual_seed(1))
    sig = sde.sigma(times)
    print(
        f"\nnoise-conditional classifier, held-out accuracy vs noise (Fig. 13):\n{'t':>6} {'sigma':>7} "
        f"{'noisy clf':>9} {'clean LR':>9}"
    )
    for i in range(0, 21, 2):
        print(f"{times[i]:>6.2f} {sig[i]:>7.3f} {acc_noisy[i]:>9.3f} {acc_clean[i]:>9.3f}")
    out["accuracy_vs_noise"] = {
        "t": times.tolist(),
        "sigma": sig.tolist(),
        "noise_conditional": acc_noisy.tolist(),
        "clean_logistic_regression": acc_clean.tolist(),
    }
    _fig13(times, sig, acc_noisy, acc_clean, os.path.join(results, "guidance_classifier_accuracy_vs_noise.png"))

    n_in = size["n_in"]
    print(f"\nB4. inpainting the lower half of {n_in} held-out digits (unconditional model, {steps_sample} steps)")
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, :4] = True  # upper half known
    xs, ys = xte[:n_in], yte[:n_in]
    lower = ~mask.expand_as(xs)

    def scores(x):
        acc = (clean_label(x) == ys).double().mean().item()
        return acc, ((x - xs)[lower] ** 2).mean().item()

    print(f"{'method':<44} {'clean-clf accuracy':>18} {'MSE lower half':>15} {'seconds':>8}")
    rows = []
    for name, fill in (
        ("fill: background (-1)", -torch.ones_like(xs)),
        ("fill: training mean", xtr.mean(0).expand_as(xs)),
    ):
        acc, mse = scores(torch.where(mask, xs, fill))
        print(f"{name:<44} {acc:>18.3f} {mse:>15.4f} {'-':>8}")
        rows.append({"method": name, "accuracy": acc, "mse": mse})
    settings = [
        ("reverse_diffusion", {}),
        ("pc", {"snr": 0.16}),
        ("pc", {"snr": 0.16, "corrector_steps": 3}),
    ]
    known_exact = True
    for sampler, kw in settings:
        t0 = time.time()
        with torch.no_grad():
            res = G.impute(
                sde,
                unc_model,
                xs,
                mask,
                sampler=sampler,
                steps=steps_sample,
                generator=torch.Generator().manual_seed(8),
                **kw,
            )
        m_all = mask.expand_as(res.x)
        known_exact &= bool(torch.equal(res.x.masked_select(m_all), xs.masked_select(m_all)))
        acc, mse = scores(res.x)
        name = f"impute: {sampler} {kw if kw else ''}"
        print(f"{name:<44} {acc:>18.3f} {mse:>15.4f} {time.time() - t0:>8.1f}")
        rows.append({"method": name, "accuracy": acc, "mse": mse})
    print(f"known pixels reproduced exactly (every run): {known_exact}")
    out["inpainting"] = {"known_exact": known_exact, "rows": rows}
    reps = 3
    xs, n_in = xs[:10], 10
    with torch.no_grad():
        res = G.impute(
            sde,
            unc_model,
            xs.repeat(reps, 1, 1, 1),
            mask,
            sampler=settings[-1][0],
            steps=steps_sample,
            generator=torch.Generator().manual_seed(9),
            **settings[-1][1],
        )
    masked = torch.where(mask, xs, torch.full_like(xs, -1.0))
    rows = [xs, masked] + [res.x[i * n_in : (i + 1) * n_in] for i in range(reps)]
    _grid_png(
        rows,
        os.path.join(results, "guidance_digits_inpainting.png"),
        ["original", "upper half known", "inpainted 1", "inpainted 2", "inpainted 3"],
    )
    return out


def _fig13(times, sig, acc_noisy, acc_clean, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(8, 3))
    for a, xv, lab in ((ax[0], times, "t"), (ax[1], sig, r"$\sigma(t)$")):
        a.plot(xv.numpy(), acc_noisy.numpy(), "o-", label="noise-conditional classifier")
        a.plot(xv.numpy(), acc_clean.numpy(), "s--", label="clean classifier on x_t")
        a.axhline(0.1, color="gray", lw=0.8, ls=":")
        a.set_xlabel(lab)
        a.set_ylabel("held-out accuracy")
    ax[0].legend(fontsize=7)
    fig.suptitle("Digits: classifier accuracy against the noise level (VP SDE)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fast", action="store_true", help="fewer samples and training steps (smoke run)")
    ap.add_argument("--skip-digits", action="store_true")
    ap.add_argument("--skip-analytic", action="store_true")
    args = ap.parse_args(argv)
    os.makedirs(RESULTS, exist_ok=True)
    t0 = time.time()
    res = {"threads": torch.get_num_threads(), "fast": args.fast}
    if not args.skip_analytic:
        ta = time.time()
        res["analytic"] = part_a(args.fast)
        res["analytic_seconds"] = time.time() - ta
    if not args.skip_digits:
        tb = time.time()
        res["digits"] = part_b(args.fast)
        res["digits_seconds"] = time.time() - tb
    res["total_seconds"] = time.time() - t0
    print(f"\ntotal {res['total_seconds']:.0f} s on {res['threads']} thread(s)")
    name = "digits_conditional_fast.json" if args.fast else "digits_conditional.json"
    with open(os.path.join(RESULTS, name), "w") as f:
        json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
