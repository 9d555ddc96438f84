"""The integrator core: one driver for fixed-grid and adaptive methods, typed method state, one observer,
grouped options, and new methods written in a few lines of public names."""

import dataclasses
import inspect

import pytest
import torch

import score_sde as ss
from score_sde.solvers import (
    CORRECTORS,
    SAMPLERS,
    AdaptiveOptions,
    CountingScore,
    Observer,
    OutputOptions,
    Problem,
    StepOutput,
    Stepper,
    make_grid,
    register_corrector,
    run,
)
from score_sde.solvers.ode import ProbabilityFlowODE
from score_sde.solvers.sdeint import ReverseSDESolve
from tests.problems import SDES, mixture_2d

BUILTIN_GRID = ["ancestral", "ddim", "dpm_solver_1", "dpm_solver_2", "dpm_solver_3", "dpmpp_2m", "dpmpp_2m_sde",
                "dpmpp_3m", "edm", "euler_maruyama", "heun", "pc", "probability_flow", "restart",
                "reverse_diffusion", "unipc"]  # fmt: skip


def _x_T(sde, n=16, seed=0):
    return sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(seed))


def _grid(stepper, spec, sde, steps):
    kind = "uniform" if spec.default_grid == "discrete" else spec.default_grid
    build = getattr(stepper, "build_grid", None)
    return build(sde, kind, steps, sde.default_eps) if build else make_grid(sde, kind, steps, sde.default_eps)


@pytest.mark.parametrize("name", BUILTIN_GRID)
def test_run_is_ss_sample_and_builtins_keep_typed_state(name):
    """The driver alone gives ss.sample's result bit for bit; no built-in writes the legacy state dict; the
    state a method carries is None or a dataclass."""
    sde, gmm = SDES["vp"](), mixture_2d()
    spec = SAMPLERS[name]
    stepper = spec.build()
    x_T, steps = _x_T(sde), 6
    problem = Problem(sde, CountingScore(gmm.score_fn(sde)), torch.Generator().manual_seed(3))
    res = run(problem, stepper, x_T, _grid(stepper, spec, sde, steps), Observer())
    ref = ss.sample(sde, gmm.score_fn(sde), x_T=x_T, sampler=name, steps=steps,
                    generator=torch.Generator().manual_seed(3))  # fmt: skip
    assert torch.equal(res.x, ref.x) and res.nfe == ref.nfe == stepper.nfe(steps)
    assert problem._state is None  # nobody touched problem.state
    state = stepper.init(problem, x_T)
    assert state is None or dataclasses.is_dataclass(state), type(state)


