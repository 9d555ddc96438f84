"""Score networks: shapes, time-embedding properties, conditioning, gradient flow, errors."""

import math

import pytest
import torch

import score_sde as ss
from score_sde.nets import (
    NETS,
    GaussianFourierProjection,
    MLPScoreNet,
    NoiseConditionalClassifier,
    SinusoidalEmbedding,
    UNet,
    build_net,
)
from score_sde.nets.unet import AttnBlock, ResnetBlockBigGAN, ResnetBlockDDPM


def small_unet(**kw):
    base = dict(
        in_channels=1, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), resolution=8, dropout=0.0
    )
    base.update(kw)
    return UNet(**base)


# ---- embeddings ---------------------------------------------------------------------------------------
def test_sinusoidal_matches_the_seed_formula():
    d = 16
    emb = SinusoidalEmbedding(d)
    t = torch.tensor([0.0, 1.0, 17.0, 999.0])
    out = emb(t)
    assert out.shape == (4, d)
    for i in range(d // 2):
        w = 10000.0 ** (-2 * i / d)
        torch.testing.assert_close(out[:, 2 * i], torch.sin(t * w), rtol=0, atol=1e-12)
        torch.testing.assert_close(out[:, 2 * i + 1], torch.cos(t * w), rtol=0, atol=1e-12)


def test_sinusoidal_concat_layout_is_the_official_one():
    d = 10
    emb = SinusoidalEmbedding(d, layout="concat")
    t = torch.tensor([3.0, 250.0])
    half = d // 2
    w = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / (half - 1))
    ref = torch.cat([torch.sin(t[:, None] * w), torch.cos(t[:, None] * w)], 1)
    torch.testing.assert_close(emb(t), ref)


def test_sinusoidal_properties():
    emb = SinusoidalEmbedding(64)
    t = torch.linspace(0, 1000, 101)
    e = emb(t)
    # each (sin, cos) pair lies on the unit circle: ||PE(t)||^2 = d/2 for every t
    torch.testing.assert_close(e.pow(2).sum(1), torch.full((101,), 32.0))
    # distinct times get distinct embeddings, and nearby times nearby embeddings
    d = torch.cdist(e, e)
    assert d[~torch.eye(101, dtype=torch.bool)].min() > 0.1
    assert (emb(torch.tensor([500.0])) - emb(torch.tensor([500.01]))).norm() < 0.02
    # integer labels are accepted; an odd dim is padded with a zero feature
    torch.testing.assert_close(emb(torch.tensor([3])), emb(torch.tensor([3.0])))
    odd = SinusoidalEmbedding(7)(torch.tensor([1.0, 2.0]))
    assert odd.shape == (2, 7) and (odd[:, -1] == 0).all()


def test_fourier_features():
    g = torch.Generator().manual_seed(0)
    emb = GaussianFourierProjection(256, scale=16.0, generator=g)
    assert emb.W.shape == (128,) and not any(p is emb.W for p in emb.parameters())  # fixed, not trained
    assert abs(emb.W.std().item() - 16.0) < 3.0
    s = torch.tensor([-2.0, 0.5])
    out = emb(s)
    ref = torch.cat([torch.sin(2 * math.pi * s[:, None] * emb.W), torch.cos(2 * math.pi * s[:, None] * emb.W)], 1)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(out.pow(2).sum(1), torch.full((2,), 128.0))
    assert "W" in emb.state_dict()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: SinusoidalEmbedding(1), "dim"),
        (lambda: SinusoidalEmbedding(8, layout="zigzag"), "layout"),
        (lambda: SinusoidalEmbedding(8, max_period=-1.0), "max_period"),
        (lambda: GaussianFourierProjection(7), "even"),
        (lambda: GaussianFourierProjection(8, scale=0.0), "scale"),
        (lambda: SinusoidalEmbedding(8)(torch.zeros(2, 2)), "labels"),
    ],
)
def test_embedding_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---- MLP ----------------------------------------------------------------------------------------------
def test_mlp_shapes_and_flattening():
    net = MLPScoreNet(2, hidden=32, depth=2, emb_dim=16)
    x = torch.randn(5, 2)
    assert net(x, torch.rand(5)).shape == (5, 2)
    assert net(x, 0.3).shape == (5, 2)  # a scalar label is broadcast
    net4 = MLPScoreNet(4, hidden=32, depth=1, emb_dim=16)
    x4 = torch.randn(3, 1, 2, 2)
    t4 = torch.rand(3)
    out = net4(x4, t4)
    assert out.shape == x4.shape
    torch.testing.assert_close(out.reshape(3, 4), net4(x4.reshape(3, 4), t4))


