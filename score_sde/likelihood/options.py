"""Grouped options of :func:`~score_sde.likelihood.log_likelihood`: how the ODE is solved and how the divergence
is estimated. ``log_likelihood`` accepts them beside its keywords (``solver=ODESolveOptions(...)``,
``divergence=DivergenceOptions(...)``); inside the package the two schemes receive these objects instead of a long
list of loose arguments."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ODESolveOptions:
    """How the probability-flow ODE is integrated (torchdiffeq).

    Attributes:
        method: a torchdiffeq method (``"dopri5"`` by default), ``"scipy_rk45"`` / ``"scipy_dop853"``, or ``"auto"``
            (scipy's RK45 when no graph is needed and the state is float64, else dopri5); ``scheme="quadrature"``
            needs a torchdiffeq adaptive method (``"auto"`` means dopri5 there).
        rtol, atol: tolerances (> 0) of the adaptive step-size control on the state.
        options: passed to torchdiffeq (``first_step``, ``max_num_steps``, ...; a ``norm`` given here receives the
            error ratios of the flat augmented state ``[x.flatten(), Delta]``, shape [B*D + B]).
        state_dtype: dtype of the ODE state and of the solver's arithmetic (default float64; never lower than the
            data's dtype; None: the data's dtype). The score still sees x in the data's dtype.
    """

    method: str = "dopri5"
    rtol: float = 1e-5
    atol: float = 1e-5
    options: dict | None = None
    state_dtype: torch.dtype | None = torch.float64


@dataclass(frozen=True)
class DivergenceOptions:
    """How div s = tr(ds/dx) is formed at each evaluation (Song et al. 2021, App. D.2).

    Attributes:
        kind: ``"exact"`` (D vector-Jacobian products, chunked) or ``"hutchinson"`` (Skilling–Hutchinson estimate
            v^T (ds/dx) v with E[v v^T] = I, the probes held fixed along the trajectory).
        probes: Hutchinson probes per sample (an int >= 1), or the probes themselves, a tensor [k, B, ...]
            (or [B, ...] for one).
        noise: Hutchinson probe law, ``"rademacher"`` or ``"gaussian"``.
        chunk_size: dimensions per batched vector-Jacobian product of the exact divergence (None: as many as keep
            the cotangents near 2^22 entries).
        create_graph: build the divergence's graph so that ``logp`` can be differentiated (None: when gradients
            are enabled and x or a parameter reached by the score requires grad).
    """

    kind: str = "exact"
    probes: int | torch.Tensor = 1
    noise: str = "rademacher"
    chunk_size: int | None = None
    create_graph: bool | None = None


def _same(a, b) -> bool:
    """Equal option values (tensors: the same object)."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        return a is b
    return a == b


def merge_options(obj, given: dict, cls, name: str):
    """``obj`` (an instance of ``cls``, or None) updated with the keywords of ``given`` ({field: value}) that differ
    from ``cls``'s defaults. A field set both ways, to different values, is a ``TypeError`` naming it."""
    if obj is None:
        return cls(**given)
    if not isinstance(obj, cls):
        raise TypeError(f"{name} must be {cls.__name__}(...) or None; got {type(obj).__name__}")
    defaults, changes = cls(), {}
    for field, value in given.items():
        default, mine = getattr(defaults, field), getattr(obj, field)
        if _same(value, default):
            continue
        if not _same(mine, default) and not _same(mine, value):
            raise TypeError(
                f"{field} is given twice: as a keyword ({value!r}) and in {name}=({field}={mine!r}); give it once"
            )
        changes[field] = value
    return dataclasses.replace(obj, **changes) if changes else obj
