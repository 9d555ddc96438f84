"""Forward SDEs: kernel/SDE consistency, discretizations, schedule view, stability."""

import math

import pytest
import torch

import score_sde as ss
from tests.problems import SDES

ALL = {
    **SDES,
    "vp_cosine": lambda: ss.VPSDE(schedule="cosine"),
    "ddpm": lambda: ss.VPSDE.from_betas(torch.linspace(1e-4, 0.02, 1000)),
    "edm": lambda: ss.GeneralLinearSDE.edm(),
    "rf": lambda: ss.GeneralLinearSDE.rectified_flow(),
}


def _ts(sde, n=200):
    return torch.linspace(1e-3, sde.T * 0.999, n, dtype=torch.float64)


@pytest.mark.parametrize("name", list(ALL))
def test_marginal_consistent_with_sde(name):
    """d ln alpha/dt equals the drift coefficient; d sigma^2/dt = 2 f sigma^2 + g^2 (relative 1e-6)."""
    sde = ALL[name]()
    t = _ts(sde).requires_grad_(True)
    x = torch.ones(t.shape[0], 3, dtype=torch.float64)
    mean, std = sde.marginal_prob(x, t)
    drift, diff = sde.sde(x, t.detach())
    (dlogmean,) = torch.autograd.grad(torch.log(mean[:, 0]).sum(), t, retain_graph=True, materialize_grads=True)
    (dvar,) = torch.autograd.grad((std**2).sum(), t)
    f = drift[:, 0]  # f(t) * 1
    assert torch.allclose(dlogmean, f, rtol=1e-6, atol=1e-12)
    rhs = 2 * f * std.detach() ** 2 + diff**2
    assert torch.allclose(dvar, rhs, rtol=1e-6, atol=1e-12)


def test_vp_discretization_is_ddpm_linspace():
    sde = ss.VPSDE(0.1, 20.0, N=1000)
    ref = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    assert torch.allclose(sde.discrete_betas, ref, rtol=0, atol=1e-17)
    # the formula beta_i = beta_min/N + i (beta_max - beta_min)/(N (N-1))
    i = torch.arange(1000, dtype=torch.float64)
    assert torch.allclose(sde.discrete_betas, 0.1 / 1000 + i * 19.9 / (1000 * 999), rtol=0, atol=1e-17)


def test_vp_discrete_vs_continuous_kernel():
    """Fig. 5 of Song et al.: DDPM's alpha_bar_i vs the VP kernel at t = i/N, gap < 2e-3."""
    sde = ss.VPSDE(0.1, 20.0, N=1000)
    abar = torch.cumprod(1 - sde.discrete_betas, 0)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    mean_gap = (abar.sqrt() - sde.alpha(t)).abs().max()
    var_gap = ((1 - abar) - sde.sigma(t) ** 2).abs().max()
    assert mean_gap < 2e-3 and var_gap < 2e-3
    assert mean_gap > 1e-4  # the gap is real (about 1e-3), not zero by construction


def test_ve_discrete_vs_continuous_kernel():
    """SMLD's geometric sigma_i vs the VE sigma(t) at t = i/(N-1): within 1%."""
    sde = ss.VESDE(0.01, 50.0, N=1000)
    t = torch.arange(1000, dtype=torch.float64) / 999
    rel = (sde.discrete_sigmas / sde.sigma(t) - 1).abs().max()
    assert rel < 0.01
    # the SMLD chain x_i = x_{i-1} + sqrt(sigma_i^2 - sigma_{i-1}^2) z accumulates sigma_i^2
    x = torch.zeros(1000, 1, dtype=torch.float64)
    f, G = sde.discretize(x, t)
    assert torch.allclose(torch.cumsum(G**2, 0), sde.discrete_sigmas**2, rtol=1e-12)


