"""The denoiser view of the fast samplers (score_sde/solvers/denoiser.py, Problem.predict / x0 / eps).

A ScoreModel's network output is read natively (x0 unchanged for an x0 net, eps unchanged for an eps net),
with no score <-> denoiser round trip; a plain score function is converted exactly as before. The two paths
agree to 1e-12 in float64 for every fast sampler, and the native one forms no score view.
"""

import math
import warnings

import pytest
import torch

import score_sde as ss
import score_sde.score as score_mod
from score_sde.score import ScoreModel, convert_at
from score_sde.solvers import CountingScore, Problem
from score_sde.solvers.denoiser import Prediction, native_prediction, same_schedule
from score_sde.utils import NonFiniteScoreWarning, ScoreGuard

F64 = torch.float64
FAST = [
    ("ddim", {}),
    ("ddim", {"eta": 1.0}),
    ("ddim", {"eta": 0.5, "clip_denoised": True}),
    ("dpm_solver_1", {}),
    ("dpm_solver_2", {}),
    ("dpm_solver_3", {}),
    ("dpmpp_2m", {}),
    ("dpmpp_2m", {"first_step": "singlestep"}),
    ("dpmpp_3m", {}),
    ("dpmpp_2m_sde", {}),
    ("unipc", {}),
    ("unipc", {"order": 3}),
    ("heun", {}),
    ("edm", {"S_churn": 40.0}),
    ("restart", {}),
    ("consistency", {}),
]
SDES = {"vp": lambda: ss.VPSDE(0.1, 20.0), "subvp": lambda: ss.SubVPSDE(0.1, 20.0), "ve": lambda: ss.VESDE(0.01, 10.0)}


def mixture():
    w = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    m = torch.tensor([[-1.0, 0.5], [1.0, -0.5], [0.0, 1.5]], dtype=F64)
    c = torch.stack([torch.eye(2, dtype=F64) * 0.05, torch.tensor([[0.1, 0.03], [0.03, 0.08]], dtype=F64),
                     torch.eye(2, dtype=F64) * 0.02])  # fmt: skip
    return ss.analytic.GaussianMixture(w, m, c)


def exact_net(gmm, sde, kind, log=None):
    """net(x, t[, cond]) predicting ``kind`` exactly for the mixture (``cond`` shifts nothing; it is checked);
    each output is appended to ``log`` when given."""

    def net(x, t, cond=None):
        out = convert_at(sde, t, gmm.score(x, t, sde), x, "score", kind)
        if log is not None:
            log.append(out)
        return out

    return net


