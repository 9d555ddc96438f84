"""ScoreModel: prediction types and time-label conventions."""

import pytest
import torch

import score_sde as ss
from score_sde.score import convert, time_labels
from tests.problems import SDES, mixture_2d

KINDS = ["eps", "x0", "v", "score"]


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("src", KINDS)
def test_conversion_round_trips(sde_name, src):
    sde = SDES[sde_name]()
    x = torch.randn(8, 2, 3)
    t = torch.rand(8) * 0.98 + 0.01
    a, s = sde.alpha(t), sde.sigma(t)
    out = torch.randn_like(x)
    for dst in KINDS:
        back = convert(convert(out, x, a, s, src, dst), x, a, s, dst, src)
        assert torch.allclose(back, out, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("prediction", KINDS)
def test_wrapped_analytic_net_gives_analytic_score(sde_name, prediction):
    sde = SDES[sde_name]()
    gmm = mixture_2d()

    def net(x, labels):  # an "ideal network" producing the exact prediction of its type
        t = labels
        a, s = sde.alpha(t), sde.sigma(t)
        return convert(gmm.score(x, t, sde), x, a, s, "score", prediction)

    model = ss.ScoreModel(net, sde, prediction=prediction, time_labels="continuous")
    x, t = torch.randn(16, 2), torch.rand(16) * 0.9 + 0.05
    assert torch.allclose(model.score(x, t), gmm.score(x, t, sde), atol=1e-10)
    assert torch.allclose(model.denoise(x, t), gmm.denoise(x, t, sde), atol=1e-9)
    assert torch.allclose(model(x, t), model.score(x, t))


def test_edm_preconditioned_denoiser():
    sde = ss.VPSDE()
    gmm = mixture_2d()
    sd = 0.5

    def F(x_in, c_noise):  # invert the preconditioning of the exact denoiser
        st = torch.exp(4 * c_noise)[:, None]
        xt = x_in * torch.sqrt(st**2 + sd**2)
        t = sde.t_from_sigma_tilde(st[:, 0])
        a = sde.alpha(t)[:, None]
        D = gmm.denoise(xt * a, t, sde)
        return (D - sd**2 / (st**2 + sd**2) * xt) / (st * sd / torch.sqrt(st**2 + sd**2))

    model = ss.ScoreModel(F, sde, prediction="edm")
    x, t = torch.randn(10, 2), torch.rand(10) * 0.9 + 0.05
    assert torch.allclose(model.score(x, t), gmm.score(x, t, sde), atol=1e-8)


def test_time_labels_one_place():
    sde = ss.VPSDE(N=1000)
    t = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(time_labels(sde, t, "t999"), t * 999)
    assert time_labels(sde, t, "discrete").tolist() == [0, 499, 999]
    ve = ss.VESDE()
    assert torch.allclose(time_labels(ve, t, "sigma"), ve.sigma(t))
    ddpm = ss.VPSDE.from_betas(torch.linspace(1e-4, 0.02, 1000))
    assert time_labels(ddpm, ddpm.index_to_time(torch.tensor([0, 7, 999])), "discrete").tolist() == [0, 7, 999]


def test_conditioning_passed_through():
    sde = ss.VPSDE()
    seen = {}

    def net(x, labels, cond=None):
        seen["cond"] = cond
        return torch.zeros_like(x)

    model = ss.ScoreModel(net, sde)
    model.eps(torch.randn(3, 2), 0.5, cond=torch.tensor([1, 2, 0]))
    assert seen["cond"].tolist() == [1, 2, 0]
