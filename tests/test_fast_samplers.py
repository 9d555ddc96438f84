"""Fast samplers (score_sde/solvers/fast.py): identities, convergence orders, NFE accounting,
final-step policy, distributions and bad input. Ground truth: exact Gaussian(-mixture) scores, float64."""

import math

import pytest
import torch
from problems import gaussian, mixture_2d, mmd_permutation_pvalue

import score_sde as ss
from score_sde.solvers import make_grid
from score_sde.solvers.fast import DPMSolverPP, EDMHeun, Restart, UniPC, dpm_solver_fast_orders, taylor_weights

FAST = ["ddim", "dpm_solver_1", "dpm_solver_2", "dpm_solver_3", "dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "unipc"]
FAST += ["heun", "edm", "restart"]


def _sdes():
    return {
        "vp": ss.VPSDE(0.1, 20.0),
        "subvp": ss.SubVPSDE(0.1, 20.0),
        "ve": ss.VESDE(0.001, 200.0),
    }


def _lam_grid(sde, lam_lo=-4.5, lam_hi=4.0, steps=12):
    """Times whose log-SNRs are uniform on [lam_lo, lam_hi] (the same lambda grid for every SDE)."""
    lam = torch.linspace(lam_lo, lam_hi, steps + 1, dtype=torch.float64)
    return sde.t_from_log_snr(lam)


def _x_T(sde, t, n=16, d=2, seed=0):
    """Draws of p_t for mixture_2d data, as x (not x~)."""
    gmm = mixture_2d()
    return gmm.marginal_sample(n, t, sde, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# identities (1e-10, float64)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_ddim_is_euler_in_sigma_tilde_and_dpm_solver_1(name):
    sde = _sdes()[name]
    gmm = mixture_2d()
    grid = _lam_grid(sde)
    x_T = _x_T(sde, grid[0])
    a = ss.sample(sde, gmm.score_fn(sde), sampler="ddim", grid=grid, x_T=x_T)
    b = ss.sample(sde, gmm.score_fn(sde), sampler="dpm_solver_1", grid=grid, x_T=x_T)
    # Euler on dx~/dsigma~ = (x~ - D) / sigma~, written here independently of the library's steppers
    xt = x_T / sde.alpha(grid[0])
    for t, tn in zip(grid[:-1], grid[1:]):
        st, sn = sde.sigma_tilde(t), sde.sigma_tilde(tn)
        D = gmm.denoise(sde.alpha(t) * xt, t.expand(xt.shape[0]), sde)
        xt = xt + (sn - st) * (xt - D) / st
    euler = sde.alpha(grid[-1]) * xt
    assert (a.x - euler).abs().max() < 1e-10
    assert (a.x - b.x).abs().max() < 1e-10
    assert a.nfe == b.nfe == grid.numel() - 1


def _ddpm_posterior(sde, t, s, x_t, x0):
    """Mean and std of q(x_s | x_t, x_0) for a VP SDE: alpha_bar = alpha^2 (Ho et al. 2020, eq. 7)."""
    ab_t, ab_s = sde.alpha(t) ** 2, sde.alpha(s) ** 2
    beta = 1 - ab_t / ab_s
    mean = (ab_s.sqrt() * beta / (1 - ab_t)) * x0 + ((ab_t / ab_s).sqrt() * (1 - ab_s) / (1 - ab_t)) * x_t
    return mean, ((1 - ab_s) / (1 - ab_t) * beta).sqrt()


@pytest.mark.parametrize("sampler, opts", [("ddim", {"eta": 1.0}), ("dpmpp_2m_sde", {"eta": 1.0})])
def test_eta_one_step_is_the_ddpm_posterior_step(sampler, opts):
    sde = ss.VPSDE(0.1, 20.0)
    gmm = mixture_2d()
    grid = torch.tensor([0.6, 0.45, 0.3], dtype=torch.float64)
    x = _x_T(sde, grid[0], n=32)
    for t, s in zip(grid[:-1], grid[1:]):
        g = torch.Generator().manual_seed(7)
        res = ss.sample(sde, gmm.score_fn(sde), sampler=sampler, grid=torch.stack([t, s]), x_T=x, denoise=False,
                        generator=g, **opts)  # fmt: skip
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=x.dtype)
        mean, std = _ddpm_posterior(sde, t, s, x, gmm.denoise(x, t.expand(x.shape[0]), sde))
        assert (res.x - (mean + std * z)).abs().max() < 1e-10
        x = res.x


@pytest.mark.parametrize(
    "sampler, opts",
    [
        ("ddim", {}),
        ("ddim", {"eta": 0.5}),
        ("dpm_solver_2", {}),
        ("dpm_solver_3", {}),
        ("dpmpp_2m", {}),
        ("dpmpp_3m", {"first_step": "singlestep"}),
        ("unipc", {"order": 3}),
        ("dpmpp_2m_sde", {"eta": 0.7}),
        ("heun", {}),
        ("edm", {"S_churn": 10.0, "S_min": 0.05, "S_max": 20.0}),
        ("restart", {"restart_sigma": (0.1, 1.0)}),
        ("dpmpp_3m", {"final": "denoise"}),
    ],
)
def test_vp_subvp_ve_give_the_same_x_tilde_trajectory(sampler, opts):
    """On one lambda grid the samplers see the same equation in x~ for VP, sub-VP and VE."""
    sdes = _sdes()
    gmm = mixture_2d()
    x0_tilde = _x_T(sdes["ve"], _lam_grid(sdes["ve"])[0])  # VE: x~ = x
    ends = {}
    for name, sde in sdes.items():
        grid = _lam_grid(sde)
        if opts.get("final") == "denoise":
            grid = torch.cat([grid, grid.new_zeros(1)])
        traj = []
        res = ss.sample(sde, gmm.score_fn(sde), sampler=sampler, grid=grid, x_T=sde.alpha(grid[0]) * x0_tilde,
                        generator=torch.Generator().manual_seed(3), record=True, **opts)  # fmt: skip
        for t, x in zip(grid[1:], res.trajectory):
            traj.append(x / (1.0 if (opts.get("final") == "denoise" and t == 0) else sde.alpha(t)))
        ends[name] = torch.stack(traj)
    assert (ends["vp"] - ends["ve"]).abs().max() < 1e-10
    assert (ends["subvp"] - ends["ve"]).abs().max() < 1e-10


# ---------------------------------------------------------------------------------------------
# convergence orders on the exact flow map of Gaussian data
# ---------------------------------------------------------------------------------------------
def _sqrtm(M):
    L, U = torch.linalg.eigh(M)
    return U @ torch.diag(L.clamp(min=0).sqrt()) @ U.T


def _exact_flow(sde, gauss, x, t0, t1):
    """PF map of N(m, C) data: x_1 = a_1 m + A_1 A_0^{-1} (x_0 - a_0 m), A = (a^2 C + s^2 I)^{1/2}."""
    m, C = gauss.means[0], gauss.covs[0]
    eye = torch.eye(C.shape[0], dtype=torch.float64)
    a0, s0, a1, s1 = sde.alpha(t0), sde.sigma(t0), sde.alpha(t1), sde.sigma(t1)
    A0, A1 = _sqrtm(a0**2 * C + s0**2 * eye), _sqrtm(a1**2 * C + s1**2 * eye)
    return a1 * m + (x - a0 * m) @ (A1 @ torch.linalg.inv(A0)).T


ORDER_CASES = [
    ("ddim", {}, 1),
    ("heun", {}, 2),
    ("dpm_solver_2", {}, 2),
    ("dpm_solver_3", {}, 3),
    ("dpmpp_2m", {"lower_order_final": False}, 2),
    ("dpmpp_3m", {"lower_order_final": False, "first_step": "singlestep"}, 3),
    ("dpmpp_2m", {"lower_order_final": False, "corrector": True}, 3),
    ("unipc", {"order": 2, "lower_order_final": False}, 3),
    ("unipc", {"order": 2, "variant": "bh1", "lower_order_final": False}, 3),
    ("unipc", {"order": 3, "lower_order_final": False, "first_step": "singlestep"}, 4),
    ("dpmpp_2m_sde", {"eta": 0.0}, 2),
]


@pytest.mark.parametrize("sampler, opts, declared", ORDER_CASES)
def test_convergence_order(sampler, opts, declared):
    """Slope of log error vs log step within 0.3 of the declared order (lambda in [-2.5, 2.5])."""
    sde = ss.VPSDE(0.1, 20.0)
    gauss = gaussian(3)
    t_max = float(sde.t_from_log_snr(torch.tensor(-2.5)))
    eps = float(sde.t_from_log_snr(torch.tensor(2.5)))
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = _exact_flow(sde, gauss, x, torch.tensor(t_max, dtype=torch.float64), torch.tensor(eps, dtype=torch.float64))
    Ns = [32, 64, 128, 256] if sampler == "dpmpp_3m" else [16, 32, 64, 128]  # 3M: asymptotic from ~64 steps
    errs = []
    for N in Ns:
        grid = make_grid(sde, "logsnr", N, eps, t_max=t_max)
        res = ss.sample(sde, gauss.score_fn(sde), sampler=sampler, grid=grid, x_T=x, **opts)
        errs.append((res.x - ref).norm(dim=1).mean().item())
    slope = (
        -torch.linalg.lstsq(
            torch.tensor([[math.log(n), 1.0] for n in Ns[1:]]), torch.tensor([[math.log(e)] for e in errs[1:]])
        )
        .solution[0, 0]
        .item()
    )
    stepper = ss.solvers.SAMPLERS[sampler].build(**opts)
    assert stepper.order == declared
    assert abs(slope - declared) < 0.3, (errs, slope)


def test_classic_multistep_start_and_lower_order_final_cap_the_order_at_two():
    """The documented reason for ``first_step="singlestep"``: a first-order start (and a first-order
    last step) leaves a local O(h^2) error that dominates 3M asymptotically."""
    sde = ss.VPSDE(0.1, 20.0)
    gauss = gaussian(3)
    t_max = float(sde.t_from_log_snr(torch.tensor(-1.0)))
    eps = float(sde.t_from_log_snr(torch.tensor(2.5)))
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = _exact_flow(sde, gauss, x, torch.tensor(t_max, dtype=torch.float64), torch.tensor(eps, dtype=torch.float64))

    def err(N, **o):
        grid = make_grid(sde, "logsnr", N, eps, t_max=t_max)
        return (ss.sample(sde, gauss.score_fn(sde), sampler="dpmpp_3m", grid=grid, x_T=x, **o).x - ref).norm(1).mean()

    for o in ({"lower_order_final": True, "first_step": "singlestep"}, {"lower_order_final": False}):
        assert abs(math.log2(err(128, **o) / err(256, **o)) - 2) < 0.3
    o = {"lower_order_final": False, "first_step": "singlestep"}
    assert abs(math.log2(err(128, **o) / err(256, **o)) - 3) < 0.3


def test_taylor_weights_match_quadrature():
    h = 0.7
    tau = torch.linspace(0, h, 20001, dtype=torch.float64)
    for k, c in enumerate(taylor_weights(h, 3)):
        f = torch.exp(-(h - tau)) * tau**k / math.factorial(k)
        assert abs(torch.trapezoid(f, tau).item() - c) < 1e-8


# ---------------------------------------------------------------------------------------------
# NFE accounting, nfe= budget, final-step policy, lower-order final steps
# ---------------------------------------------------------------------------------------------
NFE_CASES = [(s, {}) for s in FAST] + [
    ("heun", {"final": "denoise"}),
    ("heun", {"final": "euler"}),
    ("dpm_solver_3", {"final": "denoise"}),
    ("dpmpp_3m", {"first_step": "singlestep"}),
    ("unipc", {"order": 3, "first_step": "singlestep", "final": "denoise"}),
    ("restart", {"K": 3, "restart_steps": 2, "final": "denoise"}),
    ("ddim", {"final": "denoise"}),
]


@pytest.mark.parametrize("sampler, opts", NFE_CASES)
def test_nfe_is_exact_and_the_budget_picks_the_most_steps(sampler, opts):
    sde = ss.VPSDE(0.1, 20.0)
    gmm = mixture_2d()
    x_T = _x_T(sde, 1.0, n=8)
    stepper = ss.solvers.SAMPLERS[sampler].build(**opts)
    steps_list = [4, 7] if sampler == "restart" else [1, 2, 3, 7]
    for steps in steps_list:
        res = ss.sample(sde, gmm.score_fn(sde), sampler=sampler, steps=steps, x_T=x_T, **opts)
        assert res.nfe == stepper.nfe(steps), (steps, res.nfe)
        assert res.grid.numel() == steps + 1
    budget = 23
    res = ss.sample(sde, gmm.score_fn(sde), sampler=sampler, nfe=budget, x_T=x_T, **opts)
    steps = res.grid.numel() - 1
    assert res.nfe == stepper.nfe(steps) <= budget < stepper.nfe(steps + 1)


def test_dpm_solver_fast_plan():
    assert dpm_solver_fast_orders(10) == [3, 3, 3, 1]
    assert dpm_solver_fast_orders(9) == [3, 3, 2, 1]
    assert dpm_solver_fast_orders(20) == [3] * 6 + [2]
    sde = ss.VPSDE()
    gmm = mixture_2d()
    orders = dpm_solver_fast_orders(10)
    x_T = _x_T(sde, 1.0)
    res = ss.sample(sde, gmm.score_fn(sde), sampler="dpm_solver_3", steps=len(orders), orders=orders, x_T=x_T)
    assert res.nfe == 10


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "dpm_solver_2", "heun", "unipc"])
def test_final_denoise_returns_x0_hat_at_the_last_time(sampler):
    sde = ss.VPSDE(0.1, 20.0)
    gmm = mixture_2d()
    x_T = _x_T(sde, 1.0, n=8)
    res = ss.sample(sde, gmm.score_fn(sde), sampler=sampler, steps=6, x_T=x_T, final="denoise", grid="logsnr")
    assert res.grid[-1] == 0 and abs(res.grid[-2].item() - sde.default_eps) < 1e-15
    base = ss.sample(sde, gmm.score_fn(sde), sampler=sampler, steps=5, x_T=x_T, grid="logsnr")
    expected = gmm.denoise(base.x, torch.full((8,), sde.default_eps, dtype=torch.float64), sde)
    assert (res.x - expected).abs().max() < 1e-12


