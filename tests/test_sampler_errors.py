"""Bad input to the samplers gets a clear error naming the value (one test per case)."""

import pytest
import torch

import score_sde as ss
from score_sde.solvers.ode import NFEBudgetExceeded, odeint_pf
from tests.problems import SDES, mixture_2d


@pytest.fixture
def vp():
    sde = SDES["vp"]()
    return sde, mixture_2d().score_fn(sde)


def test_unknown_sampler_lists_the_valid_ones(vp):
    sde, f = vp
    with pytest.raises(ValueError, match=r"unknown sampler 'dpm\+\+'; valid samplers: \[.*'ancestral'.*'ode'.*'sde'"):
        ss.sample(sde, f, shape=(2, 2), sampler="dpm++")


def test_unknown_predictor_lists_the_valid_ones(vp):
    sde, f = vp
    with pytest.raises(ValueError, match=r"unknown predictor 'rk45'; valid predictors: \[.*'euler_maruyama'"):
        ss.sample(sde, f, shape=(2, 2), sampler="pc", predictor="rk45", steps=3)


def test_unknown_corrector_lists_the_valid_ones(vp):
    sde, f = vp
    with pytest.raises(
        ValueError, match=r"unknown corrector 'hmc'; valid correctors: \['annealed_langevin', 'langevin'"
    ):
        ss.sample(sde, f, shape=(2, 2), sampler="pc", corrector="hmc", steps=3)


def test_unknown_ode_and_sde_methods(vp):
    sde, f = vp
    with pytest.raises(ValueError, match=r"unknown ODE method 'rk45'; valid methods.*'dopri5'"):
        ss.sample(sde, f, shape=(2, 2), sampler="ode", method="rk45")
    with pytest.raises(ValueError, match=r"unknown SDE method 'rk4'; valid methods.*'euler'"):
        ss.sample(sde, f, shape=(2, 2), sampler="sde", method="rk4")


def test_unknown_sampler_option_is_named(vp):
    sde, f = vp
    with pytest.raises(TypeError, match=r"sampler 'ancestral' got unknown option\(s\) \['snr'\]"):
        ss.sample(sde, f, shape=(2, 2), sampler="ancestral", snr=0.1, steps=3)


def test_ancestral_on_subvp():
    sde = SDES["subvp"]()
    f = mixture_2d().score_fn(sde)
    with pytest.raises(ValueError, match=r"ancestral predictor is defined for VPSDE.*SubVPSDE"):
        ss.sample(sde, f, shape=(2, 2), sampler="ancestral", steps=3)
    with pytest.raises(ValueError, match=r"ancestral predictor is defined for VPSDE.*SubVPSDE"):
        ss.sample(sde, f, shape=(2, 2), sampler="pc", predictor="ancestral", steps=3)


@pytest.mark.parametrize("steps", [0, -3, 2.5])
def test_steps_below_one(vp, steps):
    sde, f = vp
    with pytest.raises(ValueError, match=rf"steps must be an integer >= 1; got steps = {steps}"):
        ss.sample(sde, f, shape=(2, 2), sampler="euler_maruyama", steps=steps)


@pytest.mark.parametrize("eps", [1.0, 1.5, 0.0, -1e-3])
def test_eps_not_below_T(vp, eps):
    sde, f = vp
    with pytest.raises(ValueError, match=rf"eps must lie in \(0, T\) = \(0, 1.0\); got eps = {eps}"):
        ss.sample(sde, f, shape=(2, 2), sampler="reverse_diffusion", steps=3, eps=eps)
    with pytest.raises(ValueError, match=rf"got eps = {eps}"):
        ss.sample(sde, f, shape=(2, 2), sampler="ode", eps=eps)


def test_x_T_of_the_wrong_shape(vp):
    sde, f = vp
    with pytest.raises(ValueError, match=r"x_T has shape \(3, 2\) but shape = \(4, 2\)"):
        ss.sample(sde, f, shape=(4, 2), x_T=torch.zeros(3, 2), sampler="ancestral", steps=2)
    with pytest.raises(ValueError, match=r"x_T must have shape \[B, \.\.\.\] with B >= 1; got x_T of shape \(\)"):
        ss.sample(sde, f, x_T=torch.tensor(1.0), sampler="ancestral", steps=2)
    with pytest.raises(ValueError, match=r"score_fn returned shape \(3, 1\) for x of shape \(3, 2\)"):
        ss.sample(sde, lambda x, t: x[:, :1], x_T=torch.zeros(3, 2), sampler="ancestral", steps=2)


def test_non_finite_x_T(vp):
    sde, f = vp
    x = torch.zeros(2, 2)
    x[1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"x_T must be finite; x_T\[1, 0\] = nan"):
        ss.sample(sde, f, x_T=x, sampler="ode")


def test_ode_nfe_budget_exceeded(vp):
    sde, f = vp
    with pytest.raises(NFEBudgetExceeded, match=r"more than max_nfe = 20 function evaluations.*dopri5"):
        ss.sample(sde, f, shape=(4, 2), sampler="ode", max_nfe=20)
    with pytest.raises(NFEBudgetExceeded, match=r"max_nfe = 30"):
        ss.sample(sde, f, shape=(4, 2), sampler="ode", nfe=30)
    with pytest.raises(ValueError, match=r"max_nfe must be an integer >= 1; got max_nfe = 0"):
        odeint_pf(sde, f, torch.zeros(2, 2), 1.0, 0.5, max_nfe=0)


def test_fixed_step_ode_method_without_steps(vp):
    sde, f = vp
    with pytest.raises(ValueError, match=r"fixed-step method 'rk4' needs a step count"):
        odeint_pf(sde, f, torch.zeros(2, 2), 1.0, 1e-3, method="rk4")


def test_sde_sampler_bad_options(vp):
    sde, f = vp
    with pytest.raises(ValueError, match=r"dt must lie in \(0, T - eps\].*got dt = 2.0"):
        ss.sample(sde, f, shape=(2, 2), sampler="sde", dt=2.0)
    with pytest.raises(ValueError, match=r"does not take grid="):
        ss.sample(sde, f, shape=(2, 2), sampler="sde", steps=3, grid="quadratic")


def test_per_sample_generators_of_the_wrong_count(vp):
    sde, f = vp
    with pytest.raises(ValueError, match=r"got 3 per-sample generators for a batch of 4"):
        ss.sample(
            sde, f, shape=(4, 2), sampler="euler_maruyama", steps=2, generator=ss.per_sample_generators([1, 2, 3])
        )


def test_bad_snr_and_corrector_steps(vp):
    sde, f = vp
    with pytest.raises(ValueError, match=r"snr must be a number > 0; got snr = -0.1"):
        ss.sample(sde, f, shape=(2, 2), sampler="pc", snr=-0.1, steps=2)
    with pytest.raises(ValueError, match=r"corrector_steps must be an integer >= 1; got corrector_steps = 0"):
        ss.sample(sde, f, shape=(2, 2), sampler="pc", corrector_steps=0, steps=2)


def test_not_an_sde_or_not_callable(vp):
    sde, f = vp
    with pytest.raises(TypeError, match=r"sde must be a score_sde SDE.*got str"):
        ss.sample("vp", f, shape=(2, 2))
    with pytest.raises(TypeError, match=r"score_fn must be callable; got int"):
        ss.sample(sde, 3, shape=(2, 2))
