"""Feature-space metrics: Fréchet distance, KID, precision/recall, statistics files, Inception set-up."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from score_sde.evaluation import (
    INCEPTION_WEIGHTS_FILE,
    INCEPTION_WEIGHTS_URL,
    feature_statistics,
    find_inception_weights,
    frechet_distance,
    inception_feature_extractor,
    inception_score,
    kernel_distance,
    load_reference_statistics,
    precision_recall,
    save_reference_statistics,
    sqrtm_psd,
    trace_sqrt_product,
)


def _rotation(d, seed):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


def _cov(eigs, seed):
    q = _rotation(len(eigs), seed)
    return (q * torch.as_tensor(eigs, dtype=torch.float64)) @ q.T


def test_frechet_distance_of_two_gaussians_equals_closed_form():
    # Commuting covariances Q diag(a) Q^T, Q diag(b) Q^T: FD = |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2.
    d = 20
    g = torch.Generator().manual_seed(0)
    a = torch.rand(d, generator=g, dtype=torch.float64) * 3 + 0.01
    b = torch.rand(d, generator=g, dtype=torch.float64) * 3 + 0.01
    mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    exact = float(((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())
    assert abs(frechet_distance(mu1, _cov(a, 1), mu2, _cov(b, 1)) - exact) < 1e-8
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2.
    fd = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-0.5]), np.array([[0.25]]))
    assert abs(fd - (1.5**2 + (2 - 0.5) ** 2)) < 1e-12


def test_frechet_distance_of_a_set_with_itself_is_zero():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(300, 64, generator=g, dtype=torch.float64) @ torch.randn(64, 64, generator=g, dtype=torch.float64)
    mu, sigma = feature_statistics(f)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8 * float(sigma.trace())
    # and with fewer samples than dimensions (a singular covariance)
    mu, sigma = feature_statistics(f[:20])
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8 * float(sigma.trace())


def test_feature_statistics_match_numpy():
    f = np.random.default_rng(0).normal(size=(50, 7))
    mu, sigma = feature_statistics(f)
    np.testing.assert_allclose(mu.numpy(), f.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(f, rowvar=False, ddof=1), rtol=1e-12)


@pytest.mark.parametrize("cond_exp", [4, 8, 12])
def test_matrix_square_root_against_scipy_on_ill_conditioned_covariances(cond_exp):
    d = 40
    s1 = _cov(np.logspace(-cond_exp, 0, d), 2)
    s2 = _cov(np.logspace(0, -cond_exp, d), 3)
    r = sqrtm_psd(s1)
    ref = scipy.linalg.sqrtm(s1.numpy()).real
    assert np.linalg.norm(r.numpy() - ref) < 1e-6 * np.linalg.norm(ref)
    assert torch.allclose(r @ r, s1, atol=1e-12)
    # tr((S1 S2)^{1/2}) against scipy's square root of the (non-symmetric) product, which itself loses
    # ~1e-8 relative at condition number 1e12 (see the high-precision test below)
    ref_tr = float(np.trace(scipy.linalg.sqrtm(s1.numpy() @ s2.numpy())).real)
    assert abs(trace_sqrt_product(s1, s2) - ref_tr) < 1e-7 * abs(ref_tr)


def test_trace_sqrt_product_against_40_digit_arithmetic():
    mp = pytest.importorskip("mpmath")  # installed with torch (through sympy)
    mp.mp.dps = 40
    d = 12
    s1 = _cov(np.logspace(-12, 0, d), 2)
    s2 = _cov(np.logspace(0, -12, d), 3)
    e1, v1 = mp.eigsy(mp.matrix(s1.numpy().tolist()))
    r1 = v1 * mp.diag([mp.sqrt(max(e, 0)) for e in e1]) * v1.T
    m = r1 * mp.matrix(s2.numpy().tolist()) * r1
    exact = float(sum(mp.sqrt(max(e, 0)) for e in mp.eigsy((m + m.T) / 2)[0]))
    assert abs(trace_sqrt_product(s1, s2) - exact) < 1e-13 * exact


def test_rank_deficient_covariances_stay_finite_and_agree_with_scipy():
    g = torch.Generator().manual_seed(4)
    f1 = torch.randn(30, 64, generator=g, dtype=torch.float64)
    f2 = torch.randn(30, 64, generator=g, dtype=torch.float64) + 0.3
    (m1, s1), (m2, s2) = feature_statistics(f1), feature_statistics(f2)
    fd = frechet_distance(m1, s1, m2, s2)
    covmean = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy()).real  # the pytorch-fid formula
    ref = float(((m1 - m2) ** 2).sum() + s1.trace() + s2.trace()) - 2 * np.trace(covmean)
    assert math.isfinite(fd) and fd > 0
    assert abs(fd - ref) < 1e-6 * abs(ref)


def _feature_pair(n=400, d=32, seed=5):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = 0.8 * torch.randn(n, d, generator=g, dtype=torch.float64) @ _rotation(d, seed) + 0.2
    return a, b


def test_fd_equals_torchmetrics():
    fid = pytest.importorskip("torchmetrics.image.fid", reason="optional: pip install 'score_sde[eval]'")
    a, b = _feature_pair()
    (m1, s1), (m2, s2) = feature_statistics(a), feature_statistics(b)
    ref = float(fid._compute_fid(m1, s1, m2, s2))
    assert abs(frechet_distance(m1, s1, m2, s2) - ref) < 1e-6


def test_fd_equals_torch_fidelity():
    try:
        from torch_fidelity.metric_fid import fid_statistics_to_metric
    except Exception as e:  # torch-fidelity is optional and needs a torchvision matching torch
        pytest.skip(f"optional torch-fidelity not importable: {e}")
    a, b = _feature_pair()
    (m1, s1), (m2, s2) = feature_statistics(a), feature_statistics(b)
    st1, st2 = {"mu": m1.numpy(), "sigma": s1.numpy()}, {"mu": m2.numpy(), "sigma": s2.numpy()}
    ref = fid_statistics_to_metric(st1, st2, verbose=False)["frechet_inception_distance"]
    assert abs(frechet_distance(m1, s1, m2, s2) - ref) < 1e-6


def test_kid_on_full_sets_equals_torchmetrics_and_is_unbiased():
    kid_mod = pytest.importorskip("torchmetrics.image.kid", reason="optional: pip install 'score_sde[eval]'")
    a, b = _feature_pair(n=200)
    ours = kernel_distance(a, b, subsets=1, subset_size=200)
    assert abs(ours.value - float(kid_mod.poly_mmd(a, b))) < 1e-10
    assert math.isnan(ours.stderr) and ours.subset_size == 200


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    g = torch.Generator().manual_seed(6)
    a, b = torch.randn(2, 600, 16, generator=g, dtype=torch.float64)
    same = kernel_distance(a, b, subsets=30, subset_size=200)
    diff = kernel_distance(a, b + 0.5, subsets=30, subset_size=200)
    assert abs(same.value) < 4 * same.std  # unbiased: centred on 0, not on a positive bias
    assert diff.value > 10 * diff.std > 0
    assert diff.stderr == pytest.approx(diff.std * math.sqrt(30 / 29) / math.sqrt(30), rel=1e-9)  # ddof 1 vs 0
    value, stderr = diff
    assert value == diff.value and stderr == diff.stderr
    with pytest.raises(ValueError, match="subsets"):
        kernel_distance(a, b, subsets=0)
    with pytest.raises(ValueError, match="dimension"):
        kernel_distance(a, b[:, :3])


def test_precision_recall_sees_quality_and_coverage():
    g = torch.Generator().manual_seed(7)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]], dtype=torch.float64)
    ref = centres.repeat_interleave(200, 0) + 0.3 * torch.randn(800, 2, generator=g, dtype=torch.float64)
    same = centres.repeat_interleave(200, 0) + 0.3 * torch.randn(800, 2, generator=g, dtype=torch.float64)
    p, r = precision_recall(same, ref)
    assert p > 0.9 and r > 0.9
    half = same[:400]  # two of the four modes: all good samples, half the coverage
    p, r = precision_recall(half, ref)
    assert p > 0.9 and 0.4 < r < 0.6
    far = same + 100.0  # nothing in the reference manifold
    assert tuple(precision_recall(far, ref)) == (0.0, 0.0)
    assert tuple(precision_recall(ref, ref)) == (1.0, 1.0)
    with pytest.raises(ValueError, match="k"):
        precision_recall(ref, ref, k=0)


def test_reference_statistics_round_trip(tmp_path):
    a, _ = _feature_pair(n=50, d=6)
    mu, sigma = feature_statistics(a)
    path = save_reference_statistics(tmp_path / "ref.npz", mu, sigma, num_samples=50, feature_net="fd-digits")
    with np.load(path) as z:  # the format users hold for CIFAR-10: plain mu / sigma arrays
        assert z["mu"].shape == (6,) and z["sigma"].shape == (6, 6)
    st = load_reference_statistics(path, feature_net="fd-digits")
    assert torch.equal(st.mu, mu) and torch.equal(st.sigma, sigma) and st.num_samples == 50
    assert frechet_distance(*st, mu, sigma) == pytest.approx(0.0, abs=1e-10)
    assert "num_samples=50" in repr(st) and "tensor" not in repr(st)
    with pytest.raises(ValueError, match="feature net 'fd-digits', not 'inception"):
        load_reference_statistics(path, feature_net="inception-v3-compat")
    # a plain pytorch-fid style file, and raw pool_3 features as the official score_sde statistics hold them
    np.savez(tmp_path / "plain.npz", mu=mu.numpy(), sigma=sigma.numpy())
    assert torch.equal(load_reference_statistics(tmp_path / "plain.npz").sigma, sigma)
    np.savez(tmp_path / "pool.npz", pool_3=a.numpy())
    assert torch.allclose(load_reference_statistics(tmp_path / "pool.npz").sigma, sigma)
    with pytest.raises(FileNotFoundError):
        load_reference_statistics(tmp_path / "missing.npz")


def test_missing_inception_weights_name_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.delenv("SCORE_SDE_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    expected = str(tmp_path / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILE)
    with pytest.raises(FileNotFoundError) as e:
        inception_feature_extractor()
    msg = str(e.value)
    assert INCEPTION_WEIGHTS_URL in msg and expected in msg and "SCORE_SDE_INCEPTION_WEIGHTS" in msg
    with pytest.raises(FileNotFoundError, match=INCEPTION_WEIGHTS_FILE):
        find_inception_weights(tmp_path / "nope.pth")
    # a file at the cache path (or named by the variable) is found
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    open(expected, "wb").close()
    assert find_inception_weights() == expected
    monkeypatch.setenv("SCORE_SDE_INCEPTION_WEIGHTS", str(tmp_path / "other.pth"))
    open(tmp_path / "other.pth", "wb").close()
    assert find_inception_weights() == str(tmp_path / "other.pth")


def test_inception_score_bounds():
    k = 10
    uniform = torch.zeros(100, k)  # every sample p(y|x) = uniform: IS = 1
    assert inception_score(uniform, splits=5)[0] == pytest.approx(1.0, abs=1e-12)
    confident = torch.full((100, k), -50.0)
    confident[torch.arange(100), torch.arange(100) % k] = 50.0  # sure and balanced over k classes: IS = k
    mean, std = inception_score(confident, splits=5)
    assert mean == pytest.approx(k, rel=1e-6) and std < 1e-6