def test_mlp_depends_on_time_and_is_batch_independent():
    net = MLPScoreNet(3, hidden=32, depth=2, emb_dim=16)
    x = torch.randn(1, 3).expand(4, 3)
    out = net(x, torch.tensor([0.1, 0.2, 0.5, 0.9]))
    assert (out[1:] - out[:1]).abs().max() > 1e-4  # time changes the output
    xb = torch.randn(6, 3)
    tb = torch.rand(6)
    torch.testing.assert_close(net(xb, tb)[2:3], net(xb[2:3], tb[2:3]))


def test_mlp_fourier_embedding_uses_log_labels():
    net = MLPScoreNet(2, hidden=16, depth=1, emb_dim=16, embedding="fourier")
    assert net(torch.randn(2, 2), torch.tensor([0.01, 50.0])).shape == (2, 2)
    with pytest.raises(ValueError, match="positive"):
        net(torch.randn(2, 2), torch.tensor([0.0, 1.0]))


def test_mlp_class_conditioning_and_null_class():
    net = MLPScoreNet(2, hidden=32, depth=2, emb_dim=16, num_classes=3)
    x, t = torch.randn(4, 2), torch.rand(4)
    y = torch.tensor([0, 1, 2, 1])
    out = net(x, t, y)
    assert out.shape == (4, 2)
    assert (out - net(x, t, torch.tensor([2, 0, 1, 0]))).abs().max() > 1e-5  # the label matters
    torch.testing.assert_close(net(x, t), net(x, t, torch.full((4,), 3)))  # cond=None == null class K
    with pytest.raises(ValueError, match="0..3"):
        net(x, t, torch.tensor([0, 1, 4, 1]))
    with pytest.raises(ValueError, match="integer class labels"):
        net(x, t, torch.rand(4))


def test_mlp_vector_conditioning():
    net = MLPScoreNet(2, hidden=16, depth=1, emb_dim=16, cond_dim=5)
    x, t = torch.randn(3, 2), torch.rand(3)
    assert net(x, t, torch.randn(3, 5)).shape == (3, 2)
    assert net(x, t).shape == (3, 2)  # learned null vector
    with pytest.raises(ValueError, match="cond_dim"):
        net(x, t, torch.randn(3, 4))
    with pytest.raises(ValueError, match="either num_classes or cond_dim"):
        MLPScoreNet(2, num_classes=3, cond_dim=4)
    with pytest.raises(ValueError, match="unconditional"):
        MLPScoreNet(2, hidden=8, emb_dim=8)(x, t, torch.tensor([0, 1, 0]))


def test_mlp_gradients_reach_every_parameter():
    net = MLPScoreNet(2, hidden=16, depth=2, emb_dim=8, num_classes=2)
    loss = net(torch.randn(8, 2), torch.rand(8), torch.tensor([0, 1] * 4)).pow(2).sum()
    loss.backward()
    for name, p in net.named_parameters():
        if name == "cond.class_embed.weight":  # the null row (index 2) gets no gradient from labelled data
            assert p.grad[:2].abs().sum() > 0
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(dim=0), "dim"),
        (dict(dim=2, hidden=0), "hidden"),
        (dict(dim=2, act="sigmoidal"), "act"),
        (dict(dim=2, embedding="wavelet"), "embedding"),
        (dict(dim=2, label_scale=-1.0), "label_scale"),
    ],
)
def test_mlp_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        MLPScoreNet(**kw)


