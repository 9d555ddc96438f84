"""Shared helpers: broadcasting, input validation, random draws.

Every function in the package is rank-agnostic: data has shape ``[B, ...]`` (``[B]``,
``[B, D]``, ``[B, C, H, W]``) and per-sample scalars such as times have shape ``[B]``.
:func:`bcast` is the one place where a ``[B]`` vector is lifted to the rank of the data.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch

Generator = torch.Generator | Sequence[torch.Generator] | None
_HALF = (torch.float16, torch.bfloat16)


def bcast(v: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector ``v`` of shape ``[B]`` (or a scalar) to ``[B, 1, ..., 1]``.

    The result broadcasts against ``x`` of shape ``[B, ...]`` whatever the rank of ``x``.
    """
    if not torch.is_tensor(v):
        return torch.as_tensor(v, dtype=x.dtype, device=x.device)
    if v.ndim == 0:
        return v
    return v.reshape(v.shape[0], *([1] * (x.ndim - 1)))


def as_time(t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Return times as a ``[B]`` tensor in the dtype/device of ``x`` (a scalar is expanded).

    Raises ``ValueError`` when a vector of times has a batch size different from ``x``.
    """
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t.expand(x.shape[0])
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"t must be a scalar or have shape [B] = [{x.shape[0]}] to match x of shape "
            f"{tuple(x.shape)}; got t of shape {tuple(t.shape)}"
        )
    return t


def check_time(t: torch.Tensor | float, T: float, name: str = "t", lo: float = 0.0) -> None:
    """Raise ``ValueError`` naming the offending value when any time lies outside ``[lo, T]``."""
    tt = torch.as_tensor(t)
    if tt.numel() == 0:
        return
    if not torch.isfinite(tt).all():
        raise ValueError(f"{name} must be finite; got {tt.flatten()[~torch.isfinite(tt.flatten())][0].item()}")
    tmin, tmax = tt.min().item(), tt.max().item()
    if tmin < lo - 1e-12 or tmax > T + 1e-12:
        bad = tmin if tmin < lo - 1e-12 else tmax
        raise ValueError(f"{name} must lie in [{lo}, {T}]; got {name} = {bad!r}")


def check_finite(x: torch.Tensor, name: str = "x") -> None:
    """Raise ``ValueError`` when ``x`` holds NaN or infinity, naming one offending entry."""
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if not torch.isfinite(x).all():
        idx = (~torch.isfinite(x)).nonzero()[0].tolist()
        raise ValueError(f"{name} must be finite; {name}{idx} = {x[tuple(idx)].item()}")


def check_same_batch(**tensors: torch.Tensor) -> None:
    """Raise ``ValueError`` when the given tensors do not share their first (batch) dimension."""
    sizes = {k: v.shape[0] for k, v in tensors.items() if torch.is_tensor(v) and v.ndim > 0}
    if len(set(sizes.values())) > 1:
        desc = ", ".join(f"{k} has batch size {b}" for k, b in sizes.items())
        raise ValueError(f"batch sizes differ: {desc}")


def check_tolerance(name: str, v) -> float:
    """An ODE tolerance (rtol, atol) as a float; ``ValueError`` naming it unless a finite number > 0."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number; got {name} = {v!r}")
    return float(v)


def check_ode_dtype(x: torch.Tensor, name: str = "x") -> None:
    """``TypeError`` for half-precision input to an adaptive ODE solve (its step-size control underflows)."""
    if x.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(
            f"{name} has dtype {x.dtype}; the adaptive ODE solver needs float32 or float64 (its step-size control "
            f"underflows in half precision): pass {name}.float() (a half-precision network can cast inside score_fn)"
        )


class NonFiniteScoreWarning(RuntimeWarning):
    """A sampler or the likelihood met a score (or produced a result) holding NaN or infinity."""


