"""FD-digits: the Fréchet distance in the features of the project's digits classifier orders corruptions."""

import pytest
import torch

from score_sde.evaluation import feature_statistics, frechet_distance, kernel_distance, load_feature_net
from score_sde.evaluation.feature_nets import load_split, reference_features

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def fd_net(tmp_path_factory):
    # one cache folder for the whole session (tests/test_evaluate_cli.py uses the same one)
    torch.set_num_threads(1)
    return load_feature_net("fd-digits", cache_dir=tmp_path_factory.getbasetemp() / "score_sde_cache")


@pytest.fixture(scope="module")
def held_out():
    test = load_split("digits", "test")
    return test, test.dequantize(torch.Generator().manual_seed(1), torch.float32)


@pytest.fixture(scope="module")
def ref_stats(fd_net):
    return feature_statistics(reference_features(fd_net, "train"))


def _fd(fd_net, ref_stats, x):
    return frechet_distance(*feature_statistics(fd_net.features(x)), *ref_stats)


def _blur(x, s):
    if s == 0:
        return x
    r = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-(r**2) / (2 * s**2))
    k = k / k.sum()
    k2 = (k[:, None] * k[None, :])[None, None]
    return torch.nn.functional.conv2d(torch.nn.functional.pad(x + 1, (2, 2, 2, 2)), k2) - 1  # background stays -1


def test_feature_net_is_cached_with_its_accuracy(fd_net, tmp_path_factory):
    assert fd_net.test_accuracy > 0.9 and fd_net.path is not None
    again = load_feature_net("fd-digits", cache_dir=tmp_path_factory.getbasetemp() / "score_sde_cache", train=False)
    assert again.test_accuracy == fd_net.test_accuracy
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    assert torch.equal(again.features(x), fd_net.features(x))
    assert "FID" not in repr(fd_net) and fd_net.name == "fd-digits"
    with pytest.raises(ValueError, match="unknown feature net 'fid'"):
        load_feature_net("fid")
    with pytest.raises(ValueError, match=r"\[N, \*\(1, 8, 8\)\]"):
        fd_net.features(torch.zeros(3, 64))


def test_fd_digits_grows_with_blur_noise_and_dropped_classes(fd_net, held_out, ref_stats):
    test, x = held_out
    g = torch.Generator().manual_seed(2)
    blur = [_fd(fd_net, ref_stats, _blur(x, s)) for s in (0, 0.5, 0.8, 1.2)]
    noise = [_fd(fd_net, ref_stats, x + s * torch.randn(x.shape, generator=g)) for s in (0, 0.1, 0.25, 0.5)]
    drop = [_fd(fd_net, ref_stats, x[test.labels >= n]) for n in (0, 2, 4, 6)]
    print(f"FD-digits blur {blur}\nnoise {noise}\ndropped classes {drop}")
    for name, seq in (("blur", blur), ("noise", noise), ("dropped classes", drop)):
        assert all(a < b for a, b in zip(seq, seq[1:])), f"{name}: {seq}"


def test_gaussian_fit_scores_far_worse_than_held_out_digits(fd_net, held_out, ref_stats):
    _, x = held_out
    train = load_split("digits", "train").dequantize(torch.Generator().manual_seed(3), torch.float64).flatten(1)
    mu, cov = train.mean(0), torch.cov(train.T) + 1e-6 * torch.eye(64, dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    z = torch.randn(x.shape[0], 64, generator=g, dtype=torch.float64)
    fake = (mu + z @ torch.linalg.cholesky(cov).T).reshape(x.shape).float()
    fd_real, fd_fake = _fd(fd_net, ref_stats, x), _fd(fd_net, ref_stats, fake)
    ref_feats = reference_features(fd_net, "train")
    kid_real = kernel_distance(fd_net.features(x), ref_feats, subsets=20, subset_size=300)
    kid_fake = kernel_distance(fd_net.features(fake), ref_feats, subsets=20, subset_size=300)
    print(f"FD-digits held-out {fd_real:.3f}, Gaussian fit {fd_fake:.3f}")
    print(f"KID held-out {kid_real.value:.4f}, Gaussian fit {kid_fake.value:.4f}")
    assert fd_fake > 3 * fd_real
    assert kid_fake.value > 4 * max(kid_real.value, kid_real.stderr)
