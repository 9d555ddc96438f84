"""Guidance and controllable generation against exact Gaussian-mixture answers (float64)."""

import math

import pytest
import torch
from problems import mixture_2d, mmd_permutation_pvalue, random_mixture

import score_sde as ss
from score_sde import guidance as G

# ---- analytic oracles -----------------------------------------------------------------------


def test_mixture_classifier_is_the_responsibilities():
    gmm, sde = mixture_2d(), ss.VPSDE()
    x, t = 2 * torch.randn(64, 2), torch.rand(64) * 0.9 + 0.05
    p = torch.softmax(G.mixture_classifier(gmm, sde)(x, t), -1)
    assert torch.allclose(p, gmm.responsibilities(x, t, sde), atol=1e-12)


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_exact_classifier_guidance_scale1_is_the_class_conditional_score(sde_name):
    """Bayes: grad log p_t(x) + grad log p_t(y | x) = grad log p_t(x | y) (component y's score)."""
    sde = {"vp": ss.VPSDE(), "ve": ss.VESDE(0.01, 50.0)}[sde_name]
    gmm = mixture_2d()
    x, t = 3 * torch.randn(50, 2), torch.rand(50) * 0.98 + 0.01
    cg = G.ClassifierGuidance(gmm.score_fn(sde), G.mixture_classifier(gmm, sde), scale=1.0)
    exact = G.MixtureClassScore(gmm, sde)
    for k in range(gmm.K):
        assert torch.allclose(cg(x, t, k), gmm.component(k).score(x, t, sde), atol=1e-9, rtol=1e-9)
        assert torch.allclose(exact(x, t, k), gmm.component(k).score(x, t, sde), atol=1e-12)
    assert torch.allclose(exact(x, t, gmm.K), gmm.score(x, t, sde), atol=1e-12)  # the null label


def test_cfg_equals_classifier_guidance_on_the_mixture():
    """s_c - s_u = grad log p_t(y | x) exactly, so CFG at scale w is classifier guidance at scale w."""
    gmm, sde = mixture_2d(), ss.VPSDE()
    x, t = 2 * torch.randn(40, 2), torch.rand(40) * 0.9 + 0.05
    y = torch.randint(0, 3, (40,))
    exact = G.MixtureClassScore(gmm, sde)
    for w in (0.0, 1.0, 2.5, 4.0):
        cfg = G.ClassifierFreeGuidance(exact, w)
        cg = G.ClassifierGuidance(gmm.score_fn(sde), G.mixture_classifier(gmm, sde), w)
        assert torch.allclose(cfg(x, t, y), cg(x, t, y), atol=1e-9)
    assert torch.allclose(G.ClassifierFreeGuidance(exact, 1.0)(x, t, y), exact(x, t, y), atol=1e-12)
    assert torch.allclose(G.ClassifierFreeGuidance(exact, 0.0)(x, t, y), gmm.score(x, t, sde), atol=1e-12)
    unbatched = G.ClassifierFreeGuidance(exact, 3.0, batched=False)
    assert torch.allclose(unbatched(x, t, y), G.ClassifierFreeGuidance(exact, 3.0)(x, t, y), atol=1e-12)
    assert unbatched.network_calls == 2


def test_cfg_in_eps_form_is_the_seed_formula():
    """eps^ = eps_u + s (eps_c - eps_u) with eps = -sigma score: the score-form combination matches."""
    gmm, sde = mixture_2d(), ss.VPSDE()
    x, t = torch.randn(16, 2), torch.rand(16) * 0.9 + 0.05
    exact = G.MixtureClassScore(gmm, sde)
    sig = sde.sigma(t)[:, None]
    eps_c, eps_u = -sig * exact(x, t, 1), -sig * exact(x, t, None)
    s = 2.0
    eps_hat = eps_u + s * (eps_c - eps_u)
    assert torch.allclose(-eps_hat / sig, G.ClassifierFreeGuidance(exact, s)(x, t, 1), atol=1e-12)


