"""Official score_sde models vs ``score_sde.pretrained.load_official``, config by config.

For each official config (default: every CIFAR-10 config of ``configs/official`` whose network we
build), this script

1. builds the official network with the official code (random init, every parameter perturbed so
   that zero-initialised layers matter), makes the EMA ``shadow_params`` differ from the weights,
   and saves an official-format checkpoint (``model`` with the ``module.`` prefix, ``ema``,
   ``optimizer``, ``step``);
2. loads that file with ``load_official(path, configs/official/<sde>/<name>.yaml)``;
3. compares our ``model(x, t)`` with the official ``get_score_fn(sde, model, train=False,
   continuous=...)`` (EMA applied) on noisy CIFAR-shaped inputs x_t at times t ~ U(eps, 1).

Reported per config: the max over the batch of ||ours - official|| / ||official|| in float32, the
same with both codes in float64 (the mapping itself; the official code forms a few constants in
float32, which this script widens for that run only), the official code's own float32 round-off
(float32 vs float64), and the error at t = eps against the float64 official score.

The official code is imported from a checkout given on the command line, never copied here. It
needs no JAX/TensorFlow: ``ml_collections`` is replaced by a plain attribute dict when it is not
installed, and the CUDA extension package ``op`` by the checkout's own pure-torch
``upfirdn2d_native`` (read from ``op/upfirdn2d.py`` without building anything). Run::

    git clone https://github.com/yang-song/score_sde_pytorch /tmp/score_sde_pytorch
    python benchmarks/official_equivalence.py --official /tmp/score_sde_pytorch

It writes ``benchmarks/results/official_equivalence.txt``. Memory: ~3 GB for the deep models.
"""

from __future__ import annotations

import argparse
import ast
import copy
import glob
import importlib
import math
import os
import sys
import tempfile
import time
import types

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from score_sde.pretrained import load_official, load_official_config  # noqa: E402

torch.set_num_threads(int(os.environ.get("THREADS", "1")))


# ---------------------------------------------------------------------------------------------
# importing the official code on a CPU-only machine


def _import_official(path: str):
    """(sde_lib, models.utils, ExponentialMovingAverage, layers, up_or_down_sampling) of the checkout."""
    if "ml_collections" not in sys.modules:
        try:
            importlib.import_module("ml_collections")
        except ModuleNotFoundError:
            mc = types.ModuleType("ml_collections")

            class ConfigDict(dict):
                def __getattr__(self, k):
                    try:
                        return self[k]
                    except KeyError:
                        raise AttributeError(k) from None

                def __setattr__(self, k, v):
                    self[k] = v

            mc.ConfigDict = ConfigDict
            sys.modules["ml_collections"] = mc
    # the package `op` builds CUDA kernels on import; take its pure-torch functions only
    src = open(os.path.join(path, "op", "upfirdn2d.py")).read()
    tree = ast.parse(src)
    keep = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("upfirdn2d", "upfirdn2d_native")]
    op = types.ModuleType("op")
    op.__dict__.update(torch=torch, F=torch.nn.functional)
    exec(compile(ast.Module(body=keep, type_ignores=[]), os.path.join(path, "op", "upfirdn2d.py"), "exec"),
         op.__dict__)  # fmt: skip
    sys.modules["op"] = op
    sys.path.insert(0, path)
    sde_lib = importlib.import_module("sde_lib")
    mutils = importlib.import_module("models.utils")
    for name in ("ncsnpp", "ddpm"):
        importlib.import_module(f"models.{name}")
    ema = importlib.import_module("models.ema").ExponentialMovingAverage
    return sde_lib, mutils, ema, importlib.import_module("models.layers"), importlib.import_module(
        "models.up_or_down_sampling"
    )


