"""Training losses: DSM (weightings, targets, importance sampling), DDPM L_simple, SMLD; against exact scores."""

import math

import pytest
import torch
from problems import SDES, mixture_2d

import score_sde as ss
from score_sde.nets import MLPScoreNet
from score_sde.training.losses import (
    LOSSES,
    TARGETS,
    WEIGHTINGS,
    ddpm_loss,
    dsm_loss,
    get_loss,
    importance_cdf,
    per_sample_dsm,
    sample_time,
    smld_loss,
)


def exact_model(gmm, sde, perturb=None, cache=None):
    """A ScoreModel whose 'network' is the exact score of ``gmm`` (continuous labels = t), optionally
    perturbed; ``cache`` (a dict shared by several models) reuses the score for a repeated (x, t)."""

    def net(x, t):
        if cache is not None and "x" in cache and torch.equal(cache["x"], x) and torch.equal(cache["t"], t):
            s = cache["s"]
        else:
            s = gmm.score(x, t, sde)
            if cache is not None:
                cache.update(x=x.clone(), t=t.clone(), s=s)
        return s if perturb is None else perturb(x, s)

    return ss.ScoreModel(net, sde, prediction="score", time_labels="continuous")


PERTURBATIONS = {
    "scale_up": lambda x, s: 1.2 * s,
    "scale_down": lambda x, s: 0.8 * s,
    "add_sin": lambda x, s: s + 0.2 * torch.sin(x),
}


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("importance_sampling", [False, True])
def test_exact_score_has_lowest_loss_for_every_weighting_and_target(sde_name, importance_sampling):
    """Acceptance: on analytic data the exact score attains a lower DSM loss than perturbed scores.

    Common random numbers: every model sees the same x_0, t (and importance weights) and z, so the
    comparison is a paired difference. The noise is antithetic (z and -z for the same x_0 and t):
    the cross term 2 (s' - s) . z / sigma, whose variance grows like 1/sigma^2 and swamps the
    unweighted ("none") loss near t = 0, cancels to O(1) within each pair.
    """
    sde = SDES[sde_name]()
    gmm = mixture_2d()
    g = torch.Generator().manual_seed(1)
    n = 40000
    x0 = gmm.sample(n, generator=g).repeat(2, 1)
    z = torch.randn(n, 2, generator=g)
    z = torch.cat([z, -z])
    cache = {}
    exact = exact_model(gmm, sde, cache=cache)
    perturbed = {k: exact_model(gmm, sde, p, cache) for k, p in PERTURBATIONS.items()}
    for weighting in WEIGHTINGS:
        t, w = sample_time(sde, n, eps=1e-5, importance_sampling=importance_sampling, generator=g)
        t, w = t.repeat(2), w.repeat(2)
        for target in TARGETS:
            kw = dict(weighting=weighting, target=target, t=t, noise=z)
            base = per_sample_dsm(exact, x0, **kw) * w
            for name, model in perturbed.items():
                diff = per_sample_dsm(model, x0, **kw) * w - base
                pair = 0.5 * (diff[:n] + diff[n:])
                mean, se = pair.mean().item(), pair.std().item() / math.sqrt(n)
                assert mean > 5 * se, (weighting, target, name, mean, se)


@pytest.mark.parametrize("sde_name", list(SDES))
def test_all_targets_give_the_same_objective(sde_name):
    """For one network and the same (t, z), every target gives the same per-sample loss."""
    sde = SDES[sde_name]()
    torch.manual_seed(0)
    for prediction in ("eps", "x0", "v", "velocity", "score"):
        net = MLPScoreNet(2, hidden=16, depth=1, emb_dim=8)
        model = ss.ScoreModel(net, sde, prediction=prediction)
        x0 = torch.randn(64, 2)
        t = torch.rand(64) * 0.98 + 0.01
        z = torch.randn(64, 2)
        for weighting in WEIGHTINGS:
            for reduce in ("mean", "sum"):
                vals = [
                    per_sample_dsm(model, x0, weighting=weighting, target=tg, reduce=reduce, t=t, noise=z)
                    for tg in TARGETS
                ]
                for v in vals[1:]:
                    torch.testing.assert_close(v, vals[0], rtol=1e-9, atol=0)