def test_cfg_interval_applies_guidance_only_inside():
    gmm, sde = mixture_2d(), ss.VPSDE()
    exact = G.MixtureClassScore(gmm, sde)
    x = torch.randn(6, 2)
    t = torch.tensor([0.05, 0.2, 0.35, 0.5, 0.7, 0.9])
    cfg = G.ClassifierFreeGuidance(exact, 4.0, interval=(0.3, 0.6))
    full = G.ClassifierFreeGuidance(exact, 4.0)(x, t, 0)
    out = cfg(x, t, 0)
    inside = (t >= 0.3) & (t <= 0.6)
    assert torch.allclose(out[inside], full[inside])
    assert torch.allclose(out[~inside], exact(x, t, 0)[~inside])
    assert not torch.allclose(out[inside], exact(x, t, 0)[inside])


def test_cfg_with_a_context_tensor_uses_a_zero_null_context():
    calls = []

    def score(x, t, ctx):
        calls.append(ctx.clone())
        return -x + ctx

    cfg = G.ClassifierFreeGuidance(score, 3.0, batched=False)
    x, ctx = torch.randn(4, 2), torch.randn(4, 2)
    out = cfg(x, torch.full((4,), 0.5), ctx)
    assert torch.allclose(out, -x + 3.0 * ctx)
    assert torch.equal(calls[1], torch.zeros(4, 2))


def test_classifier_guidance_is_differentiable_and_works_under_no_grad():
    gmm, sde = mixture_2d(), ss.VPSDE()
    cg = G.ClassifierGuidance(gmm.score_fn(sde), G.mixture_classifier(gmm, sde), 1.0)
    x0, t = torch.randn(8, 2), torch.full((8,), 0.3)
    x = x0.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(cg(x, t, 2).pow(2).sum(), x)
    x2 = x0.clone().requires_grad_(True)
    (gx2,) = torch.autograd.grad(gmm.component(2).score(x2, t, sde).pow(2).sum(), x2)
    assert torch.allclose(gx, gx2, atol=1e-8)
    with torch.no_grad():
        out = cg(x0, t, 2)
    assert not out.requires_grad
    assert torch.allclose(out, gmm.component(2).score(x0, t, sde), atol=1e-9)


def test_drop_condition():
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 10, (20000,), generator=g)
    d = G.drop_condition(y, 0.2, null_label=10, generator=g)
    dropped = d == 10
    assert abs(dropped.double().mean().item() - 0.2) < 0.01
    assert torch.equal(d[~dropped], y[~dropped]) and (y < 10).all()
    ctx = torch.randn(1000, 3, generator=g)
    dc = G.drop_condition(ctx, 0.5, generator=g)
    zero = (dc == 0).all(1)
    assert 400 < zero.sum() < 600 and torch.equal(dc[~zero], ctx[~zero])
    assert torch.equal(G.drop_condition(y, 0.0, 10), y)


# ---- guided sampling of the analytic mixture ------------------------------------------------


def test_exact_classifier_guidance_samples_the_chosen_component():
    """Scale 1 with the exact p_t(y | x): each sample lands in its requested component (per-sample
    labels in one batch) and the moments are the component's."""
    gmm, sde = mixture_2d(), ss.VPSDE()
    cg = G.ClassifierGuidance(gmm.score_fn(sde), G.mixture_classifier(gmm, sde), 1.0)
    n = 1000
    y = torch.arange(3).repeat_interleave(n)
    res = ss.sample(
        sde,
        cg,
        shape=(3 * n, 2),
        sampler="reverse_diffusion",
        steps=300,
        cond=y,
        generator=torch.Generator().manual_seed(0),
    )
    for k in range(3):
        xk = res.x[y == k]
        frac = (gmm.responsibilities(xk).argmax(1) == k).double().mean().item()
        assert frac >= 0.98
        m, C = gmm.component(k).moments()
        assert ((xk.mean(0) - m).abs() < 4 * torch.sqrt(torch.diagonal(C) / n)).all()
        assert torch.allclose(torch.cov(xk.T), C, atol=0.04)
    comp = gmm.component(1)
    assert mmd_permutation_pvalue(res.x[y == 1], comp.sample(n, torch.Generator().manual_seed(9)), n_perm=100) > 0.01


