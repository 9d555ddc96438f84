"""Every sampler that fits a general linear SDE, and the likelihood, on a rectified-flow model with velocity
prediction whose network is the exact velocity of a Gaussian mixture (float64)."""

import pytest
import torch

import score_sde as ss
from tests.problems import mixture_2d, mixture_moment_errors

SDE = ss.GeneralLinearSDE.rectified_flow()
MIX_1D = ss.GaussianMixture([0.3, 0.7], [[-1.5], [1.0]], [0.2, 0.4])


def velocity_model(gmm, sde=SDE):
    """ScoreModel(prediction="velocity") around the exact u = alpha' E[x_0 | x] + sigma' E[eps | x]."""

    def net(x, t):
        x0 = gmm.denoise(x, t, sde)
        a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
        return sde.dalpha_dt(t)[:, None] * x0 + sde.dsigma_dt(t)[:, None] * (x - a * x0) / s

    return ss.ScoreModel(net, sde, prediction="velocity")


# sampler: (largest error at 80 steps, least error ratio 20 -> 80 steps); first order (DDIM, = Euler in t on
# this path) gains ~4x, second and third order >= 16x in theory
DETERMINISTIC = {
    "ddim": (0.12, 2.5),
    "dpm_solver_1": (0.12, 2.5),
    "dpm_solver_2": (0.01, 8),
    "dpm_solver_3": (0.001, 8),
    "dpmpp_2m": (0.01, 8),
    "dpmpp_3m": (0.01, 8),
    "unipc": (0.01, 8),
    "heun": (0.02, 8),
    "edm": (0.02, 8),
}


@pytest.mark.parametrize("sampler", list(DETERMINISTIC))
def test_deterministic_samplers_converge_to_the_exact_flow_map(sampler):
    model, eps = velocity_model(MIX_1D), SDE.default_eps
    x_T = torch.linspace(-2.5, 2.5, 21)[:, None]
    exact = MIX_1D.transport(x_T, SDE.T, eps, SDE)  # the 1-D PF-ODE map preserves the CDF
    err = [(ss.sample(SDE, model, x_T=x_T, sampler=sampler, steps=n).x - exact).abs().max().item() for n in (20, 80)]
    bound, gain = DETERMINISTIC[sampler]
    assert err[1] < bound, err
    assert err[1] < err[0] / gain, err


def test_adaptive_ode_matches_the_exact_flow_map():
    x_T = torch.linspace(-2.5, 2.5, 21)[:, None]
    res = ss.sample(SDE, velocity_model(MIX_1D), x_T=x_T, sampler="ode", rtol=1e-8, atol=1e-8)
    assert (res.x - MIX_1D.transport(x_T, SDE.T, SDE.default_eps, SDE)).abs().max() < 1e-6


@pytest.mark.parametrize("sampler", ["euler_maruyama", "reverse_diffusion", "sde", "dpmpp_2m_sde", "restart"])
def test_stochastic_samplers_reach_the_exact_moments(sampler):
    gmm, n = mixture_2d(), 4000
    eps = SDE.default_eps
    m, C, se_m, se_C, _ = mixture_moment_errors(gmm, eps, SDE, n)
    x = ss.sample(SDE, velocity_model(gmm), shape=(n, 2), sampler=sampler, steps=200,
                  generator=torch.Generator().manual_seed(0)).x  # fmt: skip
    assert ((x.mean(0) - m).abs() < 5 * se_m + 0.02).all()
    assert ((torch.cov(x.T) - C).abs() < 5 * se_C + 0.05).all()


def test_log_likelihood_of_a_flow_model_is_exact():
    model, eps = velocity_model(MIX_1D), SDE.default_eps
    x = MIX_1D.sample(16, generator=torch.Generator().manual_seed(1))
    res = ss.log_likelihood(SDE, model, x, rtol=1e-8, atol=1e-8, eps=eps)
    exact = MIX_1D.log_prob(x, eps, SDE)
    # the only approximation left is the prior N(0, 1) standing in for p_T (alpha(T) = 1e-3): swap in p_T
    with_p_T = res.logp - res.prior_logp + MIX_1D.log_prob(res.z, SDE.T, SDE)
    assert (with_p_T - exact).abs().max() < 1e-6
    assert (res.logp - exact).abs().max() < 0.05
    torch.testing.assert_close(res.z, MIX_1D.transport(x, eps, SDE.T, SDE), rtol=0, atol=1e-6)


@pytest.mark.parametrize("options", [{"sampler": "ancestral"}, {"sampler": "pc", "predictor": "ancestral"}])
def test_chain_samplers_refuse_a_general_sde(options):
    with pytest.raises(ValueError, match="RectifiedFlow"):
        ss.sample(SDE, velocity_model(MIX_1D), shape=(4, 1), steps=4, **options)
