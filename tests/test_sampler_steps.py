"""One step of each stochastic sampler against its published update, written out here from the
closed-form schedules (not from the library's transition / coefficient tables), at 1e-12.

VP: ln alpha(t) = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2, sigma^2 = 1 - alpha^2,
beta(t) = beta_min + t (beta_max - beta_min). VE: sigma(t) = sigma_min (sigma_max / sigma_min)^t.
The noise z is the sampler's generator's first (second, ...) standard-normal draw of the data's shape.
"""

import math

import pytest
import torch

import score_sde as ss
from tests.problems import mixture_2d

B0, B1 = 0.1, 20.0
S0, S1 = 0.01, 50.0


def vp_alpha(t):
    return math.exp(-0.25 * t * t * (B1 - B0) - 0.5 * t * B0)


def vp_sigma(t):
    return math.sqrt(1.0 - vp_alpha(t) ** 2)


def ve_sigma(t):
    return S0 * (S1 / S0) ** t


def run_steps(sde, grid, x, seed, **kw):
    """The states after every step but the last (a last step returns its noise-free mean)."""
    seen = []
    ss.sample(sde, mixture_2d().score_fn(sde), x_T=x, grid=torch.tensor(grid, dtype=torch.float64),
              generator=torch.Generator().manual_seed(seed), callback=lambda i, t, xi, x0: seen.append(xi.clone()),
              **kw)  # fmt: skip
    return seen


def draws(x, seed, k):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(x.shape, generator=g, dtype=x.dtype) for _ in range(k)]


def setup(sde, t0, n=6, seed=5):
    x = mixture_2d().marginal_sample(n, t0, sde, generator=torch.Generator().manual_seed(seed))
    return x, (lambda y, t: mixture_2d().score(y, torch.full((y.shape[0],), t, dtype=y.dtype), sde))


T0, T1, T2 = 0.6, 0.55, 0.3


@pytest.mark.parametrize("corrector", ["langevin", "annealed_langevin"])
def test_langevin_corrector_step(corrector):
    """Song et al. 2021, Alg. 4 (VP): eps = 2 a (r |z| / |s|)^2 with batch-mean norms (annealed:
    2 a (r sigma(t))^2), a = alpha(t)^2 / alpha(t_next)^2 = 1 - beta_i; x' = x + eps s + sqrt(2 eps) z."""
    sde, r = ss.VPSDE(B0, B1), 0.16
    x, score = setup(sde, T0)
    out = run_steps(sde, [T0, T1, T2], x, seed=3, sampler="pc", predictor="none", corrector=corrector, snr=r)[0]
    (z,) = draws(x, 3, 1)
    s = score(x, T0)
    a = (vp_alpha(T0) / vp_alpha(T1)) ** 2
    if corrector == "langevin":
        eps = 2 * a * (r * z.norm(dim=1).mean() / s.norm(dim=1).mean()) ** 2
    else:
        eps = 2 * a * (r * vp_sigma(T0)) ** 2
    ref = x + eps * s + math.sqrt(2 * eps) * z
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)


def test_reverse_diffusion_and_ancestral_vp_steps():
    """Reverse diffusion (eq. 46) and DDPM's ancestral step, beta_i = 1 - (alpha(t) / alpha(t_next))^2."""
    sde = ss.VPSDE(B0, B1)
    x, score = setup(sde, T0)
    (z,) = draws(x, 4, 1)
    s = score(x, T0)
    beta = 1 - (vp_alpha(T0) / vp_alpha(T1)) ** 2
    rd = run_steps(sde, [T0, T1, T2], x, seed=4, sampler="reverse_diffusion")[0]
    assert torch.allclose(rd, (2 - math.sqrt(1 - beta)) * x + beta * s + math.sqrt(beta) * z, rtol=0, atol=1e-12)
    anc = run_steps(sde, [T0, T1, T2], x, seed=4, sampler="ancestral")[0]
    assert torch.allclose(anc, (x + beta * s) / math.sqrt(1 - beta) + math.sqrt(beta) * z, rtol=0, atol=1e-12)


