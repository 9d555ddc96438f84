"""Sample-quality metrics used by the tests, examples, benchmarks and paper figures.

- :func:`sliced_w2`: sliced 2-Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015) between two
  samples, from sorted 1-D projections on random directions fixed by a seed.
- :func:`mmd_rbf`: unbiased squared maximum mean discrepancy with a Gaussian kernel (Gretton et al. 2012).
- :func:`mmd_permutation_pvalue`: the two-sample test of Gretton et al. (2012) with the biased MMD^2
  statistic and a permutation p-value; :func:`two_sample_test` combines two kernel bandwidths.
- :func:`straightness`: how far the probability-flow ODE paths of a model are from straight lines
  (Liu et al. 2022), the quantity reflow lowers.

The sample metrics are computed in float64 on flattened samples [n, D] and return Python floats;
:func:`straightness` returns a 0-d tensor in x_T's dtype.
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


def straightness(sde, score_fn, x_T: torch.Tensor, *, steps: int = 64) -> torch.Tensor:
    """Straightness of the probability-flow ODE paths started at x_T [B, ...] (Liu et al. 2022, Sec. 2.2).

    Liu et al. measure a flow dX/dtau = v(X, tau), tau in [0, 1], by
    S = int_0^1 E ||(X_1 - X_0) - v(X_tau, tau)||^2 dtau, zero exactly when every path is a straight line
    travelled at constant speed. Our flow is the PF-ODE dx/dt = u(x, t) = f(t) x - 1/2 g(t)^2 s(x, t)
    (Song et al. 2021, eq. 13) run from t = T (noise, X_0 = x_T) down to t = eps = ``sde.default_eps``
    (data, X_1 = x_eps); with tau = (T - t) / (T - eps), v = -(T - eps) u, so

        S = int_0^1 E || (x_eps - x_T) + (T - eps) u(x_t, t) ||^2 dtau,

    the same number whatever the time parametrisation. The ODE is integrated with Heun's method on a
    uniform grid of ``steps`` steps (2 steps NFE each); the tau-integral is the trapezoid rule over the
    two velocities of each Heun step (at t_i and at the Euler-predicted point at t_{i+1}), so its weighted
    mean velocity is exactly the Heun displacement x_eps - x_T and S is their weighted spread (>= 0).
    ||.|| sums over all non-batch dimensions; E is the mean over the batch.

    Args:
        sde: the forward SDE (any :class:`~score_sde.sde.base.LinearSDE`).
        score_fn: ``score_fn(x, t)`` -> grad log p_t(x), shape like x; t [B].
        x_T: starting points at t = T, [B, ...] (e.g. ``sde.prior_sampling``).
        steps: Heun steps of the uniform grid.
    Returns:
        S, a 0-d tensor in x_T's dtype.
    """
    if not torch.is_tensor(x_T) or not x_T.is_floating_point() or x_T.ndim < 1 or x_T.shape[0] < 1:
        got = f"dtype {x_T.dtype}, shape {tuple(x_T.shape)}" if torch.is_tensor(x_T) else type(x_T).__name__
        raise TypeError(f"x_T must be a floating-point tensor [B, ...] with B >= 1; got {got}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1; got steps = {steps!r}")
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable; got {type(score_fn).__name__}")
    eps, T = float(sde.default_eps), float(sde.T)
    B = x_T.shape[0]
    ts = torch.linspace(T, eps, steps + 1, dtype=torch.float64)

    def velocity(x, t):  # (T - eps) u(x, t): dx/dtau up to sign
        tb = torch.full((B,), float(t), dtype=x.dtype, device=x.device)
        return (T - eps) * sde.reverse_drift(x, tb, score_fn(x, tb))

    with torch.no_grad():
        x, vs = x_T, []
        for i in range(steps):
            h = float(ts[i + 1] - ts[i])  # < 0
            u0 = velocity(x, ts[i])
            x_pred = x + h / (T - eps) * u0
            u1 = velocity(x_pred, ts[i + 1])
            x = x + 0.5 * h / (T - eps) * (u0 + u1)
            vs += [u0, u1]
        d = x - x_T  # X_1 - X_0
        # trapezoid rule: weight 1 / (2 steps) on each of the 2 steps velocities
        sq = sum(((d + v) ** 2).reshape(B, -1).sum(1) for v in vs) / (2 * steps)
    return sq.mean()
