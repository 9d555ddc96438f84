"""upfirdn2d against a direct numpy/scipy evaluation of its definition, and its gradients."""

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from score_sde.nets.upfirdn import (
    conv_downsample_2d,
    downsample_2d,
    naive_downsample_2d,
    naive_upsample_2d,
    setup_kernel,
    upfirdn2d,
    upsample_2d,
    upsample_conv_2d,
)


def reference(x, k, up, down, pad):
    """Zero-stuff by (ux, uy), pad/crop by (x0, x1, y0, y1), 'valid' convolution with k, keep every down-th."""
    (ux, uy), (dx, dy), (x0, x1, y0, y1) = up, down, pad
    N, C, H, W = x.shape
    z = np.zeros((N, C, H * uy, W * ux))
    z[:, :, ::uy, ::ux] = x
    z = np.pad(z, ((0, 0), (0, 0), (max(y0, 0), max(y1, 0)), (max(x0, 0), max(x1, 0))))
    z = z[:, :, max(-y0, 0) : z.shape[2] - max(-y1, 0), max(-x0, 0) : z.shape[3] - max(-x1, 0)]
    out = np.stack([np.stack([convolve2d(z[n, c], k, mode="valid") for c in range(C)]) for n in range(N)])
    return out[:, :, ::dy, ::dx]


KERNELS = {
    "box2": np.outer([1, 1], [1, 1]) / 4.0,
    "fir1331": np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0,
    "asym3x2": np.array([[0.3, -1.2], [2.0, 0.5], [-0.7, 1.1]]),
    "rand5": None,
}


@pytest.mark.parametrize("kname", list(KERNELS))
@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2), (2, 2), ((2, 1), (1, 2))])
@pytest.mark.parametrize("pad", [(0, 0, 0, 0), (3, 0, 1, 2), (-1, 2, 1, -1)])
def test_matches_definition(kname, up, down, pad):
    rng = np.random.default_rng(0)
    k = KERNELS[kname] if KERNELS[kname] is not None else rng.normal(size=(5, 5))
    x = rng.normal(size=(2, 3, 7, 6))
    up2 = up if isinstance(up, tuple) else (up, up)
    down2 = down if isinstance(down, tuple) else (down, down)
    ref = reference(x, k, up2, down2, pad)
    out = upfirdn2d(torch.from_numpy(x), torch.from_numpy(k), up=up, down=down, pad=pad)
    assert out.shape == ref.shape
    assert np.abs(out.numpy() - ref).max() <= 1e-6 * max(1.0, np.abs(ref).max())
    # float32 agrees too (to its round-off)
    out32 = upfirdn2d(torch.from_numpy(x).float(), torch.from_numpy(k), up=up, down=down, pad=pad)
    assert np.abs(out32.double().numpy() - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


def test_resampling_helpers_shapes_and_dc_gain():
    x = torch.ones(1, 2, 8, 8, dtype=torch.float64)
    up = upsample_2d(x, [1, 3, 3, 1])
    down = downsample_2d(x, [1, 3, 3, 1])
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    # a constant stays constant away from the zero padding at the borders
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.ones(()).double())
    assert torch.allclose(down[..., 1:-1, 1:-1], torch.ones(()).double())
    # the box kernel is nearest-neighbour up-sampling and block averaging
    y = torch.randn(2, 3, 6, 4, dtype=torch.float64)
    assert torch.allclose(upsample_2d(y, [1, 1]), naive_upsample_2d(y))
    assert torch.allclose(downsample_2d(y, [1, 1]), naive_downsample_2d(y))


def test_fused_convolutions_equal_the_unfused_ones():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    w = torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64)
    k = [1, 3, 3, 1]
    # conv then FIR-down == fused (the fused op pads once: compare with the same total padding)
    fused = conv_downsample_2d(x, w, k)
    kk = setup_kernel(k, torch.float64)
    ref = torch.nn.functional.conv2d(upfirdn2d(x, kk, pad=(2, 2)), w, stride=2)
    assert fused.shape == (2, 5, 4, 4) and torch.allclose(fused, ref)
    up = upsample_conv_2d(x, w, k)
    assert up.shape == (2, 5, 16, 16)
    # transposed conv is the adjoint of the strided conv: <up(x), y> == <x, down'(y)> with the same padding
    y = torch.randn(2, 5, 16, 16, generator=g, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    (upsample_conv_2d(xr, w, k) * y).sum().backward()
    assert torch.isfinite(xr.grad).all() and xr.grad.abs().sum() > 0


def test_gradcheck():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    for up, down, pad in [(1, 1, (1, 1)), (2, 1, (2, 1)), (1, 2, (1, 2)), (2, 2, (0, 1, 2, -1))]:
        assert torch.autograd.gradcheck(lambda a, b, u=up, d=down, p=pad: upfirdn2d(a, b, up=u, down=d, pad=p), (x, k))
    w = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: upsample_conv_2d(a, b, [1, 3, 3, 1]), (x, w))
    assert torch.autograd.gradcheck(lambda a, b: conv_downsample_2d(a, b, [1, 3, 3, 1]), (x, w))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"up": 0},
        {"down": (1, 2, 3)},
        {"pad": (1, 2, 3)},
        {"pad": 1.5},
        {"up": True},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        upfirdn2d(torch.zeros(1, 1, 4, 4), torch.ones(2, 2), **kwargs)


def test_empty_output_and_bad_kernel():
    with pytest.raises(ValueError, match="empty"):
        upfirdn2d(torch.zeros(1, 1, 2, 2), torch.ones(4, 4))
    with pytest.raises(ValueError, match="2-D"):
        upfirdn2d(torch.zeros(1, 1, 4, 4), torch.ones(2))
    with pytest.raises(ValueError, match="sum to zero"):
        setup_kernel([1, -1])