def test_mlp_bad_inputs():
    net = MLPScoreNet(2, hidden=8, depth=1, emb_dim=8)
    with pytest.raises(ValueError, match=r"\[B, 2\]"):
        net(torch.randn(3, 3), torch.rand(3))
    with pytest.raises(ValueError, match="labels"):
        net(torch.randn(3, 2), torch.rand(4))


# ---- U-Net ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("resblock", ["ddpm", "biggan"])
@pytest.mark.parametrize("embedding", ["sinusoidal", "fourier"])
def test_unet_shapes_8x8(resblock, embedding):
    net = small_unet(resblock=resblock, embedding=embedding)
    x = torch.randn(3, 1, 8, 8)
    labels = torch.rand(3) + 0.01
    out = net(x, labels)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_unet_28x28_pads_and_crops():
    net = UNet(in_channels=1, ch=8, ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=(16,), resolution=28)
    assert net.all_resolutions == [32, 16, 8, 4]
    assert sum(isinstance(m, AttnBlock) for m in net.all_modules) == 3  # down @16, middle, up @16
    x = torch.randn(2, 1, 28, 28)
    out = net(x, torch.rand(2))
    assert out.shape == (2, 1, 28, 28)
    # odd, non-square sizes work too, and the output channels can differ
    net2 = small_unet(in_channels=3, out_channels=2, resolution=7)
    assert net2(torch.randn(2, 3, 7, 9), torch.rand(2)).shape == (2, 2, 7, 9)


def test_unet_is_per_sample():
    torch.manual_seed(1)
    net = small_unet(init_scale=1.0).eval()
    x, t = torch.randn(4, 1, 8, 8), torch.rand(4)
    torch.testing.assert_close(net(x, t)[1:2], net(x[1:2], t[1:2]))
    # time conditioning matters
    assert (net(x[:1], torch.tensor([0.1])) - net(x[:1], torch.tensor([0.9]))).abs().max() > 1e-4


def test_unet_block_structure_follows_ddpmpp():
    net = small_unet(num_res_blocks=2, resblock="ddpm")
    kinds = [type(m).__name__ for m in net.all_modules]
    # dense x2, conv_in, [res, res, down], [res, attn, res, attn], mid (res, attn, res),
    # up level 1: 3 res + attn + upsample, level 0: 3 res, norm, conv_out
    assert kinds[:3] == ["Linear", "Linear", "Conv2d"]
    assert kinds[-2:] == ["GroupNorm", "Conv2d"]
    assert kinds.count("ResnetBlockDDPM") == 2 * 2 + 2 + 3 * 2
    assert kinds.count("Downsample") == 1 and kinds.count("Upsample") == 1
    big = small_unet(num_res_blocks=2, resblock="biggan", embedding="fourier")
    bk = [type(m).__name__ for m in big.all_modules]
    assert bk[0] == "GaussianFourierProjection"  # official all_modules[0] for NCSN++
    assert bk.count("ResnetBlockBigGAN") == 2 * 2 + 1 + 2 + 3 * 2 + 1
    res = next(m for m in big.all_modules if isinstance(m, ResnetBlockBigGAN))
    assert {"GroupNorm_0", "Conv_0", "Dense_0", "GroupNorm_1", "Dropout_0", "Conv_1"} <= set(dict(res.named_children()))
    assert isinstance(
        next(m for m in net.all_modules if isinstance(m, ResnetBlockDDPM)).GroupNorm_0, torch.nn.GroupNorm
    )


def test_unet_skip_rescale_and_residual_block_math():
    torch.manual_seed(0)
    blk = ResnetBlockDDPM(torch.nn.SiLU(), 8, 8, temb_dim=4, dropout=0.0, skip_rescale=True, init_scale=1.0)
    x, e = torch.randn(2, 8, 4, 4), torch.randn(2, 4)
    act = torch.nn.functional.silu
    h = blk.Conv_0(act(blk.GroupNorm_0(x))) + blk.Dense_0(act(e))[:, :, None, None]
    h = blk.Conv_1(act(blk.GroupNorm_1(h)))
    torch.testing.assert_close(blk(x, e), (x + h) / math.sqrt(2))


