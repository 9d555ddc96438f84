"""Progressive distillation, consistency distillation / training and reflow against exact Gaussian-mixture
teachers: the targets and ODE steps are checked against closed forms, and tiny runs must beat the solver at the
same NFE."""

import math

import pytest
import torch

import score_sde as ss
from score_sde.analytic import GaussianMixture
from score_sde.metrics import sliced_w2, straightness
from score_sde.training.config import ModelConfig
from score_sde.training.data import mixture_distribution
from score_sde.training.distill import DistillConfig, Teacher, distill
from score_sde.training.distill.consistency import ct_schedule, karras_times, teacher_ode_step
from score_sde.training.distill.progressive import ddim_step, nested_grids, two_step_target
from score_sde.training.distill.reflow import couple, velocity_weight

GMM1 = GaussianMixture([0.3, 0.7], torch.tensor([[-1.5], [1.0]]), torch.tensor([0.05, 0.2]))
SDES = {"vp": ss.VPSDE, "subvp": ss.SubVPSDE, "ve": ss.VESDE}


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("K", [1, 2, 4])
def test_student_grids_nest_in_the_teacher_grids(name, K):
    g, g2 = nested_grids(SDES[name](), K, 1e-3)
    assert g.numel() == K + 1 and g2.numel() == 2 * K + 1
    assert torch.allclose(g, g2[::2], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_two_step_target_makes_one_ddim_step_match_two(name):
    sde = SDES[name]()
    teacher = Teacher.from_mixture(GMM1, sde)
    g, g2 = nested_grids(sde, 2, 1e-3)
    x0 = GMM1.sample(64, generator=torch.Generator().manual_seed(0))
    for i in range(2):
        t, tm, te = (torch.full((64,), float(v)) for v in (g[i], g2[2 * i + 1], g[i + 1]))
        x_t = sde.perturb(x0, t, generator=torch.Generator().manual_seed(1))[0]
        x_mid = ddim_step(sde, teacher.denoise(x_t, t), x_t, t, tm)
        want = ddim_step(sde, teacher.denoise(x_mid, tm), x_mid, tm, te)
        got = ddim_step(sde, two_step_target(teacher, x_t, t, tm, te), x_t, t, te)
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-9)
        # and it is not one teacher step
        one = ddim_step(sde, teacher.denoise(x_t, t), x_t, t, te)
        assert (one - want).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_teacher_ode_step_converges_to_the_exact_flow(name):
    """Heun's error over a step falls ~h^3, Euler's ~h^2, against the 1-D CDF-matching PF-ODE map."""
    sde = SDES[name]()
    teacher = Teacher.from_mixture(GMM1, sde)
    t0 = 0.5
    x = GMM1.marginal_sample(256, t0, sde, generator=torch.Generator().manual_seed(0))
    errs = {}
    for m in ("euler", "heun"):
        for h in (0.02, 0.01):
            t, s = torch.full((256,), t0), torch.full((256,), t0 - h)
            exact = GMM1.transport(x, t0, t0 - h, sde)
            errs[m, h] = (teacher_ode_step(teacher, x, t, s, m) - exact).abs().max().item()
    assert errs["heun", 0.01] < errs["euler", 0.01] / 10
    assert errs["euler", 0.02] / errs["euler", 0.01] > 3  # order 1: local error h^2
    assert errs["heun", 0.02] / errs["heun", 0.01] > 6  # order 2: local error h^3


def test_ct_schedules_and_karras_times():
    assert ct_schedule(0, 100, 2, 150, 0.9) == (2, math.exp(2 * math.log(0.9) / 2))
    assert ct_schedule(100, 100, 2, 150, 0.9)[0] == 151
    Ns = [ct_schedule(k, 100, 2, 150, 0.9)[0] for k in range(101)]
    assert Ns == sorted(Ns)
    sde = ss.VPSDE()
    t = karras_times(sde, 18, 1e-3)
    assert t[0] == 1e-3 and t[-1] == 1.0 and bool((t[1:] > t[:-1]).all())


def test_velocity_weight_is_one_over_t_squared_on_rectified_flow():
    t = torch.tensor([0.01, 0.3, 0.7, 0.99], dtype=torch.float64)
    assert torch.allclose(velocity_weight(ss.GeneralLinearSDE.rectified_flow(), t), 1 / t**2, rtol=1e-8)


