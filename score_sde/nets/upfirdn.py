"""FIR resampling of image batches (``upfirdn2d``) in pure torch: differentiable, any device.

The operation (from the StyleGAN2 code base, used by NCSN++ for its "FIR" up- and down-sampling;
Song et al. 2021, App. H) is, per channel of ``x`` [N, C, H, W] and per axis,

    1. up:   insert ``up - 1`` zeros after every sample      (length H -> H up),
    2. pad:  ``p0`` zeros before and ``p1`` after              (negative values crop),
    3. fir:  correlate with the flipped kernel, i.e. convolve with ``k`` ("valid" part only),
    4. down: keep every ``down``-th sample, starting with the first,

so with z the padded, zero-stuffed signal and k of size K,

    out[i] = sum_{a=0}^{K-1} z[i down + a] k[K - 1 - a],    i = 0 .. (H up + p0 + p1 - K) // down.

Here steps 3 and 4 are one depthwise (grouped) convolution with stride ``down``. The 2-D kernel is
applied to the two image axes (a 1-D kernel ``k`` means the separable ``outer(k, k)``).

The helpers below are the resampling layers of NCSN++: :func:`upsample_2d` / :func:`downsample_2d`
(FIR resampling of a feature map, the kernel normalised to unit DC gain) and
:func:`upsample_conv_2d` / :func:`conv_downsample_2d` (a 3x3 convolution fused with them, padding
done once).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _pair(name: str, v) -> tuple[int, int]:
    vals = (v, v) if isinstance(v, int) and not isinstance(v, bool) else v
    vals = tuple(vals) if isinstance(vals, (tuple, list)) else (vals,)
    if len(vals) != 2 or any(isinstance(a, bool) or not isinstance(a, int) or a < 1 for a in vals):
        raise ValueError(f"{name} must be a positive integer or a pair of them; got {name} = {v!r}")
    return vals


def _pads(pad) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1) from an int, a pair (p0, p1) for both axes, or four values."""
    if isinstance(pad, int) and not isinstance(pad, bool):
        pad = (pad, pad)
    pad = tuple(pad) if isinstance(pad, (tuple, list)) else (pad,)
    if len(pad) == 2:
        pad = (pad[0], pad[1], pad[0], pad[1])
    if len(pad) != 4 or any(isinstance(p, bool) or not isinstance(p, int) for p in pad):
        raise ValueError(f"pad must be an int, (p0, p1) or (x0, x1, y0, y1) of integers; got pad = {pad!r}")
    return pad


def setup_kernel(k, dtype=None, device=None) -> torch.Tensor:
    """A FIR kernel as a 2-D tensor: a 1-D ``k`` becomes ``outer(k, k)``; normalised to sum 1."""
    k = torch.as_tensor(k, dtype=dtype or torch.get_default_dtype(), device=device)
    if k.ndim == 1:
        k = torch.outer(k, k)
    if k.ndim != 2 or k.numel() == 0:
        raise ValueError(f"a FIR kernel must be 1-D or 2-D and non-empty; got shape {tuple(k.shape)}")
    s = k.sum()
    if s == 0:
        raise ValueError("a FIR kernel must not sum to zero (it is normalised to unit DC gain)")
    return k / s


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up=1, down=1, pad=0) -> torch.Tensor:
    """Upsample, pad, FIR-filter and downsample ``x`` [N, C, H, W] (see the module docstring).

    Args:
        x: images [N, C, H, W] (any float dtype, any device).
        kernel: 2-D FIR kernel [Kh, Kw] (used as given: not flipped by the caller, not normalised).
        up, down: integer factors (an int for both axes, or (x, y)).
        pad: ``p`` | ``(p0, p1)`` (both axes) | ``(x0, x1, y0, y1)``; negative values crop.

    Returns:
        [N, C, (H up + y0 + y1 - Kh) // down + 1, (W up + x0 + x1 - Kw) // down + 1].
    """
    if not torch.is_tensor(x) or x.ndim != 4:
        raise ValueError(f"x must be a tensor [N, C, H, W]; got {tuple(x.shape) if torch.is_tensor(x) else x!r}")
    ux, uy = _pair("up", up)
    dx, dy = _pair("down", down)
    x0, x1, y0, y1 = _pads(pad)
    k = torch.as_tensor(kernel).to(x)
    if k.ndim != 2:
        raise ValueError(f"kernel must be 2-D [Kh, Kw]; got shape {tuple(k.shape)}")
    N, C, H, W = x.shape
    kh, kw = k.shape
    out_h = (H * uy + y0 + y1 - kh) // dy + 1
    out_w = (W * ux + x0 + x1 - kw) // dx + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"upfirdn2d output would be empty ({out_h} x {out_w}) for input {H} x {W}, kernel "
                         f"{kh} x {kw}, up {(ux, uy)}, down {(dx, dy)}, pad {(x0, x1, y0, y1)}")  # fmt: skip
    z = x
    if ux > 1 or uy > 1:  # zero stuffing
        z = x.new_zeros(N, C, H * uy, W * ux)
        z[:, :, ::uy, ::ux] = x
    z = F.pad(z, (x0, x1, y0, y1))  # negative values crop
    # one depthwise (grouped) correlation with the flipped kernel = convolution with k; the stride
    # keeps every down-th output
    w = k.flip(0, 1)[None, None].expand(C, 1, kh, kw)
    return F.conv2d(z, w, stride=(dy, dx), groups=C)


