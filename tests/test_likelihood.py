"""PF-ODE likelihood against exact log-densities (Gaussian mixtures, uniform boxes) in float64.

The ODE gives log pi(x(T)) + Delta; the analytic module knows p_T, so the prior mismatch is taken out
exactly: ``delta + log p_T(z)`` must equal ``log p_eps(x)`` up to the solver's tolerance.
"""

import math
import warnings

import pytest
import torch
from problems import SDES, gaussian, random_mixture

import score_sde as ss
from score_sde.analytic import GaussianMixture, Uniform
from score_sde.data_scaling import DataScaling
from score_sde.likelihood import bits_per_dim, dataset_bits_per_dim, decode, encode, log_likelihood
from score_sde.testing import ProductOfMixtures

EPS = 1e-5


def _corrected(res, dist, sde):
    """log p_eps(x) estimate with the prior mismatch removed exactly: Delta + log p_T(z)."""
    return res.delta + dist.log_prob(res.z, sde.T, sde)


# ---- accuracy against the exact density -----------------------------------------------------------
# Bounds on |Delta + log p_T(z) - log p_eps(x)| / D (nats/dim), at most 3x the largest error measured over
# D in {1, 2, 8, 32} for each SDE and tolerance (1e-5: VP 1.8e-4, sub-VP 3.1e-5, VE 1.2e-4; 1e-7: VP 6.0e-7,
# sub-VP 2.9e-7, VE 6.7e-7). The prior mismatch that `logp` carries on top is measured in the test.
BOUNDS = {"vp": (5e-4, 1.8e-6), "subvp": (9e-5, 8.5e-7), "ve": (3.5e-4, 2e-6)}


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
@pytest.mark.parametrize("d", [1, 2, 8, 32])
def test_exact_divergence_matches_mixture_density(name, d):
    sde = SDES[name]()
    gmm = random_mixture(d, seed=d)
    x = gmm.sample(3, generator=torch.Generator().manual_seed(d))
    true = gmm.log_prob(x, EPS, sde)
    for tol, bound in zip((1e-5, 1e-7), BOUNDS[name]):
        res = log_likelihood(sde, gmm.score_fn(sde), x, divergence="exact", rtol=tol, atol=tol, eps=EPS)
        assert res.logp.shape == (3,) and res.z.shape == x.shape
        torch.testing.assert_close(res.logp, res.prior_logp + res.delta)
        torch.testing.assert_close(res.prior_logp, sde.prior_logp(res.z))
        err = (_corrected(res, gmm, sde) - true).abs().max().item() / d
        assert err <= bound, f"{name} d={d} tol={tol}: error {err:.2e} nats/dim > {bound}"
        # what users get: logp = log pi(z) + Delta is off by the prior mismatch log pi(z) - log p_T(z),
        # 1.5e-3 to 7.4e-3 nats/dim (VP, sub-VP) and 4.1e-3 to 2.3e-2 (VE) on these mixtures
        mismatch = (res.prior_logp - gmm.log_prob(res.z, sde.T, sde)).abs().max().item() / d
        assert 1e-3 < mismatch < 2.5e-2, mismatch
        raw = (res.logp - true).abs().max().item() / d
        assert abs(raw - mismatch) <= bound, (raw, mismatch)


def test_raw_logp_is_close_without_correction_for_vp():
    """Without the exact correction the answer differs by the small prior mismatch only."""
    sde = ss.VPSDE()
    gmm = ss.Gaussian(torch.zeros(4), 0.5 * torch.ones(4))
    x = gmm.sample(5, generator=torch.Generator().manual_seed(0))
    res = log_likelihood(sde, gmm.score_fn(sde), x)
    assert ((res.logp - gmm.log_prob(x, EPS, sde)).abs() / 4).max() < 1e-3


def test_any_rank_gives_the_same_answer():
    flat = random_mixture(4, seed=3)
    img = GaussianMixture(flat.weights, flat.means, flat.covs, event_shape=(1, 2, 2))
    sde = ss.VPSDE()
    x = flat.sample(3, generator=torch.Generator().manual_seed(0))
    a = log_likelihood(sde, flat.score_fn(sde), x)
    b = log_likelihood(sde, img.score_fn(sde), x.reshape(3, 1, 2, 2))
    torch.testing.assert_close(a.logp, b.logp, rtol=0, atol=1e-9)
    assert b.z.shape == (3, 1, 2, 2)
    # 1-D data of shape [B]
    one = random_mixture(1, seed=1)
    sd = lambda y, t: one.score(y[:, None], t, sde)[:, 0]  # noqa: E731
    y = one.sample(4, generator=torch.Generator().manual_seed(1))
    c = log_likelihood(sde, sd, y[:, 0])
    torch.testing.assert_close(c.logp, log_likelihood(sde, one.score_fn(sde), y).logp, rtol=0, atol=1e-9)