class FiniteWatch:
    """Notes, at almost no cost, whether tensors handed to :meth:`see` held NaN/inf, and the first time one did.

    NaN/inf anywhere in a tensor makes its sum non-finite. Small CPU tensors are held (by reference, up to
    :attr:`HOLD` entries in all) and summed together in one operation when that many have come or when a result
    is asked for; only a non-finite total sends it back to the held tensors one by one, to name the first one
    holding NaN/inf (a total that merely overflowed names none). A CPU tensor of :attr:`HOLD` entries or more is
    summed and read at once (its network costs far more than the sum). On an accelerator each tensor's sum is kept
    as a tensor and all are read in one sync by :meth:`first_bad`. So a step with a small score output pays a list
    append, not a reduction and a read of its value; the held window stays small (16 KiB of float32) because a
    large one, and the stacked copy its check makes, crowd the network's own working memory out of the caches
    (measured: benchmarks/loop_overhead.py).
    """

    HOLD = 1 << 12  # CPU entries held before one summed check (16 KiB of float32)

    def __init__(self):
        self.calls = 0
        self._first: int | None = None  # index of the first non-finite tensor seen
        self._first_t = None  # and its time
        self._pending: list = []  # (index, sum, time) of tensors not on the CPU, not read yet
        self._held: list = []  # (index, tensor, time) of CPU tensors not checked yet
        self._held_n = 0  # their entries

    def see(self, out: torch.Tensor, t) -> None:
        """Note whether ``out`` (any shape) holds NaN/inf, at time ``t`` (a number or a tensor of times)."""
        i = self.calls
        self.calls = i + 1
        if self._first is not None:  # the first non-finite one is known: nothing left to find
            return
        v = out.detach() if out.requires_grad else out
        if v.is_cpu:  # a tensor of HOLD entries or more is checked at once, on its own (no stacked copy)
            self._held.append((i, v, t))
            self._held_n += v.numel()
            if self._held_n >= self.HOLD:
                self._check_held()
        else:
            self._pending.append((i, v.sum(dtype=torch.float32) if v.dtype in _HALF else v.sum(), t))

    def _check_held(self) -> None:
        """Sum the held CPU tensors in one operation; when the total is not finite, find the first of them that
        holds NaN/inf. A tensor that can no longer be read (made inside a function transform such as vmap) is
        passed over."""
        held, self._held, self._held_n = self._held, [], 0
        if not held:
            return
        try:
            vs = [v for _, v, _ in held]
            both = vs[0] if len(vs) == 1 else torch.stack(vs)
            total = both.sum(dtype=torch.float32) if vs[0].dtype in _HALF else both.sum()
            if math.isfinite(total.item()):
                return
        except RuntimeError:  # several shapes or dtypes, or a tensor that can no longer be read: one by one
            pass
        for i, v, t in held:
            try:
                bad = not bool(torch.isfinite(v).all())
            except RuntimeError:
                continue
            if bad:
                if self._first is None or i < self._first:
                    self._first, self._first_t = i, t
                return

    def first_bad(self) -> int | None:
        """Index of the first tensor seen that held NaN/inf (one check of the held tensors and one sync for the
        sums not read yet), or None."""
        self._check_held()
        if self._pending:
            pending, self._pending = self._pending, []
            try:
                sums = torch.stack([s for _, s, _ in pending])
            except RuntimeError:  # tensors of several dtypes or devices
                sums = torch.stack([s.to("cpu", torch.float64) for _, s, _ in pending])
            bad = ~torch.isfinite(sums)
            if bool(bad.any()):
                i, _, t = pending[int(bad.nonzero()[0])]
                if self._first is None or i < self._first:
                    self._first, self._first_t = i, t
        return self._first

    def first_time(self) -> float | None:
        """The time of the first non-finite tensor seen (the first entry of a tensor of times), or None."""
        if self.first_bad() is None:
            return None
        return float(torch.as_tensor(self._first_t).detach().reshape(-1)[0])


