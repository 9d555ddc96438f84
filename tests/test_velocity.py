"""The velocity prediction u = alpha' x_0 + sigma' eps: conversions, the PF-ODE identity, ScoreModel."""

import pytest
import torch

import score_sde as ss
from score_sde.score import convert, convert_at
from tests.problems import mixture_2d

SDES = {
    "vp": lambda: ss.VPSDE(0.1, 20.0),
    "subvp": lambda: ss.SubVPSDE(0.1, 20.0),
    "ve": lambda: ss.VESDE(0.01, 50.0),
    "rectified_flow": lambda: ss.GeneralLinearSDE.rectified_flow(),
    "edm": lambda: ss.GeneralLinearSDE.edm(0.002, 80.0),
}
KINDS = ["eps", "x0", "v", "velocity", "score"]


def _times(n=16):
    return torch.rand(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.98 + 0.01


@pytest.mark.parametrize("name", list(SDES))
def test_schedule_derivatives_match_finite_differences(name):
    sde, t, h = SDES[name](), _times(), 1e-6
    da = (sde.alpha(t + h) - sde.alpha(t - h)) / (2 * h)
    ds = (sde.sigma(t + h) - sde.sigma(t - h)) / (2 * h)
    assert torch.allclose(sde.dalpha_dt(t), da, rtol=1e-6, atol=1e-8)
    assert torch.allclose(sde.dsigma_dt(t), ds, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", list(SDES))
def test_velocity_of_the_exact_score_is_the_pf_ode_drift(name):
    sde, gmm, t = SDES[name](), mixture_2d(), _times()
    x = gmm.marginal_sample(16, 0.5, sde, generator=torch.Generator().manual_seed(2))
    score = gmm.score(x, t, sde)
    u = convert_at(sde, t, score, x, "score", "velocity")
    assert torch.allclose(u, sde.reverse_drift(x, t, score), rtol=1e-10, atol=1e-10)
    # and from the exact posterior mean of x_0 (Tweedie), independently of the score's formula
    x0 = gmm.denoise(x, t, sde)
    a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    u_direct = sde.dalpha_dt(t)[:, None] * x0 + sde.dsigma_dt(t)[:, None] * (x - a * x0) / s
    assert torch.allclose(u, u_direct, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("src", KINDS)
def test_conversion_round_trips_through_velocity(name, src):
    sde, t = SDES[name](), _times(8)
    x, out = torch.randn(8, 2, 3), torch.randn(8, 2, 3)
    for dst in KINDS:
        back = convert_at(sde, t, convert_at(sde, t, out, x, src, dst), x, dst, src)
        assert torch.allclose(back, out, rtol=1e-10, atol=1e-10), (src, dst)


def test_rectified_flow_velocity_is_eps_minus_x0():
    sde, t = ss.GeneralLinearSDE.rectified_flow(), _times(8)
    x0, eps = torch.randn(8, 3), torch.randn(8, 3)
    x = (1 - t)[:, None] * x0 + t[:, None] * eps
    assert torch.allclose(convert_at(sde, t, eps, x, "eps", "velocity"), eps - x0, atol=1e-12)


def test_velocity_needs_the_derivatives_and_unknown_kinds_are_named():
    x, a, s = torch.randn(4, 2), torch.full((4,), 0.8), torch.full((4,), 0.6)
    with pytest.raises(ValueError, match="dalpha"):
        convert(x, x, a, s, "eps", "velocity")
    with pytest.raises(ValueError, match="'flow'"):
        convert(x, x, a, s, "flow", "eps")
    with pytest.raises(ValueError, match="'flow'"):
        convert(x, x, a, s, "eps", "flow")


@pytest.mark.parametrize("name", list(SDES))
def test_score_model_with_an_exact_velocity_net(name):
    sde, gmm = SDES[name](), mixture_2d()

    def net(x, labels):  # the ideal velocity network
        t = labels
        x0 = gmm.denoise(x, t, sde)
        a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
        return sde.dalpha_dt(t)[:, None] * x0 + sde.dsigma_dt(t)[:, None] * (x - a * x0) / s

    model = ss.ScoreModel(net, sde, prediction="velocity")
    x, t = torch.randn(16, 2), _times()
    assert torch.allclose(model.score(x, t), gmm.score(x, t, sde), rtol=1e-10, atol=1e-10)
    assert torch.allclose(model.denoise(x, t), gmm.denoise(x, t, sde), rtol=1e-10, atol=1e-10)
    assert torch.allclose(model.velocity(x, t), net(x, t), rtol=1e-12, atol=1e-12)
    assert model.raw(x, t)[1] == "velocity"


def test_rectified_flow_end_time_is_checked():
    for T in (0.0, 1.0, 1.5, True):
        with pytest.raises(ValueError, match="T = "):
            ss.GeneralLinearSDE.rectified_flow(T=T)