def test_sigma2_eps_loss_is_the_plain_eps_mse():
    sde = ss.VPSDE()
    torch.manual_seed(0)
    net = MLPScoreNet(3, hidden=16, depth=1, emb_dim=8)
    model = ss.ScoreModel(net, sde, prediction="eps")
    x0, t, z = torch.randn(32, 3), torch.rand(32) * 0.9 + 0.05, torch.randn(32, 3)
    xt = sde.alpha(t)[:, None] * x0 + sde.sigma(t)[:, None] * z
    ref = (net(xt, t) - z).pow(2)
    torch.testing.assert_close(dsm_loss(model, x0, t=t, noise=z), ref.mean())
    torch.testing.assert_close(dsm_loss(model, x0, t=t, noise=z, reduce="sum"), 0.5 * ref.sum(1).mean())
    # likelihood weighting: g^2 ||s + z/sigma||^2 = g^2/sigma^2 ||eps_theta - z||^2
    g2s2 = sde.g2(t) / sde.sigma(t) ** 2
    torch.testing.assert_close(dsm_loss(model, x0, t=t, noise=z, weighting="g2"), (g2s2 * ref.mean(1)).mean())
    # a callable weighting
    torch.testing.assert_close(dsm_loss(model, x0, t=t, noise=z, weighting=lambda tt: sde.sigma(tt) ** 2), ref.mean())


@pytest.mark.parametrize("sde_name", list(SDES))
def test_exact_score_dsm_value_matches_the_identity(sde_name):
    """At fixed t: E||s + z/sigma||^2 = D/sigma^2 - E||s(x_t)||^2 for the exact score s."""
    sde = SDES[sde_name]()
    gmm = mixture_2d()
    g = torch.Generator().manual_seed(3)
    n = 40000
    x0 = gmm.sample(n, generator=g)
    z = torch.randn(x0.shape, generator=g)
    t = torch.full((n,), 0.3)
    per = per_sample_dsm(exact_model(gmm, sde), x0, weighting="none", target="score", reduce="sum", t=t, noise=z)
    xt = sde.alpha(t)[:, None] * x0 + sde.sigma(t)[:, None] * z
    s2 = gmm.score(xt, t, sde).pow(2).sum(1)
    ref = 0.5 * (2 / sde.sigma(t) ** 2 - s2)
    diff = per - ref
    assert abs(diff.mean().item()) < 4 * diff.std().item() / math.sqrt(n)


@pytest.mark.parametrize("sde_name", list(SDES))
def test_importance_sampling_distribution(sde_name):
    """t ~ p(t) proportional to g^2/sigma^2: empirical CDF matches the analytic one (KS distance)."""
    sde = SDES[sde_name]()
    g = torch.Generator().manual_seed(0)
    n = 20000
    t, w = sample_time(sde, n, eps=1e-5, importance_sampling=True, generator=g)
    assert t.min() >= 1e-5 and t.max() <= 1.0
    ts, _ = torch.sort(t)
    ecdf = torch.arange(1, n + 1, dtype=torch.float64) / n
    ks = (ecdf - importance_cdf(sde, ts)).abs().max().item()
    assert ks < 1.63 / math.sqrt(n)  # 1% level of the Kolmogorov-Smirnov test
    # weights: E_p[w] = 1 (they undo the proposal)
    assert abs(w.mean().item() - 1) < 4 * w.std().item() / math.sqrt(n)


def test_importance_cdf_vp_closed_form():
    """Closed form: for VP the CDF is proportional to B(t) + ln(1 - exp(-B(t)))."""
    sde = ss.VPSDE(0.1, 20.0)
    eps = 1e-5
    t = torch.linspace(eps, 1, 50)

    def F(tt):
        B = sde._B(tt)
        return B + torch.log(-torch.expm1(-B))

    t0, t1 = torch.tensor(eps), torch.tensor(1.0)
    ref = (F(t) - F(t0)) / (F(t1) - F(t0))
    torch.testing.assert_close(importance_cdf(sde, t, eps), ref, rtol=1e-10, atol=1e-12)
    # the VE proposal is uniform (g^2/sigma^2 is constant)
    ve = ss.VESDE(0.01, 50.0)
    torch.testing.assert_close(importance_cdf(ve, t, eps), (t - eps) / (1 - eps))


def test_importance_sampling_is_unbiased_and_reduces_variance_for_likelihood_weighting():
    sde = ss.VPSDE()
    gmm = mixture_2d()
    g = torch.Generator().manual_seed(2)
    n = 40000
    model = exact_model(gmm, sde, PERTURBATIONS["add_sin"])
    x0 = gmm.sample(n, generator=g)
    plain = per_sample_dsm(model, x0, weighting="g2", generator=g)
    imp = per_sample_dsm(model, x0, weighting="g2", importance_sampling=True, generator=g)
    se = math.sqrt(plain.var().item() / n + imp.var().item() / n)
    assert abs(plain.mean().item() - imp.mean().item()) < 4 * se
    assert imp.var() < 0.2 * plain.var()


