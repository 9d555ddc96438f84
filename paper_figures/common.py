"""Shared plumbing of the paper-figure scripts: configs, outputs, metrics, the 2-D problems.

Every script in this folder follows one pattern::

    NAME = "fig2"                      # file stem of its outputs
    @dataclass
    class Config: ...                  # the full-scale settings (edit here, or --set key=value)
    FAST = dict(...)                   # overrides for --fast (CI scale)
    def run(cfg, ctx) -> Report        # computes, draws one PNG, returns the numbers

and ``main(argv)`` (``python paper_figures/<script>.py [--fast] [--out DIR] [--set k=v]``) writes
``<out>/<NAME>.png``, ``<out>/<NAME>.json`` (config, numbers, the paper's numbers, seconds) and
``<out>/<NAME>.md`` (the table shown in README.md). Everything is seeded from ``Config.seed``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

import score_sde as ss
from score_sde.metrics import mmd_rbf, sliced_w2  # noqa: F401 (re-exported: common.sliced_w2)
from score_sde.testing import make_sde, mixture_2d  # noqa: F401 (the shared exact problem: common.mixture_2d)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUT = REPO / "out" / "paper_figures"  # git-ignored: a run never touches the committed results
COMMITTED = HERE / "figures"  # the committed full-run results, written only by --update-committed
DEFAULT_WORKDIR = REPO / "runs" / "paper_figures"  # git-ignored cache of trained checkpoints
FAST_LABEL = "FAST MODE (CI scale: tiny models, few samples): checks that the pipeline runs; not the paper's numbers"


def resolve_out(out: str | Path | None, fast: bool, update_committed: bool = False) -> Path:
    """The output folder: ``out`` or :data:`DEFAULT_OUT`; :data:`COMMITTED` only with ``update_committed``
    (a full run: fast-mode numbers never replace the committed ones)."""
    if update_committed:
        if fast:
            raise ValueError("--update-committed regenerates the committed full-run results; it cannot be --fast")
        if out is not None and Path(out).resolve() != COMMITTED:
            raise ValueError(f"--update-committed writes to {COMMITTED}; drop --out {out}")
        return COMMITTED
    path = Path(out) if out is not None else DEFAULT_OUT
    if path.resolve() == COMMITTED:
        raise ValueError(
            f"{COMMITTED} holds the committed full-run results; regenerate them with "
            "`python -m paper_figures --update-committed`, or write elsewhere with --out"
        )
    return path


@dataclass
class Context:
    """Where a figure writes (``out``), where trained models are cached (``workdir``), and the mode."""

    out: Path
    workdir: Path
    fast: bool
    name: str

    def path(self, suffix: str) -> Path:
        return self.out / f"{self.name}{suffix}"


@dataclass
class Report:
    """What a figure script returns: its key numbers, the paper's numbers, a markdown table."""

    numbers: dict
    paper: dict = field(default_factory=dict)
    markdown: str = ""
    notes: str = ""


# ---- running one script --------------------------------------------------------------------------


def _coerce(value: str, like):
    if isinstance(like, bool):
        return value.lower() in ("1", "true", "yes")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    if isinstance(like, (list, tuple)):
        return type(like)(_coerce(v, like[0]) if like else float(v) for v in value.split(","))
    return value


def make_config(config_cls, fast: bool, fast_overrides: dict, sets: list[str] | None = None):
    """The full config, with the --fast overrides and then ``key=value`` overrides applied."""
    cfg = config_cls()
    if fast:
        cfg = dataclasses.replace(cfg, **fast_overrides)
    for kv in sets or []:
        if "=" not in kv:
            raise ValueError(f"--set expects key=value; got {kv!r}")
        k, v = kv.split("=", 1)
        if not hasattr(cfg, k):
            raise ValueError(f"unknown config key {k!r} for {config_cls.__qualname__}; keys: {list(vars(cfg))}")
        cfg = dataclasses.replace(cfg, **{k: _coerce(v, getattr(cfg, k))})
    return cfg


