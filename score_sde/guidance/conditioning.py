"""The conditioning interface: what a conditional score ``score_fn(x, t, cond)`` declares, label checks,
the null condition and condition dropout for classifier-free training (Ho & Salimans 2021)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch

from ..utils import bcast

# ---------------------------------------------------------------------------------------------
# The conditioning interface
# ---------------------------------------------------------------------------------------------


def conditioning_of(score_fn: Callable) -> dict:
    """What conditioning a score model declares: ``{"num_classes": K | None, "context_dim": C | None}``.

    Looks at ``score_fn.num_classes`` / ``score_fn.context_dim`` (or ``cond_dim``, the MLP's vector
    condition) and, for a :class:`~score_sde.ScoreModel`, at its network's attributes of the same names.
    """
    info = {"num_classes": None, "context_dim": None}
    for obj in (score_fn, getattr(score_fn, "net", None), getattr(getattr(score_fn, "net", None), "module", None)):
        if obj is None:
            continue
        for key, attrs in (("num_classes", ("num_classes",)), ("context_dim", ("context_dim", "cond_dim"))):
            for attr in attrs:
                val = getattr(obj, attr, None)
                if info[key] is None and isinstance(val, int) and not isinstance(val, bool) and val > 0:
                    info[key] = val
    return info


def _accepts_cond(score_fn: Callable) -> bool:
    """Whether ``score_fn`` can be called as ``score_fn(x, t, cond)``."""
    fn = score_fn.forward if isinstance(score_fn, torch.nn.Module) else score_fn
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins: assume yes
        return True
    try:
        sig.bind(None, None, None)
    except TypeError:
        return False
    return True


def require_conditional(score_fn: Callable, what: str = "classifier-free guidance") -> dict:
    """Raise ``ValueError`` unless ``score_fn`` is a conditional model; return :func:`conditioning_of`.

    A :class:`~score_sde.ScoreModel` is conditional when its network declares ``num_classes`` or
    ``context_dim``; a plain callable when it takes a third argument ``cond``.
    """
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable; got {type(score_fn).__name__}")
    info = conditioning_of(score_fn)
    if not _accepts_cond(score_fn):
        raise ValueError(
            f"{what} needs a conditional model score_fn(x, t, cond); {type(score_fn).__name__} takes no cond argument"
        )
    net = getattr(score_fn, "net", None)
    if net is not None and info["num_classes"] is None and info["context_dim"] is None:
        raise ValueError(
            f"{what} needs a conditional model, but {type(net).__name__} declares neither num_classes nor "
            "context_dim (build it with num_classes=K or context_dim=C)"
        )
    return info


def check_labels(y: torch.Tensor, num_classes: int | None, name: str = "label", allow_null: bool = False) -> None:
    """Raise ``TypeError``/``ValueError`` naming the value if class labels are not ints in ``[0, num_classes)``.

    With ``allow_null`` the null label ``num_classes`` is accepted too.
    """
    if not torch.is_tensor(y):
        raise TypeError(f"{name}s must be a torch.Tensor of integer class labels; got {type(y).__name__}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{name}s must be an integer tensor; got dtype {y.dtype}")
    if num_classes is None or y.numel() == 0:
        return
    hi = num_classes + 1 if allow_null else num_classes
    bad = (y < 0) | (y >= hi)
    if bad.any():
        v = y[bad].flatten()[0].item()
        raise ValueError(f"{name} {v} is out of range: class labels must lie in [0, {num_classes})")


def _labels(cond, x: torch.Tensor) -> torch.Tensor:
    """An int label or a [B] label tensor as a [B] int64 tensor on x's device."""
    if isinstance(cond, int) and not isinstance(cond, bool):
        return torch.full((x.shape[0],), cond, dtype=torch.long, device=x.device)
    if not torch.is_tensor(cond):
        raise TypeError(f"class labels must be an int or an integer tensor; got {type(cond).__name__}")
    if cond.ndim == 0:
        cond = cond.expand(x.shape[0])
    if cond.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape [B] = [{x.shape[0]}]; got {tuple(cond.shape)}")
    return cond.to(x.device)


def _is_labels(cond) -> bool:
    return (isinstance(cond, int) and not isinstance(cond, bool)) or (
        torch.is_tensor(cond) and not cond.is_floating_point() and not cond.is_complex()
    )


def null_condition(cond, null_label: int | None = None, null_context: torch.Tensor | None = None):
    """The null condition matching ``cond``: ``null_label`` everywhere for labels, zeros (or
    ``null_context``) for a context tensor. ``cond=None`` stays None."""
    if cond is None:
        return None
    if _is_labels(cond):
        if null_label is None:
            raise ValueError("the null condition of class labels needs null_label (conventionally num_classes)")
        if isinstance(cond, int):
            return int(null_label)
        return torch.full_like(cond, int(null_label))
    if not torch.is_tensor(cond):
        raise TypeError(f"cond must be None, class labels or a context tensor; got {type(cond).__name__}")
    if null_context is None:
        return torch.zeros_like(cond)
    return null_context.to(cond).expand_as(cond)


def drop_condition(
    cond: torch.Tensor,
    p: float,
    null_label: int | None = None,
    generator: torch.Generator | None = None,
    null_context: torch.Tensor | None = None,
) -> torch.Tensor:
    """Classifier-free training: replace each sample's condition by the null condition with prob. ``p``.

    Args:
        cond: [B] int labels or a [B, ...] context tensor.
        p: drop probability in [0, 1] (Ho & Salimans 2021 use 0.1-0.2).
        null_label: the null label for label conditions (conventionally ``num_classes``).
        generator: torch.Generator for the Bernoulli draws (None: global RNG).
        null_context: the null context (default zeros) for context tensors.
    Returns:
        a new tensor like ``cond`` (the input is not modified).
    """
    if not (isinstance(p, (int, float)) and 0.0 <= float(p) <= 1.0):
        raise ValueError(f"drop probability p must lie in [0, 1]; got p = {p!r}")
    if not torch.is_tensor(cond) or cond.ndim == 0:
        raise TypeError("cond must be a [B] label tensor or a [B, ...] context tensor")
    drop = torch.rand(cond.shape[0], generator=generator, device=cond.device) < float(p)
    null = null_condition(cond, null_label, null_context)
    return torch.where(bcast(drop, cond), null, cond)


def _in_interval(t: torch.Tensor, interval) -> torch.Tensor | None:
    """[B] bool: t inside the closed interval, or None when no interval is set."""
    if interval is None:
        return None
    lo, hi = interval
    return (t >= lo) & (t <= hi)


def _check_interval(interval):
    if interval is None:
        return None
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"interval must be a pair (t_lo, t_hi); got {interval!r}") from None
    if not (0.0 <= lo < hi):
        raise ValueError(f"interval must satisfy 0 <= t_lo < t_hi; got interval = {interval!r}")
    return lo, hi


def _check_scale(scale) -> float:
    if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and math.isfinite(scale)):
        raise ValueError(f"guidance scale must be a finite number; got scale = {scale!r}")
    return float(scale)
