"""Gaussian mixtures: exact scores, marginals, transport map, empirical denoiser."""

import pytest
import torch

import score_sde as ss
from tests.problems import SDES, mixture_2d, mmd_permutation_pvalue, random_mixture


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("d", [1, 2, 16])
def test_score_is_grad_log_prob(sde_name, d):
    sde = SDES[sde_name]()
    gmm = random_mixture(d, k=3, seed=d)
    x = (2 * torch.randn(64, d)).requires_grad_(True)
    t = torch.rand(64) * 0.999 + 1e-3
    lp = gmm.log_prob(x, t, sde)
    (g,) = torch.autograd.grad(lp.sum(), x)
    assert torch.allclose(gmm.score(x.detach(), t, sde), g, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("sde_name", list(SDES))
def test_forward_kernel_samples_match_marginal(sde_name):
    sde = SDES[sde_name]()
    gmm = mixture_2d()
    n = 20000
    for t in (0.05, 0.3, 0.8):
        xt = gmm.marginal_sample(n, t, sde, generator=torch.Generator().manual_seed(1))
        m, C = gmm.moments(t, sde)
        se = (torch.diagonal(C) / n).sqrt()
        assert ((xt.mean(0) - m).abs() < 5 * se).all()
        assert torch.allclose(xt.T.cov(), C, rtol=0.05, atol=0.05 * C.abs().max())
        # two-sample test against the exact marginal drawn through the mixture at time t
        a, s = float(sde.alpha(torch.tensor(t))), float(sde.sigma(torch.tensor(t)))
        exact = ss.GaussianMixture(gmm.weights, a * gmm.means, a * a * gmm.covs + s * s * torch.eye(2))
        y = exact.sample(n, generator=torch.Generator().manual_seed(2))
        assert mmd_permutation_pvalue(xt, y, n_perm=100, max_n=800) > 0.01


def test_log_prob_normalised_1d():
    gmm = ss.GaussianMixture([0.3, 0.7], [[-1.0], [2.0]], [0.2, 0.5])
    sde = ss.VPSDE()
    x = torch.linspace(-12, 12, 20001)[:, None]
    for t in (0.0, 0.2, 0.9):
        p = gmm.log_prob(x, t, sde).exp()
        assert abs(torch.trapezoid(p, x[:, 0]).item() - 1) < 1e-8


def test_transport_map_1d_pushes_forward_cdf():
    gmm = ss.GaussianMixture([0.2, 0.8], [[-2.0], [1.5]], [0.1, 0.3])
    sde = ss.VPSDE()
    x = torch.linspace(-3, 3, 11)
    y = gmm.transport(x, 1.0, 1e-3, sde)
    F1, _ = gmm.cdf(x, 1.0, sde)
    F0, _ = gmm.cdf(y, 1e-3, sde)
    assert torch.allclose(F1, F0, atol=1e-13)
    assert (y[1:] > y[:-1]).all()  # monotone
    assert torch.allclose(gmm.transport(y, 1e-3, 1.0, sde), x, atol=1e-9)


def test_empirical_denoiser_and_score():
    data = torch.randn(10, 3)
    emp = ss.EmpiricalDistribution(data)
    sde = ss.VPSDE()
    # same as a mixture of point masses (zero covariance)
    gmm = ss.GaussianMixture(torch.ones(10), data, torch.zeros(10, 3, 3))
    x = torch.randn(7, 3)
    t = torch.rand(7) * 0.9 + 0.05
    assert torch.allclose(emp.score(x, t, sde), gmm.score(x, t, sde), atol=1e-9)
    assert torch.allclose(emp.log_prob(x, t, sde), gmm.log_prob(x, t, sde), atol=1e-9)
    # at small noise the ideal denoiser returns the nearest training point
    x_near = data[:5] + 1e-4 * torch.randn(5, 3)
    assert torch.allclose(emp.denoise(x_near, torch.full((5,), 1e-4), sde), data[:5], atol=1e-3)


def test_responsibilities_sum_to_one_and_sample_labels():
    gmm = mixture_2d()
    x, k = gmm.sample(5000, return_labels=True)
    r = gmm.responsibilities(x)
    assert torch.allclose(r.sum(1), torch.ones(5000))
    assert (r.argmax(1) == k).double().mean() > 0.95
    assert ((torch.bincount(k, minlength=3) / 5000 - gmm.weights).abs() < 0.03).all()


def test_image_shaped_mixture():
    gmm = ss.GaussianMixture([0.5, 0.5], torch.randn(2, 12), torch.ones(2) * 0.1, event_shape=(3, 2, 2))
    x = gmm.sample(4)
    assert x.shape == (4, 3, 2, 2)
    assert gmm.score(x, 0.5, ss.VPSDE()).shape == x.shape
