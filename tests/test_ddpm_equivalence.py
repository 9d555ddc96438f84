"""DDPM is a special case of the one integrator layer, number for number.

The reference below is the textbook DDPM reverse loop (Ho et al. 2020, Alg. 2), written out in
the test: x_T ~ randn, then for t = T-1..0
x_{t-1} = (x_t - (1 - alpha_t) / sqrt(1 - alpha_bar_t) eps(x_t, t)) / sqrt(alpha_t) + sqrt(beta_t) z
with z = randn_like(x_t) for t > 0 and no noise at t = 0. The project's ancestral sampler on
``VPSDE.from_betas(betas)`` with an eps-network called with integer timesteps must draw the same
random numbers (same global RNG state afterwards) and return the same samples.
"""

import pytest
import torch
from torch import nn

import score_sde as ss

# ---------------------------------------------------------------- the DDPM reference loop


@torch.no_grad()
def p_sample(model, x_t, t, betas, alphas, alpha_bars):
    beta_t = betas[t]
    alpha_t = alphas[t]
    alpha_bar_t = alpha_bars[t]

    eps_theta = model(x_t, t)

    mean = (1 / torch.sqrt(alpha_t)) * (x_t - ((1 - alpha_t) / torch.sqrt(1 - alpha_bar_t)) * eps_theta)

    if t > 0:
        noise = torch.randn_like(x_t)
        sigma = torch.sqrt(beta_t)
        x_prev = mean + sigma * noise
    else:
        x_prev = mean

    return x_prev


@torch.no_grad()
def sample(model, shape, betas, alphas, alpha_bars):
    device = next(model.parameters()).device

    x = torch.randn(shape, device=device)

    T = len(betas)

    for t in reversed(range(T)):
        x = p_sample(model, x, t, betas, alphas, alpha_bars)

    return x


# ---------------------------------------------------------------- a random-weight conv eps-network


class TinyEpsNet(nn.Module):
    """conv -> (+ time embedding) -> SiLU -> conv on [B, C, H, W]; t: an int, [B] ints or [B] floats."""

    def __init__(self, channels: int = 2, hidden: int = 8, time_scale: float = 1000.0):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, channels, 3, padding=1)
        self.emb = nn.Linear(2, hidden)
        self.time_scale = time_scale

    def forward(self, x, t):
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1) / self.time_scale
        e = self.emb(torch.stack([torch.sin(6 * t), torch.cos(6 * t)], -1))
        return self.conv2(nn.functional.silu(self.conv1(x) + e[:, :, None, None]))


def make_net(seed=0, **kw):
    torch.manual_seed(seed)
    return TinyEpsNet(**kw).double()


@pytest.mark.parametrize(
    "N, beta_max, shape, seed",
    [(1000, 0.02, (3, 2, 6, 6), 0), (1000, 0.02, (2, 2, 5, 4), 7), (50, 0.2, (4, 2, 4, 4), 3)],
)
def test_ancestral_is_the_seed_loop(N, beta_max, shape, seed):
    betas = torch.linspace(1e-4, beta_max, N, dtype=torch.float64)
    alphas = 1 - betas
    alpha_bars = torch.cumprod(alphas, 0)
    net = make_net(time_scale=N)

    torch.manual_seed(seed)
    ref = sample(net, shape, betas, alphas, alpha_bars)
    rng_after_ref = torch.get_rng_state()

    sde = ss.VPSDE.from_betas(betas)
    model = ss.ScoreModel(net, sde, prediction="eps", time_labels="discrete")
    torch.manual_seed(seed)
    with torch.no_grad():
        res = ss.sample(sde, model, shape=shape, sampler="ancestral")

    assert res.nfe == N
    assert torch.equal(torch.get_rng_state(), rng_after_ref), "different number of random draws"
    assert res.x.shape == ref.shape and res.x.dtype == torch.float64
    err = (res.x - ref).abs().max().item()
    assert err < 1e-6, err
    assert ref.abs().max() > 0.1  # a non-trivial output


