"""Fitted time grids (ss.optimize_grid / ss.FittedGrid): fits beat their base grid on held-out starts
(exact mixture scores), every fixed-grid sampler and SDE kind runs with them, files round-trip, and
grids that do not fit the call are refused."""

import json

import pytest
import torch

import score_sde as ss
from score_sde import cli

GMM = ss.GaussianMixture(
    [0.2, 0.5, 0.3],
    [[-2.0, -1.0], [1.5, 0.5], [0.0, 2.5]],
    [[[0.30, 0.10], [0.10, 0.20]], [[0.20, -0.05], [-0.05, 0.40]], [[0.15, 0.0], [0.0, 0.10]]],
)


def starts(sde, n, seed):
    return sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture(scope="module")
def vp_fit():
    """(sde, grid) fitted by the teacher method for UniPC-2 at 6 NFE on 128 starts of seed 0."""
    sde = ss.VPSDE()
    g = ss.optimize_grid(sde, GMM.score_fn(sde), "unipc", 6, x_T=starts(sde, 128, 0), order=2, max_evals=60)
    return sde, g


@pytest.mark.parametrize("method", ["teacher", "bound"])
def test_fitted_grid_beats_its_base_grid_on_held_out_starts(method, vp_fit):
    sde = ss.VPSDE()
    score = GMM.score_fn(sde)
    g = vp_fit[1] if method == "teacher" else ss.optimize_grid(sde, score, "unipc", 6, x_T=starts(sde, 128, 0),
                                                                  method="bound", order=2, max_evals=60)  # fmt: skip
    held = starts(sde, 400, 1)  # another seed: never seen by the fit
    ref = ss.sample(sde, score, x_T=held, sampler="unipc", order=3, steps=800, grid="auto").x
    err = lambda x: float((x - ref).norm(dim=1).mean())
    fitted = ss.sample(sde, score, x_T=held, sampler="unipc", grid=g, order=2)
    assert fitted.nfe == 6 and torch.equal(fitted.grid, g.tensor())
    base = min(err(ss.sample(sde, score, x_T=held, sampler="unipc", nfe=6, grid=k, order=2).x)
               for k in ("auto", "logsnr", "karras"))  # fmt: skip
    assert err(fitted.x) < 0.8 * base, (method, err(fitted.x), base)
    assert g.method == method and g.cost["nfe"] > 0 and g.cost["seconds"] > 0 and g.cost["fit_samples"] == 128
    assert g.cost["starts"] == 3 and "NFE" in g.cost_text()


@pytest.mark.parametrize(
    "sde, sampler, opts, nfe",
    [
        (ss.VESDE(0.01, 20.0), "ddim", {}, 4),
        (ss.SubVPSDE(), "dpmpp_2m", {}, 5),
        (ss.VESDE(0.01, 20.0), "dpmpp_3m", {}, 6),
        (ss.VPSDE(), "heun", {}, 7),
        (ss.SubVPSDE(), "unipc", {"order": 3}, 6),
    ],
)
def test_every_fixed_grid_sampler_and_sde_kind(sde, sampler, opts, nfe):
    score = GMM.score_fn(sde)
    g = ss.optimize_grid(sde, score, sampler, nfe, x_T=starts(sde, 32, 0), max_evals=8, teacher_steps=100, **opts)
    assert g.info["loss"] <= min(v["loss_base"] for v in g.info["per_base"].values()) + 1e-15
    t = g.tensor()
    assert (t[1:] < t[:-1]).all() and t[0] == sde.T and t[-1] == sde.default_eps
    res = ss.sample(sde, score, x_T=starts(sde, 8, 1), sampler=sampler, grid=g, **opts)
    assert torch.equal(res.grid, t) and res.nfe <= nfe and torch.isfinite(res.x).all()


def test_save_load_round_trip(vp_fit, tmp_path):
    sde, g = vp_fit
    path = g.save(str(tmp_path / "grids" / "g.json"))
    h = ss.FittedGrid.load(path)
    assert h.times == g.times and h.cost == g.cost and h.options == {"order": 2} and h.nfe == 6
    x = starts(sde, 4, 2)
    a = ss.sample(sde, GMM.score_fn(sde), x_T=x, sampler="unipc", grid=g).x
    b = ss.sample(sde, GMM.score_fn(sde), x_T=x, sampler="unipc", grid=h, order=2).x
    assert torch.equal(a, b)


def _edited(g, tmp_path, **change):
    d = g.to_dict()
    d.update(change)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    return str(p)