def test_cfg_scale1_recovers_the_conditional_and_larger_scales_sharpen():
    """Same x_T and noise for s in {0, 1, 4}: s = 0 is the mixture (fraction w_k in component k),
    s = 1 the component (moments), s = 4 pushes every sample into the component, shrinks the spread
    and moves the mean away from the other components."""
    gmm, sde = mixture_2d(), ss.VPSDE()
    exact = G.MixtureClassScore(gmm, sde)
    n, k = 1500, 1
    xT = sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(3))
    out = {}
    for s in (0.0, 1.0, 4.0):
        x = ss.sample(
            sde,
            G.ClassifierFreeGuidance(exact, s),
            x_T=xT,
            sampler="reverse_diffusion",
            steps=300,
            cond=k,
            generator=torch.Generator().manual_seed(4),
        ).x
        frac = (gmm.responsibilities(x).argmax(1) == k).double().mean().item()
        out[s] = (x, frac, torch.cov(x.T).trace().item())
    assert abs(out[0.0][1] - gmm.weights[k].item()) < 0.05
    x1 = out[1.0][0]
    m, C = gmm.component(k).moments()
    assert out[1.0][1] >= 0.98
    assert ((x1.mean(0) - m).abs() < 4 * torch.sqrt(torch.diagonal(C) / n)).all()
    assert torch.allclose(torch.cov(x1.T), C, atol=0.04)
    assert out[4.0][1] >= out[1.0][1] and out[4.0][2] < out[1.0][2]
    shift = out[4.0][0].mean(0) - x1.mean(0)
    assert shift @ (m - gmm.moments()[0]) > 0


# ---- imputation and colorization ------------------------------------------------------------


def test_mixture_conditional_is_bayes_rule():
    gmm = random_mixture(4, 3, seed=2)
    mask = torch.tensor([True, False, True, False])
    y = gmm.sample(1, torch.Generator().manual_seed(0))[0]
    cm = G.mixture_conditional(gmm, mask, y)
    sel = torch.eye(4)[mask]
    marg = G.transform_mixture(gmm, sel)  # the law of the known coordinates
    xu = cm.sample(50) + 0.3 * torch.randn(50, 2)
    full = torch.empty(50, 4)
    full[:, mask], full[:, ~mask] = y[mask], xu
    lhs = cm.log_prob(xu)
    rhs = gmm.log_prob(full) - marg.log_prob(y[mask][None]).expand(50)
    assert torch.allclose(lhs, rhs, atol=1e-10)


@pytest.mark.parametrize("sampler", ["pc", "probability_flow"])
def test_imputation_2d_known_exact_and_imputed_close_to_the_exact_conditional(sampler):
    """Known entries come back exactly; the imputed coordinate is compared with p(x_2 | x_1 = y_1).

    The replacement method is an approximation (Song et al. 2021, App. I.2) whose bias is reported by
    benchmarks/digits_conditional.py: with PC (Langevin corrector at each time) it is small, with the
    bare fixed-step PF ODE it is large, but the imputed spread still shrinks well below the
    unconditional one."""
    gmm, sde = mixture_2d(), ss.VPSDE()
    mask = torch.tensor([True, False])
    y = torch.tensor([1.5, 0.0])
    cm = G.mixture_conditional(gmm, mask, y)
    n = 1500
    res = G.impute(
        sde,
        gmm.score_fn(sde),
        y,
        mask,
        shape=(n, 2),
        sampler=sampler,
        steps=400,
        generator=torch.Generator().manual_seed(5),
    )
    assert torch.equal(res.x[:, 0], torch.full((n,), 1.5))
    m, C = cm.moments()
    m0, C0 = gmm.moments()
    if sampler == "pc":
        assert (res.x[:, 1].mean() - m[0]).abs() < 0.1
        assert abs(res.x[:, 1].var().item() - C[0, 0].item()) < 0.1
    else:
        assert res.x[:, 1].var() < 0.7 * C0[1, 1]