def test_final_euler_and_lower_order_final_change_only_the_last_steps():
    sde = ss.VPSDE(0.1, 20.0)
    gmm = mixture_2d()
    x_T = _x_T(sde, 1.0, n=8)

    def run(**o):
        return ss.sample(sde, gmm.score_fn(sde), sampler="dpmpp_3m", steps=6, x_T=x_T, record=True, **o).trajectory

    a, b = run(lower_order_final=False), run(lower_order_final=True)
    c, d = run(lower_order_final=True, lower_order_final_below=6), run(final="euler", lower_order_final=False)
    for i in range(4):
        assert torch.equal(a[i], b[i]) and torch.equal(a[i], d[i])
    assert not torch.allclose(a[4], b[4]) and not torch.allclose(a[5], b[5])
    assert torch.equal(a[4], d[4]) and not torch.allclose(a[5], d[5])
    assert all(torch.equal(u, v) for u, v in zip(a, c))  # 6 steps is not below 6: not applied


def test_unipc_is_dpmpp_2m_with_the_unic_corrector():
    sde = ss.VPSDE(0.1, 20.0)
    gmm = mixture_2d()
    x_T = _x_T(sde, 1.0, n=8)
    a = ss.sample(sde, gmm.score_fn(sde), sampler="unipc", steps=9, x_T=x_T)
    b = ss.sample(sde, gmm.score_fn(sde), sampler="dpmpp_2m", steps=9, x_T=x_T, corrector=True)
    c = ss.sample(sde, gmm.score_fn(sde), sampler="dpmpp_2m", steps=9, x_T=x_T)
    assert torch.equal(a.x, b.x) and a.nfe == c.nfe == 9
    assert not torch.allclose(a.x, c.x)