def upsample_2d(x: torch.Tensor, k: Sequence[float] | torch.Tensor = (1, 1), factor: int = 2) -> torch.Tensor:
    """FIR upsampling by ``factor``: [N, C, H, W] -> [N, C, H factor, W factor].

    The kernel is normalised and scaled by factor^2 (zero stuffing removes that much DC gain), so
    a constant image stays constant away from the borders; zeros outside the image.
    """
    kk = setup_kernel(k, x.dtype, x.device) * factor**2
    p = kk.shape[0] - factor
    return upfirdn2d(x, kk, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: torch.Tensor, k: Sequence[float] | torch.Tensor = (1, 1), factor: int = 2) -> torch.Tensor:
    """FIR downsampling by ``factor``: [N, C, H, W] -> [N, C, H / factor, W / factor] (kernel sums to 1)."""
    kk = setup_kernel(k, x.dtype, x.device)
    p = kk.shape[0] - factor
    return upfirdn2d(x, kk, down=factor, pad=((p + 1) // 2, p // 2))


def upsample_conv_2d(x: torch.Tensor, w: torch.Tensor, k: Sequence[float] | torch.Tensor = (1, 1),
                     factor: int = 2) -> torch.Tensor:  # fmt: skip
    """A convolution with ``w`` [C_out, C_in, K, K] (K odd) fused with FIR upsampling by ``factor``.

    The transposed convolution of stride ``factor`` (weights flipped, so it is the adjoint of a
    correlation with ``w``) is followed by the FIR filter, with the padding split so that the
    result is [N, C_out, H factor, W factor].
    """
    kw = w.shape[-1]
    wt = w.flip(-1, -2).transpose(0, 1)  # [C_in, C_out, K, K]: the layout conv_transpose2d expects
    h = F.conv_transpose2d(x, wt, stride=factor)
    kk = setup_kernel(k, x.dtype, x.device) * factor**2
    p = (kk.shape[0] - factor) - (kw - 1)
    return upfirdn2d(h, kk, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x: torch.Tensor, w: torch.Tensor, k: Sequence[float] | torch.Tensor = (1, 1),
                       factor: int = 2) -> torch.Tensor:  # fmt: skip
    """FIR filtering fused with a stride-``factor`` convolution with ``w`` [C_out, C_in, K, K]:
    [N, C_in, H, W] -> [N, C_out, H / factor, W / factor]."""
    kw = w.shape[-1]
    kk = setup_kernel(k, x.dtype, x.device)
    p = (kk.shape[0] - factor) + (kw - 1)
    return F.conv2d(upfirdn2d(x, kk, pad=((p + 1) // 2, p // 2)), w, stride=factor)


def naive_upsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Nearest-neighbour upsampling (each pixel repeated factor x factor times)."""
    return x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def naive_downsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Mean over factor x factor blocks."""
    N, C, H, W = x.shape
    return x.reshape(N, C, H // factor, factor, W // factor, factor).mean(dim=(3, 5))


__all__ = [
    "upfirdn2d",
    "setup_kernel",
    "upsample_2d",
    "downsample_2d",
    "upsample_conv_2d",
    "conv_downsample_2d",
    "naive_upsample_2d",
    "naive_downsample_2d",
]
