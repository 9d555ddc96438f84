"""The lean Runge–Kutta step (:mod:`score_sde.solvers.lean_rk`) against torchdiffeq's own solvers: the same
accepted and rejected steps, the same function calls and the same states to round-off (1e-12 in float64)."""

import pytest
import torch
import torchdiffeq

import score_sde as ss
from score_sde.solvers import lean_rk
from score_sde.solvers.lean_rk import odeint_lean
from score_sde.solvers.ode import ADAPTIVE_METHODS, odeint_clamped


class _Field:
    """A nonlinear test field (a coupled tanh network, a decaying term, a jump at t = 0.7) that records every call
    and, through torchdiffeq's callbacks, every attempted step (t0, dt) and whether it was accepted."""

    def __init__(self, dtype=torch.float64):
        g = torch.Generator().manual_seed(0)
        self.A = (0.5 * torch.randn(6, 6, generator=g)).to(dtype)
        self.calls, self.steps = [], []

    def __call__(self, t, y):
        self.calls.append(float(t.detach()))
        return torch.tanh(y @ self.A) * torch.cos(3 * t) - 0.5 * y + (t > 0.7).to(y.dtype)

    def callback_accept_step(self, t0, y0, dt):
        self.steps.append((float(t0.detach()), float(dt.detach()), True))

    def callback_reject_step(self, t0, y0, dt):
        self.steps.append((float(t0.detach()), float(dt.detach()), False))


def _solve(solver, method, dtype=torch.float64, tol=1e-7, t=(0.0, 0.5, 1.5, 2.0), y0=None, **options):
    """Solve the test field from t[0] with its jump given to the solver (``jump_t``); the states at t."""
    options.setdefault("jump_t", torch.tensor([0.7], dtype=torch.float64))
    field = _Field(dtype)
    y0 = torch.randn(5, 6, generator=torch.Generator().manual_seed(1)).to(dtype) if y0 is None else y0
    ys = solver(field, y0, torch.tensor(t, dtype=dtype), rtol=tol, atol=tol, method=method, options=options)
    return ys, field


@pytest.mark.parametrize("method", ADAPTIVE_METHODS)
def test_the_lean_step_takes_torchdiffeqs_steps_with_its_states_to_round_off(method):
    ref, f_ref = _solve(torchdiffeq.odeint, method, first_step=0.4)
    ys, f_lean = _solve(odeint_lean, method, first_step=0.4)
    assert len(f_lean.calls) == len(f_ref.calls) and len(f_lean.steps) == len(f_ref.steps)
    assert any(not ok for *_, ok in f_ref.steps)  # a too long first step: rejections happen, and match
    # the next step size follows the error estimate, a sum with cancellation: where that estimate is far below the
    # tolerance its round-off is a larger part of it (here up to ~1e-8 of the next step), never of a decision
    for (t_a, dt_a, ok_a), (t_b, dt_b, ok_b) in zip(f_ref.steps, f_lean.steps):
        assert ok_a == ok_b and t_a == pytest.approx(t_b, abs=1e-8) and dt_a == pytest.approx(dt_b, rel=1e-7)
    assert torch.equal(ys[0], ref[0])
    assert (ys - ref).abs().max() <= 1e-12 * max(1.0, float(ref.abs().max()))


def test_the_lean_step_is_the_one_taken_by_odeint_clamped(monkeypatch):
    seen = []
    original = lean_rk._LeanStages._lean_step

    def spy(self, *args):
        seen.append(type(self).__name__)
        return original(self, *args)

    monkeypatch.setattr(lean_rk._LeanStages, "_lean_step", spy)
    field = _Field()
    y0 = torch.ones(5, 6)
    odeint_clamped(field, y0, torch.tensor([0.0, 1.0]), lo=0.0, hi=1.0)
    assert seen and set(seen) == {"LeanDopri5Solver"}
    # and so by ss.sample(sampler="ode") and ss.log_likelihood
    gmm = ss.GaussianMixture([0.4, 0.6], [[-1.0, 0.0], [1.0, 0.5]], [0.3, 0.5])
    sde = ss.VPSDE()
    seen.clear()
    ss.sample(sde, gmm.score_fn(sde), shape=(4, 2), sampler="ode", generator=torch.Generator().manual_seed(0))
    n_sample = len(seen)
    ss.log_likelihood(sde, gmm.score_fn(sde), gmm.sample(3, generator=torch.Generator().manual_seed(0)))
    assert n_sample > 0 and len(seen) > n_sample