def test_per_sample_solves_agree_and_nfe_adds_up():
    sde = ss.SubVPSDE()
    gmm = random_mixture(3, seed=2)
    x = gmm.sample(3, generator=torch.Generator().manual_seed(2))
    batch = log_likelihood(sde, gmm.score_fn(sde), x, rtol=1e-8, atol=1e-8)
    single = log_likelihood(sde, gmm.score_fn(sde), x, rtol=1e-8, atol=1e-8, per_sample=True)
    torch.testing.assert_close(batch.logp, single.logp, rtol=0, atol=1e-5)
    alone = [log_likelihood(sde, gmm.score_fn(sde), x[i : i + 1], rtol=1e-8, atol=1e-8).nfe for i in range(3)]
    assert single.nfe == sum(alone)


def test_nfe_counts_real_calls_and_time_stays_inside_interval():
    """torchdiffeq's first-step probe must not take the score outside [eps, T] (VP's sigma is NaN at t < 0)."""
    sde = ss.VPSDE()
    gmm = random_mixture(2, seed=0)
    seen = []

    def score(x, t):
        seen.append(t.detach().clone())
        return gmm.score(x, t, sde)

    x = gmm.sample(2, generator=torch.Generator().manual_seed(0))
    eps = 1.0 - 1e-6  # a tiny interval: the probe would step past T
    res = log_likelihood(sde, score, x, eps=eps, scheme="augmented")
    assert res.nfe == len(seen) and res.nfe > 0
    for t in seen:
        assert t.min() >= eps and t.max() <= sde.T
    seen.clear()
    # quadrature: nodes are batched (several per call); nfe counts ODE right-hand sides + nodes (+ 1 graph probe)
    res = log_likelihood(sde, score, x, eps=eps, scheme="quadrature")
    assert res.info["score_calls"] == len(seen) and res.nfe == res.info["nfe_ode"] + res.info["nodes"] + 1
    assert all(t.min() >= eps and t.max() <= sde.T for t in seen)
    seen.clear()
    z = encode(sde, score, x, eps=1e-12 + 1e-6)
    decode(sde, score, z, eps=1e-12 + 1e-6)
    lo = min(t.min().item() for t in seen)
    assert lo >= 1e-12 + 1e-6 - 1e-18 and torch.isfinite(z).all()


@pytest.mark.parametrize("name", ["vp", "subvp"])
def test_last_step_lands_on_T(name):
    """The adaptive solver's last step ends at T instead of overshooting into the clamped region and
    interpolating back (which costs ~10x accuracy here: 2.6e-6 vs 4.7e-8 nats/dim for VP)."""
    sde = SDES[name]()
    g = gaussian(4, seed=1)
    x = g.sample(4, generator=torch.Generator().manual_seed(0))
    res = log_likelihood(sde, g.score_fn(sde), x, rtol=1e-7, atol=1e-7)
    assert (_corrected(res, g, sde) - g.log_prob(x, EPS, sde)).abs().max() / 4 <= 2e-7


