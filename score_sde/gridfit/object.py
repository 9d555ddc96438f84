"""The fitted time grid: times (and the sampler, NFE and SDE they were fitted for), saved as JSON, checked on use.

A :class:`FittedGrid` holds the ``steps + 1`` descending times t_0 = T > t_1 > ... > t_steps = eps that
:func:`score_sde.optimize_grid` found for one sampler (name and options) at one NFE budget on one SDE,
and what the fit cost (score evaluations, seconds, number of optimiser starts, fitting starts). It learns
times only: no per-step coefficients. ``ss.sample(sde, score_fn, sampler=..., grid=fitted)`` calls
:meth:`FittedGrid.resolve`, which refuses the grid (ValueError naming the mismatch) when it was fitted
for another SDE, sampler, sampler option or NFE, or when its times are not strictly decreasing inside
[eps, T]; the same checks run when a grid is built or loaded.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

import torch

from ..sde.base import LinearSDE
from ..solvers.registry import SAMPLERS

FORMAT = "score_sde.fitted_grid/1"
# fractions of T at which an SDE's log-SNR is stored: the fingerprint that tells one SDE from another
_PROBE = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def sde_fingerprint(sde: LinearSDE) -> dict:
    """{"kind": class name, "T": T, "log_snr": lambda(f T) at fixed fractions f} of an SDE (JSON-able)."""
    t = torch.tensor(_PROBE, dtype=torch.float64) * sde.T
    return {"kind": type(sde).__name__, "T": float(sde.T), "log_snr": [float(v) for v in sde.log_snr(t)]}


def _same_sde(a: dict, b: dict) -> bool:
    if a["kind"] != b["kind"] or abs(a["T"] - b["T"]) > 1e-12 * max(1.0, abs(a["T"])):
        return False
    return all(abs(x - y) <= 1e-9 * max(1.0, abs(x)) for x, y in zip(a["log_snr"], b["log_snr"]))


def steps_for_nfe(sampler: str, options: dict, nfe: int) -> int:
    """The number of grid steps ``ss.sample(..., sampler=sampler, nfe=nfe, **options)`` uses."""
    if sampler not in SAMPLERS or SAMPLERS[sampler].build is None:
        raise ValueError(f"a grid can be fitted only for a fixed-grid sampler; got sampler = {sampler!r}")
    stepper = SAMPLERS[sampler].build(**options)
    if stepper.nfe(1) > nfe:
        raise ValueError(f"nfe = {nfe} is below one step of {sampler} ({stepper.nfe(1)} NFE)")
    return max(s for s in range(1, nfe + 1) if stepper.nfe(s) <= nfe)


@dataclass
class FittedGrid:
    """Times fitted to a model for one sampler at one NFE budget.

    Attributes:
        times: the grid, ``steps + 1`` floats, strictly decreasing from T to eps.
        sampler, options: the sampler name and its options (``ss.sample(..., sampler=sampler, **options)``).
        nfe: the NFE budget the grid was fitted for (``steps`` follows from it and the sampler).
        sde: :func:`sde_fingerprint` of the SDE.
        method: "teacher" or "bound" (:func:`score_sde.optimize_grid`).
        cost: what the fit took: ``nfe`` (score evaluations, teacher included), ``seconds``, ``starts``
            (optimiser starts), ``fit_samples`` (fitting starts x_T), ``evaluations`` (objective calls).
        info: anything else the method records (objective before/after, the base grid, ...).
    """

    times: list
    sampler: str
    nfe: int
    sde: dict
    options: dict = field(default_factory=dict)
    method: str = "teacher"
    cost: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    is_fitted_grid = True  # how ss.sample recognises a fitted grid without importing this (higher) layer

    def __post_init__(self):
        self.times = [float(t) for t in torch.as_tensor(self.times, dtype=torch.float64).flatten()]
        if isinstance(self.nfe, bool) or not isinstance(self.nfe, int) or self.nfe < 1:
            raise ValueError(f"a fitted grid's nfe must be an integer >= 1; got nfe = {self.nfe!r}")
        self.check_times()
        steps = steps_for_nfe(self.sampler, self.options, self.nfe)
        if steps != self.steps:
            raise ValueError(f"a grid fitted for {self.sampler} at nfe = {self.nfe} needs {steps + 1} times "
                             f"({steps} steps); it has {len(self.times)}")  # fmt: skip

    @property
    def steps(self) -> int:
        return len(self.times) - 1

    @property
    def eps(self) -> float:
        return self.times[-1]

    def tensor(self) -> torch.Tensor:
        """The times as a float64 tensor [steps + 1]."""
        return torch.tensor(self.times, dtype=torch.float64)

    def check_times(self, T: float | None = None, eps: float | None = None) -> None:
        """Raise ValueError unless the times are finite, strictly decreasing and inside [eps, T]."""
        t = self.times
        if len(t) < 2 or not all(math.isfinite(v) for v in t):
            raise ValueError(f"a fitted grid needs >= 2 finite times; got {t}")
        bad = [i for i in range(len(t) - 1) if not t[i + 1] < t[i]]
        if bad:
            i = bad[0]
            raise ValueError(f"fitted grid is not strictly decreasing: times[{i}] = {t[i]!r} <= times[{i + 1}] = "
                             f"{t[i + 1]!r}")  # fmt: skip
        T = self.sde.get("T") if T is None else T
        if T is not None and t[0] > T * (1 + 1e-12):
            raise ValueError(f"fitted grid leaves [eps, T]: times[0] = {t[0]!r} > T = {T!r}")
        if t[-1] <= 0:
            raise ValueError(f"fitted grid leaves [eps, T]: its last time {t[-1]!r} is not > 0")
        if eps is not None and abs(t[-1] - eps) > 1e-12 * max(1.0, eps):
            raise ValueError(f"fitted grid ends at eps = {t[-1]!r}, but eps = {eps!r} was asked for")

    def resolve(self, sde: LinearSDE, sampler, options: dict, *, nfe=None, steps=None, eps=None):
        """Check this grid against a call of ``ss.sample`` and return what the call should use.

        Returns ``(times [steps + 1] float64 tensor, nfe, eps, options)``; raises ValueError when the
        SDE, the sampler, one of its options, ``nfe`` / ``steps`` or ``eps`` is not the one fitted for.
        """
        name = sampler if isinstance(sampler, str) else getattr(sampler, "name", repr(sampler))
        if name != self.sampler:
            raise ValueError(f"grid was fitted for sampler {self.sampler!r}; got sampler = {name!r}")
        here = sde_fingerprint(sde)
        if not _same_sde(here, self.sde):
            raise ValueError(f"grid was fitted for another SDE ({self.sde['kind']}, log-SNR "
                             f"{self.sde['log_snr'][-1]:.4g}..{self.sde['log_snr'][0]:.4g}); got {sde!r}")  # fmt: skip
        merged = dict(self.options)
        for k, v in options.items():
            if k in merged and merged[k] != v:
                raise ValueError(f"grid was fitted for {self.sampler} with {k} = {merged[k]!r}; got {k} = {v!r}")
            merged[k] = v
        if nfe is not None and nfe != self.nfe:
            raise ValueError(f"grid was fitted for nfe = {self.nfe}; got nfe = {nfe!r}")
        if steps is not None and steps != self.steps:
            raise ValueError(f"grid was fitted for {self.steps} steps (nfe = {self.nfe}); got steps = {steps!r}")
        if steps_for_nfe(self.sampler, merged, self.nfe) != self.steps:
            raise ValueError(f"with options {merged} sampler {self.sampler} takes a different number of steps at "
                             f"nfe = {self.nfe} than the {self.steps} this grid was fitted for")  # fmt: skip
        self.check_times(T=float(sde.T), eps=eps)
        return self.tensor(), self.nfe, self.eps, merged

    def cost_text(self) -> str:
        """E.g. "fitted (teacher) from 256 starts in 40.1 s, 6,000 NFE, 3 optimiser starts"."""
        c = self.cost
        return (f"fitted ({self.method}) from {c.get('fit_samples', '?')} starts in "
                f"{c.get('seconds', float('nan')):.1f} s, {c.get('nfe', 0):,} NFE, {c.get('starts', '?')} optimiser "
                "starts")  # fmt: skip

    # -- files --------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    def save(self, path: str) -> str:
        """Write the grid as JSON to ``path`` (folders made); returns the path."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)
        return path

    @classmethod
    def from_dict(cls, d: dict) -> FittedGrid:
        got = d.get("format") if isinstance(d, dict) else type(d).__name__
        if got != FORMAT:
            raise ValueError(f"not a fitted grid (format {FORMAT!r}); got format = {got!r}")
        keys = ("times", "sampler", "nfe", "sde", "options", "method", "cost", "info")
        return cls(**{k: d[k] for k in keys if k in d})

    @classmethod
    def load(cls, path: str) -> FittedGrid:
        """Read a grid written by :meth:`save`; the times and the NFE are checked (ValueError)."""
        with open(path, encoding="utf-8") as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not a JSON fitted grid ({e})") from None
        return cls.from_dict(d)


def grid_path(workdir: str, sampler: str, nfe: int, method: str = "teacher") -> str:
    """Where a workdir keeps a fitted grid: ``workdir/grids/<sampler>_<nfe>_<method>.json``."""
    return os.path.join(workdir, "grids", f"{sampler}_{nfe}_{method}.json")