class ScoreGuard(FiniteWatch):
    """Wrap ``score_fn(x, t[, cond])``: check its output's type and shape at every call and note, at almost no
    cost, whether it held NaN/inf (:class:`FiniteWatch`: no sync per call).

    :meth:`report` (once, at the end of a solve) emits one :class:`NonFiniteScoreWarning` naming the first
    time the score was not finite and how many samples of the result are not; it also warns when the result
    is not finite though the score stayed finite (an overflow, e.g. in float16).
    """

    def __init__(self, score_fn: Callable, where: str):
        super().__init__()
        self.fn, self.where = score_fn, where

    def __call__(self, x: torch.Tensor, t, *args):
        return self._keep(self.fn(x, t, *args), x, t)

    def _keep(self, out, x: torch.Tensor, t):
        """Check one output (a tensor shaped like x) and note whether it held NaN/inf; returns it."""
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"score_fn must return a tensor; got {type(out).__name__}")
        if out.shape != x.shape:
            raise ValueError(f"score_fn returned shape {tuple(out.shape)} for x of shape {tuple(x.shape)}")
        self.see(out, t)
        return out

    def native_prediction(self):
        """The wrapped model's own prediction ``(raw, sde)`` (``score_fn.native_prediction()``, e.g. a
        :class:`~score_sde.score.ScoreModel`'s), its outputs checked and watched like the score's; None when
        ``score_fn`` has none (:mod:`score_sde.solvers.denoiser`)."""
        get = getattr(self.fn, "native_prediction", None)
        found = get() if callable(get) else None
        if found is None:
            return None
        raw, sde = found

        def guarded(x: torch.Tensor, t, *args):
            out, kind = raw(x, t, *args)
            return self._keep(out, x, t), kind

        return guarded, sde

    @property
    def nonfinite(self) -> bool:
        return self.first_bad() is not None

    def message(self) -> str | None:
        i = self.first_bad()
        if i is None:
            return None
        t = self.first_time()
        return f"{self.where}: the score returned NaN/inf (first at t = {t:.6g}, evaluation {i + 1})"

    def report(self, result: torch.Tensor | None = None, stacklevel: int = 3) -> None:
        """One warning if the score was ever non-finite or ``result`` holds NaN/inf."""
        msg = self.message()
        n_bad = 0
        if result is not None and result.numel():
            n_bad = int((~torch.isfinite(result.detach().reshape(result.shape[0], -1))).any(1).sum())
        if msg is None and n_bad == 0:
            return
        if msg is None:
            half = result.dtype in (torch.float16, torch.bfloat16)
            hint = " (overflow in half precision? use float32)" if half else ""
            msg = f"{self.where}: the result holds NaN/inf though the score stayed finite{hint}"
        if result is not None:
            msg += f"; {n_bad} of {result.shape[0]} samples of the result are not finite"
        warnings.warn(msg, NonFiniteScoreWarning, stacklevel=stacklevel)


def flat_dim(x: torch.Tensor) -> int:
    """Number of non-batch entries D of ``x`` of shape ``[B, ...]``."""
    return int(math.prod(x.shape[1:]))


def randn_like(x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Standard normal draws shaped like ``x``.

    ``generator`` may be ``None`` (torch's global RNG), one ``torch.Generator``, or a sequence of
    ``B`` generators, one per sample, so that a sample's noise does not depend on the batch around
    it (per-sample seeds). The noise is drawn on each generator's own device and moved to ``x``'s,
    so a CPU generator seeds CUDA data (the numbers are those the generator gives on its device).
    """
    if generator is None:
        return torch.randn(x.shape, dtype=x.dtype, device=x.device)
    if isinstance(generator, torch.Generator):
        return _draw(x.shape, generator, x)
    gens = list(generator)
    if len(gens) != x.shape[0]:
        raise ValueError(f"got {len(gens)} per-sample generators for a batch of {x.shape[0]}")
    return torch.cat([_draw((1, *x.shape[1:]), g, x) for g in gens])


def _draw(shape, g: torch.Generator, x: torch.Tensor) -> torch.Tensor:
    """Normal draws of ``shape`` from ``g`` on ``g``'s device, in x's dtype, moved to x's device."""
    if not isinstance(g, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (or a sequence of them); got {type(g).__name__}")
    out = torch.randn(shape, generator=g, dtype=x.dtype, device=g.device)
    return out if out.device == x.device else out.to(x.device)


def randn(shape: Sequence[int], generator: Generator = None, dtype=None, device=None) -> torch.Tensor:
    """Standard normal draws of ``shape``; see :func:`randn_like` for ``generator``."""
    ref = torch.empty(tuple(shape), dtype=dtype or torch.get_default_dtype(), device=device)
    return randn_like(ref, generator)


def per_sample_generators(seeds: Sequence[int], device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One seeded ``torch.Generator`` per sample (pass as ``generator=`` for batch-invariant noise)."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