def test_imputation_4d_pc_matches_the_exact_conditional():
    gmm, sde = random_mixture(4, 3, seed=1), ss.VPSDE()
    mask = torch.tensor([True, False, True, False])
    y = gmm.sample(1, torch.Generator().manual_seed(0))[0]
    cm = G.mixture_conditional(gmm, mask, y)
    n = 1200
    res = G.impute(
        sde,
        gmm.score_fn(sde),
        y,
        mask,
        shape=(n, 4),
        sampler="pc",
        steps=300,
        snr=0.16,
        generator=torch.Generator().manual_seed(6),
    )
    assert torch.equal(res.x[:, mask], y[mask].expand(n, 2))
    m, C = cm.moments()
    xu = res.x[:, ~mask]
    assert (xu.mean(0) - m).norm() < 0.1
    assert torch.allclose(torch.cov(xu.T), C, atol=0.05)
    assert mmd_permutation_pvalue(xu, cm.sample(n, torch.Generator().manual_seed(1)), n_perm=100) > 0.01


def test_mixture_posterior_samples_the_conditional():
    """The oracle sampler: the exact score of x_0 | x_k = y samples p(x_u | y) (a check of the oracle)."""
    gmm, sde = mixture_2d(), ss.VPSDE()
    mask, y = torch.tensor([True, False]), torch.tensor([0.3, 0.0])
    post, cm = G.mixture_posterior(gmm, mask, y), G.mixture_conditional(gmm, mask, y)
    res = ss.sample(
        sde,
        post.score_fn(sde),
        shape=(1500, 2),
        sampler="reverse_diffusion",
        steps=400,
        generator=torch.Generator().manual_seed(7),
    )
    assert (res.x[:, 0] - 0.3).abs().max() < 0.05
    assert (res.x[:, 1].mean() - cm.moments()[0][0]).abs() < 0.06


def test_imputation_hook_with_fixed_noise_on_the_fixed_step_ode():
    gmm, sde = mixture_2d(), ss.VPSDE()
    mask, y = torch.tensor([False, True]), torch.tensor([0.0, 2.5])
    a = G.impute(
        sde,
        gmm.score_fn(sde),
        y,
        mask,
        shape=(64, 2),
        sampler="probability_flow",
        steps=50,
        generator=torch.Generator().manual_seed(0),
    )
    b = G.impute(
        sde,
        gmm.score_fn(sde),
        y,
        mask,
        shape=(64, 2),
        sampler="probability_flow",
        steps=50,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(a.x, b.x) and torch.equal(a.x[:, 1], torch.full((64,), 2.5))
    assert a.nfe == 50


def test_colorization_keeps_the_gray_image_and_imputes_colour():
    """Colour images [B, 3, 1, 2] from a 6-D mixture: gray = channel mean is kept exactly, and the
    two colour channels (decoupled basis) follow the exact conditional."""
    gmm = random_mixture(6, 2, seed=4, scale=1.5)
    gmm = ss.GaussianMixture(gmm.weights, gmm.means, gmm.covs, event_shape=(3, 1, 2))
    sde = ss.VPSDE()
    M = G.COLOR_DECOUPLE
    assert torch.allclose(M.T @ M, torch.eye(3), atol=1e-15)
    A = G.decouple_colors(torch.eye(6).reshape(6, 3, 1, 2)).reshape(6, 6).T  # u_flat = A x_flat
    x_true = gmm.sample(1, torch.Generator().manual_seed(2))
    gray = x_true.mean(1)  # [1, 1, 2]
    n = 1200
    res = G.colorize(
        sde,
        gmm.score_fn(sde),
        gray.expand(n, 1, 2),
        sampler="pc",
        steps=400,
        generator=torch.Generator().manual_seed(8),
    )
    assert res.x.shape == (n, 3, 1, 2)
    assert torch.allclose(res.x.mean(1), gray.expand(n, 1, 2), atol=1e-12)
    gm_u = G.transform_mixture(gmm, A)
    mask_u = torch.zeros(3, 1, 2, dtype=torch.bool)
    mask_u[0] = True
    cm = G.mixture_conditional(gm_u, mask_u.flatten(), (A @ x_true.flatten()))
    u = G.decouple_colors(res.x).reshape(n, -1)[:, ~mask_u.flatten()]
    m, C = cm.moments()
    assert (u.mean(0) - m).norm() < 0.15
    assert torch.allclose(torch.cov(u.T), C, atol=0.06)


# ---- noisy classifier training --------------------------------------------------------------


class TinyClassifier(torch.nn.Module):
    def __init__(self, d, k):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(d + 1, 64), torch.nn.SiLU(), torch.nn.Linear(64, k))

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None]], 1))