def test_adaptive_methods_run_through_the_same_driver():
    sde, gmm = SDES["ve"](), mixture_2d()
    x_T = _x_T(sde)
    times = torch.tensor([sde.T, sde.default_eps], dtype=torch.float64)
    problem = Problem(sde, CountingScore(gmm.score_fn(sde)), equation="probability_flow")
    res = run(problem, ProbabilityFlowODE(AdaptiveOptions(rtol=1e-6, atol=1e-6)), x_T, times, Observer())
    ref = ss.sample(sde, gmm.score_fn(sde), x_T=x_T, sampler="ode", rtol=1e-6, atol=1e-6)
    assert torch.equal(res.x, ref.x) and res.nfe == ref.nfe == problem.score.nfe > 0
    steps = 8
    h = (sde.T - sde.default_eps) / steps
    times = torch.tensor([sde.T - k * h for k in range(steps)] + [sde.default_eps], dtype=torch.float64)
    problem = Problem(sde, CountingScore(gmm.score_fn(sde)), torch.Generator().manual_seed(1))
    res = run(problem, ReverseSDESolve("euler", steps), x_T, times, Observer(OutputOptions(record=True)))
    ref = ss.sample(sde, gmm.score_fn(sde), x_T=x_T, sampler="sde", steps=steps, record=True,
                    generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert torch.equal(res.x, ref.x) and res.nfe == ref.nfe == steps
    assert len(res.trajectory) == len(ref.trajectory) == steps
    with pytest.raises(TypeError, match="Stepper or an AdaptiveMethod"):
        run(problem, "ddim", x_T, times, Observer())


def test_the_observer_is_the_same_for_progress_bars_and_changes_nothing():
    sde, gmm = SDES["vp"](), mixture_2d()
    x_T = _x_T(sde)
    for sampler, opts in (("ddim", {"steps": 5}), ("ode", {}), ("sde", {"steps": 5}), ("pc", {"steps": 5})):
        a, b = (ss.sample(sde, gmm.score_fn(sde), x_T=x_T, sampler=sampler, progress=p,
                          generator=torch.Generator().manual_seed(0), **opts) for p in (False, True))  # fmt: skip
        assert torch.equal(a.x, b.x) and a.nfe == b.nfe, sampler
    assert [f.name for f in dataclasses.fields(StepOutput)] == ["x", "mean", "x0"]


def test_grouped_options_beside_the_keywords():
    sde, gmm = SDES["vp"](), mixture_2d()
    f, x_T = gmm.score_fn(sde), _x_T(sde)
    a = ss.sample(sde, f, x_T=x_T, sampler="ode", method="bosh3", rtol=1e-4, atol=1e-4, max_nfe=500)
    b = ss.sample(sde, f, x_T=x_T, sampler="ode", solver=AdaptiveOptions("bosh3", 1e-4, 1e-4, max_nfe=500))
    assert torch.equal(a.x, b.x) and a.nfe == b.nfe and a.info["method"] == "bosh3"
    with pytest.raises(TypeError, match=r"\['rtol'\] inside solver="):
        ss.sample(sde, f, x_T=x_T, sampler="ode", rtol=1e-3, solver=AdaptiveOptions())
    with pytest.raises(TypeError, match="AdaptiveOptions"):
        ss.sample(sde, f, x_T=x_T, sampler="ode", solver={"rtol": 1e-3})
    with pytest.raises(ValueError, match="rtol"):
        AdaptiveOptions(rtol=-1.0)
    with pytest.raises(ValueError, match="'rk99'"):
        AdaptiveOptions(method="rk99")
    seen = []
    out = OutputOptions(record=True, callback=lambda i, t, x, x0: seen.append(i), denoise=False)
    c = ss.sample(sde, f, x_T=x_T, sampler="euler_maruyama", steps=4, output=out,
                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    d = ss.sample(sde, f, x_T=x_T, sampler="euler_maruyama", steps=4, record=True, denoise=False,
                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert torch.equal(c.x, d.x) and seen == [0, 1, 2, 3] and len(c.trajectory) == 4
    with pytest.raises(ValueError, match=r"\['record'\] inside output="):
        ss.sample(sde, f, x_T=x_T, sampler="ddim", steps=4, record=True, output=OutputOptions())
    with pytest.raises(TypeError, match="record"):
        OutputOptions(record=1)
    with pytest.raises(TypeError, match="OutputOptions"):
        ss.sample(sde, f, x_T=x_T, sampler="ddim", steps=4, output={"record": True})


def test_small_items_are_explicit():
    sde, gmm = SDES["vp"](), mixture_2d()
    with pytest.raises(ValueError, match="reversible_heun"):
        ss.sample(sde, gmm.score_fn(sde), shape=(2, 2), sampler="sde", steps=4, method="reversible_heun")
    plan = ss.solvers.fast.dpm_solver_fast_orders(7)  # [3, 3, 1]
    stepper = SAMPLERS["dpm_solver_3"].build(orders=plan)
    assert stepper.runs(len(plan)) and not stepper.runs(len(plan) + 1)
    with pytest.raises(ValueError, match="runs exactly 3 steps"):
        stepper.nfe(4)
    res = ss.sample(sde, gmm.score_fn(sde), shape=(4, 2), sampler="dpm_solver_3", orders=plan, nfe=8)
    assert res.nfe == 7 and res.grid.numel() == len(plan) + 1
    with pytest.raises(ValueError, match="nfe = 6 is below one run"):
        ss.sample(sde, gmm.score_fn(sde), shape=(4, 2), sampler="dpm_solver_3", orders=plan, nfe=6)


class CountedLegacy(Stepper):
    """The earlier form: init(ctx, x) fills ctx.state, step(ctx, ...) reads it; Euler on the PF ODE."""

    name, order, nfe_per_step, stochastic = "legacy_euler", 1, 1, False

    def init(self, ctx, x):
        ctx.state["calls"] = 0

    def step(self, ctx, x, t, t_next, i, last):
        ctx.state["calls"] += 1
        tv = ctx.time_at(i, t, x)
        x_next = x + (t_next - t).item() * ctx.sde.reverse_drift(x, t, ctx.score(x, tv))
        return StepOutput(x_next, x_next)


def test_a_stepper_of_the_earlier_form_still_runs():
    sde, gmm = SDES["vp"](), mixture_2d()
    problem = Problem(sde, CountingScore(gmm.score_fn(sde)))
    stepper = CountedLegacy()
    res = run(problem, stepper, _x_T(sde), make_grid(sde, "uniform", 7, 1e-3), Observer())
    assert problem.state["calls"] == 7 and res.nfe == 7 and torch.isfinite(res.x).all()
    assert torch.equal(ss.sample(sde, gmm.score_fn(sde), x_T=_x_T(sde), sampler=stepper, steps=7).x, res.x)


# --- a new corrector in public names only ---------------------------------------------------------
class SigmaLangevin(Stepper):
    """Langevin at grid time t with the step h = c sigma(t)^2: x_mean = x + h s, x = x_mean + sqrt(2 h) z."""

    name, order, stochastic = "sigma_langevin", 0, True

    def __init__(self, n_steps: int = 1, snr: float = 0.1):
        self.n_steps, self.nfe_per_step, self.c = n_steps, n_steps, snr**2

    def correct(self, problem, x, t, t_next, i=None):
        h = float(self.c * problem.sde.sigma(t) ** 2)
        tv, mean = problem.time_at(i, t, x), x
        for _ in range(self.n_steps):
            mean = x + h * problem.score(x, tv)
            x = mean + (2 * h) ** 0.5 * problem.randn_like(x)
        return x, mean


def test_a_new_corrector_in_few_lines_runs_through_ss_sample():
    assert len(inspect.getsource(SigmaLangevin).splitlines()) <= 40
    register_corrector("sigma_langevin", SigmaLangevin)
    sde, gmm = SDES["vp"](), mixture_2d()
    try:
        res = ss.sample(sde, gmm.score_fn(sde), shape=(4000, 2), sampler="pc", steps=200, corrector="sigma_langevin",
                        corrector_steps=2, snr=0.2, generator=torch.Generator().manual_seed(0))  # fmt: skip
    finally:
        CORRECTORS.pop("sigma_langevin")
    assert res.nfe == 200 * 3
    ref = gmm.sample(4000, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(res.x.mean(0), ref.mean(0), atol=0.12)
    assert torch.allclose(torch.cov(res.x.T), torch.cov(ref.T), atol=0.25)
