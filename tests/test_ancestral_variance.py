"""What real DDPM checkpoints are sampled with: posterior (fixed_small) or beta (fixed_large)
variance, clipping of the x_0 estimate; DDIM with clipping; reverse diffusion on the SDE's own chain.

Each is compared with a reference loop written here from the papers' equations (float64, same
global random draws): Ho et al. 2020, eqs. 6-7 and 15 (DDPM); Song et al. 2021a, eq. 12 (DDIM);
Song et al. 2021, eq. 46 with the chain's coefficients (reverse diffusion).
"""

import math

import pytest
import torch

import score_sde as ss

N = 40
BETAS = torch.linspace(1e-3, 0.25, N, dtype=torch.float64)
SHAPE = (3, 2, 4, 4)


def eps_net(x, t):
    """A fixed nonlinear 'noise prediction' of x and the integer timestep t ([B] ints)."""
    tt = torch.as_tensor(t, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return torch.tanh(1.3 * x + 0.05 * tt) + 0.3 * torch.sin(2.0 * x)


def ddpm_reference(x, variance, clip):
    """Ho et al. 2020: x_0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t) (eq. 15), clipped if asked; the
    posterior mean (eq. 7) and variance beta~_t or beta_t; no noise at t = 0. Returns (x, clipped?)."""
    ab = torch.cumprod(1 - BETAS, 0)
    clipped = False
    for t in reversed(range(N)):
        ab_prev = ab[t - 1] if t > 0 else torch.tensor(1.0, dtype=torch.float64)
        e = eps_net(x, torch.full((x.shape[0],), t))
        x0 = (x - torch.sqrt(1 - ab[t]) * e) / torch.sqrt(ab[t])
        if clip:
            clipped |= bool((x0.abs() > 1).any())
            x0 = x0.clamp(-1, 1)
        c0 = torch.sqrt(ab_prev) * BETAS[t] / (1 - ab[t])
        ct = torch.sqrt(1 - BETAS[t]) * (1 - ab_prev) / (1 - ab[t])
        mean = c0 * x0 + ct * x
        var = (1 - ab_prev) / (1 - ab[t]) * BETAS[t] if variance == "fixed_small" else BETAS[t]
        x = mean + torch.sqrt(var) * torch.randn_like(x) if t > 0 else mean
    return x, clipped


def chain_model():
    sde = ss.VPSDE.from_betas(BETAS)
    return sde, ss.ScoreModel(eps_net, sde, prediction="eps", time_labels="discrete")


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("clip", [False, True])
def test_ddpm_variances_and_clipping_match_the_reference(variance, clip):
    sde, model = chain_model()
    torch.manual_seed(3)
    x_T = torch.randn(SHAPE)
    ref, clipped = ddpm_reference(x_T, variance, clip)
    state = torch.get_rng_state()
    torch.manual_seed(3)
    torch.randn(SHAPE)
    res = ss.sample(sde, model, x_T=x_T, sampler="ancestral", variance=variance, clip_denoised=clip)
    assert torch.equal(torch.get_rng_state(), state), "different number of random draws"
    assert (res.x - ref).abs().max().item() < 1e-10
    assert clipped is clip  # clipping did act on these x_0 estimates
    if clip:
        assert res.x.abs().max() <= 1.0


def test_default_variance_is_unchanged():
    """variance=None keeps Song et al.'s choice bit for bit: beta on VP, the posterior one on VE."""
    sde, model = chain_model()
    out = {}
    for v in (None, "fixed_large", "fixed_small"):
        torch.manual_seed(0)
        out[v] = ss.sample(sde, model, shape=SHAPE, sampler="ancestral", variance=v).x
    assert torch.equal(out[None], out["fixed_large"]) and not torch.equal(out[None], out["fixed_small"])
    ve = ss.VESDE(0.01, 5.0, N=20)
    score = ss.Gaussian(torch.zeros(2), torch.eye(2)).score_fn(ve)
    for v in (None, "fixed_small", "fixed_large"):
        torch.manual_seed(0)
        out[v] = ss.sample(ve, score, shape=(4, 2), sampler="ancestral", variance=v).x
    assert torch.equal(out[None], out["fixed_small"]) and not torch.equal(out[None], out["fixed_large"])


def test_clipping_with_a_wide_range_is_the_plain_step():
    """The posterior-mean form with unclipped x_0 is algebraically the default step (x + G^2 s) / a."""
    sde, model = chain_model()
    torch.manual_seed(1)
    a = ss.sample(sde, model, shape=SHAPE, sampler="ancestral").x
    torch.manual_seed(1)
    b = ss.sample(sde, model, shape=SHAPE, sampler="ancestral", clip_denoised=True, clip_range=1e6).x
    assert (a - b).abs().max().item() < 1e-10


def test_ve_fixed_large_is_the_reverse_diffusion_variance():
    """SMLD ancestral with variance sigma_i^2 - sigma_{i-1}^2 on the VE chain grid (Song et al. 2021, eq. 47)."""
    ve = ss.VESDE(0.01, 5.0, N=20)
    score = ss.Gaussian(torch.full((2,), 0.5), 0.3 * torch.eye(2)).score_fn(ve)
    grid = ss.make_grid(ve, "discrete")
    torch.manual_seed(2)
    x = 5.0 * torch.randn(4, 2)
    res = ss.sample(ve, score, x_T=x.clone(), sampler="ancestral", variance="fixed_large")
    torch.manual_seed(2)
    torch.randn(4, 2)
    for i in range(grid.numel() - 1):
        G2 = ve.sigma(grid[i]) ** 2 - ve.sigma(grid[i + 1]) ** 2
        mean = x + G2 * score(x, grid[i].expand(4))
        x = mean + torch.sqrt(G2) * torch.randn_like(x) if i < grid.numel() - 2 else mean
    assert (res.x - x).abs().max().item() < 1e-10


# ---------------------------------------------------------------------------------------------
# DDIM with clipping
# ---------------------------------------------------------------------------------------------
def ddim_reference(x, timesteps, clip):
    """Song et al. 2021a, eq. 12 (eta = 0): x_prev = sqrt(ab_prev) x_0 + sqrt(1 - ab_prev) eps, with x_0
    clipped if asked and eps the network's; the last step goes to ab = 1."""
    ab = torch.cumprod(1 - BETAS, 0)
    for k, t in enumerate(timesteps):
        ab_prev = ab[timesteps[k + 1]] if k + 1 < len(timesteps) else torch.tensor(1.0, dtype=torch.float64)
        e = eps_net(x, torch.full((x.shape[0],), t))
        x0 = (x - torch.sqrt(1 - ab[t]) * e) / torch.sqrt(ab[t])
        x0 = x0.clamp(-1, 1) if clip else x0
        x = torch.sqrt(ab_prev) * x0 + torch.sqrt(1 - ab_prev) * e
    return x


@pytest.mark.parametrize("clip", [False, True])
def test_ddim_clipping_matches_the_reference(clip):
    sde, model = chain_model()
    timesteps = list(range(N - 1, -1, -4))  # 39, 35, ..., 3
    grid = torch.tensor([(t + 1) / N for t in timesteps] + [0.0], dtype=torch.float64)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    ref = ddim_reference(x_T, timesteps, clip)
    res = ss.sample(sde, model, x_T=x_T, sampler="ddim", grid=grid, clip_denoised=clip)
    assert res.nfe == len(timesteps)
    assert (res.x - ref).abs().max().item() < 1e-10
    wide = ss.sample(sde, model, x_T=x_T, sampler="ddim", grid=grid, clip_denoised=True, clip_range=1e6).x
    plain = ss.sample(sde, model, x_T=x_T, sampler="ddim", grid=grid).x
    assert (wide - plain).abs().max().item() < 1e-10


# ---------------------------------------------------------------------------------------------
# reverse diffusion with the chain's own coefficients
# ---------------------------------------------------------------------------------------------
def test_reverse_diffusion_on_the_smld_chain():
    """The official VE predictor: score at t_i, step with sigma_k^2 - sigma_{k-1}^2, k = floor(t_i (N - 1))."""
    n, eps = 25, 1e-5
    ve = ss.VESDE(0.01, 5.0, N=n)
    score = ss.Gaussian(torch.full((3,), 0.5), 0.2 * torch.eye(3)).score_fn(ve)
    times = torch.linspace(1.0, eps, n, dtype=torch.float64)
    x = ve.prior_sampling((6, 3), generator=torch.Generator().manual_seed(5))
    res = ss.sample(
        ve, score, x_T=x.clone(), sampler="reverse_diffusion", discretization="chain",
        grid=torch.cat([times, times.new_zeros(1)]), generator=torch.Generator().manual_seed(6),
    )  # fmt: skip
    g = torch.Generator().manual_seed(6)
    sig = torch.exp(torch.linspace(math.log(0.01), math.log(5.0), n, dtype=torch.float64))
    for i, t in enumerate(times):
        k = int(math.floor(float(t) * (n - 1) + 1e-9))
        G2 = sig[k] ** 2 - (sig[k - 1] ** 2 if k > 0 else 0.0)
        mean = x + G2 * score(x, t.expand(6))
        x = mean + torch.sqrt(G2) * torch.randn(x.shape, generator=g) if i < n - 1 else mean
    assert (res.x - x).abs().max().item() < 1e-10


def test_reverse_diffusion_on_the_ddpm_chain():
    """VP: x_mean = (2 - sqrt(1 - beta_k)) x + beta_k s, noise sqrt(beta_k) z, with the chain's beta_k at
    k = floor(t (N - 1)) (Song et al. 2021, eq. 46; the official predictor)."""
    vp = ss.VPSDE(0.1, 20.0, N=30)
    score = ss.Gaussian(torch.zeros(2), 0.5 * torch.eye(2)).score_fn(vp)
    grid = torch.linspace(1.0, 1e-3, 31, dtype=torch.float64)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(7))
    res = ss.sample(
        vp, score, x_T=x.clone(), sampler="reverse_diffusion", discretization="chain", grid=grid,
        generator=torch.Generator().manual_seed(8),
    )  # fmt: skip
    g = torch.Generator().manual_seed(8)
    for i, t in enumerate(grid[:-1]):
        beta = vp.discrete_betas[int(math.floor(float(t) * 29 + 1e-9))]
        mean = (2 - torch.sqrt(1 - beta)) * x + beta * score(x, t.expand(5))
        x = mean + torch.sqrt(beta) * torch.randn(x.shape, generator=g) if i < 29 else mean
    assert (res.x - x).abs().max().item() < 1e-10