def test_heun_final_denoise_has_edm_nfe():
    assert Restart(K=2, restart_steps=3).nfe(10) == 32
    stepper = EDMHeun(final="denoise")
    assert stepper.nfe(18) == 35  # EDM: 2N - 1
    assert UniPC(order=3, first_step="singlestep").nfe(10) == 12
    assert DPMSolverPP(3).nfe(10) == 10


def test_declared_orders_are_the_nominal_orders():
    """UniC raises the order by one; start/final policies are documented caps (see the test above)."""
    assert DPMSolverPP(2).order == 2 and DPMSolverPP(3).order == 3
    assert DPMSolverPP(2, corrector=True).order == 3
    assert UniPC(order=2).order == 3 and UniPC(order=3).order == 4
    assert EDMHeun().order == 2


# ---------------------------------------------------------------------------------------------
# stochastic samplers reach the data distribution
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sampler, opts",
    [
        ("ddim", {"eta": 1.0}),
        ("dpmpp_2m_sde", {"eta": 1.0}),
        ("edm", {"S_churn": 40.0, "S_min": 0.05, "S_max": 50.0, "S_noise": 1.003}),  # EDM's churn setting
        ("restart", {}),
    ],
)
def test_stochastic_samplers_sample_the_data(sampler, opts):
    sde = ss.VPSDE(0.1, 20.0)
    gmm = mixture_2d()
    g = torch.Generator().manual_seed(11)
    res = ss.sample(sde, gmm.score_fn(sde), shape=(600, 2), sampler=sampler, steps=40, generator=g,
                    dtype=torch.float64, **opts)  # fmt: skip
    data = gmm.sample(600, generator=torch.Generator().manual_seed(12))
    assert mmd_permutation_pvalue(res.x, data, n_perm=100) > 0.01
    far = gmm.sample(600, generator=torch.Generator().manual_seed(13)) * 1.3  # the test has power
    assert mmd_permutation_pvalue(res.x, far, n_perm=100) < 0.01


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sampler, opts, exc, match",
    [
        ("ddim", {"eta": 1.5}, ValueError, "eta"),
        ("ddim", {"eta": "x"}, TypeError, "eta"),
        ("ddim", {"final": "zero"}, ValueError, "final"),
        ("dpmpp_2m", {"solver_type": "rk"}, ValueError, "solver_type"),
        ("dpmpp_2m", {"first_step": "ddim"}, ValueError, "first_step"),
        ("dpmpp_2m", {"lower_order_final_below": 0}, ValueError, "lower_order_final_below"),
        ("dpmpp_2m", {"corrector": 1}, TypeError, "corrector"),
        ("unipc", {"variant": "bh3"}, ValueError, "variant"),
        ("unipc", {"order": 5}, ValueError, "order"),
        ("dpm_solver_3", {"orders": [3, 4]}, ValueError, "orders"),
        ("dpm_solver_2", {"r1": 1.5}, ValueError, "r1"),
        ("edm", {"S_churn": -1.0}, ValueError, "S_churn"),
        ("edm", {"S_min": 1.0, "S_max": 0.5}, ValueError, "S_max"),
        ("restart", {"restart_sigma": (1.0, 0.1)}, ValueError, "restart_sigma"),
        ("restart", {"K": -1}, ValueError, "K"),
        ("dpmpp_2m_sde", {"eta": -0.1}, ValueError, "eta"),
        ("heun", {"S_churn": 1.0}, TypeError, "S_churn"),
    ],
)
def test_bad_options(sampler, opts, exc, match):
    sde = ss.VPSDE()
    gmm = mixture_2d()
    with pytest.raises(exc, match=match):
        ss.sample(sde, gmm.score_fn(sde), shape=(4, 2), sampler=sampler, steps=5, **opts)


def test_orders_length_must_match_the_steps():
    sde = ss.VPSDE()
    gmm = mixture_2d()
    with pytest.raises(ValueError, match="orders"):
        ss.sample(sde, gmm.score_fn(sde), shape=(4, 2), sampler="dpm_solver_3", grid="logsnr", steps=5, orders=[3, 1])
    with pytest.raises(ValueError, match="restart_sigma"):
        ss.sample(sde, gmm.score_fn(sde), shape=(4, 2), sampler="restart", steps=5, restart_sigma=(500.0, 900.0))


def test_auto_grid_is_time_quadratic_on_vp_and_logsnr_on_ve():
    gmm = mixture_2d()
    for sde, kind in ((ss.VPSDE(), "quadratic"), (ss.SubVPSDE(), "quadratic"), (ss.VESDE(), "logsnr")):
        res = ss.sample(sde, gmm.score_fn(sde), shape=(4, 2), sampler="unipc", steps=6)
        assert torch.allclose(res.grid, make_grid(sde, kind, 6, sde.default_eps), atol=1e-12, rtol=0)
        assert torch.equal(make_grid(sde, "auto", 6), make_grid(sde, kind, 6))
