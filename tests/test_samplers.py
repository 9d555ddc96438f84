"""The integrator layer against exact answers: the adaptive PF-ODE, the torchsde path, NFE
counting, reproducibility and batch invariance, callbacks."""

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import score_sde as ss
from score_sde.solvers import SAMPLERS
from score_sde.solvers.ode import odeint_pf
from tests.problems import SDES, mixture_1d, mixture_2d, mmd_permutation_pvalue


def closed_form_pf_drift(gmm, sde_name):
    """The PF-ODE drift f(t) x - 1/2 g(t)^2 grad log p_t(x) of the test mixture, written out from the
    closed-form schedules in numpy (independent of the library's SDE classes, drifts and mixture scores).

    VP / sub-VP (beta 0.1 -> 20): B(t) = 0.1 t + 9.95 t^2, beta(t) = 0.1 + 19.9 t, alpha = exp(-B/2),
    f = -beta/2; g^2 = beta (VP), beta (1 - exp(-2B)) (sub-VP); sigma^2 = 1 - alpha^2 (VP), (1 - alpha^2)^2
    (sub-VP). VE (0.01 -> 50): sigma = 0.01 * 5000^t, f = 0, g^2 = 2 ln(5000) sigma^2, alpha = 1.
    p_t = sum_k w_k N(alpha mu_k, alpha^2 S_k + sigma^2 I)."""
    w, mu, S = (gmm.weights.numpy(), gmm.means.numpy(), gmm.covs.numpy())
    D = mu.shape[1]

    def coeffs(t):
        if sde_name == "ve":
            sig = 0.01 * 5000.0**t
            return 1.0, sig * sig, 0.0, 2 * np.log(5000.0) * sig * sig
        Bt, beta = 0.1 * t + 9.95 * t * t, 0.1 + 19.9 * t
        a = np.exp(-0.5 * Bt)
        one_m = -np.expm1(-Bt)  # 1 - alpha^2
        if sde_name == "vp":
            return a, one_m, -0.5 * beta, beta
        return a, one_m**2, -0.5 * beta, -beta * np.expm1(-2 * Bt)

    def drift(t, x):
        a, s2, f, g2 = coeffs(t)
        covs = a * a * S + s2 * np.eye(D)
        logw, grads = [], []
        for k in range(len(w)):
            inv = np.linalg.inv(covs[k])
            d = x - a * mu[k]
            logw.append(np.log(w[k]) - 0.5 * d @ inv @ d - 0.5 * np.linalg.slogdet(covs[k])[1])
            grads.append(-inv @ d)
        r = np.exp(np.array(logw) - max(logw))
        score = (r[:, None] * np.array(grads)).sum(0) / r.sum()
        return f * x - 0.5 * g2 * score

    return drift


def scipy_pf_reference(gmm, sde_name, x_T, t0, t1):
    """x(t1) of the PF-ODE from x(t0) = x_T, per sample, by scipy DOP853 at rtol = atol = 1e-10."""
    drift = closed_form_pf_drift(gmm, sde_name)
    out = []
    for x in x_T:
        sol = solve_ivp(drift, (t0, t1), x.numpy(), method="DOP853", rtol=1e-10, atol=1e-10)
        assert sol.success
        out.append(torch.as_tensor(sol.y[:, -1]))
    return torch.stack(out)


# ------------------------------------------------------------------------- adaptive PF-ODE


@pytest.mark.parametrize("sde_name", ["vp", "ve", "subvp"])
def test_ode_matches_scipy_dop853(sde_name):
    gmm, sde = mixture_2d(), SDES[sde_name]()
    x_T = gmm.marginal_sample(12, sde.T, sde, generator=torch.Generator().manual_seed(3))
    eps = sde.default_eps
    ref = scipy_pf_reference(gmm, sde_name, x_T, sde.T, eps)
    f = gmm.score_fn(sde)
    for per_sample in (False, True):
        res = ss.sample(sde, f, x_T=x_T, sampler="ode", eps=eps, rtol=1e-8, atol=1e-8, per_sample=per_sample)
        err = (res.x - ref).abs().max().item()
        assert err < 1e-4, err
    # the error shrinks with the tolerance (official default 1e-5 gives ~1e-3 at the endpoint)
    errs = [(ss.sample(sde, f, x_T=x_T, sampler="ode", rtol=tol, atol=tol).x - ref).abs().max() for tol in (1e-5, 1e-9)]
    assert errs[1] < errs[0] / 100 and errs[1] < 1e-6