def test_train_noisy_classifier_approaches_the_exact_classifier():
    torch.manual_seed(0)
    gmm, sde = mixture_2d(), ss.VPSDE()
    x, y = gmm.sample(3000, torch.Generator().manual_seed(0), return_labels=True)
    clf = TinyClassifier(2, 3)
    losses = G.train_noisy_classifier(
        clf, sde, x, y, steps=400, batch_size=256, lr=1e-2, generator=torch.Generator().manual_seed(1)
    )
    assert sum(losses[-50:]) / 50 < sum(losses[:50]) / 50
    xt, yt = gmm.sample(2000, torch.Generator().manual_seed(2), return_labels=True)
    times = [0.01, 0.3, 0.6, 1.0]
    acc = G.accuracy_vs_noise(clf, sde, xt, yt, times, generator=torch.Generator().manual_seed(3))
    exact = G.accuracy_vs_noise(
        G.mixture_classifier(gmm, sde), sde, xt, yt, times, generator=torch.Generator().manual_seed(3)
    )
    assert acc[0] > 0.95 and (acc[:3] - exact[:3]).abs().max() < 0.03
    assert acc[-1] < 0.6  # about the majority-class rate (0.5) at t = T, where x_T carries no label


# ---- bad input --------------------------------------------------------------------------------


def test_label_out_of_range():
    gmm, sde = mixture_2d(), ss.VPSDE()
    x, t = torch.randn(4, 2), torch.full((4,), 0.5)
    with pytest.raises(ValueError, match=r"label 5 is out of range.*\[0, 3\)"):
        G.ClassifierFreeGuidance(G.MixtureClassScore(gmm, sde), 2.0)(x, t, 5)
    with pytest.raises(ValueError, match=r"label -1 is out of range"):
        G.ClassifierFreeGuidance(G.MixtureClassScore(gmm, sde), 2.0)(x, t, torch.tensor([0, 1, -1, 2]))
    with pytest.raises(ValueError, match=r"label 3 is out of range"):
        G.ClassifierGuidance(gmm.score_fn(sde), G.mixture_classifier(gmm, sde))(x, t, 3)
    with pytest.raises(TypeError, match="integer tensor"):
        G.ClassifierFreeGuidance(G.MixtureClassScore(gmm, sde), 2.0)(x, t, torch.tensor([0.0, 1.0, 1.0, 2.0]))


def test_mask_of_the_wrong_shape():
    gmm, sde = mixture_2d(), ss.VPSDE()
    with pytest.raises(ValueError, match=r"mask has shape \(3,\).*\(2,\)"):
        G.impute(sde, gmm.score_fn(sde), torch.zeros(2), torch.tensor([True, False, True]), shape=(8, 2), steps=5)
    with pytest.raises(ValueError, match=r"mask has shape \(2, 2\)"):
        G.impute(sde, gmm.score_fn(sde), torch.zeros(2, 2), torch.ones(2, 2, dtype=torch.bool), shape=(8, 2), steps=5)
    with pytest.raises(ValueError, match="only 0 and 1"):
        G.Observation(torch.zeros(2), torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="mask must hold D = 2"):
        G.mixture_conditional(gmm, torch.tensor([True, False, True]), torch.zeros(2))


