"""Guidance as score transforms: classifier-free guidance and classifier guidance (Song et al. 2021, Sec. 5,
eq. 14; Dhariwal & Nichol 2021; Ho & Salimans 2021). Each is a new ``score_fn(x, t, cond)``, usable with every
sampler."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from ..utils import as_time, bcast
from .conditioning import (
    _check_interval,
    _check_scale,
    _in_interval,
    _is_labels,
    _labels,
    check_labels,
    conditioning_of,
    null_condition,
    require_conditional,
)

# ---------------------------------------------------------------------------------------------
# Score transforms: classifier-free and classifier guidance
# ---------------------------------------------------------------------------------------------


def _takes_cond_only_as_varargs(score_fn: Callable) -> bool:
    """True for ``f(x, t, *args)``: it accepts a third argument but names none (an unconditional score
    that tolerates extra arguments, such as ``GaussianMixture.score_fn(sde)``)."""
    fn = score_fn.forward if isinstance(score_fn, torch.nn.Module) else score_fn
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    named = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(named) < 3 and any(p.kind is p.VAR_POSITIONAL for p in params)


def _check_cfg_arguments(score_fn, scale, null_label, num_classes, null_context) -> None:
    """Catch the wrong calls of ``ClassifierFreeGuidance(score_fn, scale)`` at construction, not at sample time."""
    usage = (
        "ClassifierFreeGuidance(score_fn, scale) takes ONE conditional model score_fn(x, t, cond) (its null "
        "condition gives the unconditional score) and a number"
    )
    if callable(scale) or torch.is_tensor(scale):
        raise TypeError(f"{usage}; got a {type(scale).__name__} for scale (two models, or the arguments swapped?)")
    if not callable(score_fn):
        raise TypeError(f"{usage}; got score_fn = {score_fn!r} ({type(score_fn).__name__}), which is not callable")
    declared = conditioning_of(score_fn)
    if (
        _takes_cond_only_as_varargs(score_fn)
        and declared["num_classes"] is None
        and declared["context_dim"] is None
        and null_label is None
        and num_classes is None
        and null_context is None
    ):
        raise ValueError(
            f"{usage}; {getattr(score_fn, '__name__', type(score_fn).__name__)} takes cond only through *args and "
            "declares neither num_classes nor context_dim, so it looks unconditional (e.g. gmm.score_fn(sde)). Pass a "
            "conditional model, or give null_label= / num_classes= / null_context= to say how to drop its condition"
        )


class ClassifierFreeGuidance:
    """Classifier-free guidance (Ho & Salimans 2021; the guided noise estimate eps^ = eps_u + s (eps_c - eps_u)).

    In score form, with s_c = score(x, t, c) and s_u = score(x, t, null):

        s^(x, t, c) = s_u + scale (s_c - s_u)                                        (score form)

    which is that formula since eps = -sigma(t) score. scale = 0 is unconditional, 1 the
    conditional model, > 1 sharpens towards the class. With ``interval=(t_lo, t_hi)`` guidance is
    applied only there; elsewhere the conditional score (scale 1) is returned.

    Args:
        score_fn: a conditional model ``score_fn(x, t, cond)`` (raises ValueError otherwise).
        scale: the guidance scale s.
        null_label: null label of a label model (default: the model's ``num_classes``).
        num_classes: number of classes (default: declared by the model) for range checks.
        null_context: null context of a context model (default zeros).
        interval: optional (t_lo, t_hi).
        batched: evaluate s_c and s_u in one call on a batch of 2B (one network pass).

    ``guided(x, t, cond)`` -> [B, ...]; ``cond`` an int, [B] labels, or a [B, ...] context.
    ``network_calls`` counts the evaluations of ``score_fn`` (an unbatched step costs 2); a sampler's
    NFE counts guided evaluations, each of which is one batched network pass on 2B inputs.
    """

    def __init__(
        self,
        score_fn: Callable,
        scale: float,
        null_label: int | None = None,
        num_classes: int | None = None,
        null_context: torch.Tensor | None = None,
        interval: tuple[float, float] | None = None,
        batched: bool = True,
    ):
        _check_cfg_arguments(score_fn, scale, null_label, num_classes, null_context)
        info = require_conditional(score_fn, "classifier-free guidance")
        self.score_fn = score_fn
        self.scale = _check_scale(scale)
        self.num_classes = num_classes if num_classes is not None else info["num_classes"]
        self.context_dim = info["context_dim"]
        self.null_label = null_label if null_label is not None else self.num_classes
        self.null_context = null_context
        self.interval = _check_interval(interval)
        self.batched = bool(batched)
        self.network_calls = 0

    def _cond(self, cond, x):
        if cond is None:
            raise ValueError("classifier-free guidance needs a condition: pass cond= (labels or a context tensor)")
        if _is_labels(cond):
            y = _labels(cond, x)
            check_labels(y, self.num_classes)
            return y, null_condition(y, self.null_label)
        if not torch.is_tensor(cond):
            raise TypeError(f"cond must be class labels or a context tensor; got {type(cond).__name__}")
        if self.num_classes is not None and self.context_dim is None:
            raise TypeError(f"this model takes class labels: cond must be an integer tensor; got dtype {cond.dtype}")
        if cond.ndim == 0 or cond.shape[0] != x.shape[0]:
            raise ValueError(f"context must have shape [B, ...] with B = {x.shape[0]}; got {tuple(cond.shape)}")
        return cond, null_condition(cond, null_context=self.null_context)

    def cond_and_uncond(self, x: torch.Tensor, t, cond) -> tuple[torch.Tensor, torch.Tensor]:
        """(s_c, s_u) at (x, t), each shaped like x."""
        t = as_time(t, x)
        c, u = self._cond(cond, x)
        if self.batched:
            self.network_calls += 1
            out = self.score_fn(torch.cat([x, x]), torch.cat([t, t]), torch.cat([c, u]))
            return out[: x.shape[0]], out[x.shape[0] :]
        self.network_calls += 2
        return self.score_fn(x, t, c), self.score_fn(x, t, u)

    def __call__(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        t = as_time(t, x)
        inside = _in_interval(t, self.interval)
        if inside is not None and not inside.any():  # outside the interval: the conditional model alone
            c, _ = self._cond(cond, x)
            self.network_calls += 1
            return self.score_fn(x, t, c)
        s_c, s_u = self.cond_and_uncond(x, t, cond)
        guided = s_u + self.scale * (s_c - s_u)
        return guided if inside is None else torch.where(bcast(inside, x), guided, s_c)


class ClassifierGuidance:
    """Classifier guidance (Song et al. 2021, Sec. 5 eq. 14; Dhariwal & Nichol 2021):

        s^(x, t, y) = s(x, t) + scale * grad_x log p_t(y | x).

    ``classifier(x, t)`` returns logits [B, K] of a noise-conditional classifier p_t(y | x); the
    gradient is taken by autograd. If ``x`` requires grad (and grad mode is on) the gradient is
    built with ``create_graph=True`` so the guided score stays differentiable; otherwise it is
    computed on a detached leaf inside ``torch.enable_grad()`` (so guidance also works inside a
    sampler run under ``torch.no_grad``). No ``no_grad`` is applied here.

    Args:
        score_fn: the (unconditional) score ``score_fn(x, t)``; with ``conditional=True`` it is
            called as ``score_fn(x, t, y)`` (guiding a conditional model, as ADM does).
        classifier: ``classifier(x, t) -> logits [B, K]``.
        scale: the guidance scale w (1 with an exact classifier gives the exact conditional).
        interval: optional (t_lo, t_hi); outside it the unguided score is returned.
    """

    def __init__(
        self,
        score_fn: Callable,
        classifier: Callable,
        scale: float = 1.0,
        interval: tuple[float, float] | None = None,
        conditional: bool = False,
    ):
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable; got {type(score_fn).__name__}")
        if not callable(classifier):
            raise TypeError(f"classifier must be callable (x, t) -> logits; got {type(classifier).__name__}")
        if conditional:
            require_conditional(score_fn, "conditional classifier guidance")
        self.score_fn, self.classifier = score_fn, classifier
        self.scale = _check_scale(scale)
        self.interval = _check_interval(interval)
        self.conditional = conditional

    def log_prob_grad(self, x: torch.Tensor, t, y) -> torch.Tensor:
        """grad_x log p_t(y | x), shape like x (y: int or [B] labels)."""
        t = as_time(t, x)
        y = _labels(y, x)
        differentiable = torch.is_grad_enabled() and x.requires_grad
        x_in = x if differentiable else x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.classifier(x_in, t)
            if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
                raise ValueError(f"classifier must return logits of shape [B, K]; got {tuple(logits.shape)}")
            check_labels(y, logits.shape[1])
            logp = torch.log_softmax(logits, dim=-1).gather(1, y[:, None]).sum()
            (g,) = torch.autograd.grad(logp, x_in, create_graph=differentiable)
        return g

    def __call__(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        if cond is None:
            raise ValueError("classifier guidance needs target labels: pass cond= (an int or [B] labels)")
        t = as_time(t, x)
        s = self.score_fn(x, t, cond) if self.conditional else self.score_fn(x, t)
        inside = _in_interval(t, self.interval)
        if inside is None:
            return s + self.scale * self.log_prob_grad(x, t, cond).to(s)
        if not inside.any():
            return s
        w = torch.where(inside, self.scale, 0.0).to(s)
        return s + bcast(w, x) * self.log_prob_grad(x, t, cond).to(s)
