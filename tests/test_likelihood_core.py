"""The likelihood as a problem of the integrator core: run through the one driver, scipy's RK45 by default
(:mod:`score_sde.solvers.scipy_ode`), torchdiffeq's dopri5 where logp must be differentiable."""

import math

import pytest
import torch

import score_sde as ss
from score_sde.solvers import driver
from score_sde.solvers.ode import ODESolveError, odeint_clamped
from score_sde.solvers.scipy_ode import odeint_scipy

EPS = 1e-5


def _problem(d=2, n=4, seed=0):
    gmm = ss.GaussianMixture([0.4, 0.6], [[-1.0] * d, [1.0] * d], [0.3, 0.5])
    return ss.VPSDE(), gmm, gmm.sample(n, generator=torch.Generator().manual_seed(seed)).double()


def test_the_likelihood_runs_through_the_one_driver(monkeypatch):
    sde, gmm, x = _problem()
    seen = []
    original = driver.run

    def spy(problem, method, x0, times, observer):
        seen.append((type(problem).__name__, type(method).__name__, x0.shape))
        return original(problem, method, x0, times, observer)

    monkeypatch.setattr("score_sde.likelihood.augmented.run", spy)
    res = ss.log_likelihood(sde, gmm.score_fn(sde), x)
    assert seen == [("AugmentedProblem", "AugmentedODE", (x.numel() + x.shape[0],))]
    assert res.info["method"] == "dopri5"  # the default


def test_scipy_rk45_matches_the_exact_density_and_dopri5():
    sde, gmm, x = _problem(d=3)
    true = gmm.log_prob(x, EPS, sde)
    score = gmm.score_fn(sde)
    for tol in (1e-5, 1e-8):
        a = ss.log_likelihood(sde, score, x, rtol=tol, atol=tol, method="auto")
        b = ss.log_likelihood(sde, score, x, rtol=tol, atol=tol)
        assert a.info["method"] == "scipy_rk45" and b.info["method"] == "dopri5"
        # with the exact log p_T at z in place of the prior's log pi (their mismatch is not the solver's error)
        assert (a.delta + gmm.log_prob(a.z, sde.T, sde) - true).abs().max() / 3 < 10 * tol
        assert (a.logp - b.logp).abs().max() / 3 < 10 * tol


def test_every_score_call_is_counted_once_and_the_first_is_not_repeated():
    sde, gmm, x = _problem()
    calls = [0]
    score = gmm.score_fn(sde)

    def counted(x_, t_):
        calls[0] += 1
        return score(x_, t_)

    res = ss.log_likelihood(sde, counted, x, method="scipy_rk45")
    assert res.nfe == calls[0]
    assert (res.nfe - 2) % 6 == 0  # RK45: f(t0) for the first step's guess, one probe, then 6 stages per step
    # the same solve by scipy directly on the same right-hand side makes as many calls
    from score_sde.likelihood.augmented import AugmentedProblem
    from score_sde.likelihood.options import DivergenceOptions
    from score_sde.solvers.problem import CountingScore

    div = DivergenceOptions("exact", probes=None, chunk_size=2, create_graph=False)
    prob = AugmentedProblem(sde, CountingScore(score), divergence=div, work_dtype=x.dtype, shape=tuple(x.shape))
    y0 = torch.cat((x.reshape(-1), x.new_zeros(x.shape[0])))
    from score_sde.likelihood.augmented import _on_numpy, _split_norm

    times = torch.tensor([EPS, sde.T], dtype=torch.float64)
    ys = odeint_scipy(prob.rhs, y0, times, rtol=1e-5, atol=1e-5, options={"norm": _on_numpy(_split_norm(x.numel()))})
    assert prob.score.nfe == res.nfe
    torch.testing.assert_close(ys[-1][x.numel():], res.delta, rtol=0, atol=1e-12)


def test_a_differentiable_logp_falls_back_to_dopri5_and_scipy_refuses_it():
    sde, gmm, x = _problem()
    xg = x.clone().requires_grad_(True)
    res = ss.log_likelihood(sde, gmm.score_fn(sde), xg, method="auto")
    assert res.info["method"] == "dopri5"
    (g,) = torch.autograd.grad(res.logp.sum(), xg)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    with pytest.raises(ValueError, match="scipy_rk45.*no autograd graph"):
        ss.log_likelihood(sde, gmm.score_fn(sde), x.clone().requires_grad_(True), method="scipy_rk45")


