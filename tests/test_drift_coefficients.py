"""LinearSDE.drift_coefficients (f(t), g(t)^2 at one time) and the likelihood's right-hand side built on it: the
Python-float form of VP's linear schedule is bit for bit the tensor form, the augmented right-hand side is bit for
bit reverse_drift on the flat pair, and a non-finite divergence (with a finite score) is still named."""

import pytest
import torch

import score_sde as ss
from score_sde.likelihood import DivergenceOptions
from score_sde.likelihood.augmented import _AugmentedPFODE
from score_sde.solvers.base import CountingScore
from score_sde.solvers.ode import ODESolveError
from score_sde.utils import ScoreGuard

TIMES = torch.cat([torch.tensor([1e-5, 1e-3, 0.5, 1.0]), torch.rand(200, generator=torch.Generator().manual_seed(0))])


@pytest.mark.parametrize("sde", [ss.VPSDE(), ss.VPSDE(beta_min=0.05, beta_max=13.7)], ids=["default", "custom"])
def test_vp_linear_gives_python_floats_bit_for_bit(sde):
    for t in TIMES.double():
        f, g2 = sde.drift_coefficients(t)
        assert isinstance(f, float) and isinstance(g2, float)
        assert f == float(sde.dlog_alpha_dt(t)) and g2 == float(sde.g2(t))


@pytest.mark.parametrize(
    "sde",
    [ss.VPSDE(schedule="cosine"), ss.SubVPSDE(), ss.VESDE(), ss.DiscreteVPSDE(torch.linspace(1e-4, 0.02, 10))],
    ids=["cosine", "subvp", "ve", "discrete"],
)
def test_other_schedules_keep_the_tensor_form(sde):
    t = torch.tensor(0.37, dtype=torch.float64)
    f, g2 = sde.drift_coefficients(t)
    assert torch.is_tensor(f) and torch.is_tensor(g2)
    assert torch.equal(f, sde.dlog_alpha_dt(t)) and torch.equal(g2, sde.g2(t))


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "cosine"])
@pytest.mark.parametrize("state", [torch.float64, torch.float32])
def test_augmented_rhs_is_reverse_drift_on_the_flat_pair(name, state):
    sde = {"vp": ss.VPSDE(), "subvp": ss.SubVPSDE(), "ve": ss.VESDE(), "cosine": ss.VPSDE(schedule="cosine")}[name]
    B, D = 5, 3
    net = torch.nn.Sequential(torch.nn.Linear(D + 1, 16), torch.nn.Tanh(), torch.nn.Linear(16, D)).float()

    def score(x, t):
        return net(torch.cat((x, t[:, None]), 1))

    probe = torch.randint(0, 2, (1, B, D), generator=torch.Generator().manual_seed(1)).float() * 2 - 1
    div = DivergenceOptions("hutchinson", probes=probe.to(state), chunk_size=1, create_graph=False)
    rhs = _AugmentedPFODE(sde, CountingScore(ScoreGuard(score, "test")), div, torch.float32, (B, D))
    y = torch.randn(B * D + B, generator=torch.Generator().manual_seed(2), dtype=state)
    for tt in (1e-5, 0.3, 0.999):
        t = torch.tensor(tt, dtype=state)
        out = rhs(t, y)
        # the same drift formed by the shared formula, s and div s formed as the right-hand side forms them
        x = y[: B * D].view(B, D).float().requires_grad_(True)
        s = score(x, t.float().expand(B))
        (vjp,) = torch.autograd.grad(s, x, probe[0])
        div_s = (vjp * probe[0].to(state)).sum(1)
        sd = torch.cat((s.detach().reshape(-1), div_s)).to(state)
        ref = sde.reverse_drift(torch.cat((y[: B * D], y.new_full((B,), D))), t.detach().double(), sd)
        assert out.dtype == state and torch.equal(out, ref)


class _NaNBackward(torch.autograd.Function):
    """s = -x whose vector-Jacobian product is NaN: a finite score with a non-finite divergence."""

    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


def test_a_non_finite_divergence_of_a_finite_score_is_named():
    sde = ss.VPSDE()
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def score(y, t):
        return _NaNBackward.apply(y) if float(t[0]) > 0.5 else -y

    with pytest.raises(ODESolveError, match=r"NaN/inf, first at t = (0\.[5-9]|1)"):
        ss.log_likelihood(sde, score, x, divergence="hutchinson", generator=torch.Generator().manual_seed(0))
