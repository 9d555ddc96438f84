"""The paper-figure runner in --fast mode: every artefact is written and the key numbers hold.

One run of ``paper_figures.run_all`` (all items, fast mode, into a temporary folder, trained models
cached in a temporary workdir) is shared by the checks below; it takes about a minute on 2 cores.
"""

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from paper_figures import common, run_all  # noqa: E402


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    work = tmp_path_factory.mktemp("work")
    records = run_all.run(fast=True, out=out, workdir=work)
    return out, records


def numbers(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())["numbers"]


def test_every_item_writes_png_json_md(fast_run):
    out, records = fast_run
    assert set(records) == set(run_all.ITEMS)
    for name in run_all.ITEMS:
        png = out / f"{name}.png"
        assert png.stat().st_size > 5_000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        rec = json.loads((out / f"{name}.json").read_text())
        assert rec["fast"] is True and rec["numbers"], name
        assert rec["mode"] == common.FAST_LABEL, name
        md = (out / f"{name}.md").read_text()
        assert md.startswith(f"### {name}") and common.FAST_LABEL in md, name  # labelled in every table
    results = (out / "RESULTS.md").read_text()
    assert common.FAST_LABEL in results
    assert all(f"![{n}]({n}.png)" in results for n in run_all.ITEMS)
    assert json.loads((out / "timings.json").read_text())["fast"] is True


def test_fig2_probability_flow_matches_exact_transport(fast_run):
    n = numbers(fast_run[0], "fig2")
    assert n["transport_error_max"] < 1e-4
    assert n["transport_error_endpoint"] < 1e-4
    assert n["reverse_sde_w2_to_data"] < 0.2


def test_fig5_discrete_kernels_match_continuous(fast_run):
    n = numbers(fast_run[0], "fig5")
    assert n["kernel_gap"] < 2e-3
    assert n["smld_ve_rel_gap"] < 1e-12
    assert n["ddpm_betas_vs_linspace"] < 1e-15
    gaps = [v["mean_gap"] for v in n["sweep"].values()]
    assert all(a > b for a, b in zip(gaps, gaps[1:]))  # shrinks as N grows


def test_fig3_nfe_falls_as_tolerance_loosens(fast_run):
    n = numbers(fast_run[0], "fig3")
    nfe, tols, err = n["nfe"], n["tolerances"], n["error"]
    assert tols == sorted(tols, reverse=True)
    assert all(a <= b for a, b in zip(nfe, nfe[1:])) and nfe[0] < nfe[-1]
    assert err[0] > err[-1]
    assert n["nfe_saved_vs_tightest_shown"]["0.1"] > 0.5


def test_table1_shape_and_orderings(fast_run):
    n = numbers(fast_run[0], "table1")
    for src in ("exact", "trained"):
        for sde in ("ve", "vp"):
            for p in ("ancestral", "reverse_diffusion", "probability_flow"):
                assert set(n[src][sde][p]) == {"P", "P2", "C2", "PC"}
    ex = n["exact"]
    for sde in ("ve", "vp"):
        # twice the steps helps the fixed-step probability flow; the stochastic predictors beat it
        assert ex[sde]["probability_flow"]["P2"][0] < ex[sde]["probability_flow"]["P"][0]
        assert ex[sde]["reverse_diffusion"]["P"][0] < ex[sde]["probability_flow"]["P"][0]
    # the corrector alone cannot bring VE samples from sigma_max = 50 down to the data in 2N steps
    assert ex["ve"]["probability_flow"]["C2"][0] > 10 * ex["ve"]["ancestral"]["P"][0]


def test_table2_ode_likelihood_matches_exact(fast_run):
    n = numbers(fast_run[0], "table2")
    for key, row in n["exact"].items():
        assert row["exact_err_1e-05"] < 0.1, key  # includes the prior mismatch log p_T - log pi
        assert row["solver_err_1e-05"] < 1e-3, key  # the ODE itself, with the exact p_T
        assert abs(row["exact_err_1e-05"] - row["prior_mismatch"]) < 2e-3, key
    for kind in ("vp", "subvp"):
        assert 0 < n["digits"][kind]["bpd"] < 20


def test_table5_snr_grid(fast_run):
    """The snr curve has an interior optimum: r = 1 is worse than the predictor alone on every SDE, and on VE
    (the paper's tuned case) the best r beats the predictor alone, each by more than 2 standard errors of the
    difference of the seed means (sliced W2 as mean +- std over the same seeds)."""
    rec = json.loads((fast_run[0] / "table5.json").read_text())
    n, k = rec["numbers"], len(rec["config"]["seeds"])

    def gap(a, b):  # (mean a - mean b) in standard errors of the difference
        return (a[0] - b[0]) / ((a[1] ** 2 + b[1] ** 2) / k) ** 0.5

    for kind in ("ve", "vp", "subvp"):
        sw2, base = n["sw2"][kind], n["predictor_only"][kind]
        snrs = sorted(sw2, key=float)
        assert str(n["best_snr"][kind]) == min(snrs, key=lambda r: sw2[r][0])
        assert gap(sw2[snrs[-1]], base) > 2, (kind, sw2[snrs[-1]], base)  # too large a step hurts
    best = n["sw2"]["ve"][str(n["best_snr"]["ve"])]
    assert gap(n["predictor_only"]["ve"], best) > 2, (best, n["predictor_only"]["ve"])