class Official:
    def __init__(self, path):
        self.path = path
        self.sde_lib, self.mutils, self.EMA, self.layers, self.updown = _import_official(path)
        self._emb, self._upfirdn = self.layers.get_timestep_embedding, self.updown.upfirdn2d

    def config(self, rel: str):
        mod = importlib.import_module("configs." + rel.replace("/", ".").removesuffix(".py"))
        cfg = mod.get_config()
        cfg.device = torch.device("cpu")
        return cfg

    def sde(self, cfg):
        m, s = cfg.model, cfg.training.sde
        if s == "vesde":
            return self.sde_lib.VESDE(m.sigma_min, m.sigma_max, m.num_scales)
        cls = self.sde_lib.VPSDE if s == "vpsde" else self.sde_lib.subVPSDE
        return cls(m.beta_min, m.beta_max, m.num_scales)

    def float64(self, on: bool):
        """Widen the two constants the official code forms in float32 (for the float64 run only)."""
        if not on:
            self.layers.get_timestep_embedding, self.updown.upfirdn2d = self._emb, self._upfirdn
            return

        def emb(timesteps, dim, max_positions=10000):
            half = dim // 2
            w = torch.exp(torch.arange(half, dtype=torch.float64) * -(math.log(max_positions) / (half - 1)))
            e = timesteps.double()[:, None] * w[None]
            e = torch.cat([torch.sin(e), torch.cos(e)], dim=1)
            return torch.nn.functional.pad(e, (0, 1)) if dim % 2 else e

        self.layers.get_timestep_embedding = emb
        self.updown.upfirdn2d = lambda x, k, up=1, down=1, pad=(0, 0): self._upfirdn(x, k.to(x.dtype), up, down, pad)

    def score(self, cfg, model, x, t, f64=False):
        self.float64(f64)
        try:
            m = copy.deepcopy(model).double() if f64 else model
            fn = self.mutils.get_score_fn(self.sde(cfg), m, train=False, continuous=cfg.training.continuous)
            with torch.no_grad():
                return fn(x.double() if f64 else x, t.double() if f64 else t)
        finally:
            self.float64(False)


def perturb_(params, gen, scale=0.5):
    """Add N(0, (scale * max(std(p), 0.05))^2) noise to every trainable tensor (zero inits included)."""
    with torch.no_grad():
        for p in params:
            if p.requires_grad:
                s = max(float(p.std()) if p.numel() > 1 else 0.0, 0.05)
                p.add_(torch.randn(p.shape, generator=gen) * s * scale)


def official_checkpoint(off: Official, cfg, seed: int):
    """(official model with the EMA applied, eval mode; checkpoint dict in the official format)."""
    torch.manual_seed(seed)
    model = off.mutils.create_model(cfg)  # DataParallel, as the official training script saves it
    gen = torch.Generator().manual_seed(seed + 1)
    perturb_(model.parameters(), gen)
    ema = off.EMA(model.parameters(), decay=cfg.model.ema_rate)
    perturb_(model.parameters(), gen)  # the raw weights now differ from the EMA
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    state = copy.deepcopy({"optimizer": opt.state_dict(), "model": model.state_dict(), "ema": ema.state_dict(),
                           "step": 0})  # fmt: skip
    ema.copy_to(model.parameters())
    return model.eval(), state


def inputs(off: Official, cfg, n: int, seed: int):
    """x_t = alpha x_0 + sigma z for x_0 uniform on the data range, t ~ U(eps, 1); and eps."""
    g = torch.Generator().manual_seed(seed)
    eps = 1e-5 if cfg.training.sde == "vesde" else 1e-3
    t = eps + (1 - eps) * torch.rand(n, generator=g)
    C, S = cfg.data.num_channels, cfg.data.image_size
    x0 = torch.rand(n, C, S, S, generator=g)
    x0 = 2 * x0 - 1 if cfg.data.centered else x0
    mean, std = off.sde(cfg).marginal_prob(x0, t)
    return mean + std[:, None, None, None] * torch.randn(n, C, S, S, generator=g), t, eps


def rel_err(a, b) -> float:
    a, b = a.double().flatten(1), b.double().flatten(1)
    return float(((a - b).norm(dim=1) / b.norm(dim=1)).max())


def run_one(off: Official, yaml_path: str, batch: int, seed: int) -> dict:
    ycfg = load_official_config(yaml_path)
    rel = ycfg["official_config"].removeprefix("configs/")
    cfg = off.config(rel)
    try:
        model, state = official_checkpoint(off, cfg, seed)
    except Exception as e:  # the official code itself can not build this config
        return {"config": rel, "error": f"official code fails to build it: {type(e).__name__}: {e}"}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "checkpoint_0.pth")
        torch.save(state, path)
        del state
        ours = load_official(path, yaml_path)
        ours64 = load_official(path, yaml_path, dtype=torch.float64)
    x, t, eps = inputs(off, cfg, batch, seed + 2)
    ref32, ref64 = off.score(cfg, model, x, t), off.score(cfg, model, x, t, f64=True)
    te = torch.full((2,), eps)
    ref_eps64 = off.score(cfg, model, x[:2], te, f64=True)
    with torch.no_grad():
        o32 = ours(x, t)
        o_eps = ours(x[:2], te)
        o64 = ours64(x.double(), t.double())
    return {
        "config": rel,
        "params": sum(p.numel() for p in model.parameters()),
        "f32": rel_err(o32, ref32),
        "f64": rel_err(o64, ref64),
        "official_f32_roundoff": rel_err(ref32, ref64),
        "ours_f32_vs_official_f64": rel_err(o32, ref64),
        "eps_vs_official_f64": rel_err(o_eps, ref_eps64),
    }