def execute(
    name: str,
    config_cls,
    fast_overrides: dict,
    run: Callable,
    *,
    fast: bool = False,
    out: str | Path | None = None,
    workdir: str | Path | None = None,
    sets: list[str] | None = None,
    verbose: bool = True,
    update_committed: bool = False,
) -> dict:
    """Run one figure script and write its PNG/JSON/markdown; returns the JSON record."""
    cfg = make_config(config_cls, fast, fast_overrides, sets)
    out = resolve_out(out, fast, update_committed)
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(workdir) if workdir is not None else DEFAULT_WORKDIR
    ctx = Context(out=out, workdir=workdir, fast=fast, name=name)
    torch.manual_seed(getattr(cfg, "seed", 0))
    t0 = time.perf_counter()
    old_dtype = torch.get_default_dtype()
    try:
        report = run(cfg, ctx)
    finally:
        torch.set_default_dtype(old_dtype)
    seconds = time.perf_counter() - t0
    record = {
        "name": name,
        "fast": fast,
        "mode": FAST_LABEL if fast else "full run",
        "seconds": round(seconds, 2),
        "config": dataclasses.asdict(cfg),
        "numbers": _jsonable(report.numbers),
        "paper": _jsonable(report.paper),
        "notes": report.notes,
    }
    ctx.path(".json").write_text(json.dumps(record, indent=2) + "\n")
    md = f"### {name}\n\n"
    if fast:
        md += f"**{FAST_LABEL}.**\n\n"
    md += f"{report.markdown.strip()}\n"
    if report.notes:
        md += f"\n{report.notes.strip()}\n"
    md += f"\n_{'fast' if fast else 'full'} mode, {seconds:.1f} s._\n"
    ctx.path(".md").write_text(md)
    if verbose:
        print(f"[{name}] {seconds:6.1f} s -> {ctx.path('.png')}", flush=True)
    return record


def script_main(name: str, config_cls, fast_overrides: dict, run: Callable, argv=None, doc: str = "") -> dict:
    p = argparse.ArgumentParser(description=doc or name)
    p.add_argument("--fast", action="store_true", help="CI scale (seconds instead of minutes)")
    p.add_argument("--out", default=None, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--update-committed", action="store_true", help=f"full run into the committed {COMMITTED}")
    p.add_argument("--workdir", default=None, help=f"cache of trained models (default {DEFAULT_WORKDIR})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    a = p.parse_args(argv)
    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    return execute(name, config_cls, fast_overrides, run, fast=a.fast, out=a.out, workdir=a.workdir, sets=a.set,
                   update_committed=a.update_committed)  # fmt: skip


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if torch.is_tensor(v):
        return _jsonable(v.tolist())
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


# ---- plotting ------------------------------------------------------------------------------------


def plt():
    """matplotlib.pyplot with the non-interactive Agg back-end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    pyplot.rcParams.update({"font.size": 9, "axes.titlesize": 9, "figure.dpi": 80})
    return pyplot


def label_fast(fig, ctx: Context) -> None:
    """Stamp :data:`FAST_LABEL` above a fast-mode figure (full runs are left as they are)."""
    if ctx.fast:
        fig.text(0.5, 1.02, FAST_LABEL, ha="center", va="bottom", color="crimson", fontsize=9, weight="bold")


def savefig(fig, ctx: Context, dpi: int = 80) -> None:
    label_fast(fig, ctx)
    fig.savefig(ctx.path(".png"), dpi=dpi, bbox_inches="tight")
    plt().close(fig)


# ---- metrics: score_sde.metrics (re-exported for the figure scripts) ------------------------------


def mean_std(values) -> tuple[float, float]:
    v = torch.as_tensor(list(values), dtype=torch.float64)
    return float(v.mean()), float(v.std()) if v.numel() > 1 else 0.0


def fmt_ms(m: float, s: float, digits: int = 3) -> str:
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ---- shared 2-D problem: mixture_2d and make_sde come from score_sde.testing -----------------------


def reference_sample(gmm: ss.GaussianMixture, n: int, seed: int = 12345) -> torch.Tensor:
    """A large exact sample of p_0 against which sample quality is measured."""
    return gmm.sample(n, generator=torch.Generator().manual_seed(seed))


def sw2_of_sampler(sde, score_fn, ref: torch.Tensor, n: int, seed: int, **sample_kw) -> tuple[float, int]:
    """Sliced W2 between ``n`` samples of ``ss.sample(sde, score_fn, **sample_kw)`` (seeded) and ``ref``;
    returns (sw2, nfe). A diverged run (non-finite samples) scores inf."""
    g = torch.Generator().manual_seed(seed)
    res = ss.sample(sde, score_fn, shape=(n, *ref.shape[1:]), generator=g, dtype=ref.dtype, **sample_kw)
    if not torch.isfinite(res.x).all():
        return float("inf"), res.nfe
    return sliced_w2(res.x, ref), res.nfe


def floor_sw2(gmm: ss.GaussianMixture, ref: torch.Tensor, n: int, seeds) -> tuple[float, float]:
    """The finite-sample floor: sliced W2 of n exact samples against ``ref`` (mean, std over seeds)."""
    return mean_std(sliced_w2(gmm.sample(n, generator=torch.Generator().manual_seed(1000 + s)), ref) for s in seeds)