def test_from_betas_exact_at_chain_times():
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    sde = ss.VPSDE.from_betas(betas)
    abar = torch.cumprod(1 - betas, 0)
    t = sde.index_to_time(torch.arange(1000))
    assert torch.allclose(sde.alpha(t) ** 2, abar, rtol=1e-12)
    assert torch.allclose(sde.sigma(t) ** 2, 1 - abar, rtol=1e-12)
    assert torch.equal(sde.time_to_index(t), torch.arange(1000))
    # midpoints of a chain interval map to the interval's index
    assert torch.equal(sde.time_to_index(t - 0.5 / 1000), torch.arange(1000))
    # the discrete grid is the chain's times then 0
    grid = ss.make_grid(sde, "discrete")
    assert grid.numel() == 1001 and grid[-1] == 0 and torch.allclose(grid[:-1].flip(0), t)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "vp_cosine", "ddpm", "edm"])
def test_log_snr_inverse(name):
    sde = ALL[name]()
    t = _ts(sde, 50)
    assert torch.allclose(sde.t_from_log_snr(sde.log_snr(t)), t, atol=1e-9)
    assert (sde.log_snr(t)[1:] < sde.log_snr(t)[:-1]).all()


def test_stable_near_zero():
    for sde in (ss.VPSDE(), ss.SubVPSDE()):
        t = torch.tensor([1e-12, 1e-9, 1e-6], dtype=torch.float64)
        s = sde.sigma(t)
        assert torch.isfinite(s).all() and (s > 0).all()
        # 1 - e^{-B} = B (1 - B/2 + ...): VP sigma = sqrt of it, sub-VP sigma = it
        B = 0.1 * t + 0.5 * 19.9 * t * t
        one_minus = B * (1 - B / 2)
        expected = one_minus.sqrt() if not isinstance(sde, ss.SubVPSDE) else one_minus
        assert torch.allclose(s, expected, rtol=1e-9)


def test_subvp_variance_below_vp():
    t = _ts(ss.VPSDE())
    assert (ss.SubVPSDE().sigma(t) ** 2 <= ss.VPSDE().sigma(t) ** 2 + 1e-15).all()


def test_prior_logp_sums_non_batch_dims():
    sde = ss.VESDE(0.01, 5.0)
    z = torch.randn(4, 2, 3, 3)
    lp = sde.prior_logp(z)
    ref = torch.distributions.Normal(0, 5.0).log_prob(z).sum((1, 2, 3))
    assert lp.shape == (4,) and torch.allclose(lp, ref)


def test_reverse_and_probability_flow_drift():
    sde = ss.VPSDE()
    gmm = ss.Gaussian([0.5, -0.5], [1.0, 2.0])
    x, t = torch.randn(6, 2), torch.full((6,), 0.4)
    s = gmm.score(x, t, sde)
    drift, g = sde.sde(x, t)
    r = sde.reverse(gmm.score_fn(sde))
    pf = sde.reverse(gmm.score_fn(sde), probability_flow=True)
    assert torch.allclose(r.sde(x, t)[0], drift - g[:, None] ** 2 * s)
    assert torch.allclose(pf.sde(x, t)[0], drift - 0.5 * g[:, None] ** 2 * s)
    assert (pf.sde(x, t)[1] == 0).all()


def test_rank_agnostic():
    sde = ss.VPSDE()
    for shape in [(5,), (5, 3), (5, 2, 4, 4)]:
        x = torch.randn(shape)
        mean, std = sde.marginal_prob(x, 0.3)
        assert mean.shape == x.shape and std.shape == (5,)
        f, G = sde.discretize(x, torch.full((5,), 0.3))
        assert f.shape == x.shape


def test_ve_default_sigma_max_and_prior():
    sde = ss.VESDE()
    assert sde.prior_std == 50.0 and sde.default_eps == 1e-5
    z = sde.prior_sampling((20000, 1))
    assert abs(z.std().item() - 50.0) < 1.5
    assert math.isclose(float(sde.sigma(torch.tensor(1.0))), 50.0, rel_tol=1e-12)