def test_ancestral_calls_the_net_with_integer_timesteps_descending():
    N = 20
    betas = torch.linspace(1e-4, 0.2, N, dtype=torch.float64)
    net = make_net(time_scale=N)
    seen = []

    def spy(x, t):
        seen.append(t.clone())
        return net(x, t)

    sde = ss.VPSDE.from_betas(betas)
    ss.sample(sde, ss.ScoreModel(spy, sde, "eps", "discrete"), shape=(2, 2, 3, 3), sampler="ancestral")
    assert all(t.dtype == torch.long for t in seen)
    assert [int(t[0]) for t in seen] == list(range(N - 1, -1, -1))


def test_denoise_false_draws_noise_at_the_last_step():
    """With denoise=False the last step adds noise too: one more randn than the reference loop."""
    N, shape = 30, (2, 2, 3, 3)
    betas = torch.linspace(1e-4, 0.2, N, dtype=torch.float64)
    sde = ss.VPSDE.from_betas(betas)
    model = ss.ScoreModel(make_net(time_scale=N), sde, "eps", "discrete")
    torch.manual_seed(0)
    a = ss.sample(sde, model, shape=shape, sampler="ancestral", denoise=True).x
    torch.manual_seed(0)
    b = ss.sample(sde, model, shape=shape, sampler="ancestral", denoise=False).x
    diff = (a - b).abs().max().item()
    assert 1e-4 < diff  # sqrt(beta_0) z with beta_0 = 1e-4: differences of order 1e-2


def test_continuous_vp_ancestral_runs_the_same_update():
    """VPSDE(0.1, 20, N=1000) with the ancestral predictor on its N-step grid runs the reference update
    with the betas of its grid, beta_i = 1 - alpha(t_i)^2 / alpha(t_{i-1})^2 and alpha_bar_i =
    alpha(t_i)^2. These betas, 1 - exp(-int beta dt) over a step, are DDPM's linspace(1e-4, 0.02, 1000)
    to within 2.5e-4 (the largest gap, 1 - e^{-0.02} vs 0.02, is at t = T)."""
    sde = ss.VPSDE(0.1, 20.0, N=1000)
    grid = ss.make_grid(sde, "discrete")  # linspace(1, 1e-3, 1001): 1000 steps
    assert grid.numel() == 1001
    a_hi, a_lo = sde.alpha(grid[:-1]), sde.alpha(grid[1:])
    # seed index k = 999 - j for the step j: grid[j] -> grid[j + 1]
    betas = (1 - (a_hi / a_lo) ** 2).flip(0)
    alpha_bars = (a_hi**2).flip(0)
    alphas = 1 - betas
    assert (betas - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)).abs().max() < 2.5e-4

    net = make_net(time_scale=1.0)  # continuous-time labels t in (0, 1]
    times = grid[:-1].flip(0)

    def seed_model(x, k):  # the reference calls model(x, k) with the chain index k
        return net(x, times[k])

    shape = (2, 2, 4, 4)
    torch.manual_seed(5)
    ref = _seed_sample_with(seed_model, net, shape, betas, alphas, alpha_bars)

    model = ss.ScoreModel(net, sde, prediction="eps", time_labels="continuous")
    torch.manual_seed(5)
    with torch.no_grad():
        res = ss.sample(sde, model, shape=shape, sampler="ancestral")
    assert res.nfe == 1000
    err = (res.x - ref).abs().max().item()
    assert err < 1e-6, err


def _seed_sample_with(fn, net, shape, betas, alphas, alpha_bars):
    """The reference ``sample`` with ``model(x, t)`` -> ``fn(x, t)`` (parameters read from ``net``)."""

    class Shim(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, t):
            return fn(x, t)

    return sample(Shim(), shape, betas, alphas, alpha_bars)
