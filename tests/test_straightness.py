"""ss.metrics.straightness: zero for straight PF-ODE paths, the closed form for a Gaussian, > 0 for a mixture."""

import pytest
import torch

import score_sde as ss


def _x_T(sde, n=400, d=2):
    return sde.prior_sampling((n, d), generator=torch.Generator().manual_seed(0))


def test_a_point_target_under_rectified_flow_has_straight_paths():
    # x_0 ~ N(mu, delta^2 I), delta -> 0: x_t = (1 - t) mu + t z exactly along every path, S = 0
    sde = ss.GeneralLinearSDE.rectified_flow()
    point = ss.Gaussian(torch.tensor([1.0, -2.0]), 1e-12 * torch.eye(2))
    s = ss.metrics.straightness(sde, point.score_fn(sde), _x_T(sde), steps=16)
    assert s.ndim == 0 and s.dtype == torch.float64
    assert 0 <= float(s) < 1e-8
    # under VP the same point target is reached along curved paths (alpha, sigma are not affine in t)
    vp = ss.VPSDE()
    assert float(ss.metrics.straightness(vp, point.score_fn(vp), _x_T(vp), steps=16)) > 1.0


def test_standard_normal_target_matches_the_closed_form():
    # x_0 ~ N(0, I): x_t = s(t) z with s(t) = sqrt((1 - t)^2 + t^2), u = s'(t) z, so per path
    # S = |z|^2 [ (T - eps) int_eps^T s'(t)^2 dt - (s(T) - s(eps))^2 ]
    sde = ss.GeneralLinearSDE.rectified_flow()
    x_T = _x_T(sde)
    T, eps = sde.T, sde.default_eps
    t = torch.linspace(eps, T, 200001, dtype=torch.float64)
    s = torch.sqrt((1 - t) ** 2 + t**2)
    ds = (2 * t - 1) / s
    integral = torch.trapezoid(ds**2, t)
    z2 = (x_T**2).sum(1) / s[-1] ** 2
    exact = float(z2.mean() * ((T - eps) * integral - (s[-1] - s[0]) ** 2))
    normal = ss.Gaussian(torch.zeros(2), torch.eye(2))
    got = float(ss.metrics.straightness(sde, normal.score_fn(sde), x_T, steps=64))
    assert exact > 0.1
    assert got == pytest.approx(exact, rel=1e-3)


def test_a_mixture_has_curved_paths_and_the_value_converges_in_steps():
    sde = ss.GeneralLinearSDE.rectified_flow()
    means = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])
    mix = ss.GaussianMixture(torch.tensor([0.5, 0.5]), means, 0.1 * torch.eye(2).expand(2, 2, 2))
    x_T = _x_T(sde)
    coarse = float(ss.metrics.straightness(sde, mix.score_fn(sde), x_T, steps=16))
    fine = float(ss.metrics.straightness(sde, mix.score_fn(sde), x_T, steps=64))
    assert fine > 0.5
    assert coarse == pytest.approx(fine, rel=0.05)


def test_bad_inputs_are_named():
    sde = ss.GeneralLinearSDE.rectified_flow()
    f = ss.Gaussian(torch.zeros(2), torch.eye(2)).score_fn(sde)
    with pytest.raises(ValueError, match="steps"):
        ss.metrics.straightness(sde, f, _x_T(sde), steps=0)
    with pytest.raises(TypeError, match="x_T"):
        ss.metrics.straightness(sde, f, torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="score_fn"):
        ss.metrics.straightness(sde, None, _x_T(sde))