def test_unet_init_scale_zero_starts_near_zero():
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    small = small_unet()(x, t).abs().max()
    full = small_unet(init_scale=1.0)(x, t).abs().max()
    # the last conv starts with variance scale 1e-10 (weights ~1e-5 std), as in the official code
    assert small < 1e-3 < 1e-1 < full


def test_unet_class_and_cross_attention_conditioning():
    torch.manual_seed(0)
    net = small_unet(num_classes=10, context_dim=6, init_scale=1.0).eval()
    assert len(net.cross_modules) == 3  # after each self-attention
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    y = torch.tensor([3, 7])
    ctx = torch.randn(2, 5, 6)
    out = net(x, t, y, context=ctx)
    assert out.shape == x.shape
    assert (out - net(x, t, torch.tensor([4, 1]), context=ctx)).abs().max() > 1e-5
    assert (out - net(x, t, y, context=torch.randn(2, 5, 6))).abs().max() > 1e-5
    torch.testing.assert_close(net(x, t), net(x, t, torch.tensor([10, 10])))  # null class
    # a masked-out context token has no influence
    mask = torch.tensor([[True] * 4 + [False]] * 2)
    ctx2 = ctx.clone()
    ctx2[:, 4] = 100.0
    torch.testing.assert_close(
        net(x, t, y, context=ctx, context_mask=mask), net(x, t, y, context=ctx2, context_mask=mask)
    )
    # gradients flow into the context
    ctx.requires_grad_(True)
    net(x, t, y, context=ctx).sum().backward()
    assert ctx.grad.abs().sum() > 0


def test_unet_gradients_reach_every_parameter():
    net = small_unet(num_classes=3, context_dim=4, resblock="biggan")
    out = net(torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([0, 1]), context=torch.randn(2, 3, 4))
    out.pow(2).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name == "cond.class_embed.weight":
            assert p.grad[:2].abs().sum() > 0
        else:
            assert p.grad.abs().sum() > 0, name  # nonzero even through the 1e-10 init (float64)


def test_unet_in_score_model_and_sampler():
    sde = ss.VESDE(0.01, 5.0, N=10)
    net = build_net("ncsnpp", in_channels=1, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), resolution=4)
    model = ss.ScoreModel(net, sde, prediction="eps", time_labels="sigma")
    res = ss.sample(sde, model, shape=(2, 1, 4, 4), sampler="reverse_diffusion", steps=3)
    assert res.x.shape == (2, 1, 4, 4) and torch.isfinite(res.x).all()


def test_unet_official_state_dict_roundtrip():
    a = small_unet(resblock="biggan", embedding="fourier")
    b = small_unet(resblock="biggan", embedding="fourier")
    official = {"module." + k: v.clone() for k, v in a.state_dict().items() if k.startswith("all_modules.")}
    official["module.sigmas"] = torch.ones(3)
    b.load_official_state_dict(official)
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2) + 0.1
    torch.testing.assert_close(a.eval()(x, t), b.eval()(x, t))
    bad = dict(official)
    bad.pop(next(iter(bad)))
    with pytest.raises(ValueError, match="missing"):
        b.load_official_state_dict(bad)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(ch_mult=()), "ch_mult"),
        (dict(ch_mult=(1, 0)), "ch_mult"),
        (dict(resblock="vgg"), "resblock"),
        (dict(dropout=1.5), "dropout"),
        (dict(ch=0), "ch"),
        (dict(embedding="wavelet"), "embedding"),
        (dict(attn_resolutions=(16,)), r"sizes \[8, 4\]"),
    ],
)
def test_unet_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        small_unet(**kw)


def test_unet_bad_inputs():
    net = small_unet(context_dim=4)
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        net(torch.randn(2, 3, 8, 8), torch.rand(2))
    with pytest.raises(ValueError, match="context must have shape"):
        net(torch.randn(2, 1, 8, 8), torch.rand(2), context=torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="no cross-attention"):
        small_unet()(torch.randn(2, 1, 8, 8), torch.rand(2), context=torch.randn(2, 3, 4))