def test_dsm_generator_reproducibility_and_gradients():
    sde = ss.SubVPSDE()
    net = MLPScoreNet(2, hidden=16, depth=1, emb_dim=8)
    model = ss.ScoreModel(net, sde)
    x0 = torch.randn(16, 2)
    a = dsm_loss(model, x0, generator=torch.Generator().manual_seed(5))
    b = dsm_loss(model, x0, generator=torch.Generator().manual_seed(5))
    c = dsm_loss(model, x0, generator=torch.Generator().manual_seed(6))
    assert a.item() == b.item() != c.item()
    # per-sample generators: a sample's loss does not depend on the rest of the batch
    gens = ss.per_sample_generators(range(16))
    per = per_sample_dsm(model, x0, generator=gens)
    per3 = per_sample_dsm(model, x0[3:4], generator=ss.per_sample_generators([3]))
    torch.testing.assert_close(per[3:4], per3)
    a.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_dsm_with_images_and_condition():
    sde = ss.VESDE(0.01, 10.0)
    from score_sde.nets import UNet

    net = UNet(in_channels=1, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), resolution=4, num_classes=3)
    model = ss.ScoreModel(net, sde, prediction="eps", time_labels="sigma")
    x0 = torch.randn(4, 1, 4, 4)
    loss = dsm_loss(model, x0, cond=torch.tensor([0, 1, 2, 3]), weighting="g2", importance_sampling=True)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_plain_score_function_needs_sde():
    gmm, sde = mixture_2d(), ss.VPSDE()
    x0 = gmm.sample(8)
    assert torch.isfinite(dsm_loss(gmm.score_fn(sde), x0, sde=sde))
    with pytest.raises(ValueError, match="sde="):
        dsm_loss(gmm.score_fn(sde), x0)


# ---- discrete losses ---------------------------------------------------------------------------------
class Recorder(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.lin = torch.nn.Linear(dim, dim)
        self.labels = None

    def forward(self, x, labels):
        self.labels = labels
        return self.lin(x) * (1 + labels.to(x)[:, None] / 1000)


@pytest.mark.parametrize("sde", [ss.VPSDE(N=1000), ss.VPSDE.from_betas(torch.linspace(1e-4, 0.02, 50))])
def test_ddpm_loss_is_l_simple(sde):
    torch.manual_seed(0)
    net = Recorder(3)
    model = ss.ScoreModel(net, sde, prediction="eps", time_labels="discrete")
    x0, noise = torch.randn(8, 3), torch.randn(8, 3)
    i = torch.tensor([0, 1, 5, 10, 20, 30, 40, sde.N - 1])
    loss = ddpm_loss(model, x0, i=i, noise=noise)
    assert torch.equal(net.labels, i)  # the net receives the chain index
    abar = sde.alphas_cumprod[i]
    xt = abar.sqrt()[:, None] * x0 + (1 - abar).sqrt()[:, None] * noise
    ref = (net(xt, i) - noise).pow(2).mean()
    torch.testing.assert_close(loss, ref)
    # drawn indices stay in range and the loss is differentiable
    ddpm_loss(model, x0, generator=torch.Generator().manual_seed(0)).backward()
    assert net.lin.weight.grad.abs().sum() > 0


def test_ddpm_loss_with_x0_prediction_uses_the_chain_coefficients():
    sde = ss.VPSDE(N=100)
    net = Recorder(2)
    model = ss.ScoreModel(net, sde, prediction="x0", time_labels="t999")
    x0, noise, i = torch.randn(4, 2), torch.randn(4, 2), torch.tensor([3, 10, 50, 99])
    loss = ddpm_loss(model, x0, i=i, noise=noise)
    torch.testing.assert_close(net.labels, i.double())  # t999 labels of index i are i
    abar = sde.alphas_cumprod[i]
    a, s = abar.sqrt()[:, None], (1 - abar).sqrt()[:, None]
    xt = a * x0 + s * noise
    eps_hat = (xt - a * net(xt, i.double())) / s
    torch.testing.assert_close(loss, (eps_hat - noise).pow(2).mean())


def test_smld_loss_is_the_ncsn_loss():
    sde = ss.VESDE(0.01, 50.0, N=10)
    net = Recorder(2)
    model = ss.ScoreModel(net, sde, prediction="score", time_labels="sigma")
    x0, noise, i = torch.randn(5, 2), torch.randn(5, 2), torch.tensor([0, 2, 4, 7, 9])
    loss = smld_loss(model, x0, i=i, noise=noise, reduce="sum")
    sig = sde.discrete_sigmas[i]
    torch.testing.assert_close(net.labels, sig)
    xt = x0 + sig[:, None] * noise
    ref = 0.5 * (sig[:, None] * net(xt, sig) + noise).pow(2).sum(1).mean()
    torch.testing.assert_close(loss, ref)
    # exact scores on mixture data beat a perturbed score
    gmm = mixture_2d()
    g = torch.Generator().manual_seed(0)
    x0 = gmm.sample(20000, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    i = torch.randint(0, 10, (20000,), generator=g)

    def m(p):
        def f(x, s):
            tt = sde.t_from_log_snr(-torch.log(s))
            return p(x, gmm.score(x, tt, sde))

        return ss.ScoreModel(f, sde, prediction="score", time_labels="sigma")

    exact = smld_loss(m(lambda x, s: s), x0, i=i, noise=noise)
    for p in PERTURBATIONS.values():
        assert smld_loss(m(p), x0, i=i, noise=noise) > exact


# ---- registry and errors --------------------------------------------------------------------------------
def test_get_loss():
    assert get_loss("dsm") is dsm_loss and set(LOSSES) == {"dsm", "ddpm", "smld"}
    with pytest.raises(ValueError, match="ddpm"):
        get_loss("elbo")


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(weighting="sigma"), "weighting"),
        (dict(target="noise"), "target"),
        (dict(reduce="max"), "reduce"),
        (dict(eps=0.0), "eps"),
        (dict(t=torch.full((4,), 1.5)), "t must lie"),
        (dict(t=torch.zeros(4)), "t must be > 0"),
        (dict(t=torch.rand(3)), r"t must have shape \[B\]"),
        (dict(noise=torch.randn(4, 3)), "noise"),
    ],
)
def test_dsm_bad_arguments(kw, match):
    model = ss.ScoreModel(MLPScoreNet(2, hidden=8, depth=1, emb_dim=8), ss.VPSDE())
    with pytest.raises(ValueError, match=match):
        dsm_loss(model, torch.randn(4, 2), **kw)