def test_guidance_of_a_model_without_conditioning():
    sde = ss.VPSDE()

    class Net(torch.nn.Module):
        def forward(self, x, t):
            return x

    with pytest.raises(ValueError, match="needs a conditional model.*Net declares neither num_classes"):
        G.ClassifierFreeGuidance(ss.ScoreModel(Net(), sde), 2.0)
    with pytest.raises(ValueError, match="takes no cond argument"):
        G.ClassifierFreeGuidance(lambda x, t: -x, 2.0)
    Net.num_classes = 10  # a conditional network declares its classes
    cfg = G.ClassifierFreeGuidance(ss.ScoreModel(Net(), sde), 2.0)
    assert cfg.num_classes == 10 and cfg.null_label == 10


def test_other_bad_guidance_input():
    gmm, sde = mixture_2d(), ss.VPSDE()
    exact = G.MixtureClassScore(gmm, sde)
    with pytest.raises(ValueError, match="scale = nan"):
        G.ClassifierFreeGuidance(exact, math.nan)
    with pytest.raises(ValueError, match=r"interval = \(0.6, 0.3\)"):
        G.ClassifierFreeGuidance(exact, 2.0, interval=(0.6, 0.3))
    with pytest.raises(ValueError, match="needs a condition"):
        G.ClassifierFreeGuidance(exact, 2.0)(torch.randn(2, 2), 0.5, None)
    with pytest.raises(ValueError, match=r"drop probability p must lie in \[0, 1\]; got p = 1.5"):
        G.drop_condition(torch.zeros(3, dtype=torch.long), 1.5, 10)
    from score_sde.solvers.api import SAMPLERS, register_sampler

    register_sampler("_adaptive_test", solve=lambda *a, **k: None)
    try:
        with pytest.raises(ValueError, match="adaptive back-end"):
            G.impute(
                sde,
                gmm.score_fn(sde),
                torch.zeros(2),
                torch.tensor([True, False]),
                shape=(4, 2),
                sampler="_adaptive_test",
            )
    finally:
        SAMPLERS.pop("_adaptive_test")
    with pytest.raises(ValueError, match="orthogonal"):
        G.Observation(torch.zeros(3, 1, 1), torch.ones(3, 1, 1), transform=2 * torch.eye(3))


def test_train_classifier_command(tmp_path):
    pytest.importorskip("sklearn")
    from score_sde.cli import main
    from score_sde.guidance_cli import load_noisy_classifier

    wd = tmp_path / "clf"
    assert main(["train-classifier", "--workdir", str(wd), "--steps", "30", "--arch", "mlp", "--n-times", "3"]) == 0
    rows = (wd / "accuracy_vs_noise.csv").read_text().strip().splitlines()
    assert rows[0] == "t,sigma,accuracy" and len(rows) == 4
    clf, sde = load_noisy_classifier(str(wd / "classifier.pt"))
    assert isinstance(sde, ss.VPSDE)
    assert clf(torch.zeros(5, 1, 8, 8), torch.full((5,), 0.5)).shape == (5, 10)
    assert main(["train-classifier", "--workdir", str(wd), "--data", "nope", "--steps", "1"]) == 2  # unknown data


