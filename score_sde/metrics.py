"""Sample-quality metrics used by the tests, examples, benchmarks and paper figures.

- :func:`sliced_w2`: sliced 2-Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015) between two
  samples, from sorted 1-D projections on random directions fixed by a seed.
- :func:`mmd_rbf`: unbiased squared maximum mean discrepancy with a Gaussian kernel (Gretton et al. 2012).
- :func:`mmd_permutation_pvalue`: the two-sample test of Gretton et al. (2012) with the biased MMD^2
  statistic and a permutation p-value; :func:`two_sample_test` combines two kernel bandwidths.

Everything is computed in float64 on flattened samples [n, D]; results are Python floats.
"""

from __future__ import annotations

import torch

_QUANTILE_CACHE: dict = {}


def _flat64(x: torch.Tensor) -> torch.Tensor:
    """[n, D] float64 on the CPU (the metrics return Python floats; numpy sorts the projections)."""
    return x.detach().reshape(x.shape[0], -1).cpu().double()


def _directions(d: int, n_proj: int, seed: int) -> torch.Tensor:
    """n_proj unit directions in R^d, [d, n_proj], drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    th = torch.randn(d, n_proj, generator=g, dtype=torch.float64)
    return th / th.norm(dim=0, keepdim=True)


def _sorted_projections(x: torch.Tensor, n_proj: int, seed: int) -> torch.Tensor:
    """Projections of x [n, D] on the directions, each sorted: [n, n_proj] (numpy sorts rows far faster than
    torch.sort on the CPU build)."""
    p = (_directions(x.shape[1], n_proj, seed).T @ x.T).contiguous().numpy()  # [n_proj, n]
    p.sort(axis=1)
    return torch.from_numpy(p).T


def _quantiles(y: torch.Tensor, n: int, n_proj: int, seed: int) -> torch.Tensor:
    """y's projections' quantile functions at the levels (i + 1/2)/n, [n, n_proj] (cached per y, so that many
    samples are cheaply compared against one reference)."""
    key = (y.data_ptr(), tuple(y.shape), float(y.sum()), float((y * y).sum()), n, n_proj, seed)
    if key in _QUANTILE_CACHE:
        return _QUANTILE_CACHE[key]
    py = _sorted_projections(y, n_proj, seed)
    m = py.shape[0]
    if m != n:
        levels = (torch.arange(n, dtype=torch.float64) + 0.5) / n * m - 0.5
        lo = levels.floor().clamp(0, m - 1).long()
        hi = (lo + 1).clamp(max=m - 1)
        w = (levels - lo).clamp(0, 1)[:, None]
        py = (1 - w) * py[lo] + w * py[hi]
    if len(_QUANTILE_CACHE) > 64:
        _QUANTILE_CACHE.clear()
    _QUANTILE_CACHE[key] = py
    return py


def sliced_w2(x: torch.Tensor, y: torch.Tensor, n_proj: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between samples x [n, ...] and y [m, ...].

    SW2(p, q)^2 = E_theta W2(theta#p, theta#q)^2 over directions theta uniform on the sphere (``n_proj`` of
    them, fixed by ``seed``); each 1-D W2 compares x's sorted projections with y's quantile function at the
    levels (i + 1/2)/n (y's sorted projections when m = n, else linearly interpolated).
    """
    x, y = _flat64(x), _flat64(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"samples of different dimension: {x.shape[1]} and {y.shape[1]}")
    px = _sorted_projections(x, n_proj, seed)
    py = _quantiles(y, x.shape[0], n_proj, seed)
    return float(((px - py) ** 2).mean().sqrt())


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, bandwidth: float = 1.0) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) with the kernel exp(-|a - b|^2 / (2 h^2)), h = ``bandwidth``."""
    x, y = _flat64(x), _flat64(y)

    def k(a, b):
        return torch.exp(-(torch.cdist(a, b) ** 2) / (2 * bandwidth**2))

    n, m = x.shape[0], y.shape[0]
    kxx = (k(x, x).sum() - n) / (n * (n - 1))
    kyy = (k(y, y).sum() - m) / (m * (m - 1))
    return float(kxx + kyy - 2 * k(x, y).mean())


def mmd_permutation_pvalue(
    x: torch.Tensor,
    y: torch.Tensor,
    n_perm: int = 200,
    bandwidth: float | None = None,
    seed: int = 0,
    max_n: int | None = None,
    bandwidth_scale: float = 1.0,
) -> float:
    """Permutation p-value of the Gaussian-kernel MMD^2 two-sample test of x [n, ...] against y [m, ...].

    The statistic of a split (a, b) of the pooled sample is mean K[a, a] + mean K[b, b] - 2 mean K[a, b]
    = v^T K v with v = 1/n on a and -1/(N - n) on b, so all ``n_perm`` permutations are scored with one
    matrix product; p = (1 + #{perm >= observed}) / (1 + n_perm). Kernel exp(-|u - v|^2 / (2 h^2)) with
    h = ``bandwidth``, or ``bandwidth_scale`` times the median pooled pairwise distance (the median
    heuristic; a scale of 1/4 resolves structure such as separate modes). ``max_n``: randomly subsample
    each side to at most this many points first (the test is O(N^2) in memory).
    """
    g = torch.Generator().manual_seed(seed)
    x, y = _flat64(x), _flat64(y)
    if max_n is not None:
        x = x[torch.randperm(x.shape[0], generator=g)[:max_n]]
        y = y[torch.randperm(y.shape[0], generator=g)[:max_n]]
    z = torch.cat([x, y])
    d2 = torch.cdist(z, z) ** 2
    if bandwidth is None:
        bandwidth = bandwidth_scale * d2[d2 > 0].median().sqrt().item()
    K = torch.exp(-d2 / (2 * bandwidth**2))
    n, N = x.shape[0], z.shape[0]
    perms = [torch.arange(N)] + [torch.randperm(N, generator=g) for _ in range(n_perm)]
    V = torch.empty(N, n_perm + 1, dtype=K.dtype)
    for j, p in enumerate(perms):
        V[p[:n], j] = 1.0 / n
        V[p[n:], j] = -1.0 / (N - n)
    stats = (V * (K @ V)).sum(0)
    return (int((stats[1:] >= stats[0]).sum()) + 1) / (n_perm + 1)


def two_sample_test(x: torch.Tensor, y: torch.Tensor, seed: int = 1, n_perm: int = 200) -> dict:
    """MMD permutation tests at the median-heuristic bandwidth and a quarter of it; ``p`` combines the two
    (Bonferroni: 2 min p). Returns {"p", "p_median_bw", "p_quarter_bw"}."""
    p_med = mmd_permutation_pvalue(x, y, n_perm=n_perm, seed=seed)
    p_fine = mmd_permutation_pvalue(x, y, n_perm=n_perm, seed=seed, bandwidth_scale=0.25)
    return {"p": min(1.0, 2 * min(p_med, p_fine)), "p_median_bw": p_med, "p_quarter_bw": p_fine}