def test_the_official_norm_is_cheaper_and_a_float32_state_keeps_torchdiffeq():
    sde, gmm, x = _problem(d=16, n=8)
    score = gmm.score_fn(sde)
    split = ss.log_likelihood(sde, score, x, rtol=1e-5, atol=1e-5)
    rms = ss.log_likelihood(sde, score, x, rtol=1e-5, atol=1e-5, options={"norm": "rms"})
    assert rms.nfe < split.nfe
    true = gmm.log_prob(x, EPS, sde)

    def err(r):
        return (r.delta + gmm.log_prob(r.z, sde.T, sde) - true).abs().max()

    assert err(split) < err(rms)
    # scipy's RK45 takes the same two norms: ours holds Delta too, so it takes more steps and is more accurate
    split_sp = ss.log_likelihood(sde, score, x, rtol=1e-5, atol=1e-5, method="scipy_rk45")
    rms_sp = ss.log_likelihood(sde, score, x, rtol=1e-5, atol=1e-5, method="scipy_rk45", options={"norm": "rms"})
    assert rms_sp.nfe < split_sp.nfe and err(split_sp) < err(rms_sp)
    res32 = ss.log_likelihood(sde, score, x.float(), state_dtype=None, method="auto")
    assert res32.info["method"] == "dopri5"


def test_odeint_scipy_both_directions_and_clear_failures():
    def decay(t, y):
        return -y

    y0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    fwd = odeint_scipy(decay, y0, torch.tensor([0.0, 0.5, 1.0]), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fwd[-1], y0 * math.exp(-1.0), rtol=1e-8, atol=0)
    bwd = odeint_scipy(decay, y0, torch.tensor([1.0, 0.0]), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(bwd[-1], y0 * math.exp(1.0), rtol=1e-8, atol=0)
    assert fwd.shape == (3, 2) and fwd.dtype == torch.float64
    with pytest.raises(ValueError, match="max_num_steps"):
        odeint_scipy(decay, y0, torch.tensor([0.0, 1.0]), rtol=1e-5, atol=1e-5, options={"max_num_steps": 5})

    def blows_up(t, y):
        return y * float("nan") if float(t) > 0.3 else -y

    with pytest.raises(ODESolveError, match="NaN/inf, first at t"):
        odeint_clamped(blows_up, y0, torch.tensor([0.0, 1.0]), lo=0.0, hi=1.0, method="scipy_rk45")


def test_the_ode_sampler_takes_scipy_rk45():
    sde, gmm, _ = _problem()
    xT = sde.prior_sampling((6, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = ss.sample(sde, gmm.score_fn(sde), x_T=xT, sampler="ode", method="scipy_rk45", rtol=1e-8, atol=1e-8)
    b = ss.sample(sde, gmm.score_fn(sde), x_T=xT, sampler="ode", method="dopri5", rtol=1e-8, atol=1e-8)
    assert (a.x - b.x).abs().max() < 1e-5 and a.nfe > 0
    c = ss.sample(sde, gmm.score_fn(sde), x_T=xT, sampler="ode", method="scipy_dop853", rtol=1e-8, atol=1e-8)
    assert (c.x - b.x).abs().max() < 1e-5
    ll = ss.log_likelihood(sde, gmm.score_fn(sde), c.x, method="scipy_dop853", rtol=1e-8, atol=1e-8)
    ref = ss.log_likelihood(sde, gmm.score_fn(sde), c.x, rtol=1e-8, atol=1e-8)
    assert ll.info["method"] == "scipy_dop853" and (ll.logp - ref.logp).abs().max() < 1e-5


def test_progress_bar_on_the_likelihood(capsys):
    sde, gmm, x = _problem()
    res = ss.log_likelihood(sde, gmm.score_fn(sde), x, progress=True)
    assert torch.isfinite(res.logp).all()
    assert "log_likelihood[dopri5]" in capsys.readouterr().err


def test_a_nan_score_stops_the_scipy_solve_at_once():
    sde, gmm, x = _problem()
    calls = [0]

    def nan_score(x_, t_):
        calls[0] += 1
        return x_ * float("nan")

    with pytest.raises(ODESolveError, match="NaN/inf, first at t"):
        ss.log_likelihood(sde, nan_score, x, method="scipy_rk45")
    assert calls[0] <= 2