def test_reversed_time_tuple_state_and_step_t_as_torchdiffeq():
    field_ref, field = _Field(), _Field()
    y0 = (torch.randn(5, 6, generator=torch.Generator().manual_seed(2)), torch.zeros(3))

    def pair(f):
        return lambda t, y: (f(t, y[0]), y[1] * 0.5 + f(t, y[0])[:3, 0])

    t = torch.tensor([2.0, 1.0, 0.25])
    opts = {"step_t": torch.tensor([0.25, 1.3]), "jump_t": torch.tensor([0.7])}
    ref = torchdiffeq.odeint(pair(field_ref), y0, t, rtol=1e-8, atol=1e-8, method="dopri5", options=opts)
    ys = odeint_lean(pair(field), y0, t, rtol=1e-8, atol=1e-8, method="dopri5", options=opts)
    assert len(field.calls) == len(field_ref.calls) and min(abs(t - 1.3) for t in field.calls) < 1e-12
    for a, b in zip(ys, ref):
        assert a.shape == b.shape and (a - b).abs().max() <= 1e-12


def test_a_float32_state_keeps_its_dtype_and_torchdiffeqs_accuracy():
    ref64, _ = _solve(torchdiffeq.odeint, "dopri5", tol=1e-10)
    ref, _ = _solve(torchdiffeq.odeint, "dopri5", dtype=torch.float32, tol=1e-4)
    ys, _ = _solve(odeint_lean, "dopri5", dtype=torch.float32, tol=1e-4)
    assert ys.dtype == torch.float32
    err_lean, err_ref = (ys.double() - ref64).abs().max(), (ref.double() - ref64).abs().max()
    assert err_lean <= 1.5 * err_ref and (ys - ref).abs().max() <= 1e-4


def test_a_graph_through_the_solve_takes_torchdiffeqs_own_step_and_gradient():
    """y0 requiring grad: the step is torchdiffeq's (its stages keep the graph), so the gradient is its own."""
    grads = []
    for solver in (torchdiffeq.odeint, odeint_lean):
        y0 = torch.randn(5, 6, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
        ys, _ = _solve(solver, "dopri5", y0=y0)
        grads.append(torch.autograd.grad(ys[-1].square().sum(), y0)[0])
    assert torch.equal(grads[0], grads[1])


def test_a_stage_with_a_graph_redoes_the_step_as_torchdiffeq():
    """A field whose output carries a graph though y0 does not (a parameter requiring grad): the same gradient."""
    grads = []
    for solver in (torchdiffeq.odeint, odeint_lean):
        w = torch.tensor(0.3, requires_grad=True)
        field = _Field()

        def f(t, y, field=field, w=w):  # no graph at the first calls: w enters at t > 0.2
            return field(t, y) * (1.0 + w) if t > 0.2 else field(t, y)

        y0 = torch.ones(5, 6)
        ys = solver(f, y0, torch.tensor([0.0, 1.0]), rtol=1e-7, atol=1e-7, method="dopri5")
        grads.append(torch.autograd.grad(ys[-1].sum(), w)[0])
    assert grads[1] == pytest.approx(float(grads[0]), rel=1e-8)


def test_the_dense_output_at_many_times_as_torchdiffeq():
    """Output times inside most steps, rejected steps among them: each step's dense output is fitted from its own
    stages (kept until the next accepted step), as torchdiffeq fits it."""
    t = tuple(float(v) for v in torch.linspace(0.0, 2.0, 41))
    ref, f_ref = _solve(torchdiffeq.odeint, "dopri5", t=t, tol=1e-6, first_step=0.4)
    ys, f_lean = _solve(odeint_lean, "dopri5", t=t, tol=1e-6, first_step=0.4)
    assert sum(not ok for *_, ok in f_ref.steps) >= 2 and len(f_lean.steps) == len(f_ref.steps) < 40
    assert (ys - ref).abs().max() <= 1e-12 * float(ref.abs().max())


def test_min_and_max_step_as_torchdiffeq():
    """A bounded step (max_step caps it, a step at min_step is accepted whatever its error): the same decisions."""
    opts = {"first_step": 0.4, "max_step": 0.1, "min_step": 0.06}
    ref, f_ref = _solve(torchdiffeq.odeint, "dopri5", tol=1e-12, max_num_steps=500, **opts)
    ys, f_lean = _solve(odeint_lean, "dopri5", tol=1e-12, max_num_steps=500, **opts)
    assert max(dt for _, dt, _ in f_ref.steps) <= 0.1 + 1e-15 and any(dt == 0.06 for _, dt, _ in f_ref.steps)
    assert [ok for *_, ok in f_lean.steps] == [ok for *_, ok in f_ref.steps]
    assert (ys - ref).abs().max() <= 1e-12 * float(ref.abs().max())