def structure(off: Official, yaml_path: str) -> str:
    """One line: do the state-dict keys, shapes and the parameters() order of ours equal the official net's?"""
    from score_sde.pretrained import build_official_net

    ycfg = load_official_config(yaml_path)
    rel = ycfg["official_config"].removeprefix("configs/")
    try:
        theirs = off.mutils.get_model(off.config(rel).model.name)(off.config(rel))
    except Exception as e:
        return f"{rel:44s} official code fails to build it: {type(e).__name__}"
    ours = build_official_net(ycfg)
    keys = {k: tuple(v.shape) for k, v in theirs.state_dict().items()} == {
        k: tuple(v.shape) for k, v in ours.state_dict().items()
    }
    order = [tuple(q.shape) for q in theirs.parameters() if q.requires_grad] == [
        tuple(q.shape) for q in ours.parameters() if q.requires_grad
    ]
    n = sum(q.numel() for q in ours.parameters())
    k, o = "equal" if keys else "DIFFER", "equal" if order else "DIFFERS"
    return f"{rel:44s} {n:11d}  keys+shapes {k}  EMA order {o}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official", required=True, help="path of a score_sde_pytorch checkout")
    p.add_argument("--only", default=None, help="substring filter on config paths")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "official_equivalence.txt"))
    p.add_argument("--structure", action="store_true",
                   help="only compare state-dict keys / shapes and parameter order, for every config (all data sets)")
    args = p.parse_args(argv)
    off = Official(os.path.abspath(args.official))
    if args.structure:
        paths = sorted(glob.glob(os.path.join(ROOT, "configs", "official", "**", "*.yaml"), recursive=True))
        lines = ["# state-dict keys and shapes, and the order of parameters() (the EMA list), ours vs official",
                 "# command: python benchmarks/official_equivalence.py --official <checkout> --structure"]
        lines += [structure(off, q) for q in paths if args.only is None or args.only in q]
        out = os.path.join(os.path.dirname(args.out), "official_structure.txt")
        with open(out, "w") as f:
            f.write("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    paths = sorted(glob.glob(os.path.join(ROOT, "configs", "official", "**", "cifar10*.yaml"), recursive=True))
    paths = [q for q in paths if args.only is None or args.only in q]
    rows, t0 = [], time.perf_counter()
    for q in paths:
        r = run_one(off, q, args.batch, args.seed)
        rows.append(r)
        print(r, flush=True)
    tol = 2e-5
    lines = [
        "# load_official vs the official score_sde code (yang-song/score_sde_pytorch), random perturbed weights,",
        "# EMA != weights, official checkpoint format; score = get_score_fn(sde, model, train=False, continuous=...)",
        f"# max over a batch of {args.batch} of ||ours - official|| / ||official||; t ~ U(eps, 1); "
        f"tolerance {tol:g} (f32)",
        "# f32: both in float32 | f64: both in float64 | official_f32_roundoff: official f32 vs f64 |",
        "# ours_f32_vs_f64: ours f32 vs official f64 | eps: ours f32 vs official f64 at t = eps",
        f"# command: python benchmarks/official_equivalence.py --official <checkout> --batch {args.batch} "
        f"--seed {args.seed}; {time.perf_counter() - t0:.0f} s",
        f"{'config':44s} {'params':>11s} {'f32':>9s} {'f64':>9s} {'off_f32':>9s} {'ours_f32':>9s} {'eps':>9s}  ok",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['config']:44s} {'-':>11s}  {r['error']}")
            continue
        ok = "yes" if r["f32"] <= tol else "NO"
        lines.append(f"{r['config']:44s} {r['params']:11d} {r['f32']:9.2e} {r['f64']:9.2e} "
                     f"{r['official_f32_roundoff']:9.2e} {r['ours_f32_vs_official_f64']:9.2e} "
                     f"{r['eps_vs_official_f64']:9.2e}  {ok}")  # fmt: skip
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
