"""Flow matching as a DSM weighting, configs on the general linear paths, and a tiny rectified-flow training run."""

import numpy as np
import pytest
import torch

import score_sde as ss
from score_sde import cli
from score_sde.nets import MLPScoreNet
from score_sde.training import Trainer, load_config
from score_sde.training.builders import build_sde
from score_sde.training.losses import loss_weight, per_sample_dsm

RF = ss.GeneralLinearSDE.rectified_flow()


def _batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g), torch.rand(n, generator=g) * 0.99 + 0.005, torch.randn(n, 3, generator=g)


@pytest.mark.parametrize("prediction", ["velocity", "eps", "x0"])
def test_flow_matching_weighting_is_the_conditional_flow_matching_loss(prediction):
    """||u_theta - u||^2 with u = z - x_0 on the straight path, = ||eps_theta - z||^2 / (1 - t)^2 (eq. 2)."""
    torch.manual_seed(0)
    model = ss.ScoreModel(MLPScoreNet(3, hidden=16, depth=1, emb_dim=8), RF, prediction=prediction)
    x0, t, z = _batch()
    xt = (1 - t)[:, None] * x0 + t[:, None] * z
    fm = (model.velocity(xt, t) - (z - x0)).pow(2).mean(1)
    eps_form = (model.eps(xt, t) - z).pow(2).mean(1) / (1 - t) ** 2
    for target in ("velocity", "eps", "x0", "score"):
        got = per_sample_dsm(model, x0, weighting="flow_matching", target=target, t=t, noise=z)
        torch.testing.assert_close(got, fm, rtol=1e-9, atol=0)
    torch.testing.assert_close(eps_form, fm, rtol=1e-9, atol=0)


@pytest.mark.parametrize("sde", [ss.VPSDE(), ss.VESDE(), ss.GeneralLinearSDE.edm()], ids=["vp", "ve", "edm"])
def test_flow_matching_weight_is_g4_over_4_on_any_path(sde):
    t = torch.rand(32, dtype=torch.float64) * 0.9 + 0.05
    u_coef = sde.dsigma_dt(t) - sde.sigma(t) * sde.dlog_alpha_dt(t)  # u - u_theta = u_coef (z - eps_theta)
    torch.testing.assert_close(loss_weight(sde, t, "flow_matching") / sde.sigma(t) ** 2, u_coef**2)


def test_configs_build_the_general_paths():
    rf = build_sde(load_config(None, ["sde.kind=rectified_flow", "sde.T=0.99"]))
    assert isinstance(rf, ss.GeneralLinearSDE) and rf.name == "RectifiedFlow" and rf.T == 0.99
    assert build_sde(load_config(None, ["sde.kind=rectified_flow"])).T == 0.999
    edm = build_sde(load_config(None, ["sde.kind=edm", "sde.sigma_min=0.002", "sde.sigma_max=80"]))
    assert edm.name == "EDM" and edm.prior_std == 80.0 and edm.default_eps == 0.002 / 80
    cfg = load_config(None, ["sde.kind=rectified_flow", "model.prediction=velocity",
                             "training.weighting=flow_matching", "training.target=velocity"])  # fmt: skip
    assert cfg.model.prediction == "velocity"


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["sde.kind=rectified_flow", "sde.T=1.0"], "sde.T"),
        (["sde.kind=rectified_flow", "sde.T=0"], "sde.T"),
        (["sde.kind=vpsde", "sde.T=0.5"], "sde.T"),
        (["sde.kind=edm", "sde.sigma_min=80", "sde.sigma_max=0.002"], "sde.sigma_max"),
        (["sde.kind=flow"], "sde.kind"),
        (["model.prediction=flow"], "model.prediction"),
        (["training.weighting=fm"], "training.weighting"),
        (["sde.kind=rectified_flow", "training.loss=ddpm"], "training.loss"),
        (["sde.kind=vpsde", "training.loss=smld"], "training.loss"),
        (["sde.kind=vpsde", "training.loss=ddpm", "model.prediction=velocity"], "model.prediction"),
        (["sde.kind=rectified_flow", "sampling.sampler=ancestral"], "sampling.sampler"),
        (["sde.kind=edm", "sde.sigma_min=0.002", "sde.sigma_max=80", "sampling.predictor=ancestral"],
         "sampling.sampler"),
        (["sde.kind=subvpsde", "sampling.sampler=ancestral"], "sampling.sampler"),
        (["sampling.predictor=no_such"], "sampling.sampler"),
    ],
)
def test_incompatible_configs_are_refused_naming_the_key(overrides, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_config(None, overrides)


def test_a_tiny_rectified_flow_run_trains_samples_and_evaluates(tmp_path):
    """configs/digits_rf.yaml for 300 steps: the flow-matching loss falls, the PF-ODE samples are finite and
    held-out bits/dim come out of the likelihood ODE."""
    cfg = load_config("configs/digits_rf.yaml", ["training.n_iters=300", "training.log_every=50",
                                                 "training.progress=false", "eval.num=16"])  # fmt: skip
    tr = Trainer(cfg, tmp_path / "rf")
    tr.fit()
    rows = (tmp_path / "rf" / "metrics.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[2]) for r in rows]
    assert losses[-1] < 0.75 * losses[0], losses
    assert isinstance(tr.model.sde, ss.GeneralLinearSDE) and tr.model.prediction == "velocity"
    x = tr.sample(num=8, generator=torch.Generator().manual_seed(0))
    assert x.shape == (8, 1, 8, 8) and torch.isfinite(x).all()
    ev = tr.evaluate()
    assert 0 < ev["eval_bpd"] < 4.2  # the untrained net (0 steps, same seed) scores 4.9 bits/dim, 300 steps 3.6
    tr.close()
    # the workdir reads back like any other: `score-sde sample` with the flow's Euler sampler
    out = tmp_path / "s.npz"
    assert cli.main(["sample", "--workdir", str(tmp_path / "rf"), "--num", "4", "--sampler", "ddim", "--steps", "4",
                     "--grid", "uniform", "--out", str(out)]) == 0  # fmt: skip
    x = np.load(out)["samples"]
    assert x.shape == (4, 1, 8, 8) and np.isfinite(x).all()
