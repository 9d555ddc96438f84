"""log_likelihood's grouped options: ODESolveOptions / DivergenceOptions beside the keywords, same results."""

import pytest
import torch

import score_sde as ss
from score_sde.likelihood import DivergenceOptions, ODESolveOptions


def _problem():
    gmm = ss.GaussianMixture([0.4, 0.6], [[-1.0, 0.5], [1.0, -0.5]], [0.2, 0.3])
    sde = ss.VPSDE()
    return sde, gmm.score_fn(sde), gmm.sample(5, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("scheme", ["augmented", "quadrature"])
def test_option_objects_give_the_keywords_results_bit_for_bit(scheme):
    sde, score, x = _problem()
    kw = dict(rtol=1e-4, atol=1e-6, method="dopri5", state_dtype=torch.float64, scheme=scheme)
    a = ss.log_likelihood(sde, score, x, divergence="hutchinson", probes=2, noise="gaussian",
                          generator=torch.Generator().manual_seed(3), **kw)  # fmt: skip
    solver = ODESolveOptions(method="dopri5", rtol=1e-4, atol=1e-6, state_dtype=torch.float64)
    div = DivergenceOptions("hutchinson", probes=2, noise="gaussian")
    b = ss.log_likelihood(sde, score, x, divergence=div, solver=solver, generator=torch.Generator().manual_seed(3),
                          scheme=scheme)  # fmt: skip
    assert torch.equal(a.logp, b.logp) and torch.equal(a.z, b.z) and a.nfe == b.nfe
    # a keyword beside an object fills a field the object leaves at its default
    c = ss.log_likelihood(sde, score, x, divergence=DivergenceOptions("hutchinson", noise="gaussian"), probes=2,
                          solver=ODESolveOptions(atol=1e-6, method="dopri5"), rtol=1e-4,
                          generator=torch.Generator().manual_seed(3),
                          scheme=scheme)  # fmt: skip
    assert torch.equal(a.logp, c.logp) and a.nfe == c.nfe


def test_exact_divergence_through_the_object_and_a_looser_tolerance_changes_the_answer():
    sde, score, x = _problem()
    a = ss.log_likelihood(sde, score, x, chunk_size=1)
    b = ss.log_likelihood(sde, score, x, divergence=DivergenceOptions(chunk_size=1))
    assert torch.equal(a.logp, b.logp)
    loose = ss.log_likelihood(sde, score, x, solver=ODESolveOptions(rtol=1e-2, atol=1e-2))
    assert loose.nfe < a.nfe and not torch.equal(loose.logp, a.logp)


def test_contradicting_or_wrong_options_are_refused():
    sde, score, x = _problem()
    with pytest.raises(TypeError, match="rtol is given twice"):
        ss.log_likelihood(sde, score, x, solver=ODESolveOptions(rtol=1e-3), rtol=1e-4)
    with pytest.raises(TypeError, match="probes is given twice"):
        ss.log_likelihood(sde, score, x, divergence=DivergenceOptions("hutchinson", probes=3), probes=2)
    with pytest.raises(TypeError, match=r"solver must be ODESolveOptions\(...\) or None; got dict"):
        ss.log_likelihood(sde, score, x, solver={"rtol": 1e-3})
    with pytest.raises(ValueError, match="unknown divergence 'trace'"):
        ss.log_likelihood(sde, score, x, divergence=DivergenceOptions("trace"))
    with pytest.raises(ValueError, match="unknown Hutchinson noise"):
        ss.log_likelihood(sde, score, x, divergence=DivergenceOptions("hutchinson", noise="uniform"))
    with pytest.raises(ValueError, match="rtol"):
        ss.log_likelihood(sde, score, x, solver=ODESolveOptions(rtol=-1.0))