def test_bad_grid_files_are_refused(vp_fit, tmp_path):
    _, g = vp_fit
    t = list(g.times)
    swapped = t[:2] + [t[3], t[2]] + t[4:]
    with pytest.raises(ValueError, match="not strictly decreasing"):
        ss.FittedGrid.load(_edited(g, tmp_path, times=swapped))
    with pytest.raises(ValueError, match=r"leaves \[eps, T\]"):
        ss.FittedGrid.load(_edited(g, tmp_path, times=[1.5] + t[1:]))
    with pytest.raises(ValueError, match=r"leaves \[eps, T\]"):
        ss.FittedGrid.load(_edited(g, tmp_path, times=t[:-1] + [0.0]))
    with pytest.raises(ValueError, match="needs 7 times"):
        ss.FittedGrid.load(_edited(g, tmp_path, times=t[:3] + t[4:]))
    with pytest.raises(ValueError, match="not a fitted grid"):
        ss.FittedGrid.load(_edited(g, tmp_path, format="something else"))
    p = tmp_path / "junk.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON fitted grid"):
        ss.FittedGrid.load(str(p))


def test_grid_for_another_sde_sampler_or_nfe_is_refused(vp_fit):
    sde, g = vp_fit
    x = starts(sde, 4, 3)
    other = ss.VPSDE(beta_max=10.0)
    with pytest.raises(ValueError, match="another SDE"):
        ss.sample(other, GMM.score_fn(other), x_T=x, sampler="unipc", grid=g)
    with pytest.raises(ValueError, match="another SDE"):
        ss.sample(ss.SubVPSDE(), GMM.score_fn(ss.SubVPSDE()), x_T=x, sampler="unipc", grid=g)
    score = GMM.score_fn(sde)
    with pytest.raises(ValueError, match="fitted for sampler 'unipc'"):
        ss.sample(sde, score, x_T=x, sampler="dpmpp_2m", grid=g)
    with pytest.raises(ValueError, match="fitted for nfe = 6"):
        ss.sample(sde, score, x_T=x, sampler="unipc", grid=g, nfe=10)
    with pytest.raises(ValueError, match="steps"):
        ss.sample(sde, score, x_T=x, sampler="unipc", grid=g, steps=9)
    with pytest.raises(ValueError, match="order = 2"):
        ss.sample(sde, score, x_T=x, sampler="unipc", grid=g, order=3)
    with pytest.raises(ValueError, match="eps"):
        ss.sample(sde, score, x_T=x, sampler="unipc", grid=g, eps=1e-2)


def test_optimize_grid_bad_arguments():
    sde = ss.VPSDE()
    score = GMM.score_fn(sde)
    x = starts(sde, 4, 0)
    with pytest.raises(ValueError, match="method"):
        ss.optimize_grid(sde, score, "unipc", 5, x_T=x, method="magic")
    with pytest.raises(ValueError, match="fixed-grid sampler"):
        ss.optimize_grid(sde, score, "ode", 5, x_T=x)
    with pytest.raises(ValueError, match="nfe"):
        ss.optimize_grid(sde, score, "unipc", 0, x_T=x)
    with pytest.raises(ValueError, match="below one step"):
        ss.optimize_grid(sde, score, "heun", 1, x_T=x)
    with pytest.raises(ValueError, match="x_T"):
        ss.optimize_grid(sde, score, "unipc", 5)


def test_cli_optimize_grid_then_sample_with_it(tmp_path, capsys):
    from score_sde.training import load_config, save_config

    over = ["data.dataset=mixture", "data.n_train=128", "data.n_test=16", "model.hidden=16", "model.depth=1",
            "model.emb_dim=16", "training.batch_size=32", "training.n_iters=5", "training.warmup=1",
            "training.log_every=5", "training.ckpt_every=5", "training.progress=false"]  # fmt: skip
    cfg = tmp_path / "cfg.yaml"
    save_config(load_config(None, over), cfg)
    wd = tmp_path / "wd"
    assert cli.main(["train", "--config", str(cfg), "--workdir", str(wd)]) == 0
    args = ["optimize-grid", "--workdir", str(wd), "--sampler", "dpmpp_2m", "--nfe", "4", "--num-fit", "16",
            "--max-evals", "5"]  # fmt: skip
    assert cli.main(args) == 0
    path = wd / "grids" / "dpmpp_2m_4_teacher.json"
    out = capsys.readouterr().out
    assert path.is_file() and "NFE" in out and "optimiser starts" in out
    npz = tmp_path / "x.npz"
    assert cli.main(["sample", "--workdir", str(wd), "--grid", str(path), "--num", "4", "--out", str(npz)]) == 0
    assert "dpmpp_2m, 4 NFE" in capsys.readouterr().out
    assert cli.main(["sample", "--workdir", str(wd), "--grid", str(path), "--nfe", "5", "--out", str(npz)]) == 2
    assert "fitted for nfe = 4" in capsys.readouterr().err
    assert cli.main(["sample", "--workdir", str(wd), "--grid", str(tmp_path / "no.json"), "--out", str(npz)]) == 2
