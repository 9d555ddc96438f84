"""The consistency sampler (Song et al. 2023, Alg. 1) and the boundary parameterisation of ConsistencyModel.

With the exact consistency function of a 1-D mixture (the PF-ODE map to eps, computed by CDF matching) the
multistep sampler must return exact draws of p_eps at every step count; a network f must satisfy the boundary
condition f(x, eps) = x / alpha(eps) whatever its weights."""

import pytest
import torch

import score_sde as ss
from score_sde.analytic import GaussianMixture
from score_sde.metrics import sliced_w2
from score_sde.nets import build_net
from score_sde.training.distill import ConsistencyModel

GMM = GaussianMixture([0.3, 0.7], torch.tensor([[-1.5], [1.0]]), torch.tensor([0.05, 0.2]))
N = 4000


def exact_consistency_score(gmm, sde, eps):
    """score(x, t) = (alpha f - x) / sigma^2 with the exact f(x, t) = x~_eps = T_{t -> eps}(x) / alpha(eps)."""
    a_eps = float(sde.alpha(torch.tensor(eps, dtype=torch.float64)))

    def score(x, t):
        t0 = float(t[0])
        assert torch.all(t == t0)
        f = gmm.transport(x, t0, eps, sde, iters=80) / a_eps
        a, s = float(sde.alpha(t0)), float(sde.sigma(t0))
        return (a * f - x) / (s * s)

    return score


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_exact_consistency_function_gives_exact_samples(sde_name, steps):
    sde = ss.VPSDE() if sde_name == "vp" else ss.VESDE(sigma_max=20.0)
    eps = sde.default_eps
    g = torch.Generator().manual_seed(3)
    x_T = GMM.marginal_sample(N, sde.T, sde, generator=g)
    res = ss.sample(sde, exact_consistency_score(GMM, sde, eps), x_T=x_T, sampler="consistency", steps=steps,
                    generator=g)  # fmt: skip
    assert res.nfe == steps
    ref = GMM.marginal_sample(N, eps, sde, generator=torch.Generator().manual_seed(4))
    ref2 = GMM.marginal_sample(N, eps, sde, generator=torch.Generator().manual_seed(5))
    floor = sliced_w2(ref2, ref)
    err = sliced_w2(res.x, ref)
    print(sde_name, steps, err, floor)
    assert err < 2.5 * floor + 5e-3, (err, floor)


def test_dropping_the_noise_between_steps_is_detected():
    """Multistep sampling that forgets to re-noise between steps hands f a point without the noise level of its
    time and collapses towards the mean: the distance used above has the power to see it."""
    sde, eps = ss.VPSDE(), 1e-3
    score = exact_consistency_score(GMM, sde, eps)
    g = torch.Generator().manual_seed(3)
    x_T = GMM.marginal_sample(N, sde.T, sde, generator=g)
    grid = torch.tensor([1.0, 0.9, eps], dtype=torch.float64)
    res = ss.sample(sde, score, x_T=x_T, sampler="consistency", grid=grid, generator=g)
    ref = GMM.marginal_sample(N, eps, sde, generator=torch.Generator().manual_seed(4))
    assert sliced_w2(res.x, ref) < 0.1
    from score_sde.solvers.consistency import ConsistencySampler

    class NoNoise(ConsistencySampler):
        def step(self, ctx, x, t, t_next, i, last):
            return super().step(ctx, x, t, t_next, i, True)

    bad = ss.sample(sde, score, x_T=x_T, sampler=NoNoise(), grid=grid, generator=g)
    assert sliced_w2(bad.x, ref) > 0.3


def _cm(sde, eps=1e-3):
    torch.manual_seed(0)
    net = build_net("mlp", dim=2, hidden=32, depth=2, emb_dim=16).double()
    return ConsistencyModel(net, sde, eps, sigma_data=0.5)


@pytest.mark.parametrize("sde", [ss.VPSDE(), ss.VESDE(), ss.SubVPSDE()], ids=["vp", "ve", "subvp"])
def test_boundary_condition_and_views(sde):
    eps = sde.default_eps
    cm = _cm(sde, eps)
    x = torch.randn(16, 2)
    t_eps = torch.full((16,), eps)
    a = sde.alpha(t_eps)[:, None]
    assert torch.allclose(cm.denoise(x, t_eps), x / a, rtol=0, atol=1e-12)
    t = torch.full((16,), 0.5)
    f = cm.denoise(x, t)
    assert (f - x / sde.alpha(t)[:, None]).abs().max() > 1e-3  # the network acts away from eps
    s = cm.score(x, t)
    tweedie = (x + sde.sigma(t)[:, None] ** 2 * s) / sde.alpha(t)[:, None]
    assert torch.allclose(tweedie, f, atol=1e-10)


def test_one_step_sampling_is_the_consistency_map():
    sde = ss.VPSDE()
    cm = _cm(sde)
    x_T = torch.randn(32, 2)
    with torch.no_grad():
        res = ss.sample(sde, cm, x_T=x_T, sampler="consistency", steps=1)
        want = sde.alpha(torch.tensor(1e-3)) * cm.denoise(x_T, torch.ones(32))
        assert res.nfe == 1 and torch.allclose(res.x, want, atol=1e-12)
        assert ss.sample(sde, cm, x_T=x_T, sampler="consistency", steps=3).nfe == 3


def test_bad_eps_is_refused():
    net = build_net("mlp", dim=2, hidden=8, depth=1, emb_dim=8)
    with pytest.raises(ValueError, match="eps"):
        ConsistencyModel(net, ss.VPSDE(), eps=0.0)