# ---------------------------------------------------------------------------------------------
# float32 chain times and bad options
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [50, 1000, 4000])
def test_float32_chain_times_map_to_their_own_index(n):
    sde = ss.VPSDE.from_betas(torch.linspace(1e-4, 0.02, n))
    times = ss.make_grid(sde, "discrete")[:-1]
    expected = torch.arange(n - 1, -1, -1)
    assert torch.equal(sde.time_to_index(times), expected)
    assert torch.equal(sde.time_to_index(times.float()), expected)


@pytest.mark.parametrize(
    "sampler, options, err, match",
    [
        ("ancestral", {"variance": "learned"}, ValueError, "variance"),
        ("ancestral", {"clip_denoised": 1}, TypeError, "clip_denoised"),
        ("ancestral", {"clip_denoised": True, "clip_range": 0.0}, ValueError, "clip_range"),
        ("reverse_diffusion", {"discretization": "exact"}, ValueError, "discretization"),
        ("ddim", {"clip_denoised": True, "clip_range": -1.0}, ValueError, "clip_range"),
        ("ddim", {"clip_denoised": "yes"}, TypeError, "clip_denoised"),
    ],
)
def test_bad_options_are_named(sampler, options, err, match):
    sde, model = chain_model()
    with pytest.raises(err, match=match):
        ss.sample(sde, model, shape=SHAPE, sampler=sampler, **options)
