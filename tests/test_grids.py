"""Time grids: the documented formulas, endpoints, the chains' own times, and bad grids."""

import math

import pytest
import torch

import score_sde as ss
from tests.problems import SDES


def test_uniform_and_quadratic_formulas():
    sde = SDES["vp"]()
    g = ss.make_grid(sde, "uniform", 10, 1e-3)
    assert torch.allclose(g, torch.linspace(1.0, 1e-3, 11, dtype=torch.float64), atol=0, rtol=0)
    q = ss.make_grid(sde, "quadratic", 10, 1e-3)
    u = torch.linspace(1, 0, 11, dtype=torch.float64)
    assert torch.allclose(q, 1e-3 + (1 - 1e-3) * u**2, atol=1e-15)
    assert q[0] == 1.0 and q[-1] == pytest.approx(1e-3, abs=1e-15)
    assert (q[:-1] - q[1:])[-1] < (q[:-1] - q[1:])[0]  # dense near the data


def test_discrete_grids_are_the_chains_times():
    ddpm = ss.VPSDE.from_betas(torch.linspace(1e-4, 0.02, 1000))
    g = ss.make_grid(ddpm, "discrete")
    assert g.numel() == 1001 and g[0] == 1.0 and g[-1] == 0.0
    assert torch.allclose(g[:-1], torch.arange(1000, 0, -1, dtype=torch.float64) / 1000)
    # alpha(t_i)^2 is the chain's alpha_bar_i exactly at its times
    assert torch.allclose(ddpm.alpha(g[:-1].flip(0)) ** 2, ddpm.alphas_cumprod, rtol=1e-12, atol=0)
    vp = ss.VPSDE(N=50)
    assert torch.allclose(ss.make_grid(vp, "discrete"), torch.linspace(1, 1e-3, 51, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["karras", "logsnr"])
@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
def test_sigma_based_grids(kind, sde_name):
    sde = SDES[sde_name]()
    eps = sde.default_eps
    g = ss.make_grid(sde, kind, 12, eps)
    assert g.numel() == 13 and g[0] == sde.T and g[-1] == eps
    assert (g[1:] < g[:-1]).all()
    lam = sde.log_snr(g)
    if kind == "logsnr":
        d = lam[1:] - lam[:-1]
        assert torch.allclose(d, d.mean().expand_as(d), rtol=1e-8, atol=1e-9)
    else:  # sigma~^(1/rho) uniform, rho = 7
        s = torch.exp(-lam) ** (1 / 7)
        d = s[1:] - s[:-1]
        assert torch.allclose(d, d.mean().expand_as(d), rtol=1e-7, atol=1e-9)


def test_user_grid_and_errors():
    sde = SDES["vp"]()
    g = ss.make_grid(sde, [1.0, 0.5, 0.1])
    assert g.dtype == torch.float64 and g.tolist() == [1.0, 0.5, 0.1]
    with pytest.raises(ValueError, match=r"strictly decreasing"):
        ss.make_grid(sde, [1.0, 0.5, 0.6])
    with pytest.raises(ValueError, match=r"must lie in \[0, T\]"):
        ss.make_grid(sde, [1.5, 0.5])
    with pytest.raises(ValueError, match=r"at least 2 times; got 1"):
        ss.make_grid(sde, [0.5])
    with pytest.raises(ValueError, match=r"unknown grid 'cosine'"):
        ss.make_grid(sde, "cosine", 10)
    with pytest.raises(ValueError, match=r"steps must be an integer >= 1; got steps = 0"):
        ss.make_grid(sde, "uniform", 0)


def test_sampler_runs_on_a_user_grid():
    gmm, sde = ss.Gaussian([0.5], [0.2]), SDES["vp"]()
    grid = torch.tensor([1.0, 0.6, 0.3, 0.1, 0.01, 1e-3])
    res = ss.sample(sde, gmm.score_fn(sde), shape=(3, 1), sampler="probability_flow", grid=grid)
    assert res.nfe == 5 and torch.equal(res.grid, grid.double())
    assert all(math.isfinite(v) for v in res.x.flatten().tolist())
