"""score_sde.testing: the exact problems are deterministic float64 objects with the properties their docs claim."""

import pytest
import torch

import score_sde as ss
from score_sde import testing
from score_sde.training.data import get_dataset


def _same(a, b):
    return all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("weights", "means", "covs"))


def test_problems_are_deterministic_float64():
    for make in (testing.mixture_2d, testing.mixture_scales_4d, testing.mixture_1d, testing.ring_mixture,
                 lambda: testing.random_mixture(5, 4, seed=3), lambda: testing.gaussian(4, seed=1)):  # fmt: skip
        a, b = make(), make()
        assert _same(a, b) and a.means.dtype == torch.float64
    assert not _same(testing.random_mixture(3, seed=0), testing.random_mixture(3, seed=1))
    assert testing.random_mixture(6, 2, seed=0, jitter=0.02).covs.shape == (2, 6, 6)
    g = testing.gaussian(3)
    assert g.weights.numel() == 1 and torch.linalg.eigvalsh(g.covs[0]).min() > 0.09  # C = 0.3 A A^T + 0.1 I
    torch.testing.assert_close(testing.mixture_2d().weights, torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64))


@pytest.mark.parametrize("kind", ["vp", "subvp", "ve"])
def test_make_sde_is_the_sdes_table(kind):
    a, b = testing.make_sde(kind), testing.SDES[kind]()
    t = torch.linspace(0.01, 1.0, 5, dtype=torch.float64)
    assert type(a) is type(b) and a.N == b.N == 1000
    torch.testing.assert_close(a.sigma(t), b.sigma(t), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown SDE kind 'edm'"):
        testing.make_sde("edm")


def test_product_of_mixtures_has_a_diagonal_jacobian_and_its_own_density():
    sde, prod = ss.VPSDE(), testing.ProductOfMixtures(3)
    x = prod.sample(4, torch.Generator().manual_seed(0))
    assert x.shape == (4, 3)
    jac = torch.autograd.functional.jacobian(lambda y: prod.score(y[None], 0.3, sde)[0], x[0])
    assert (jac - torch.diag(torch.diagonal(jac))).abs().max() == 0 and torch.diagonal(jac).abs().min() > 0
    one = testing.mixture_1d()
    t = torch.full((1,), 0.3, dtype=torch.float64)
    per_coord = sum(one.log_prob(x[:1, i : i + 1], t, sde) for i in range(3))
    torch.testing.assert_close(prod.log_prob(x[:1], 0.3, sde), per_coord)


def test_ring_mixture_is_the_toy_training_sets_distribution():
    ds = get_dataset("mixture", n=10)
    assert _same(ds.distribution, testing.ring_mixture())
    radii = testing.ring_mixture(5, radius=1.5).means.norm(dim=1)
    torch.testing.assert_close(radii, torch.full((5,), 1.5, dtype=torch.float64))