@pytest.mark.parametrize("sampler", ["ode", "sde"])
def test_guidance_is_a_score_transform_for_the_adaptive_back_ends(sampler):
    """Guided scores are plain score functions: the adaptive PF-ODE / torchsde back-ends take them."""
    gmm, sde = mixture_2d(), ss.VPSDE()
    cg = G.ClassifierGuidance(gmm.score_fn(sde), G.mixture_classifier(gmm, sde), 1.0)
    cfg = G.ClassifierFreeGuidance(G.MixtureClassScore(gmm, sde), 1.0)
    opts = {"dt": 0.01} if sampler == "sde" else {}
    xT = sde.prior_sampling((400, 2), generator=torch.Generator().manual_seed(0))
    a = ss.sample(sde, cg, x_T=xT, sampler=sampler, cond=2, generator=torch.Generator().manual_seed(1), **opts).x
    b = ss.sample(sde, cfg, x_T=xT, sampler=sampler, cond=2, generator=torch.Generator().manual_seed(1), **opts).x
    assert torch.allclose(a, b, atol=1e-6)
    assert (gmm.responsibilities(a).argmax(1) == 2).double().mean() >= 0.98
    assert (a.mean(0) - gmm.means[2]).norm() < 0.1


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "heun"])
def test_imputation_hook_wraps_the_fast_solvers(sampler):
    gmm, sde = mixture_2d(), ss.VPSDE()
    mask, y = torch.tensor([True, False]), torch.tensor([1.5, 0.0])
    res = G.impute(sde, gmm.score_fn(sde), y, mask, shape=(300, 2), sampler=sampler, steps=20)
    plain = ss.sample(sde, gmm.score_fn(sde), shape=(2, 2), sampler=sampler, steps=20)
    assert res.nfe == plain.nfe
    assert torch.equal(res.x[:, 0], torch.full((300,), 1.5))
    assert res.x[:, 1].var() < 0.7 * gmm.moments()[1][1, 1]


def _digits_part_b(tmp_path, sizes=None):
    """benchmarks/digits_conditional.py's part B in its fast setting (``sizes``: smaller still)."""
    pytest.importorskip("sklearn")
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    import digits_conditional as bench

    old = torch.get_default_dtype()
    try:
        return bench.part_b(fast=True, results=str(tmp_path), sizes=sizes)
    finally:
        torch.set_default_dtype(old)


def test_digits_conditional_runs(tmp_path):
    """The digits acceptance's code end to end at smoke scale (20 training steps, 10 sampling steps): every
    number is produced and in range, inpainting keeps the known pixels exactly, the PNGs are written. The
    accuracy claims are :func:`test_digits_conditional_generation` (slow)."""
    out = _digits_part_b(tmp_path, dict(steps_train=20, steps_sample=10, per_class=10, n_in=10))
    assert out["clean_classifier_test_accuracy"] > 0.9  # the judge does not depend on the trained models
    for key in ("cfg", "classifier_guidance"):
        assert [r["scale"] for r in out[key]] == ([0.0, 1.0, 2.0, 3.0] if key == "cfg" else [0.0, 1.0, 2.0, 4.0])
        assert all(0 <= r["accuracy"] <= 1 for r in out[key])
    acc = out["accuracy_vs_noise"]["noise_conditional"]
    assert len(acc) == 21 and all(0 <= a <= 1 for a in acc)
    assert out["inpainting"]["known_exact"]
    for name in ("cfg", "classifier", "inpainting"):
        assert (tmp_path / f"guidance_digits_{name}.png").stat().st_size > 1000


# about 20 s on an idle 2-core machine (54 s on the CI machine): trains three models for accuracy claims
@pytest.mark.slow
def test_digits_conditional_generation(tmp_path):
    """The digits acceptance (benchmarks/digits_conditional.py, its fast setting, about a minute):
    a clean logistic-regression classifier labels >= 90% of classifier-free-guided and of
    classifier-guided samples as the requested class; inpainting keeps the known pixels; the noisy
    classifier's accuracy falls from clean-data level to chance as the noise grows."""
    out = _digits_part_b(tmp_path)
    assert out["clean_classifier_test_accuracy"] > 0.9
    cfg = {r["scale"]: r["accuracy"] for r in out["cfg"]}
    cg = {r["scale"]: r["accuracy"] for r in out["classifier_guidance"]}
    assert cfg[0.0] < 0.3 and cfg[1.0] >= 0.9 and cfg[2.0] >= 0.9
    assert cg[0.0] < 0.3 and cg[4.0] >= 0.9
    acc = out["accuracy_vs_noise"]["noise_conditional"]
    assert acc[0] > 0.9 and acc[-1] < 0.25
    assert out["inpainting"]["known_exact"]
    for name in ("cfg", "classifier", "inpainting"):
        assert (tmp_path / f"guidance_digits_{name}.png").stat().st_size > 1000


