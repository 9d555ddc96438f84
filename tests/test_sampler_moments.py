"""Every stochastic sampler in the registry gets the mean and covariance of a mixture right to
within 5 standard errors of the sampling error (n = 10^4, float64, exact scores, VP).

The data are the 4-D two-component mixture :func:`tests.problems.mixture_scales_4d`, whose
coordinates span variances 0.02 to 1; its within-component spread dominates the covariance, so
the noise level of a sampler shows in the covariance. The bounds are 5 standard errors of the
n-sample mean, of each sample-covariance entry and of the covariance's trace, all computed from
the exact distribution's second and fourth moments (:func:`tests.problems.mixture_moment_errors`),
with no extra allowance: the step counts below keep each sampler's discretisation bias below
about 2 standard errors (measured at n = 4 * 10^4). Each sampler starts from exact draws of p_T,
so the test measures the sampler, not the prior mismatch. A sampler whose noise is scaled by 0.95
ends with 5-10 % too little total variance (measured at n = 4 * 10^4; one standard error of the trace
is about 1 % here), and ``scripts/mutants.py`` checks that each such mutant fails this test.
"""

import pytest
import torch

import score_sde as ss
from score_sde.solvers import SAMPLERS
from tests.problems import SDES, mixture_moment_errors, mixture_scales_4d

N = 10_000
Z = 5.0

# every sampler that draws noise (with the options that make it stochastic) and its step count
STOCHASTIC = {
    "ancestral": dict(steps=250),
    "reverse_diffusion": dict(steps=250),
    "euler_maruyama": dict(steps=250),
    "pc": dict(steps=200, predictor="reverse_diffusion", corrector="langevin", snr=0.16),
    "pc/annealed_langevin": dict(sampler="pc", steps=200, corrector="annealed_langevin", snr=0.16),
    "sde": dict(steps=250, method="euler"),
    "ddim": dict(steps=400, eta=1.0),
    "dpmpp_2m_sde": dict(steps=100, eta=1.0),
    "edm": dict(steps=100, S_churn=40.0, S_min=0.05, S_max=50.0, S_noise=1.003),  # EDM churn
    "restart": dict(steps=40, restart_sigma=(0.05, 3.0), restart_steps=12),
    "consistency": dict(steps=3),  # run on the exact consistency function (a tight PF-ODE solve), not the score
}
# registered names that are deterministic whatever their options
DETERMINISTIC = {"dpm_solver_1", "dpm_solver_2", "dpm_solver_3", "dpmpp_2m", "dpmpp_3m", "heun", "unipc"}
DETERMINISTIC |= {"probability_flow", "ode"}


def test_every_registered_sampler_is_classified():
    """A new sampler must be added to STOCHASTIC (and so checked below) or declared deterministic."""
    names = set(ss.available_samplers())
    covered = {k.split("/")[0] for k in STOCHASTIC}
    assert names == covered | DETERMINISTIC, sorted(names ^ (covered | DETERMINISTIC))
    for name in names - {"ode", "sde", "pc"}:
        spec = SAMPLERS[name]
        assert spec.build is not None, name
        opts = {k: v for k, v in STOCHASTIC.get(name, {}).items() if k not in ("steps", "sampler")}
        assert spec.build(**opts).stochastic == (name in covered), name


def _consistency_oracle(gmm, sde, eps):
    """The consistency sampler needs the consistency function f(x, t) = x~_eps (Song et al. 2023), not a score:
    here the exact one, a tight PF-ODE solve from t to eps, handed over as the score whose Tweedie estimate is f,
    (alpha(t) f - x) / sigma(t)^2."""
    a_eps = float(sde.alpha(torch.tensor(eps, dtype=torch.float64)))

    def score(x, t):
        t0 = float(t[0])
        grid = torch.tensor([t0, eps], dtype=torch.float64)
        x_eps = ss.sample(sde, gmm.score_fn(sde), x_T=x, sampler="ode", grid=grid, rtol=1e-9, atol=1e-9).x
        a, s = float(sde.alpha(t0)), float(sde.sigma(t0))
        return (a * x_eps / a_eps - x) / (s * s)

    return score


@pytest.mark.parametrize("key", list(STOCHASTIC))
def test_stochastic_sampler_mean_and_covariance(key):
    gmm, sde = mixture_scales_4d(), SDES["vp"]()
    eps = sde.default_eps
    m, C, se_m, se_C, se_tr = mixture_moment_errors(gmm, eps, sde, N)
    gen = torch.Generator().manual_seed(1)
    x_T = gmm.marginal_sample(N, sde.T, sde, generator=gen)
    opts = dict(STOCHASTIC[key])
    sampler = opts.pop("sampler", key)
    score = _consistency_oracle(gmm, sde, eps) if sampler == "consistency" else gmm.score_fn(sde)
    x = ss.sample(sde, score, x_T=x_T, sampler=sampler, generator=gen, **opts).x
    assert x.dtype == torch.float64 and torch.isfinite(x).all()
    Cx = torch.cov(x.T)
    z_m = ((x.mean(0) - m) / se_m).abs().max().item()
    z_C = ((Cx - C) / se_C).abs().max().item()
    z_tr = ((Cx.trace() - C.trace()) / se_tr).item()
    msg = f"{key}: |mean error| {z_m:.1f} SE, |cov error| {z_C:.1f} SE, trace error {z_tr:+.1f} SE"
    print(msg)
    assert z_m < Z and z_C < Z and abs(z_tr) < Z, msg


@pytest.mark.parametrize("corrector", ["langevin", "annealed_langevin"])
def test_corrector_alone_keeps_the_mean_and_covariance(corrector):
    """200 corrector steps at a fixed time t = 0.5, started from exact draws of p_t, leave p_t's mean and
    covariance within 5 standard errors (snr 0.08: the unadjusted Langevin bias, ~snr^2 relative, is
    below 1 %). Inside PC the predictor sets most of the spread, so this is where the corrector's own noise
    level shows: scaled by 0.95 it moves the trace by about -9 %."""
    from score_sde.solvers.base import Context, CountingScore
    from score_sde.solvers.correctors import CORRECTORS

    gmm, sde = mixture_scales_4d(), SDES["vp"]()
    t, t_next = torch.tensor(0.5, dtype=torch.float64), torch.tensor(0.499, dtype=torch.float64)
    m, C, se_m, se_C, se_tr = mixture_moment_errors(gmm, t, sde, N)
    c = CORRECTORS[corrector](snr=0.08, n_steps=1, per_sample=False)
    ctx = Context(sde, CountingScore(gmm.score_fn(sde)), generator=torch.Generator().manual_seed(0))
    x = gmm.marginal_sample(N, t, sde, generator=torch.Generator().manual_seed(1))
    for _ in range(200):
        x, _ = c.correct(ctx, x, t, t_next)
    Cx = torch.cov(x.T)
    z_m = ((x.mean(0) - m) / se_m).abs().max().item()
    z_C = ((Cx - C) / se_C).abs().max().item()
    z_tr = ((Cx.trace() - C.trace()) / se_tr).item()
    msg = f"{corrector}: |mean error| {z_m:.1f} SE, |cov error| {z_C:.1f} SE, trace error {z_tr:+.1f} SE"
    print(msg)
    assert z_m < Z and z_C < Z and abs(z_tr) < Z, msg