def test_coupling_is_the_pf_ode_map_and_straightness():
    sde = ss.GeneralLinearSDE.rectified_flow()
    teacher = Teacher.from_mixture(GMM1, sde)
    x0, z = couple(sde, teacher.score, 400, (1,), torch.Generator().manual_seed(0), steps=64, dtype=torch.float64)
    exact = GMM1.transport(z, sde.T, sde.default_eps, sde)
    assert (x0 - exact).abs().max() < 0.03  # Heun, 64 steps (32: 0.05, 128: 0.004)
    # a (near) point mass flows on straight lines; a bimodal mixture bends its paths. The point's variance is
    # 1e-12: at 1e-6 (std 1e-3 = eps) its paths bend near t = eps and 64 Heun steps measure S ~ 2e-3.
    point = GaussianMixture([1.0], torch.tensor([[0.7]]), torch.tensor([1e-12]))
    zz = torch.randn(400, 1, generator=torch.Generator().manual_seed(1))
    s_point = straightness(sde, point.score_fn(sde), zz)
    s_mix = straightness(sde, GMM1.score_fn(sde), zz)
    assert s_point < 1e-4 and s_mix > 0.05, (s_point, s_mix)


def _ring_error(x, n=3000):
    ref = mixture_distribution().sample(n, generator=torch.Generator().manual_seed(5))
    return sliced_w2(x.detach().double(), ref)


@pytest.mark.parametrize("method", ["progressive", "consistency", "reflow"])
def test_tiny_one_step_student_beats_one_step_solver(method):
    """150-300 steps on the 8-Gaussian ring: the 1-step student lands far nearer the data than 1 DDIM step of the
    exact score (which returns the posterior mean of x_T, a blob at the origin: sliced W2 about 1.4)."""
    gmm, sde = mixture_distribution(), ss.VPSDE()
    if method == "reflow":
        sde = ss.GeneralLinearSDE.rectified_flow()
    teacher = Teacher.from_mixture(gmm, sde)
    opts = dict(progressive=dict(teacher_steps=2, iters=150), consistency=dict(cm_points=12, iters=300),
                reflow=dict(pairs=1000, pair_steps=16, iters=150))  # fmt: skip
    small = ModelConfig(kind="mlp", prediction="v", hidden=64, depth=2, emb_dim=32)
    dcfg = DistillConfig(method=method, steps=1, batch_size=128, lr=2e-3, **opts[method])
    res = distill(teacher, dcfg, model=small)
    g = torch.Generator().manual_seed(1)
    x_T = sde.prior_sampling((3000, 2), generator=g, dtype=torch.float32)
    with torch.no_grad():
        x = ss.sample(sde, res.model, x_T=x_T, sampler=res.sampler, steps=1, eps=res.eps).x
    base = ss.sample(sde, teacher.score, x_T=x_T.double(), sampler="ddim", steps=1).x
    e_student, e_solver = _ring_error(x), _ring_error(base)
    print(method, e_student, e_solver)
    assert e_solver > 1.0 and e_student < 0.6 * e_solver, (e_student, e_solver)


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_consistency_sampling_grids_lie_on_the_training_grid(name):
    """With the default N = 17 the K-step Karras grids of the sampler (K | 16) are points of the CD grid."""
    sde = SDES[name]()
    train = karras_times(sde, DistillConfig().cm_points, 1e-3)
    for K in (1, 2, 4, 8, 16):
        g = ss.make_grid(sde, "karras", K, 1e-3)
        assert all(torch.isclose(train, t, rtol=1e-6, atol=1e-9).any() for t in g), K


def test_v_target_is_the_snr_plus_one_weighted_x0_loss_on_vp():
    """On VP (alpha^2 + sigma^2 = 1): |v - v~|^2 = |x0 - x~|^2 / sigma^2 = (SNR + 1) |x0 - x~|^2."""
    from score_sde.nets import build_net
    from score_sde.training.distill.progressive import progressive_loss

    sde = ss.VPSDE()
    teacher = Teacher.from_mixture(mixture_distribution(), sde)
    torch.manual_seed(0)
    student = ss.ScoreModel(build_net("mlp", dim=2, hidden=16, depth=1, emb_dim=8).double(), sde, prediction="eps")
    x0 = mixture_distribution().sample(64, generator=torch.Generator().manual_seed(0))
    grids = nested_grids(sde, 4, 1e-3)
    lv = progressive_loss(student, teacher, x0, grids, torch.Generator().manual_seed(1), target="v")
    lx = progressive_loss(student, teacher, x0, grids, torch.Generator().manual_seed(1), weighting="snr_plus_one")
    lt = progressive_loss(student, teacher, x0, grids, torch.Generator().manual_seed(1))
    assert torch.allclose(lv, lx, rtol=1e-9) and not torch.allclose(lx, lt, rtol=1e-6)  # weights differ where SNR < 1