def test_cfg_reads_the_conditioning_of_the_package_nets():
    from score_sde.nets import MLPScoreNet

    sde = ss.VPSDE()
    cfg = G.ClassifierFreeGuidance(ss.ScoreModel(MLPScoreNet(2, hidden=16, depth=1, num_classes=4), sde), 2.0)
    assert (cfg.num_classes, cfg.null_label) == (4, 4)
    x, t = torch.randn(3, 2), torch.full((3,), 0.5)
    assert cfg(x, t, torch.tensor([0, 3, 1])).shape == (3, 2)
    with pytest.raises(ValueError, match="label 4 is out of range"):
        cfg(x, t, 4)
    vec = G.ClassifierFreeGuidance(ss.ScoreModel(MLPScoreNet(2, hidden=16, depth=1, cond_dim=5), sde), 2.0)
    assert vec.context_dim == 5 and vec(x, t, torch.randn(3, 5)).shape == (3, 2)
    with pytest.raises(ValueError, match="declares neither"):
        G.ClassifierFreeGuidance(ss.ScoreModel(MLPScoreNet(2, hidden=16, depth=1), sde), 2.0)


def test_imputation_step_replaces_x_and_its_mean_at_t_next():
    """One hooked step: known x = alpha(t_next) y + sigma(t_next) z, known mean = alpha(t_next) y, the
    unknown entries keep the wrapped stepper's own x and mean (not the noisy x, unlike the official code)."""
    from score_sde.solvers.base import Context, CountingScore
    from score_sde.solvers.predictors import ReverseDiffusion

    gmm, sde = mixture_2d(), ss.VPSDE()
    mask, y = torch.tensor([True, False]), torch.tensor([0.7, 0.0])
    hook = G.ImputationStepper(ReverseDiffusion(), G.Observation(y, mask))
    x = torch.randn(5, 2)
    t, t_next = torch.tensor(0.5), torch.tensor(0.49)

    def ctx(seed):
        return Context(sde, CountingScore(gmm.score_fn(sde)), generator=torch.Generator().manual_seed(seed))

    c = ctx(0)
    hook.init(c, x)
    out = hook.step(c, x, t, t_next, 1, last=False)
    c2 = ctx(0)
    ref = ReverseDiffusion().step(c2, x, t, t_next, 1, last=False)
    z = c2.randn_like(x)  # the hook's draw comes right after the stepper's own
    a, s = sde.alpha(t_next), sde.sigma(t_next)
    assert torch.allclose(out.mean[:, 0], (a * 0.7).expand(5))
    assert torch.allclose(out.x[:, 0], a * 0.7 + s * z[:, 0])
    assert torch.equal(out.mean[:, 1], ref.mean[:, 1]) and torch.equal(out.x[:, 1], ref.x[:, 1])
    last = hook.step(ctx(1), x, t, t_next, 1, last=True)
    assert torch.equal(last.x[:, 0], torch.full((5,), 0.7)) and torch.equal(last.mean[:, 0], last.x[:, 0])


def test_cfg_outside_its_interval_calls_only_the_conditional_model():
    gmm, sde = mixture_2d(), ss.VPSDE()
    exact = G.MixtureClassScore(gmm, sde)
    cfg = G.ClassifierFreeGuidance(exact, 3.0, interval=(0.5, 0.8))
    x, t = torch.randn(4, 2), torch.full((4,), 0.2)
    assert torch.allclose(cfg(x, t, 1), exact(x, t, 1)) and cfg.network_calls == 1
    with pytest.raises(ValueError, match=r"context must have shape \[B, ...\] with B = 4; got \(3, 2\)"):
        G.ClassifierFreeGuidance(lambda x, t, c: x, 2.0)(x, t, torch.zeros(3, 2))