def test_loss_bad_inputs():
    vp = ss.ScoreModel(MLPScoreNet(2, hidden=8, depth=1, emb_dim=8), ss.VPSDE())
    ve = ss.ScoreModel(MLPScoreNet(2, hidden=8, depth=1, emb_dim=8), ss.VESDE())
    sub = ss.ScoreModel(MLPScoreNet(2, hidden=8, depth=1, emb_dim=8), ss.SubVPSDE())
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="x0 must be finite"):
        dsm_loss(vp, torch.tensor([[0.0, float("nan")]] * 4))
    with pytest.raises(TypeError, match="x0"):
        dsm_loss(vp, [[0.0, 1.0]])
    with pytest.raises(ValueError, match="VP SDE"):
        ddpm_loss(ve, x)
    with pytest.raises(ValueError, match="VP SDE"):
        ddpm_loss(sub, x)
    with pytest.raises(ValueError, match="VESDE"):
        smld_loss(vp, x)
    with pytest.raises(ValueError, match="0..999"):
        ddpm_loss(vp, x, i=torch.tensor([0, 1, 2, 1000]))
    with pytest.raises(TypeError, match="ScoreModel"):
        ddpm_loss(lambda x, t: x, x)


def test_minimising_dsm_learns_the_exact_score():
    """300 Adam steps of the eps loss on mixture data bring an MLP's eps close to the exact one."""
    torch.manual_seed(0)
    gmm, sde = mixture_2d(), ss.VPSDE()
    net = MLPScoreNet(2, hidden=64, depth=2, emb_dim=32)
    model = ss.ScoreModel(net, sde)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    xe = gmm.sample(2000, generator=g)
    te = torch.rand(2000, generator=g) * 0.99 + 0.01
    xt, _ = sde.perturb(xe, te, generator=g)
    eps_true = -gmm.score(xt, te, sde) * sde.sigma(te)[:, None]

    def err():
        with torch.no_grad():
            return (model.eps(xt, te) - eps_true).pow(2).sum(1).mean().item()

    before = err()
    for _ in range(300):
        loss = dsm_loss(model, gmm.sample(256, generator=g), generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = err()
    assert after < 0.05 * before and after < 0.1, (before, after)