def test_euler_maruyama_vp_step():
    """x' = x + (f x - g^2 s) dt + g sqrt(|dt|) z, f = -beta(t)/2, g^2 = beta(t), dt = t_next - t."""
    sde = ss.VPSDE(B0, B1)
    x, score = setup(sde, T0)
    (z,) = draws(x, 6, 1)
    bt, dt = B0 + T0 * (B1 - B0), T1 - T0
    ref = x + (-0.5 * bt * x - bt * score(x, T0)) * dt + math.sqrt(bt * -dt) * z
    out = run_steps(sde, [T0, T1, T2], x, seed=6, sampler="euler_maruyama")[0]
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)


def test_ancestral_ve_step():
    """SMLD ancestral step: x' = x + (s_i^2 - s_{i-1}^2) s + sqrt(s_{i-1}^2 (s_i^2 - s_{i-1}^2) / s_i^2) z."""
    sde = ss.VESDE(S0, S1)
    x, score = setup(sde, T0)
    (z,) = draws(x, 7, 1)
    a2, b2 = ve_sigma(T0) ** 2, ve_sigma(T1) ** 2
    ref = x + (a2 - b2) * score(x, T0) + math.sqrt(b2 * (a2 - b2) / a2) * z
    out = run_steps(sde, [T0, T1, T2], x, seed=7, sampler="ancestral")[0]
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_ddim_eta_step(eta):
    """DDIM (Song et al. 2021a, eq. 12, 16) in its own notation on VP: with a_t = alpha(t)^2,
    x' = sqrt(a_1) x0^ + sqrt(1 - a_1 - c^2) eps^ + c z, c = eta sqrt((1 - a_1)/(1 - a_0)) sqrt(1 - a_0/a_1),
    eps^ = -sigma(t) s, x0^ = (x + sigma(t)^2 s) / alpha(t)."""
    sde = ss.VPSDE(B0, B1)
    x, score = setup(sde, T0)
    (z,) = draws(x, 8, 1)
    s = score(x, T0)
    a0, a1 = vp_alpha(T0) ** 2, vp_alpha(T1) ** 2
    eps_hat, x0 = -vp_sigma(T0) * s, (x + vp_sigma(T0) ** 2 * s) / vp_alpha(T0)
    c = eta * math.sqrt((1 - a1) / (1 - a0)) * math.sqrt(1 - a0 / a1)
    ref = math.sqrt(a1) * x0 + math.sqrt(1 - a1 - c * c) * eps_hat + c * z
    out = run_steps(sde, [T0, T1, T2], x, seed=8, sampler="ddim", eta=eta)[0]
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)


def test_dpmpp_2m_sde_second_step():
    """SDE-DPM-Solver++(2M) (midpoint), as k-diffusion's ``sample_dpmpp_2m_sde`` writes it in sigma~ = sigma/alpha
    and x~ = x/alpha, on an uneven grid so that the step ratio r = h_prev / h matters:
    x~' = (s~_1/s~_0) e^{-eta h} x~ + (1 - e^{-h - eta h}) D + (1 - e^{-h - eta h}) / (2r) (D - D_prev)
    + s~_1 sqrt(1 - e^{-2 eta h}) z."""
    sde, eta = ss.VPSDE(B0, B1), 1.0
    grid = [0.8, 0.6, 0.45, 0.2]
    x, score = setup(sde, grid[0])

    def D(y, t):
        return (y + vp_sigma(t) ** 2 * score(y, t)) / vp_alpha(t)

    def st(t):
        return vp_sigma(t) / vp_alpha(t)

    z0, z1 = draws(x, 9, 2)
    xt, old, h_last = x / vp_alpha(grid[0]), None, None
    for i, zi in enumerate((z0, z1)):
        ta, tb = grid[i], grid[i + 1]
        d = D(vp_alpha(ta) * xt, ta)
        h = math.log(st(ta)) - math.log(st(tb))
        eh = eta * h
        xt = st(tb) / st(ta) * math.exp(-eh) * xt + (-math.expm1(-h - eh)) * d
        if old is not None:
            r = h_last / h
            xt = xt + 0.5 * (-math.expm1(-h - eh)) * (1 / r) * (d - old)
        xt = xt + st(tb) * math.sqrt(-math.expm1(-2 * eh)) * zi
        old, h_last = d, h
    out = run_steps(sde, grid, x, seed=9, sampler="dpmpp_2m_sde", eta=eta)[1]
    assert torch.allclose(out, vp_alpha(grid[2]) * xt, rtol=0, atol=1e-12)