# ---- build_net and the classifier ---------------------------------------------------------------------
def test_build_net_registry():
    assert set(NETS) >= {"mlp", "unet", "ddpmpp", "ncsnpp"}
    assert isinstance(build_net("mlp", dim=2, hidden=8, emb_dim=8), MLPScoreNet)
    nc = build_net("ncsnpp", in_channels=1, ch=8, ch_mult=(1,), resolution=4, attn_resolutions=())
    assert nc.embedding == "fourier" and nc.resblock == "biggan"
    dp = build_net("ddpmpp", in_channels=1, ch=8, ch_mult=(1,), resolution=4, attn_resolutions=(), resblock="ddpm")
    assert dp.resblock == "ddpm"  # user keywords override the kind's defaults
    with pytest.raises(ValueError, match="mlp"):
        build_net("transformer")
    with pytest.raises(TypeError, match="mlp"):
        build_net("mlp", dim=2, widht=3)


def test_noise_conditional_classifier():
    clf = NoiseConditionalClassifier((2,), num_classes=3, hidden=16, emb_dim=8)
    x, t = torch.randn(5, 2, requires_grad=True), torch.rand(5)
    logits = clf(x, t)
    assert logits.shape == (5, 3)
    # grad_x log p_t(y | x), the quantity classifier guidance adds to the score
    lp = torch.log_softmax(logits, -1)[torch.arange(5), torch.tensor([0, 1, 2, 0, 1])].sum()
    (g,) = torch.autograd.grad(lp, x)
    assert g.shape == x.shape and g.abs().sum() > 0
    img = NoiseConditionalClassifier((1, 8, 8), num_classes=10, ch=8, depth=2)
    assert img(torch.randn(3, 1, 8, 8), torch.rand(3)).shape == (3, 10)
    img7 = NoiseConditionalClassifier((3, 7, 7), num_classes=2, ch=8, depth=3)
    assert img7(torch.randn(2, 3, 7, 7), torch.rand(2)).shape == (2, 2)
    assert isinstance(build_net("classifier", shape=(2,), num_classes=2), NoiseConditionalClassifier)
    with pytest.raises(ValueError, match="shape"):
        NoiseConditionalClassifier((2, 2), num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        NoiseConditionalClassifier((2,), num_classes=1)
    with pytest.raises(ValueError, match=r"\[B, \*\(2,\)\]"):
        clf(torch.randn(5, 3), t)


def test_classifier_learns_a_noisy_label():
    """A few Adam steps on two separated blobs: the classifier beats chance at small t."""
    torch.manual_seed(0)
    sde = ss.VPSDE()
    clf = NoiseConditionalClassifier((2,), num_classes=2, hidden=32, emb_dim=16)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-2)
    for _ in range(60):
        y = torch.randint(0, 2, (128,))
        x0 = torch.randn(128, 2) * 0.3 + (2.0 * y - 1)[:, None] * torch.tensor([2.0, 0.0])
        t = torch.rand(128) * 0.5 + 1e-3
        xt, _ = sde.perturb(x0, t)
        loss = torch.nn.functional.cross_entropy(clf(xt, t), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    y = torch.randint(0, 2, (500,))
    x0 = torch.randn(500, 2) * 0.3 + (2.0 * y - 1)[:, None] * torch.tensor([2.0, 0.0])
    t = torch.full((500,), 0.05)
    xt, _ = sde.perturb(x0, t)
    acc = (clf(xt, t).argmax(-1) == y).double().mean().item()
    assert acc > 0.95


def test_nets_run_in_float32():
    mlp = MLPScoreNet(2, hidden=8, depth=1, emb_dim=8).float()
    assert mlp(torch.randn(3, 2, dtype=torch.float32), torch.rand(3, dtype=torch.float64)).dtype == torch.float32
    unet = small_unet(embedding="fourier").float()
    out = unet(torch.randn(2, 1, 8, 8, dtype=torch.float32), torch.rand(2, dtype=torch.float32) + 0.1)
    assert out.dtype == torch.float32
    from score_sde.training.losses import dsm_loss

    model = ss.ScoreModel(small_unet().float(), ss.VPSDE())
    loss = dsm_loss(model, torch.randn(2, 1, 8, 8, dtype=torch.float32), importance_sampling=True)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