def test_ode_1d_equals_exact_transport_map():
    gmm = mixture_1d()
    for sde in (SDES["vp"](), SDES["ve"]()):
        eps = sde.default_eps
        x_T = torch.linspace(-2.5, 2.5, 11)[:, None] * sde.prior_std
        exact = gmm.transport(x_T, sde.T, eps, sde)
        res = ss.sample(sde, gmm.score_fn(sde), x_T=x_T, sampler="ode", eps=eps, rtol=1e-7, atol=1e-7)
        err = (res.x - exact).abs().max().item()
        assert err < 1e-4, err


def test_vp_ode_short_interval_keeps_time_inside():
    """The first-step probe of dopri5 leaves a short interval near t = 0, where the VP sigma(t) is
    NaN for t < 0; the time handed to the score must stay in [eps, t0] and the result be right."""
    gmm, sde = mixture_2d(), SDES["vp"]()
    seen = []

    def score(x, t):
        seen.append(t.min().item())
        seen.append(t.max().item())
        return gmm.score(x, t, sde)

    x0 = gmm.marginal_sample(8, 2e-3, sde, generator=torch.Generator().manual_seed(0))
    sol = odeint_pf(sde, score, x0, 2e-3, 1e-5, rtol=1e-9, atol=1e-9)
    assert torch.isfinite(sol.y).all()
    assert min(seen) >= 1e-5 and max(seen) <= 2e-3
    ref = scipy_pf_reference(gmm, "vp", x0, 2e-3, 1e-5)
    assert (sol.y - ref).abs().max() < 1e-6


