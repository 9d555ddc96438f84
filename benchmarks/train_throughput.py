"""Training throughput: the library's Trainer against a bare hand-written DSM loop.

Both train the same network (built from the same config) on the same in-memory data (uniformly
dequantized when the config says so) with the same loss (``score_sde.training.losses.dsm_loss``),
batch size and Adam settings (``foreach=True``, the config's betas, eps and weight decay):

* bare: ``idx = randint; loss = dsm_loss(model, data[idx]); zero_grad; backward; adam.step()``
  -- nothing else;
* trainer: ``Trainer.fit`` with everything it does per step (warmup schedule, deterministic batch
  and noise streams, gradient clipping, EMA update, loss logging to metrics.csv every
  ``log_every`` steps, a checkpoint at the end).

Each variant runs ``--rounds`` times, interleaved, after a warm-up; the median steps/s of each is
reported with their ratio (target >= 0.9). Run on an otherwise idle machine for stable numbers:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_throughput.py [--configs toy_vp digits_vp]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bare_loop(cfg, ds, steps: int, seed: int = 0) -> float:
    """Steps/s of a hand-written DSM loop on the config's network and data set ``ds``."""
    from score_sde.score import ScoreModel
    from score_sde.training.losses import dsm_loss
    from score_sde.training.trainer import build_network, build_sde

    torch.manual_seed(seed)
    t = cfg.training
    data = ds.data
    levels = ds.quantized.to(data.dtype) if cfg.data.uniform_dequantization else None
    scaling = ds.scaling
    sde = build_sde(cfg)
    net = build_network(cfg.model, tuple(data.shape[1:])).to(data.dtype)
    model = ScoreModel(net, sde, prediction=cfg.model.prediction, time_labels=cfg.model.time_labels)
    opt = torch.optim.Adam(
        net.parameters(), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.adam_eps, weight_decay=t.weight_decay, foreach=True
    )
    g = torch.Generator().manual_seed(seed)
    N, B = data.shape[0], t.batch_size
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(N, (B,), generator=g)
        x0 = data[idx]
        if levels is not None:  # the same uniform dequantization as the trainer: a (n + u) / K + b
            x0 = scaling.to_model((levels[idx] + torch.rand(x0.shape, generator=g, dtype=x0.dtype)) / scaling.levels)
        loss = dsm_loss(model, x0, weighting=t.weighting, reduce=t.reduce, eps=t.eps, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - t0)


def trainer_loop(cfg, steps: int) -> float:
    """Steps/s of ``Trainer.fit`` (logging to a temporary workdir, one checkpoint at the end)."""
    from score_sde.training import Trainer
    from score_sde.training.config import apply_overrides

    cfg = apply_overrides(cfg, [f"training.n_iters={steps}", f"training.ckpt_every={steps}", "training.progress=false",
                                "training.sample_every=0", "training.eval_every=0"])  # fmt: skip
    with tempfile.TemporaryDirectory() as wd:
        tr = Trainer(cfg, wd)
        t0 = time.perf_counter()
        tr.fit()
        return steps / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["toy_vp", "digits_vp"])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)

    from score_sde.training import load_config
    from score_sde.training.trainer import load_split

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {args.rounds} interleaved rounds of "
          f"{args.steps} steps; median steps/s")  # fmt: skip
    results = []
    for name in args.configs:
        cfg = load_config(os.path.join(ROOT, "configs", f"{name}.yaml"))
        ds = load_split(cfg, "train", dtype=getattr(torch, cfg.training.dtype))
        bare_loop(cfg, ds, 20)  # warm-up
        trainer_loop(cfg, 20)
        bare, trainer = [], []
        for r in range(args.rounds):
            bare.append(bare_loop(cfg, ds, args.steps, seed=r))
            trainer.append(trainer_loop(cfg, args.steps))
        b, t = statistics.median(bare), statistics.median(trainer)
        results.append((name, b, t))
        rounds = f"bare rounds {[round(v, 1) for v in bare]}, trainer rounds {[round(v, 1) for v in trainer]}"
        print(f"{name}: bare {b:.1f} steps/s, trainer {t:.1f} steps/s, ratio {t / b:.3f}  ({rounds})")
    print("\n| config | bare DSM loop (steps/s) | Trainer (steps/s) | ratio (target >= 0.9) |")
    print("|---|---|---|---|")
    for name, b, t in results:
        print(f"| {name} | {b:.1f} | {t:.1f} | {t / b:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