def test_float32_input():
    sde = ss.VPSDE()
    gmm = random_mixture(8, seed=4)
    x = gmm.sample(4, generator=torch.Generator().manual_seed(4))
    res32 = log_likelihood(sde, gmm.score_fn(sde), x.float())
    assert res32.logp.dtype == torch.float32 and res32.z.dtype == torch.float32
    err = (_corrected(res32, gmm, sde).double() - gmm.log_prob(x, EPS, sde)).abs().max() / 8
    assert err < 5e-3
    res64 = log_likelihood(sde, gmm.score_fn(sde), x.float(), dtype=torch.float64)
    assert res64.logp.dtype == torch.float64


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_float32_score_with_float64_state_has_no_round_off_floor(divergence):
    """The default float64 ODE state (the score still runs in float32) removes the ~1e-6 nats/dim round-off
    that a float32 state leaves in Delta; outputs keep the data's dtype."""
    sde, c, d = ss.VPSDE(), 0.5, 16

    def score32(x, t):  # exact score of N(0, c^2 I) data, evaluated in float32
        assert x.dtype == torch.float32 and t.dtype == torch.float32
        return -x / (sde.alpha(t) ** 2 * c**2 + sde.sigma(t) ** 2)[:, None]

    x = 0.5 * torch.randn(4, d, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    errs = {}
    for state in (torch.float64, None):
        res = log_likelihood(sde, score32, x, divergence=divergence, rtol=1e-8, atol=1e-8, state_dtype=state)
        assert res.logp.dtype == res.z.dtype == res.delta.dtype == torch.float32
        est = res.delta.double() + _gaussian_logp(res.z.double(), c, sde.T, sde)
        errs[state] = (est - _gaussian_logp(x.double(), c, EPS, sde)).abs().max().item() / d
    assert errs[torch.float64] <= 3e-7, errs
    assert errs[None] > 3 * errs[torch.float64], errs  # float32 state: round-off dominates


def test_bad_state_dtype():
    sde, score, x = _setup()
    for bad in (torch.int64, "float64"):
        with pytest.raises(TypeError, match="state_dtype"):
            log_likelihood(sde, score, x, state_dtype=bad)


# ---- Hutchinson ------------------------------------------------------------------------------------
@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(noise):
    sde = ss.VPSDE()
    gmm = random_mixture(8, seed=5)
    x0 = gmm.sample(1, generator=torch.Generator().manual_seed(5))
    exact = log_likelihood(sde, gmm.score_fn(sde), x0).logp
    n = 400  # the same point n times: each copy gets its own probe, the trajectory is shared
    res = log_likelihood(
        sde, gmm.score_fn(sde), x0.expand(n, -1), divergence="hutchinson", noise=noise,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    se = res.logp.std() / math.sqrt(n)
    assert res.logp.std() > 1e-3  # it is an estimator, not the exact value
    assert (res.logp.mean() - exact).abs() <= 4 * se, f"mean {res.logp.mean():.4f} vs exact {exact.item():.4f}"


def test_more_probes_reduce_variance():
    sde = ss.VPSDE()
    gmm = random_mixture(8, seed=6)
    x = gmm.sample(1, generator=torch.Generator().manual_seed(6)).expand(200, -1)
    kw = dict(divergence="hutchinson", generator=torch.Generator().manual_seed(1))
    v1 = log_likelihood(sde, gmm.score_fn(sde), x, probes=1, **kw).logp.var()
    v8 = log_likelihood(sde, gmm.score_fn(sde), x, probes=8, **kw).logp.var()
    assert v8 < v1 / 4  # 1/k in expectation


def test_one_rademacher_probe_is_exact_for_a_diagonal_jacobian():
    sde = ss.VPSDE()
    prod = ProductOfMixtures(6)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    score = lambda y, t: prod.score(y, t, sde)  # noqa: E731
    exact = log_likelihood(sde, score, x, rtol=1e-7, atol=1e-7)
    rad = log_likelihood(sde, score, x, divergence="hutchinson", rtol=1e-7, atol=1e-7, generator=torch.Generator())
    torch.testing.assert_close(rad.logp, exact.logp, rtol=0, atol=1e-9)
    gau = log_likelihood(sde, score, x, divergence="hutchinson", noise="gaussian", rtol=1e-7, atol=1e-7)
    assert (gau.logp - exact.logp).abs().max() > 1e-3  # Gaussian probes are not exact here
    assert (_corrected(exact, prod, sde) - prod.log_prob(x, EPS, sde)).abs().max() < 1e-4


def test_given_probe_tensor_is_used_as_is():
    sde = ss.VPSDE()
    gmm = random_mixture(3, seed=11)
    x = gmm.sample(2, generator=torch.Generator().manual_seed(11))
    v = torch.randn(2, *x.shape, generator=torch.Generator().manual_seed(0))
    two = log_likelihood(sde, gmm.score_fn(sde), x, divergence="hutchinson", probes=v, rtol=1e-8, atol=1e-8)
    one = [
        log_likelihood(sde, gmm.score_fn(sde), x, divergence="hutchinson", probes=v[k], rtol=1e-8, atol=1e-8)
        for k in range(2)
    ]
    torch.testing.assert_close(two.logp, 0.5 * (one[0].logp + one[1].logp), rtol=0, atol=1e-6)
    assert (one[0].logp - one[1].logp).abs().max() > 1e-4
    with pytest.raises(ValueError, match="probes"):
        log_likelihood(sde, gmm.score_fn(sde), x, divergence="hutchinson", probes=v[:, :1])


def test_generators_reproduce_and_per_sample_generators_are_batch_invariant():
    sde = ss.VESDE()
    gmm = random_mixture(4, seed=7)
    x = gmm.sample(3, generator=torch.Generator().manual_seed(7))
    kw = dict(divergence="hutchinson", rtol=1e-8, atol=1e-8)
    a = log_likelihood(sde, gmm.score_fn(sde), x, generator=torch.Generator().manual_seed(3), **kw)
    b = log_likelihood(sde, gmm.score_fn(sde), x, generator=torch.Generator().manual_seed(3), **kw)
    torch.testing.assert_close(a.logp, b.logp, rtol=0, atol=0)
    gens = ss.per_sample_generators([10, 11, 12])
    full = log_likelihood(sde, gmm.score_fn(sde), x, generator=gens, **kw)
    last = log_likelihood(sde, gmm.score_fn(sde), x[2:], generator=ss.per_sample_generators([12]), **kw)
    torch.testing.assert_close(full.logp[2:], last.logp, rtol=0, atol=1e-5)


# ---- gradients flow (no hidden no_grad) ---------------------------------------------------------
def _gaussian_logp(x, c, t, sde):
    """log N(x; 0, (alpha^2 c^2 + sigma^2) I) for data N(0, c^2 I); differentiable in c."""
    tt = torch.as_tensor(t, dtype=torch.float64)
    v = sde.alpha(tt) ** 2 * c**2 + sde.sigma(tt) ** 2
    D = x[0].numel()
    return -0.5 * (x**2).reshape(x.shape[0], -1).sum(1) / v - 0.5 * D * torch.log(2 * math.pi * v)


def test_gradient_reaches_score_parameters():
    sde = ss.VPSDE()
    c = torch.tensor(0.7, requires_grad=True)

    def score(x, t):  # the exact score of N(0, c^2 I) data, with c a learnable parameter
        v = sde.alpha(t) ** 2 * c**2 + sde.sigma(t) ** 2
        return -x / v[:, None]

    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    res = log_likelihood(sde, score, x, rtol=1e-8, atol=1e-8)
    assert res.logp.requires_grad
    (g_ode,) = torch.autograd.grad((res.delta + _gaussian_logp(res.z, c, sde.T, sde)).sum(), c)
    (g_true,) = torch.autograd.grad(_gaussian_logp(x, c, EPS, sde).sum(), c)
    assert abs(g_true.item()) > 1.0
    torch.testing.assert_close(g_ode, g_true, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        assert not log_likelihood(sde, score, x).logp.requires_grad


def test_gradient_with_respect_to_data_is_the_score():
    sde = ss.SubVPSDE()
    gmm = random_mixture(3, seed=8)
    x = gmm.sample(2, generator=torch.Generator().manual_seed(8)).requires_grad_(True)
    res = log_likelihood(sde, gmm.score_fn(sde), x, rtol=1e-9, atol=1e-9)
    (gx,) = torch.autograd.grad(_corrected(res, gmm, sde).sum(), x)
    torch.testing.assert_close(gx, gmm.score(x.detach(), EPS, sde), rtol=1e-4, atol=1e-4)


def test_warns_when_the_flow_leaves_the_prior():
    """A bad score (here -3x on VP: the PF drift 1/2 beta (3 - 1) x grows like e^10) ends far outside the prior;
    the result says so instead of returning a silent -1e9 log-density. A good score does not warn."""
    sde = ss.VPSDE()
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="far outside the prior"):
        log_likelihood(sde, lambda y, t: -3.0 * y, x)
    gmm = random_mixture(3, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        log_likelihood(sde, gmm.score_fn(sde), gmm.sample(8, generator=torch.Generator().manual_seed(1)))


def test_no_graph_kept_when_nothing_requires_grad():
    sde = ss.VPSDE()
    gmm = random_mixture(2, seed=0)
    res = log_likelihood(sde, gmm.score_fn(sde), gmm.sample(2))
    assert not res.logp.requires_grad and not res.z.requires_grad


# ---- encode / decode ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_encode_decode_round_trip(name):
    sde = SDES[name]()
    gmm = random_mixture(4, seed=9)
    x = gmm.sample(5, generator=torch.Generator().manual_seed(9))
    z = encode(sde, gmm.score_fn(sde), x, rtol=1e-9, atol=1e-9)
    xr = decode(sde, gmm.score_fn(sde), z, rtol=1e-9, atol=1e-9)
    assert (xr - x).abs().max() <= 1e-5
    assert (z - x).abs().max() > 0.1  # it moved


def test_encode_matches_the_exact_one_dimensional_flow_map():
    sde = ss.VPSDE()
    gmm = random_mixture(1, seed=10)
    x = gmm.sample(6, generator=torch.Generator().manual_seed(10))
    z = encode(sde, gmm.score_fn(sde), x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(z, gmm.transport(x, EPS, sde.T, sde), rtol=0, atol=1e-6)
    res = log_likelihood(sde, gmm.score_fn(sde), x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(res.z, z, rtol=0, atol=1e-6)


# ---- bits/dim ----------------------------------------------------------------------------------------
def _interior_levels(n, shape, seed):
    """Levels 16..239 of 256: the dequantized points stay >= 0.06 (unit) / 0.12 (centered) from the box's
    faces, i.e. >= 6 sigma(eps) even for VE's sigma(eps) ~ 0.01, where p_eps equals the box density to
    ~1e-9; within a few sigma(eps) of a face p_eps falls to half the box density and is very sharp."""
    return torch.randint(16, 240, (n, *shape), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
@pytest.mark.parametrize("scaling", [DataScaling.centered(256), DataScaling.unit(256)], ids=["centered", "unit"])
def test_uniform_data_has_eight_bits_per_dim(name, scaling):
    sde = SDES[name]()
    shape = (1, 2, 2)
    box = Uniform(scaling.shift, scaling.shift + scaling.scale, shape)
    levels = _interior_levels(6, shape, seed=0)
    bpd = bits_per_dim(sde, box.score_fn(sde), levels, scaling, generator=torch.Generator().manual_seed(1))
    # same draws by hand: the prior mismatch removed exactly -> exact answer 8 to 1e-3
    x = scaling.dequantize(levels, torch.Generator().manual_seed(1))
    res = log_likelihood(sde, box.score_fn(sde), x)
    torch.testing.assert_close(scaling.bits_per_dim(res.logp, 4), bpd)
    exact = scaling.bits_per_dim(_corrected(res, box, sde), 4)
    assert (exact - 8.0).abs().max() <= 1e-3
    if name == "ve" and scaling.shift == 0.0:
        # the raw number carries the model's prior mismatch: data of mean 0.5 under pi = N(0, 50^2)
        # costs about z * 0.5 / 50^2 ~ 1e-2 nats per dimension; on average it is still 8.00.
        assert abs(bpd.mean().item() - 8.0) <= 0.01
    else:
        assert (bpd - 8.0).abs().max() <= 0.01


def test_bits_per_dim_formula_and_scaling():
    sc = DataScaling.centered(256)
    logp = torch.tensor([-3.0])
    assert sc.bits_per_dim(logp, 2).item() == pytest.approx(3.0 / (2 * math.log(2)) - 1.0 + 8.0)
    assert DataScaling.unit(16).bits_per_dim(torch.tensor(0.0), 5).item() == pytest.approx(4.0)
    assert DataScaling.from_range(-1, 1) == sc
    n = torch.tensor([[0, 255]])
    x = sc.dequantize(n, torch.Generator().manual_seed(0))
    assert x[0, 0] >= -1 and x[0, 0] < -1 + 2 / 256 and x[0, 1] >= 1 - 2 / 256 and x[0, 1] < 1
    torch.testing.assert_close(sc.quantize(torch.tensor([0.0, 1.0, 128 / 255])), torch.tensor([0, 255, 128]))
    torch.testing.assert_close(sc.from_model(sc.to_model(torch.tensor([0.25]))), torch.tensor([0.25]))


def test_dataset_bits_per_dim_tensor_and_loader_agree():
    sde = ss.VPSDE()
    scaling = DataScaling.centered(256)
    shape = (2,)
    box = Uniform(-1, 1, shape)
    levels = _interior_levels(6, shape, seed=2)
    kw = dict(divergence="hutchinson", repeats=2)
    a = dataset_bits_per_dim(sde, box.score_fn(sde), levels, scaling, batch_size=4,
                             generator=torch.Generator().manual_seed(0), **kw)  # fmt: skip
    loader = [(levels[:4], torch.zeros(4)), (levels[4:], torch.zeros(2))]
    b = dataset_bits_per_dim(sde, box.score_fn(sde), loader, scaling, generator=torch.Generator().manual_seed(0), **kw)
    assert a.num == 6 and b.num == 6 and a.nfe > 0
    assert a.mean == pytest.approx(b.mean, abs=1e-12) and abs(a.mean - 8.0) <= 0.01
    mean, stderr = a
    assert stderr == pytest.approx(float(a.per_sample.std() / math.sqrt(6)))
    c = dataset_bits_per_dim(sde, box.score_fn(sde), levels, scaling, batch_size=4, max_batches=1)
    assert c.num == 4


# ---- bad input ---------------------------------------------------------------------------------------
def _setup():
    sde = ss.VPSDE()
    gmm = random_mixture(2, seed=0)
    return sde, gmm.score_fn(sde), gmm.sample(2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rtol=0.0), "rtol"),
        (dict(rtol=-1e-5), "rtol"),
        (dict(atol=0), "atol"),
        (dict(atol=float("nan")), "atol"),
        (dict(eps=0.0), "eps"),
        (dict(eps=-1e-3), "eps"),
        (dict(eps=1.0), "eps"),
        (dict(eps=2.0), "eps"),
        (dict(divergence="trace"), "divergence"),
        (dict(divergence="hutchinson", noise="uniform"), "noise"),
        (dict(probes=0), "probes"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(method="rk99"), "rk99"),
    ],
)
def test_bad_arguments(kwargs, match):
    sde, score, x = _setup()
    with pytest.raises(ValueError, match=match):
        log_likelihood(sde, score, x, **kwargs)


def test_non_finite_data():
    sde, score, x = _setup()
    for bad in (float("nan"), float("inf")):
        y = x.clone()
        y[1, 0] = bad
        for fn in (log_likelihood, encode, decode):
            with pytest.raises(ValueError, match="finite"):
                fn(sde, score, y)


def test_score_with_wrong_shape():
    sde, score, x = _setup()
    with pytest.raises(ValueError, match="shape"):
        log_likelihood(sde, lambda y, t: score(y, t)[:, :1], x)
    with pytest.raises(ValueError, match="shape"):
        encode(sde, lambda y, t: score(y, t).reshape(-1), x)


def test_bad_types_and_scalings():
    sde, score, x = _setup()
    with pytest.raises(TypeError, match="sde"):
        log_likelihood("vp", score, x)
    with pytest.raises(TypeError, match="score_fn"):
        log_likelihood(sde, None, x)
    with pytest.raises(TypeError, match="scaling"):
        bits_per_dim(sde, score, torch.zeros(2, 2, dtype=torch.long), (2.0, -1.0))
    with pytest.raises(ValueError, match="levels"):
        bits_per_dim(sde, score, torch.tensor([[0, 256]]), DataScaling.centered(256))
    with pytest.raises(ValueError, match="integer levels"):
        bits_per_dim(sde, score, torch.tensor([[0.5, 1.0]]), DataScaling.centered(256))
    with pytest.raises(ValueError, match="levels"):
        DataScaling(1, 2.0, -1.0)
    with pytest.raises(ValueError, match="scale"):
        DataScaling(256, 0.0, -1.0)
    with pytest.raises(ValueError, match="repeats"):
        dataset_bits_per_dim(sde, score, torch.zeros(2, 2, dtype=torch.long), DataScaling.unit(), repeats=0)


# ---- the exact uniform-box marginal used above -----------------------------------------------------
@pytest.mark.parametrize("name", ["vp", "ve"])
def test_uniform_marginal_is_normalised_and_its_score_is_the_gradient(name):
    sde = SDES[name]()
    box = Uniform(-1.0, 1.0, (1,))
    for t in (1e-3, 0.05, 0.5, 1.0):
        s = float(sde.sigma(torch.tensor(t)))
        a = float(sde.alpha(torch.tensor(t)))
        grid = torch.linspace(-a - 12 * s, a + 12 * s, 200001)[:, None]
        mass = torch.trapezoid(box.log_prob(grid, t, sde).exp(), grid[:, 0])
        assert abs(mass.item() - 1.0) < 1e-6
        x = torch.tensor([[-3.0], [-1.0], [0.2], [0.999], [1.5]], requires_grad=True)
        (g,) = torch.autograd.grad(box.log_prob(x, t, sde).sum(), x)
        torch.testing.assert_close(box.score(x.detach(), t, sde), g, rtol=1e-6, atol=1e-8)
    far = torch.tensor([[40.0]])  # far outside: the score is finite and points back to the box
    assert torch.isfinite(box.score(far, 0.01, sde)).all() and box.score(far, 0.01, sde).item() < 0
    assert box.log_prob(torch.tensor([[0.5], [1.5]])).tolist() == [-math.log(2.0), -math.inf]
