"""score_sde.metrics: sliced W2, MMD and the permutation two-sample test on samples with known answers."""

import math

import pytest
import torch

from score_sde import metrics


def _normal(n, d, seed, shift=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


def test_sliced_w2_of_a_shift_and_of_equal_samples():
    x = _normal(4000, 3, 0)
    # a shift m moves every 1-D projection by theta.m: SW2^2 = E (theta.m)^2 = |m|^2 / d
    m = torch.tensor([0.6, 0.0, 0.0], dtype=torch.float64)
    assert metrics.sliced_w2(x, x + m, n_proj=2000) == pytest.approx(0.6 / math.sqrt(3), rel=0.05)
    assert metrics.sliced_w2(x, x) == 0.0
    assert metrics.sliced_w2(x[:1000], _normal(3000, 3, 1)) < 0.1  # different sizes: interpolated quantiles
    with pytest.raises(ValueError, match="different dimension"):
        metrics.sliced_w2(x, x[:, :2])


def test_mmd_is_near_zero_for_one_law_and_positive_for_two():
    a, b, c = _normal(500, 2, 0), _normal(500, 2, 1), _normal(500, 2, 2, shift=1.0)
    assert abs(metrics.mmd_rbf(a, b)) < 0.01 < metrics.mmd_rbf(a, c)


def test_permutation_test_has_size_and_power():
    same = [metrics.mmd_permutation_pvalue(_normal(200, 2, s), _normal(200, 2, 100 + s), n_perm=100) for s in range(8)]
    assert min(same) > 0.01  # no false alarm in 8 same-law draws at the 1% level (p-values ~ uniform)
    far = metrics.mmd_permutation_pvalue(_normal(200, 2, 0), _normal(200, 2, 1, shift=0.5), n_perm=100)
    assert far < 0.02
    # max_n subsamples before testing: a shifted law is then found from 100 points a side, and an
    # unshifted one is not
    far_sub = metrics.mmd_permutation_pvalue(_normal(300, 2, 0), _normal(300, 2, 1, 0.8), n_perm=50, max_n=100)
    same_sub = metrics.mmd_permutation_pvalue(_normal(300, 2, 0), _normal(300, 2, 1), n_perm=50, max_n=100)
    assert far_sub < 0.05 < same_sub
    res = metrics.two_sample_test(_normal(300, 2, 0), _normal(300, 2, 1, shift=0.5))
    assert res["p"] < 0.05 and res["p"] >= min(res["p_median_bw"], res["p_quarter_bw"])  # Bonferroni: never smaller