def point(sde, B=6, t=0.4):
    x = torch.randn(B, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    return x, torch.full((B,), t, dtype=F64)


# -- the view itself ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["x0", "eps"])
def test_native_prediction_is_returned_unchanged(kind):
    """An x0 net's output is Problem.x0 itself, an eps net's is Problem.eps itself (the same tensor object),
    counted as one NFE, through the sampler's ScoreGuard as well."""
    sde, gmm = ss.VPSDE(), mixture()
    log = []
    model = ScoreModel(exact_net(gmm, sde, kind, log), sde, prediction=kind)
    for fn in (model, ScoreGuard(model, "test")):
        problem = Problem(sde, CountingScore(fn))
        x, tv = point(sde)
        view = problem.x0(x, tv) if kind == "x0" else problem.eps(x, tv)
        assert view is log[-1]
        assert problem.score.nfe == 1


def test_eps_net_noise_view_forms_no_denoiser():
    """DPM-Solver's eps^ of an eps net is the net's output, and no x0 is formed for it."""
    sde, gmm = ss.VPSDE(), mixture()
    log = []
    problem = Problem(sde, CountingScore(ScoreModel(exact_net(gmm, sde, "eps", log), sde)))
    x, tv = point(sde)
    pred = problem.predict(x, tv, float(sde.alpha(tv[0])), float(sde.sigma(tv[0])))
    assert pred.kind == "eps" and pred.noise(x / 2, 0.3) is log[-1]
    assert pred.formed_x0 is None


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("kind", ["eps", "x0", "v", "velocity"])
def test_views_agree_with_the_score_conversions(sde_name, kind):
    """x0, eps, score of a native prediction match the ScoreModel's own conversions (1e-12, float64)."""
    sde, gmm = SDES[sde_name](), mixture()
    model = ScoreModel(exact_net(gmm, sde, kind), sde, prediction=kind)
    problem = Problem(sde, CountingScore(model))
    x, tv = point(sde)
    pred = problem.predict(x, tv)
    assert pred.kind == kind
    for got, want in ((pred.x0, model.denoise(x, tv)), (pred.eps, model.eps(x, tv)), (pred.score, model.score(x, tv))):
        assert (got - want).abs().max().item() < 1e-12 * (1 + want.abs().max().item())


def test_plain_score_function_is_converted_as_before():
    """A plain score function: kind "score", x0 is bit-identical to Problem.tweedie, eps = -sigma s."""
    sde, gmm = ss.VESDE(0.01, 10.0), mixture()
    problem = Problem(sde, CountingScore(gmm.score_fn(sde)))
    x, tv = point(sde)
    pred = problem.predict(x, tv)
    s = gmm.score(x, tv, sde)
    assert pred.kind == "score" and torch.equal(pred.score, s)
    assert torch.equal(pred.x0, problem.tweedie(x, tv, s))
    assert torch.equal(pred.eps, -sde.sigma(tv)[:, None] * s)
    assert problem.score.nfe == 1


def test_native_path_needs_the_same_schedule():
    """The native prediction is used only when the model's SDE has the problem's alpha and sigma; otherwise the
    score is converted (so a model evaluated on another SDE keeps its score semantics)."""
    gmm = mixture()
    a, b, other = ss.VPSDE(0.1, 20.0), ss.VPSDE(0.1, 20.0), ss.VPSDE(0.1, 19.0)
    assert same_schedule(a, b) and not same_schedule(a, other) and not same_schedule(a, ss.SubVPSDE(0.1, 20.0))
    model = ScoreModel(exact_net(gmm, a, "eps"), a)
    assert native_prediction(model, b) is not None
    assert native_prediction(model, other) is None
    assert native_prediction(gmm.score_fn(a), a) is None
    x, tv = point(a)
    assert Problem(other, CountingScore(model)).predict(x, tv).kind == "score"


def test_subclass_redefining_the_score_has_no_native_view():
    sde, gmm = ss.VPSDE(), mixture()

    class Scaled(ScoreModel):
        def score(self, x, t, cond=None):
            return 0.5 * super().score(x, t, cond)

    model = Scaled(exact_net(gmm, sde, "eps"), sde)
    assert model.native_prediction() is None
    x, tv = point(sde)
    pred = Problem(sde, CountingScore(model)).predict(x, tv)
    assert pred.kind == "score" and torch.allclose(pred.score, 0.5 * gmm.score(x, tv, sde), atol=0, rtol=1e-12)


def test_bad_native_output_shape_is_refused():
    sde = ss.VPSDE()
    model = ScoreModel(lambda x, t: x[:, :1], sde, prediction="x0")
    x, tv = point(sde)
    with pytest.raises(ValueError, match=r"shape \(6, 1\) for x of shape \(6, 2\)"):
        Problem(sde, CountingScore(model)).x0(x, tv)


def test_prediction_views_by_hand():
    """Prediction's formulas on numbers: x = alpha x0 + sigma eps."""
    x0, eps, a, s = torch.tensor([[0.3, -1.2]], dtype=F64), torch.tensor([[0.7, 0.1]], dtype=F64), 0.8, 0.6
    x = a * x0 + s * eps
    t = torch.tensor([0.5], dtype=F64)
    by_eps = Prediction(x, eps, "eps", a, s, t, ss.VPSDE())
    by_x0 = Prediction(x, x0, "x0", a, s, t, ss.VPSDE())
    by_score = Prediction(x, -eps / s, "score", a, s, t, ss.VPSDE())
    for p in (by_eps, by_x0, by_score):
        assert torch.allclose(p.x0, x0, rtol=0, atol=1e-15) and torch.allclose(p.eps, eps, rtol=0, atol=1e-15)
        assert torch.allclose(p.noise(x / a, s / a), eps, rtol=0, atol=1e-15)
        assert torch.allclose(p.score, -eps / s, rtol=0, atol=1e-15)


# -- the samplers: native vs converted ------------------------------------------------------------


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("kind", ["eps", "x0", "v", "velocity"])
def test_fast_samplers_native_path_agrees_with_the_converted_path(sde_name, kind):
    """Every fast sampler with a ScoreModel (native x0 / eps / v / velocity) against the same model passed as a
    plain score function (score -> denoiser conversion): same NFE, outputs within 1e-12 (float64, 10 steps)."""
    sde, gmm = SDES[sde_name](), mixture()
    model = ScoreModel(exact_net(gmm, sde, kind), sde, prediction=kind)
    x_T = sde.prior_sampling((8, 2), generator=torch.Generator().manual_seed(1), dtype=F64)
    for name, opts in FAST:
        kw = dict(x_T=x_T, sampler=name, steps=10, **opts)
        a = ss.sample(sde, model, generator=torch.Generator().manual_seed(2), **kw)
        b = ss.sample(sde, lambda x, t: model.score(x, t), generator=torch.Generator().manual_seed(2), **kw)
        assert a.nfe == b.nfe, name
        assert (a.x - b.x).abs().max().item() < 1e-12, (name, opts)


@pytest.mark.parametrize("kind", ["eps", "x0"])
@pytest.mark.parametrize("name", ["ddim", "dpm_solver_3", "dpmpp_2m", "unipc", "heun", "dpmpp_2m_sde"])
def test_native_path_saves_the_conversion(monkeypatch, kind, name):
    """The score view (ScoreModel's convert_at) is formed once per NFE on the converted path and never on the
    native one; recording (x0 estimates) changes neither."""
    sde, gmm = ss.VPSDE(), mixture()
    model = ScoreModel(exact_net(gmm, sde, kind), sde, prediction=kind)
    calls = []
    real = score_mod.convert_at
    monkeypatch.setattr(score_mod, "convert_at", lambda *a, **k: calls.append(a[4:6]) or real(*a, **k))
    x_T = sde.prior_sampling((4, 2), generator=torch.Generator().manual_seed(1), dtype=F64)
    native = ss.sample(sde, model, x_T=x_T, sampler=name, steps=6, record=True)
    n_native = len([c for c in calls if c == (kind, "score")])
    calls.clear()
    converted = ss.sample(sde, lambda x, t: model.score(x, t), x_T=x_T, sampler=name, steps=6)
    assert n_native == 0
    assert len([c for c in calls if c == (kind, "score")]) == converted.nfe == native.nfe
    assert len(native.x0_preds) == 6


def test_conditional_native_path():
    """The condition reaches the network on the native path (net(x, labels, cond))."""
    sde, gmm = ss.VPSDE(), mixture()
    seen = []

    def net(x, t, cond):
        seen.append(cond)
        return convert_at(sde, t, gmm.score(x, t, sde), x, "score", "eps") * cond[:, None]

    model = ScoreModel(net, sde)
    cond = torch.linspace(0.9, 1.1, 4, dtype=F64)
    x_T = sde.prior_sampling((4, 2), generator=torch.Generator().manual_seed(1), dtype=F64)
    a = ss.sample(sde, model, x_T=x_T, sampler="dpmpp_2m", steps=5, cond=cond)
    b = ss.sample(sde, lambda x, t, c: model.score(x, t, c), x_T=x_T, sampler="dpmpp_2m", steps=5, cond=cond)
    assert all(c is cond for c in seen) and len(seen) == a.nfe + b.nfe
    assert (a.x - b.x).abs().max().item() < 1e-12


def test_nonfinite_native_output_still_warns():
    """The sampler's guard watches the native outputs too: a NaN from the network gives the usual warning."""
    sde, gmm = ss.VPSDE(), mixture()

    def net(x, t):
        eps = convert_at(sde, t, gmm.score(x, t, sde), x, "score", "eps")
        return torch.where(t[:, None] < 0.1, torch.full_like(eps, math.nan), eps)  # the last evaluation only

    x_T = sde.prior_sampling((4, 2), generator=torch.Generator().manual_seed(1), dtype=F64)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = ss.sample(sde, ScoreModel(net, sde), x_T=x_T, sampler="dpmpp_2m", steps=5)
    assert res.info["nonfinite"]
    assert any(issubclass(x.category, NonFiniteScoreWarning) and "returned NaN/inf" in str(x.message) for x in w)
