"""The main job: train a small score model on a toy 2-D data set, sample it, and measure it.

1. Train a residual-MLP score model on the 8-Gaussian ring (``configs/toy_vp.yaml``, VP SDE) with
   the library's Trainer (Adam + warmup, clipping, EMA, checkpoints in ``<out>/run``).
2. Sample the EMA model with two samplers: Euler–Maruyama on the reverse SDE (fixed grid) and the
   probability-flow ODE (adaptive dopri5 through torchdiffeq).
3. Test NLL through the probability-flow ODE (exact divergence; D = 2), next to the NLL of a single
   Gaussian fitted to the training data and the exact NLL of the true mixture.
4. A two-sample test of each sampler's output against held-out data: Gaussian-kernel MMD with
   permutation p-values at two bandwidths (the median distance, which sees the overall shape, and a
   quarter of it, which sees the separate modes), combined by Bonferroni (p = 2 min). The fitted
   Gaussian's samples are tested too, to show the test has power.
5. Write ``<out>/main_job.png`` and print a summary.

Runs in one to two minutes on a CPU (one torch thread by default: faster than two for this small MLP,
and it leaves the second core free).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import torch

from score_sde.metrics import two_sample_test

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(
    out: str = "out",
    n_iters: int | None = None,
    n_samples: int = 1000,
    n_test: int = 1000,
    config: str | None = None,
    overrides: tuple[str, ...] = (),
    plot: bool = True,
    verbose: bool = True,
) -> dict:
    """Run the main job; returns the measured numbers (see :func:`main` for the printed summary)."""
    from score_sde.training import Trainer, load_config
    from score_sde.training.trainer import evaluate_nll, load_split, sample_model

    log = print if verbose else (lambda *a, **k: None)
    config = config or os.path.join(ROOT, "configs", "toy_vp.yaml")
    sets = ["training.progress=false", f"eval.num={n_test}", "eval.divergence=exact", f"eval.batch_size={n_test}"]
    if n_iters is not None:
        sets.append(f"training.n_iters={n_iters}")
    cfg = load_config(config, [*sets, *overrides])
    workdir = os.path.join(out, "run")
    shutil.rmtree(workdir, ignore_errors=True)
    t_start = time.perf_counter()

    # 1. train
    trainer = Trainer(cfg, workdir)
    summary = trainer.fit()
    t_train = time.perf_counter() - t_start
    log(
        f"trained {summary['step']} steps in {t_train:.1f} s ({summary['steps_per_s']:.0f} steps/s), "
        f"final loss {summary['loss']:.4f}"
    )

    train = load_split(cfg, "train", dtype=torch.float32)
    test = load_split(cfg, "test", dtype=torch.float32)
    held_out = test.data[:n_test]

    # 2. sample with two samplers
    samplers = {
        "euler_maruyama": dict(sampler="pc", steps=cfg.sampling.steps),
        "ode": dict(sampler="ode", steps=None),
    }
    samples, t_sample = {}, {}
    with trainer.averaged():
        for name, kw in samplers.items():
            t0 = time.perf_counter()
            g = torch.Generator().manual_seed(1)
            samples[name] = sample_model(cfg, trainer.sde, trainer.eval_model, trainer.shape, n_samples,
                                         dtype=torch.float32, generator=g, **kw).cpu()  # fmt: skip
            t_sample[name] = time.perf_counter() - t0

        # 3. test NLL through the PF-ODE
        t0 = time.perf_counter()
        ev = evaluate_nll(cfg, trainer.sde, trainer.eval_model, device=trainer.device, dtype=torch.float64)
        t_nll = time.perf_counter() - t0
    xtr = train.data.double()
    mu, cov = xtr.mean(0), torch.cov(xtr.T)
    gauss = torch.distributions.MultivariateNormal(mu, cov)
    nll_gauss = float(-gauss.log_prob(held_out.double()).mean())
    nll_true = float(-test.distribution.log_prob(held_out.double()).mean()) if test.distribution is not None else None

    # 4. two-sample tests against held-out data
    tests = {name: two_sample_test(x, held_out) for name, x in samples.items()}
    tests["gaussian_fit"] = two_sample_test(gauss.sample((n_samples,)).float(), held_out)
    wall = time.perf_counter() - t_start

    result = dict(
        steps=summary["step"],
        train_s=t_train,
        nll_model=ev["eval_nll"],
        nll_gaussian=nll_gauss,
        nll_true=nll_true,
        nll_s=t_nll,
        pvalues={k: v["p"] for k, v in tests.items()},
        tests=tests,
        sample_s=t_sample,
        wall_s=wall,
        samples=samples,
    )
    if plot:
        result["png"] = _plot(os.path.join(out, "main_job.png"), held_out, samples, result)
    return result


def _plot(path, data, samples, r) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig, axes = plt.subplots(1, 1 + len(samples), figsize=(4 * (1 + len(samples)), 4), sharex=True, sharey=True)
    axes[0].scatter(*data.T, s=2)
    axes[0].set_title(f"held-out data (NLL {r['nll_true']:.3f})" if r["nll_true"] else "held-out data")
    for ax, (name, x) in zip(axes[1:], samples.items()):
        ax.scatter(*x.T, s=2, color="C1")
        ax.set_title(f"{name} samples (MMD p = {r['pvalues'][name]:.2f})")
    fig.suptitle(f"toy VP model: test NLL {r['nll_model']:.3f} nats vs Gaussian fit {r['nll_gaussian']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out")
    p.add_argument("--n-iters", type=int, default=None, help="training steps (default: the config's)")
    p.add_argument("--config", default=None, help="a toy 2-D config (default configs/toy_vp.yaml)")
    p.add_argument("--n", type=int, default=1000, help="samples per sampler and held-out points")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for this small MLP)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    r = run(out=args.out, n_iters=args.n_iters, n_samples=args.n, n_test=args.n, config=args.config)
    print()
    print("summary")
    print(f"  training           {r['steps']} steps, {r['train_s']:.1f} s")
    print(f"  test NLL (PF-ODE)  {r['nll_model']:.3f} nats/sample   ({r['nll_s']:.1f} s, exact divergence)")
    gain = r["nll_gaussian"] - r["nll_model"]
    print(f"  Gaussian fit NLL   {r['nll_gaussian']:.3f} nats/sample   (the model is better by {gain:.3f} nats)")
    if r["nll_true"] is not None:
        print(f"  true mixture NLL   {r['nll_true']:.3f} nats/sample")
    for k, tst in r["tests"].items():
        verdict = "indistinguishable from held-out data" if tst["p"] > 0.05 else "differs from held-out data"
        extra = f", sampled in {r['sample_s'][k]:.1f} s" if k in r["sample_s"] else ""
        print(
            f"  MMD test {k:<15s} p = {tst['p']:.3f} (bandwidth median: {tst['p_median_bw']:.3f}, "
            f"median/4: {tst['p_quarter_bw']:.3f}; {verdict}{extra})"
        )
    print(f"  wrote {r['png']}; total wall time {r['wall_s']:.1f} s")
    ok = r["nll_model"] < r["nll_gaussian"] and all(r["pvalues"][k] > 0.05 for k in r["sample_s"])
    print("  verdict: " + ("model beats the Gaussian and passes the two-sample tests" if ok else "CHECK FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