def test_fig4_guidance_artefacts(fast_run):
    n = numbers(fast_run[0], "fig4")
    assert n["inpaint_known_max_error"] < 1e-5  # imputation keeps the observed pixels
    assert n["colorize_gray_max_error"] < 1e-4  # colorization keeps the grey level
    assert n["judge_test_accuracy"] > 0.9
    acc = list(n["classifier_accuracy_vs_t"].values())
    assert len(acc) == 11 and all(0 <= a <= 1 for a in acc)


def test_fig7_latents_closer_than_shuffled(fast_run):
    n = numbers(fast_run[0], "fig7")
    assert n["mean_abs_diff"] < n["mean_abs_diff_shuffled"]
    assert n["mean_corr"] > n["mean_corr_shuffled"]


def test_se2019_annealed_langevin_recovers_mode_weight(fast_run):
    n = numbers(fast_run[0], "se2019_fig3")
    assert abs(n["weight_annealed"] - 0.2) < 0.03
    assert n["weight_langevin"] > 0.35  # plain Langevin keeps the initial basin split


def test_karras_fast_samplers_beat_euler(fast_run):
    n = numbers(fast_run[0], "karras_fig2")["at_budget"]
    for name in ("dpmpp_2m", "unipc"):
        assert n[name]["20"] < n["probability_flow"]["20"] / 5
    assert n["unipc"]["50"] < n["unipc"]["10"]


def test_unknown_items_and_keys_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown figure"):
        run_all.select("fig2,nope")
    from paper_figures import fig5_kernels

    with pytest.raises(ValueError, match="unknown config key 'nope'"):
        common.make_config(fig5_kernels.Config, False, {}, ["nope=1"])
    with pytest.raises(ValueError, match="key=value"):
        common.make_config(fig5_kernels.Config, False, {}, ["N"])
    cfg = common.make_config(fig5_kernels.Config, True, fig5_kernels.FAST, ["N=100"])
    assert cfg.N == 100 and cfg.N_sweep == fig5_kernels.FAST["N_sweep"]


def test_sliced_w2_metric():
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 2, generator=g, dtype=torch.float64)
    # a shift by m moves every 1-D projection by m.theta: SW2^2 = E[(m.theta)^2] = |m|^2 / 2 in 2-D
    m = torch.tensor([3.0, 0.0], dtype=torch.float64)
    sw = common.sliced_w2(x, x + m, n_proj=2000)
    assert abs(sw - 3.0 / 2**0.5) < 0.05
    assert common.sliced_w2(x, x) == 0.0
    y = torch.randn(6000, 2, generator=g, dtype=torch.float64)
    assert common.sliced_w2(x, y) < 0.1


def test_cli_figures_subcommand(tmp_path, capsys):
    from score_sde.cli import main

    assert main(["figures", "--fast", "--only", "fig5", "--out", str(tmp_path), "--workdir", str(tmp_path)]) == 0
    assert (tmp_path / "fig5.png").exists() and (tmp_path / "RESULTS.md").exists()
    assert main(["figures", "--only", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown figure" in capsys.readouterr().err


def test_outputs_go_outside_the_tracked_tree_and_fast_figures_are_stamped(tmp_path):
    assert common.resolve_out(None, fast=True) == common.REPO / "out" / "paper_figures"  # git-ignored /out/
    assert "/out/" in (common.REPO / ".gitignore").read_text().split()
    with pytest.raises(ValueError, match="--update-committed"):
        common.resolve_out(common.COMMITTED, fast=False)  # the committed results are not an --out
    with pytest.raises(ValueError, match="cannot be --fast"):
        common.resolve_out(None, fast=True, update_committed=True)
    assert common.resolve_out(None, fast=False, update_committed=True) == common.COMMITTED
    with pytest.raises(ValueError, match="--update-committed"):
        run_all.main(["--fast", "--only", "fig5", "--out", str(common.COMMITTED)])
    plt = common.plt()
    for fast in (True, False):
        fig = plt.figure()
        ctx = common.Context(out=tmp_path, workdir=tmp_path, fast=fast, name="x")
        common.savefig(fig, ctx)
        assert any(common.FAST_LABEL in t.get_text() for t in fig.texts) == fast
