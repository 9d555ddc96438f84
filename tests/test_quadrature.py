"""Adaptive Clenshaw–Curtis quadrature, and the likelihood's quadrature scheme against exact densities."""

import math
import warnings

import pytest
import torch
from problems import SDES, random_mixture

import score_sde as ss
from score_sde.analytic import Uniform
from score_sde.data_scaling import DataScaling
from score_sde.likelihood import log_likelihood
from score_sde.quadrature import AdaptiveClenshawCurtis, chebyshev_coefficients, clenshaw_curtis, split_point

EPS = 1e-5


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 64])
def test_clenshaw_curtis_is_exact_for_polynomials_up_to_its_order(n):
    u, w = clenshaw_curtis(n)
    assert u[0] == 0.0 and u[-1] == 1.0 and bool((u[1:] > u[:-1]).all())
    for k in range(n + 1 if n > 1 else 2):
        torch.testing.assert_close((w * u**k).sum(), torch.tensor(1.0 / (k + 1), dtype=torch.float64))
    if n >= 2:  # nested: the order-n/2 nodes are every other order-n node
        assert torch.equal(clenshaw_curtis(n // 2)[0], u[::2])


@pytest.mark.parametrize("n", [0, 3, 6, 2.0])
def test_clenshaw_curtis_rejects_bad_orders(n):
    with pytest.raises(ValueError, match="power of two"):
        clenshaw_curtis(n)


def _count(fn):
    seen = []

    def f(times, panels=()):
        assert bool((times[1:] > times[:-1]).all()) and not set(times.tolist()) & set(seen)
        seen.extend(times.tolist())
        return fn(times)

    return f, seen


@pytest.mark.parametrize(
    "lo, hi, fn, exact",
    [
        (
            0.0,
            2.0,
            lambda t: torch.exp(t[:, None] * torch.tensor([0.5, 1.0, 3.0], dtype=t.dtype)),
            torch.tensor([(math.exp(1.0) - 1) / 0.5, math.exp(2.0) - 1, (math.exp(6.0) - 1) / 3], dtype=torch.float64),
        ),
        (1e-5, 1.0, lambda t: (1.0 / t)[:, None], torch.tensor([math.log(1e5)], dtype=torch.float64)),
        # sigmoid((t - 0.61) / 0.01) on [0, 1]: 0.01 * ln((1 + e^39) / (1 + e^-61))
        (
            0.0,
            1.0,
            lambda t: torch.sigmoid((t[:, None] - 0.61) / 0.01),
            torch.tensor([0.01 * (39.0 + math.log1p(math.exp(-39.0)))], dtype=torch.float64),
        ),
    ],
    ids=["exp", "one-over-t", "sharp-sigmoid"],
)
def test_adaptive_rule_meets_its_tolerance_and_evaluates_each_node_once(lo, hi, fn, exact):
    for tol in (1e-6, 1e-10):
        f, seen = _count(fn)
        res = AdaptiveClenshawCurtis(lo, hi).integrate(f, rtol=tol, atol=tol)
        assert res.converged and res.evaluations == len(seen)
        err = (res.value - exact).abs()
        assert bool((err <= res.tolerance).all()), (err, res.tolerance, res.error)


def test_adaptive_rule_refines_only_where_needed_and_reports_failure():
    # a smooth integrand converges on the two initial panels; a kink needs bisection around it
    res = AdaptiveClenshawCurtis(0.0, 1.0).integrate(lambda t, p=(): torch.cos(t)[:, None], 1e-8, 1e-8)
    assert res.converged and len(res.orders) == 2 and res.evaluations <= 33
    kink = AdaptiveClenshawCurtis(0.0, 1.0).integrate(lambda t, p=(): (t - 0.3).abs()[:, None], 1e-8, 1e-8)
    assert kink.converged and len(kink.orders) > 2
    exact = torch.tensor([0.3**2 / 2 + 0.7**2 / 2], dtype=torch.float64)
    torch.testing.assert_close(kink.value, exact, rtol=0, atol=1e-7)
    capped = AdaptiveClenshawCurtis(0.0, 1.0, max_panels=4).integrate(
        lambda t, p=(): (t - 0.3).abs()[:, None], 1e-12, 1e-12
    )
    assert not capped.converged and bool((capped.error > capped.tolerance).any())
    assert split_point(1e-5, 1.0, 1.0) == pytest.approx(math.sqrt(1e-5)) and split_point(0.2, 1.0, 1.0) == 0.6
    with pytest.raises(ValueError, match="lo < hi"):
        AdaptiveClenshawCurtis(1.0, 1.0)
    with pytest.raises(ValueError, match="n0"):
        AdaptiveClenshawCurtis(0.0, 1.0, n0=32, n_max=16)
    with pytest.raises(ValueError, match="integrand returned shape"):
        AdaptiveClenshawCurtis(0.0, 1.0).integrate(lambda t, p=(): torch.zeros(len(t) + 1, 1), 1e-6, 1e-6)
    with pytest.raises(ValueError, match="error_estimate"):
        AdaptiveClenshawCurtis(0.0, 1.0, error_estimate="guess")


def test_chebyshev_coefficients_recover_a_chebyshev_series():
    n = 8
    x = torch.cos(math.pi * torch.arange(n + 1, dtype=torch.float64) / n)  # node order: increasing time
    f = 3 - 2 * x + 0.5 * (2 * x**2 - 1) + 0.25 * (4 * x**3 - 3 * x)
    c = chebyshev_coefficients(torch.stack([f, 2 * f], 1))
    want = torch.tensor([3.0, -2.0, 0.5, 0.25, 0, 0, 0, 0, 0], dtype=torch.float64)
    torch.testing.assert_close(c, torch.stack([want, 2 * want], 1), rtol=0, atol=1e-13)


@pytest.mark.parametrize("estimate", ["tail", "difference"])
def test_both_error_estimates_resolve_a_sharp_sigmoid(estimate):
    f = lambda t, p=(): torch.sigmoid((t[:, None] - 0.61) / 0.01)  # noqa: E731
    res = AdaptiveClenshawCurtis(0.0, 1.0, error_estimate=estimate).integrate(f, 1e-6, 1e-6)
    assert res.converged and abs(res.value.item() - 0.39) <= res.tolerance.item()


# ---- the likelihood's quadrature scheme -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
@pytest.mark.parametrize("d", [1, 2, 8])
def test_quadrature_scheme_matches_mixture_density(name, d):
    sde = SDES[name]()
    gmm = random_mixture(d, seed=d)
    x = gmm.sample(3, generator=torch.Generator().manual_seed(d))
    true = gmm.log_prob(x, EPS, sde)
    for tol, bound in ((1e-5, 1e-3), (1e-7, 1e-5)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the quadrature must converge
            res = log_likelihood(sde, gmm.score_fn(sde), x, divergence="exact", rtol=tol, atol=tol, scheme="quadrature")
        assert res.info["scheme"] == "quadrature" and res.info["nodes"] >= 9
        torch.testing.assert_close(res.logp, res.prior_logp + res.delta)
        err = (res.delta + gmm.log_prob(res.z, sde.T, sde) - true).abs().max().item() / d
        assert err <= bound, f"{name} d={d} tol={tol}: error {err:.2e} nats/dim > {bound}"


def test_quadrature_hutchinson_matches_augmented_with_the_same_probes_and_per_sample_agrees():
    sde = ss.VPSDE()
    gmm = random_mixture(4, seed=3)
    x = gmm.sample(4, generator=torch.Generator().manual_seed(3))
    v = torch.randint(0, 2, (2, *x.shape), generator=torch.Generator().manual_seed(4)).double() * 2 - 1
    kw = dict(divergence="hutchinson", probes=v, rtol=1e-8, atol=1e-8)
    aug = log_likelihood(sde, gmm.score_fn(sde), x, **kw)
    quad = log_likelihood(sde, gmm.score_fn(sde), x, scheme="quadrature", **kw)
    torch.testing.assert_close(quad.logp, aug.logp, rtol=0, atol=1e-5)
    one = log_likelihood(sde, gmm.score_fn(sde), x, scheme="quadrature", per_sample=True, **kw)
    torch.testing.assert_close(one.logp, aug.logp, rtol=0, atol=1e-5)
    assert len(one.info["per_sample"]) == 4


def test_quadrature_gradient_reaches_score_parameters():
    sde = ss.VPSDE()
    c = torch.tensor(0.7, requires_grad=True)

    def score(x, t):
        return -x / (sde.alpha(t) ** 2 * c**2 + sde.sigma(t) ** 2)[:, None]

    def logp_true(x, t):
        v = sde.alpha(torch.tensor(t)) ** 2 * c**2 + sde.sigma(torch.tensor(t)) ** 2
        return -0.5 * (x**2).sum(1) / v - 0.5 * x.shape[1] * torch.log(2 * math.pi * v)

    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = log_likelihood(sde, score, x, rtol=1e-8, atol=1e-8, scheme="quadrature")
    assert res.logp.requires_grad
    (g_ode,) = torch.autograd.grad((res.delta + logp_true(res.z, sde.T)).sum(), c)
    (g_true,) = torch.autograd.grad(logp_true(x, EPS).sum(), c)
    torch.testing.assert_close(g_ode, g_true, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        assert not log_likelihood(sde, score, x, scheme="quadrature").logp.requires_grad


def test_quadrature_uniform_data_has_eight_bits_per_dim():
    """Uniform data on [0, 1]^4 with its exact score: the hard case for interpolated nodes (the score changes
    sharply near the box's faces); the path solved 10x tighter keeps bits/dim within 1e-3 of 8."""
    sde = ss.VPSDE()
    scaling = DataScaling.unit(256)
    box = Uniform(0.0, 1.0, (1, 2, 2))
    levels = torch.randint(16, 240, (6, 1, 2, 2), generator=torch.Generator().manual_seed(0))  # interior points
    x = scaling.dequantize(levels, torch.Generator().manual_seed(1)).double()
    res = log_likelihood(sde, box.score_fn(sde), x, scheme="quadrature")
    bpd = scaling.bits_per_dim(res.delta + box.log_prob(res.z, sde.T, sde), 4)
    assert (bpd - 8.0).abs().max() <= 1e-3


def test_quadrature_bad_arguments():
    sde = ss.VPSDE()
    gmm = random_mixture(2, seed=0)
    x = gmm.sample(2)
    with pytest.raises(ValueError, match="adaptive method"):
        log_likelihood(sde, gmm.score_fn(sde), x, scheme="quadrature", method="euler", options={"step_size": 0.1})
    with pytest.raises(ValueError, match="unknown scheme 'simpson'"):
        log_likelihood(sde, gmm.score_fn(sde), x, scheme="simpson")
    with pytest.raises(ValueError, match="returned shape"):
        log_likelihood(sde, lambda x, t: x[:, :1], x, scheme="quadrature")
