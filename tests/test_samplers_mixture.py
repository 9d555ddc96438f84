"""Every sampler, driven by the exact score of a 2-D Gaussian mixture, reproduces the data.

For each sampler and SDE (VP here and VE in test_samplers_mixture_ve.py by default; sub-VP where
it applies), 10^4
samples are drawn starting from exact samples of p_T (so that the test measures the sampler, not
the small prior mismatch p_T != N(0, prior_std^2 I)) and compared with exact samples of p_eps:

- mode weights (each sample assigned to the components by its responsibilities under p_0)
  within 0.02 of the mixture weights;
- mean and covariance within Z standard errors estimated from the exact samples (for the
  covariance: the standard error of each entry's sample mean of (x_i - m_i)(x_j - m_j)), plus a
  fixed allowance for the sampler's discretisation bias at the step counts used (0.02 for the mean,
  0.05 for the covariance; the step counts are chosen so that the measured bias is below it);
- a Gaussian-kernel MMD permutation test against the exact samples does not reject (p > 0.01).
"""

import pytest
import torch

import score_sde as ss
from tests.problems import SDES, mixture_2d, mmd_permutation_pvalue

N_SAMPLES = 10_000
Z = 4.0
BIAS_MEAN, BIAS_COV = 0.02, 0.05

# sampler name -> options; step counts keep the discretisation bias below the allowances above
SAMPLERS = {
    "ancestral": dict(steps=250),
    "reverse_diffusion": dict(steps=250),
    "euler_maruyama": dict(steps=250),
    "pc": dict(steps=200, predictor="reverse_diffusion", corrector="langevin", snr=0.16),
    "pc_annealed": dict(sampler="pc", steps=200, corrector="annealed_langevin", snr=0.16),
    "probability_flow": dict(steps=1000),
    "ode": dict(rtol=1e-5, atol=1e-5),
    "sde": dict(steps=250, method="euler"),
}
CASES = [pytest.param(name, "vp", id=f"{name}-vp") for name in SAMPLERS]
CASES += [pytest.param(name, "subvp", id=f"{name}-subvp") for name in SAMPLERS if name != "ancestral"]


def check_reproduces(gmm, sde, x, ref, label):
    """Assert the acceptance criteria; returns the measured numbers (for the report)."""
    n = x.shape[0]
    m, C = gmm.moments(sde.default_eps, sde)
    # weights by responsibilities under the data distribution p_0
    w = gmm.responsibilities(x).mean(0)
    dw = (w - gmm.weights).abs().max().item()
    assert dw < 0.02, f"{label}: mode weights {w.tolist()} vs {gmm.weights.tolist()}"
    # standard errors from the exact samples
    d = ref - ref.mean(0)
    se_m = d.std(0) / n**0.5
    prod = d[:, :, None] * d[:, None, :]
    se_C = prod.reshape(ref.shape[0], -1).std(0).reshape(C.shape) / n**0.5
    dm = (x.mean(0) - m).abs()
    dC = (torch.cov(x.T) - C).abs()
    assert (dm <= Z * se_m + BIAS_MEAN).all(), f"{label}: mean error {dm.tolist()} > {(Z * se_m + BIAS_MEAN).tolist()}"
    assert (dC <= Z * se_C + BIAS_COV).all(), f"{label}: cov error {dC.tolist()} > {(Z * se_C + BIAS_COV).tolist()}"
    p = mmd_permutation_pvalue(x, ref, n_perm=200)
    assert p > 0.01, f"{label}: MMD test rejects, p = {p}"
    return dict(dw=dw, dm=dm.max().item(), dC=dC.max().item(), p=p)


def run_and_check(name, sde_name):
    gmm, sde = mixture_2d(), SDES[sde_name]()
    gen = torch.Generator().manual_seed(1234)
    x_T = gmm.marginal_sample(N_SAMPLES, sde.T, sde, generator=gen)
    ref = gmm.marginal_sample(N_SAMPLES, sde.default_eps, sde, generator=torch.Generator().manual_seed(99))
    opts = dict(SAMPLERS[name])
    sampler = opts.pop("sampler", name)
    res = ss.sample(sde, gmm.score_fn(sde), x_T=x_T, sampler=sampler, generator=gen, **opts)
    assert res.x.shape == (N_SAMPLES, 2) and torch.isfinite(res.x).all()
    stats = check_reproduces(gmm, sde, res.x, ref, f"{name}/{sde_name}")
    print(f"{name}/{sde_name}: nfe={res.nfe} {stats}")


@pytest.mark.parametrize("name, sde_name", CASES)
def test_sampler_reproduces_mixture(name, sde_name):
    run_and_check(name, sde_name)


def test_prior_start_vp_ancestral():
    """The usual start from the prior N(0, I) works as well (VP's prior mismatch is tiny)."""
    gmm, sde = mixture_2d(), SDES["vp"]()
    gen = torch.Generator().manual_seed(7)
    res = ss.sample(sde, gmm.score_fn(sde), shape=(N_SAMPLES, 2), sampler="ancestral", steps=250, generator=gen)
    ref = gmm.marginal_sample(N_SAMPLES, sde.default_eps, sde, generator=torch.Generator().manual_seed(98))
    check_reproduces(gmm, sde, res.x, ref, "ancestral/vp/prior")
