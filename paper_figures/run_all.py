"""Regenerate every paper figure and table: ``python -m paper_figures [--fast] [--only fig2,table1]``.

Outputs go to ``out/paper_figures/`` (git-ignored; ``--out DIR``); the committed full-run results in
``paper_figures/figures/`` are rewritten only by ``python -m paper_figures --update-committed``.

Also ``score-sde figures [--fast] [--only ...]`` from a source checkout (the command finds this
folder next to the installed package). Each item writes ``<out>/<name>.png``, ``.json`` and
``.md``; this runner then writes ``<out>/RESULTS.md`` (all tables) and ``<out>/timings.json``.
Trained models are cached under ``--workdir`` (default ``runs/paper_figures/``, git-ignored); pass
``--fresh`` to retrain them (the "from scratch" run).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import time
import traceback
from pathlib import Path

import torch

from paper_figures import common

# name -> module, in running order (cheap analytic items first)
ITEMS = {
    "fig2": "fig2_trajectories",
    "fig5": "fig5_kernels",
    "fig3": "fig3_adaptive_ode",
    "table1": "table1_predictors",
    "table2": "table2_nll",
    "table5": "table5_snr",
    "fig4": "fig4_conditional",
    "fig7": "fig7_latents",
    "se2019_fig3": "se2019_fig3_langevin",
    "karras_fig2": "karras_fig2_nfe",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the runner (shared with ``score-sde figures``)."""
    p.add_argument("--fast", action="store_true", help="CI scale: every item in seconds (<= 3 min in all)")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(ITEMS)}")
    p.add_argument("--out", default=None, help=f"output folder (default {common.DEFAULT_OUT}, git-ignored)")
    p.add_argument(
        "--update-committed",
        action="store_true",
        help=f"a full run that rewrites the committed results in {common.COMMITTED} (not with --fast)",
    )
    p.add_argument("--workdir", default=None, help=f"cache of trained models (default {common.DEFAULT_WORKDIR})")
    p.add_argument("--fresh", action="store_true", help="delete the cached trained models first")
    p.add_argument("--keep-going", action="store_true", help="report a failing item and go on with the rest")


def select(only: str | None) -> list[str]:
    if not only:
        return list(ITEMS)
    names = [s.strip() for s in only.split(",") if s.strip()]
    bad = [n for n in names if n not in ITEMS]
    if bad:
        raise ValueError(f"unknown figure(s) {bad}; choose from {list(ITEMS)}")
    return names


def run(
    fast: bool = False,
    only: str | None = None,
    out: str | os.PathLike | None = None,
    workdir: str | os.PathLike | None = None,
    fresh: bool = False,
    keep_going: bool = False,
    update_committed: bool = False,
) -> dict:
    """Run the selected items; returns {name: JSON record} (a failed item: {"error": ...}).

    Outputs go to ``out`` (default :data:`common.DEFAULT_OUT`, outside the tracked tree); only
    ``update_committed=True`` (a full run) rewrites the committed ``paper_figures/figures/``."""
    names = select(only)
    out = common.resolve_out(out, fast, update_committed)
    workdir = Path(workdir) if workdir is not None else common.DEFAULT_WORKDIR
    if fresh and workdir.exists():
        shutil.rmtree(workdir)
    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    t0 = time.perf_counter()
    records = {}
    for name in names:
        mod = importlib.import_module(f"paper_figures.{ITEMS[name]}")
        try:
            records[name] = common.execute(
                mod.NAME, mod.Config, mod.FAST, mod.run, fast=fast, out=out, workdir=workdir,
                update_committed=update_committed,
            )  # fmt: skip
        except Exception as e:
            if not keep_going:
                raise
            traceback.print_exc()
            records[name] = {"name": name, "error": f"{type(e).__name__}: {e}"}
    total = time.perf_counter() - t0
    _write_results(out, names, records, fast, total)
    print(f"all done in {total:.1f} s -> {out}", flush=True)
    return records


def _write_results(out: Path, names: list[str], records: dict, fast: bool, total: float) -> None:
    head = f"# Paper figures: {'fast' if fast else 'full'} run\n\nTotal {total:.1f} s.\n"
    if fast:
        head += f"\n**{common.FAST_LABEL}.**\n"
    parts = [head]
    for name in names:
        md = out / f"{name}.md"
        if "error" in records.get(name, {}):
            parts.append(f"### {name}\n\nFAILED: {records[name]['error']}\n")
        elif md.exists():
            parts.append(f"![{name}]({name}.png)\n\n" + md.read_text())
    (out / "RESULTS.md").write_text("\n".join(parts))
    timings = {n: records[n].get("seconds") for n in names if n in records}
    (out / "timings.json").write_text(json.dumps({"fast": fast, "total_s": round(total, 1), **timings}, indent=2))


def run_from_args(args: argparse.Namespace) -> int:
    records = run(args.fast, args.only, args.out, args.workdir, args.fresh, args.keep_going, args.update_committed)
    return 1 if any("error" in r for r in records.values()) else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run_from_args(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