def test_ode_nfe_is_counted_from_real_calls_and_float64_option():
    gmm, sde = mixture_2d(), SDES["vp"]()
    calls = [0]

    def score(x, t):
        calls[0] += 1
        assert x.dtype == torch.float64
        return gmm.score(x, t, sde)

    x_T = torch.randn(6, 2, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    res = ss.sample(sde, score, x_T=x_T, sampler="ode", float64=True)
    assert res.nfe == calls[0] > 10
    assert res.x.dtype == torch.float32
    ref = ss.sample(sde, gmm.score_fn(sde), x_T=x_T.double(), sampler="ode")
    assert (res.x.double() - ref.x).abs().max() < 1e-5


def test_ode_fixed_step_methods_take_the_given_steps():
    gmm, sde = mixture_2d(), SDES["vp"]()
    x_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    res = ss.sample(sde, gmm.score_fn(sde), x_T=x_T, sampler="ode", method="rk4", steps=100)
    assert res.nfe == 400  # 4 stages x 100 steps
    ref = ss.sample(sde, gmm.score_fn(sde), x_T=x_T, sampler="ode", rtol=1e-9, atol=1e-9)
    assert (res.x - ref.x).abs().max() < 1e-3


def test_ode_per_sample_is_batch_invariant_but_batch_solve_shares_steps():
    gmm, sde = mixture_2d(), SDES["vp"]()
    x_T = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    f = gmm.score_fn(sde)
    kw = dict(sampler="ode", rtol=1e-7, atol=1e-7)
    alone = ss.sample(sde, f, x_T=x_T[:1], **kw)
    batch = ss.sample(sde, f, x_T=x_T, per_sample=True, **kw)
    assert torch.equal(batch.x[:1], alone.x)
    assert batch.nfe == sum(batch.info["nfe_per_sample"])
    shared = ss.sample(sde, f, x_T=x_T, **kw)
    assert shared.nfe < batch.nfe  # one step-size sequence for the whole batch
    assert not torch.equal(shared.x[:1], alone.x)  # ... so a sample depends on its batch
    assert (shared.x - batch.x).abs().max() < 1e-4


# ------------------------------------------------------------------------- the torchsde path


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_torchsde_path_agrees_with_own_euler_maruyama(sde_name):
    gmm, sde = mixture_2d(), SDES[sde_name]()
    n = 4000
    f = gmm.score_fn(sde)
    x_T = gmm.marginal_sample(n, sde.T, sde, generator=torch.Generator().manual_seed(5))
    own = ss.sample(sde, f, x_T=x_T, sampler="euler_maruyama", steps=200, generator=torch.Generator().manual_seed(1))
    tsde = ss.sample(sde, f, x_T=x_T, sampler="sde", steps=200, generator=torch.Generator().manual_seed(2))
    assert own.nfe == tsde.nfe == 200
    p = mmd_permutation_pvalue(own.x, tsde.x, max_n=2000)
    assert p > 0.01, p
    # two independent samples of size n: the difference of their means / covariances has standard
    # error sqrt(2) x the one-sample error (estimated from the own samples); allow 4 of them
    d = own.x - own.x.mean(0)
    se_m = d.std(0) / n**0.5
    se_C = (d[:, :, None] * d[:, None, :]).reshape(n, -1).std(0).reshape(2, 2) / n**0.5
    assert ((own.x.mean(0) - tsde.x.mean(0)).abs() < 4 * 2**0.5 * se_m).all()
    assert ((torch.cov(own.x.T) - torch.cov(tsde.x.T)).abs() < 4 * 2**0.5 * se_C).all()


@pytest.mark.parametrize("method", ["milstein", "srk", "midpoint", "heun", "euler_heun", "log_ode"])
def test_torchsde_methods_sample_the_mixture(method):
    gmm, sde = mixture_2d(), SDES["vp"]()
    n = 3000
    x_T = gmm.marginal_sample(n, sde.T, sde, generator=torch.Generator().manual_seed(5))
    res = ss.sample(sde, gmm.score_fn(sde), x_T=x_T, sampler="sde", steps=100, method=method)
    ref = gmm.marginal_sample(n, sde.default_eps, sde, generator=torch.Generator().manual_seed(6))
    assert (gmm.responsibilities(res.x).mean(0) - gmm.weights).abs().max() < 0.03
    assert mmd_permutation_pvalue(res.x, ref, max_n=1500, n_perm=100) > 0.01


def test_torchsde_nfe_and_dt_option():
    gmm, sde = mixture_2d(), SDES["vp"]()
    calls = [0]

    def score(x, t):
        calls[0] += 1
        assert t.min() >= sde.default_eps - 1e-12 and t.max() <= sde.T + 1e-12
        return gmm.score(x, t, sde)

    res = ss.sample(sde, score, shape=(5, 2), sampler="sde", dt=0.02)
    assert res.nfe == calls[0] == res.info["steps"] == 50
    res = ss.sample(sde, score, shape=(5, 2), sampler="sde", steps=30, denoise=False)
    assert res.nfe == 30


def test_torchsde_on_images_flattens_and_restores_shape():
    gmm = ss.GaussianMixture([0.5, 0.5], torch.randn(2, 12), [0.3, 0.5], event_shape=(3, 2, 2))
    sde = SDES["ve"]()
    res = ss.sample(sde, gmm.score_fn(sde), shape=(4, 3, 2, 2), sampler="sde", steps=20)
    assert res.x.shape == (4, 3, 2, 2) and torch.isfinite(res.x).all()


# ------------------------------------------------------------- reproducibility and batch effects

STOCHASTIC = [
    ("ancestral", dict(steps=20)),
    ("reverse_diffusion", dict(steps=20)),
    ("euler_maruyama", dict(steps=20)),
    ("pc", dict(steps=10, per_sample_norms=True)),
    ("pc", dict(steps=10, corrector="annealed_langevin", predictor="euler_maruyama")),
    ("sde", dict(steps=20)),
]
# every other stochastic stepper in the registry (the fast samplers' SDE variants) is held to the same
STOCHASTIC += [
    (n, dict(steps=10))
    for n, s in sorted(SAMPLERS.items())
    if s.build is not None and s.build().stochastic and n not in {name for name, _ in STOCHASTIC}
]


@pytest.mark.parametrize("name, kw", STOCHASTIC, ids=[f"{n}{i}" for i, (n, _) in enumerate(STOCHASTIC)])
def test_stochastic_samplers_repeat_with_the_same_generator(name, kw):
    gmm, sde = mixture_2d(), SDES["vp"]()
    f = gmm.score_fn(sde)
    a = ss.sample(sde, f, shape=(8, 2), sampler=name, generator=torch.Generator().manual_seed(11), **kw).x
    b = ss.sample(sde, f, shape=(8, 2), sampler=name, generator=torch.Generator().manual_seed(11), **kw).x
    c = ss.sample(sde, f, shape=(8, 2), sampler=name, generator=torch.Generator().manual_seed(12), **kw).x
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    torch.manual_seed(4)
    d = ss.sample(sde, f, shape=(8, 2), sampler=name, **kw).x
    torch.manual_seed(4)
    e = ss.sample(sde, f, shape=(8, 2), sampler=name, **kw).x
    assert torch.equal(d, e)


@pytest.mark.parametrize("name, kw", STOCHASTIC, ids=[f"{n}{i}" for i, (n, _) in enumerate(STOCHASTIC)])
def test_per_sample_generators_make_stochastic_samples_batch_invariant(name, kw):
    gmm, sde = mixture_2d(), SDES["ve"]()
    f = gmm.score_fn(sde)
    seeds = [10, 11, 12, 13, 14]
    big = ss.sample(sde, f, shape=(5, 2), sampler=name, generator=ss.per_sample_generators(seeds), **kw).x
    small = ss.sample(sde, f, shape=(2, 2), sampler=name, generator=ss.per_sample_generators(seeds[2:4]), **kw).x
    assert torch.allclose(big[2:4], small, rtol=0, atol=1e-12)


def test_batch_averaged_langevin_norms_couple_the_batch():
    """The official batch-averaged norms make a sample depend on its neighbours (hence the option)."""
    gmm, sde = mixture_2d(), SDES["ve"]()
    f = gmm.score_fn(sde)
    seeds = [10, 11, 12, 13, 14]
    kw = dict(steps=10, per_sample_norms=False)
    big = ss.sample(sde, f, shape=(5, 2), sampler="pc", generator=ss.per_sample_generators(seeds), **kw).x
    small = ss.sample(sde, f, shape=(2, 2), sampler="pc", generator=ss.per_sample_generators(seeds[2:4]), **kw).x
    assert not torch.allclose(big[2:4], small)


DETERMINISTIC = sorted(n for n, s in SAMPLERS.items() if s.build is not None and not s.build().stochastic)


@pytest.mark.parametrize("name", DETERMINISTIC + ["ode"])
def test_deterministic_samplers_are_batch_invariant(name):
    gmm, sde = mixture_2d(), SDES["vp"]()
    f = gmm.score_fn(sde)
    x_T = torch.randn(7, 2, generator=torch.Generator().manual_seed(0))
    kw = dict(per_sample=True) if name == "ode" else dict(steps=15)
    big = ss.sample(sde, f, x_T=x_T, sampler=name, **kw).x
    small = ss.sample(sde, f, x_T=x_T[3:5], sampler=name, **kw).x
    assert torch.allclose(big[3:5], small, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------- the loop


def test_loop_nfe_callback_record_and_progress():
    gmm, sde = mixture_2d(), SDES["vp"]()
    seen = []

    def cb(i, t, x, x0):
        seen.append((i, float(t), x.shape, None if x0 is None else x0.shape))

    res = ss.sample(
        sde, gmm.score_fn(sde), shape=(4, 2), sampler="pc", steps=12, callback=cb, record=True, progress=True
    )
    assert res.nfe == 24
    assert [s[0] for s in seen] == list(range(12))
    assert seen[-1][1] == pytest.approx(sde.default_eps)
    assert all(s[3] == (4, 2) for s in seen)
    assert len(res.trajectory) == len(res.x0_preds) == 12
    # the last x0 estimate (Tweedie at the last step's start) is close to the final sample
    assert (res.x0_preds[-1] - res.x).abs().max() < 0.1


def test_nfe_budget_picks_steps_for_the_loop():
    gmm, sde = mixture_2d(), SDES["vp"]()
    res = ss.sample(sde, gmm.score_fn(sde), shape=(3, 2), sampler="pc", nfe=21)
    assert res.nfe == 20 and res.grid.numel() == 11


def test_tweedie_x0_of_exact_score_is_the_posterior_mean():
    gmm, sde = mixture_2d(), SDES["vp"]()
    x_T = torch.randn(5, 2, generator=torch.Generator().manual_seed(2))
    out = []
    ss.sample(
        sde,
        gmm.score_fn(sde),
        x_T=x_T,
        sampler="probability_flow",
        steps=3,
        callback=lambda i, t, x, x0: out.append(x0),
    )
    grid = ss.make_grid(sde, "uniform", 3)
    assert torch.allclose(out[0], gmm.denoise(x_T, grid[0], sde), atol=1e-10)


def test_probability_flow_predictor_converges_to_the_ode():
    gmm, sde = mixture_2d(), SDES["ve"]()
    x_T = gmm.marginal_sample(50, sde.T, sde, generator=torch.Generator().manual_seed(0))
    f = gmm.score_fn(sde)
    ref = ss.sample(sde, f, x_T=x_T, sampler="ode", rtol=1e-8, atol=1e-8).x
    errs = [(ss.sample(sde, f, x_T=x_T, sampler="probability_flow", steps=n).x - ref).abs().mean() for n in (100, 400)]
    assert errs[1] < errs[0] / 3
    assert np.isfinite(float(errs[1]))


def test_backends_progress_record_and_callback():
    gmm, sde = mixture_2d(), SDES["vp"]()
    f = gmm.score_fn(sde)
    x_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    seen = []
    res = ss.sample(
        sde, f, x_T=x_T, sampler="ode", steps=5, record=True, progress=True, callback=lambda i, t, x, x0: seen.append(i)
    )
    assert seen == list(range(5)) and len(res.trajectory) == 5
    assert torch.equal(res.trajectory[-1], res.x)
    # output times do not change the adaptive solution
    plain = ss.sample(sde, f, x_T=x_T, sampler="ode")
    assert (plain.x - res.x).abs().max() < 1e-3
    res = ss.sample(sde, f, x_T=x_T, sampler="sde", steps=10, progress=True)
    assert res.nfe == 10 and torch.isfinite(res.x).all()


@pytest.mark.parametrize("corrector", ["langevin", "annealed_langevin"])
def test_correctors_alone_sample_the_noisy_marginal(corrector):
    """Corrector steps at a fixed time t leave p_t (approximately) invariant: started from a wrong
    distribution they relax to p_t (Song et al. 2021, Alg. 4-5; unadjusted, so up to O(step) bias).
    Langevin with batch-averaged norms: per-sample norms make the step size depend on x, whose
    continuous-time limit is invariant for p_t / h(x) ~ p_t |s|^2, not p_t (see LangevinCorrector)."""
    from score_sde.solvers.base import Context, CountingScore
    from score_sde.solvers.correctors import CORRECTORS

    gmm, sde = mixture_2d(), SDES["vp"]()
    # at t = 0.5 the modes overlap (alpha = 0.28, sigma^2 = 0.92), so Langevin can mix between them
    t, t_next = torch.tensor(0.5, dtype=torch.float64), torch.tensor(0.499, dtype=torch.float64)
    n = 3000
    c = CORRECTORS[corrector](snr=0.16, n_steps=1, per_sample=False)
    ctx = Context(sde, CountingScore(gmm.score_fn(sde)), generator=torch.Generator().manual_seed(0))
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(1)) * 0.3  # far from p_t
    for _ in range(400):
        x, _ = c.correct(ctx, x, t, t_next)
    assert ctx.score.nfe == 400
    ref = gmm.marginal_sample(n, t, sde, generator=torch.Generator().manual_seed(2))
    assert (gmm.responsibilities(x, t, sde).mean(0) - gmm.weights).abs().max() < 0.04
    assert mmd_permutation_pvalue(x, ref, n_perm=100) > 0.01
