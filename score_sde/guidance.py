"""Conditional and controllable generation: guidance as score transforms, control as step hooks.

Conditioning interface
----------------------
A conditional score is a callable ``score_fn(x, t, cond)`` with x [B, ...], t [B] and ``cond``
either a class-label tensor [B] (int64, labels in ``[0, num_classes)``), a context tensor
[B, ...] (e.g. the keys/values of cross-attention), or ``None`` (unconditional). The *null
condition* of a label model is the extra label ``num_classes`` (its own embedding row); the null
condition of a context model is the all-zero context. :func:`drop_condition` replaces a random
fraction p of the conditions by the null condition during training, so that one network learns
both s(x, t, c) and s(x, t, null) (classifier-free training, Ho & Salimans 2021).

Score transforms (usable with every sampler, fixed-step or adaptive, since they are just a new
``score_fn(x, t, cond)``):

- :class:`ClassifierFreeGuidance`: the seed's eps^ = eps_u + s (eps_c - eps_u). Because
  score = -eps / sigma(t) is linear in eps with a coefficient common to both terms, the same
  combination holds in score form, s^ = s_u + s (s_c - s_u); optionally applied only for t in an
  interval (outside it the conditional score, s = 1, is used).
- :class:`ClassifierGuidance`: s^(x, t) = s(x, t) + w grad_x log p_t(y | x) with a noise-conditional
  classifier p_t(y | x) (Song et al. 2021, Sec. 5, eq. 14; Dhariwal & Nichol 2021). With w = 1 and
  the exact classifier this is, by Bayes' rule, exactly grad_x log p_t(x | y).

Step hooks (fixed-grid samplers: every predictor, PC, the fixed-step probability-flow ODE and the
fast solvers; they wrap any :class:`~score_sde.solvers.base.Stepper`, they do not fork it):

- :class:`ImputationStepper` with an :class:`Observation`: after every step to time t_next the
  known entries are replaced by forward-noised observations alpha(t_next) y + sigma(t_next) z,
  and the step's noise-free mean by alpha(t_next) y (Song et al. 2021, App. I.2). Inpainting is
  imputation with an image mask; colorization (App. I.3) is imputation after the orthogonal
  colour transform :data:`COLOR_DECOUPLE` that maps RGB to (gray, two colour channels).

The adaptive ``ode`` / ``sde`` back-ends take score transforms (guidance) but not step hooks:
they choose their own steps, so there is no step to hook; :func:`impute` says so and names the
fixed-step alternatives (``probability_flow``, ``pc``, ``ddim``, ...).

Analytic oracles (ground truth for the tests): :func:`mixture_classifier` (the exact p_t(y | x) of
a Gaussian mixture whose components are the classes), :class:`MixtureClassScore` (the exact
class-conditional and unconditional scores), :func:`mixture_conditional` (the exact conditional
of a Gaussian mixture given some coordinates: again a Gaussian mixture).

Noisy classifiers (for classifier guidance) are trained under the same noise process by
:func:`classifier_loss` / :func:`train_noisy_classifier`; :func:`accuracy_vs_noise` gives the
accuracy-against-noise-level curve (Song et al. 2021, Fig. 13's companion measurement).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .analytic import GaussianMixture
from .sde.base import LinearSDE
from .solvers.api import SAMPLERS, available_samplers, sample
from .solvers.base import Context, StepOutput, Stepper
from .solvers.loop import SampleResult
from .utils import Generator, as_time, bcast, check_finite

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
    """Classifier-free guidance (Ho & Salimans 2021; the seed's eps^ = eps_u + s (eps_c - eps_u)).

    In score form, with s_c = score(x, t, c) and s_u = score(x, t, null):

        s^(x, t, c) = s_u + scale (s_c - s_u)                                        (score form)

    which is the seed's formula since eps = -sigma(t) score. scale = 0 is unconditional, 1 the
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


# ---------------------------------------------------------------------------------------------
# Analytic oracles
# ---------------------------------------------------------------------------------------------


def mixture_classifier(gmm: GaussianMixture, sde: LinearSDE) -> Callable:
    """The exact noise-conditional classifier of a mixture whose components are the classes.

    Returns ``classifier(x, t) -> logits [B, K]`` with logits_k = log w_k + log N_k,t(x), so
    softmax(logits) = ``gmm.responsibilities(x, t, sde)`` = p_t(y = k | x). Differentiable in x.
    """
    comps = [gmm.component(k) for k in range(gmm.K)]
    logw = torch.log(gmm.weights)

    def classifier(x: torch.Tensor, t) -> torch.Tensor:
        return torch.stack([c.log_prob(x, t, sde) for c in comps], dim=1) + logw.to(x)

    return classifier


class MixtureClassScore:
    """Exact class-conditional score of a labelled Gaussian mixture: ``score(x, t, y)``.

    y = k in [0, K) gives grad log p_t(x | y = k) (component k's score); y = K (the null label)
    or ``cond=None`` gives the mixture's score grad log p_t(x). ``num_classes = K``.
    """

    def __init__(self, gmm: GaussianMixture, sde: LinearSDE):
        self.gmm, self.sde = gmm, sde
        self.num_classes = gmm.K
        self.comps = [gmm.component(k) for k in range(gmm.K)]

    def __call__(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        t = as_time(t, x)
        if cond is None:
            return self.gmm.score(x, t, self.sde)
        y = _labels(cond, x)
        check_labels(y, self.num_classes, allow_null=True)
        out = torch.empty_like(x)
        for k in range(self.num_classes + 1):
            sel = y == k
            if sel.any():
                src = self.gmm if k == self.num_classes else self.comps[k]
                out[sel] = src.score(x[sel], t[sel], self.sde)
        return out


def mixture_conditional(gmm: GaussianMixture, mask: torch.Tensor, y: torch.Tensor) -> GaussianMixture:
    """The exact conditional p(x_u | x_k = y) of a Gaussian mixture: again a Gaussian mixture.

    Per component, with the blocks of (mu, Sigma) over unknown (u) and known (k) coordinates:
    mean mu_u + S_uk S_kk^{-1} (y - mu_k), covariance S_uu - S_uk S_kk^{-1} S_ku, and weight
    proportional to w_k N(y; mu_k, S_kk).

    Args:
        gmm: the data mixture (D dimensions, any event shape).
        mask: bool/0-1 tensor of the event shape (or [D]); True = known.
        y: the observation, event shape (or [D]); only its known entries are used.
    Returns:
        a :class:`GaussianMixture` over the D_u unknown coordinates (in flattened order).
    """
    m = _flat_mask(mask, gmm.D)
    yf = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    if yf.numel() != gmm.D:
        raise ValueError(f"y must hold D = {gmm.D} entries; got shape {tuple(torch.as_tensor(y).shape)}")
    ku, kk = (~m).nonzero().flatten(), m.nonzero().flatten()
    if ku.numel() == 0 or kk.numel() == 0:
        raise ValueError("mask must mark some coordinates known and some unknown")
    mu, S = gmm.means, gmm.covs
    S_uu, S_uk, S_kk = S[:, ku][:, :, ku], S[:, ku][:, :, kk], S[:, kk][:, :, kk]
    L = torch.linalg.cholesky(S_kk)  # [K, dk, dk]
    r = (yf[kk][None] - mu[:, kk])[..., None]  # [K, dk, 1]
    sol = torch.cholesky_solve(r, L)  # S_kk^{-1}(y - mu_k)
    mean = mu[:, ku] + (S_uk @ sol)[..., 0]
    cov = S_uu - S_uk @ torch.cholesky_solve(S_uk.transpose(-1, -2), L)
    logN = (
        -0.5 * (r * sol).sum((-1, -2))
        - torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        - 0.5 * kk.numel() * math.log(2 * math.pi)
    )
    w = torch.softmax(torch.log(gmm.weights) + logN, dim=0)
    return GaussianMixture(w, mean, 0.5 * (cov + cov.transpose(-1, -2)))


def mixture_posterior(gmm: GaussianMixture, mask: torch.Tensor, y: torch.Tensor) -> GaussianMixture:
    """The law of the full x_0 given x_k = y: :func:`mixture_conditional` on the unknown entries and
    the point mass y on the known ones (a D-dimensional mixture with degenerate covariances).

    Its exact score under an SDE samples the conditional through the same sampler as imputation
    does, which separates a sampler's discretization error from the replacement method's bias.
    """
    m = _flat_mask(mask, gmm.D)
    cm = mixture_conditional(gmm, mask, y)
    yf = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    ku = (~m).nonzero().flatten()
    means = yf.expand(cm.K, gmm.D).clone()
    means[:, ku] = cm.means
    covs = torch.zeros(cm.K, gmm.D, gmm.D, dtype=torch.float64)
    covs[:, ku[:, None], ku[None, :]] = cm.covs
    return GaussianMixture(cm.weights, means, covs, gmm.event_shape)


def transform_mixture(gmm: GaussianMixture, A: torch.Tensor) -> GaussianMixture:
    """The law of A x for x ~ gmm (A: [D', D]): means A mu_k, covariances A Sigma_k A^T."""
    A = torch.as_tensor(A, dtype=torch.float64)
    cov = A @ gmm.covs @ A.T
    return GaussianMixture(gmm.weights, gmm.means @ A.T, 0.5 * (cov + cov.transpose(-1, -2)))


def _flat_mask(mask, D: int) -> torch.Tensor:
    m = torch.as_tensor(mask)
    if m.numel() != D:
        raise ValueError(f"mask must hold D = {D} entries; got shape {tuple(m.shape)}")
    return m.reshape(-1).to(torch.bool)


# ---------------------------------------------------------------------------------------------
# Controllable generation: observations and the imputation step hook
# ---------------------------------------------------------------------------------------------

#: Song et al. 2021, App. I.3: the orthogonal 3x3 matrix that decouples RGB into a gray-scale
#: channel and two colour channels. Column j is the j-th decoupled channel's direction:
#: (1, 1, 1)/sqrt(3) (gray: sqrt(3) times the channel mean), (-2, 1, 1)/sqrt(6), (0, 1, -1)/sqrt(2).
COLOR_DECOUPLE = torch.stack(
    [
        torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64) / math.sqrt(3.0),
        torch.tensor([-2.0, 1.0, 1.0], dtype=torch.float64) / math.sqrt(6.0),
        torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64) / math.sqrt(2.0),
    ],
    dim=1,
)


def decouple_colors(x: torch.Tensor, M: torch.Tensor | None = None, channel_dim: int = 1) -> torch.Tensor:
    """u_j = sum_i x_i M_ij over the channel axis (App. I.3's ``decouple``); x [B, C, ...]."""
    M = (COLOR_DECOUPLE if M is None else M).to(x)
    return torch.movedim(torch.movedim(x, channel_dim, -1) @ M, -1, channel_dim)


def couple_colors(u: torch.Tensor, M: torch.Tensor | None = None, channel_dim: int = 1) -> torch.Tensor:
    """Inverse of :func:`decouple_colors` (M orthogonal, so M^{-1} = M^T)."""
    M = (COLOR_DECOUPLE if M is None else M).to(u)
    return torch.movedim(torch.movedim(u, channel_dim, -1) @ M.T, -1, channel_dim)


class Observation:
    """Known values of a sample: ``mask`` (True = known) and the values ``y``, optionally in a
    transformed basis u = T(x) given by an orthogonal channel matrix (colorization).

    Args:
        y: observed values, [B, ...] or the event shape (shared by the batch); entries outside the
            mask are ignored. In the transformed basis when ``transform`` is given.
        mask: bool or 0/1 tensor, the event shape or [B, ...].
        transform: optional orthogonal [C, C] matrix M acting on ``channel_dim`` (u = x M).
        channel_dim: the channel axis of x (1 for [B, C, H, W]).
    """

    def __init__(self, y: torch.Tensor, mask: torch.Tensor, transform: torch.Tensor | None = None, channel_dim=1):
        if not torch.is_tensor(y):
            raise TypeError(f"y must be a torch.Tensor; got {type(y).__name__}")
        if not torch.is_tensor(mask):
            raise TypeError(f"mask must be a torch.Tensor; got {type(mask).__name__}")
        check_finite(y, "y")
        mvals = mask if mask.dtype == torch.bool else mask.to(torch.float64)
        if mask.dtype != torch.bool and not ((mvals == 0) | (mvals == 1)).all():
            raise ValueError("mask must be boolean or hold only 0 and 1")
        self.mask = mask.to(torch.bool)
        self.y = y
        self.channel_dim = channel_dim
        if transform is not None:
            M = torch.as_tensor(transform, dtype=torch.float64)
            if M.ndim != 2 or M.shape[0] != M.shape[1]:
                raise ValueError(f"transform must be a square [C, C] matrix; got shape {tuple(M.shape)}")
            if not torch.allclose(M.T @ M, torch.eye(M.shape[0], dtype=torch.float64), atol=1e-6):
                raise ValueError("transform must be orthogonal (M^T M = I) so the noise stays isotropic")
            transform = M
        self.transform = transform
        if y.ndim == self.mask.ndim + 1 and tuple(y.shape[1:]) != tuple(self.mask.shape):
            raise ValueError(f"mask has shape {tuple(self.mask.shape)} but y has shape {tuple(y.shape)}")
        if y.ndim == self.mask.ndim and tuple(y.shape) != tuple(self.mask.shape):
            raise ValueError(f"mask has shape {tuple(self.mask.shape)} but y has shape {tuple(y.shape)}")

    def check(self, x: torch.Tensor) -> None:
        """Raise ValueError if this observation does not fit samples x [B, ...]."""
        ev = tuple(x.shape[1:])
        if tuple(self.mask.shape) not in (ev, tuple(x.shape)):
            raise ValueError(
                f"mask has shape {tuple(self.mask.shape)}; expected the event shape {ev} or the batch shape "
                f"{tuple(x.shape)} of x"
            )
        if tuple(self.y.shape) not in (ev, tuple(x.shape)):
            raise ValueError(f"y has shape {tuple(self.y.shape)}; expected {ev} or {tuple(x.shape)}")
        if self.transform is not None:
            C = x.shape[self.channel_dim]
            if self.transform.shape[0] != C:
                raise ValueError(f"transform is {tuple(self.transform.shape)} but x has {C} channels")

    def to_obs(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.transform is None else decouple_colors(x, self.transform, self.channel_dim)

    def from_obs(self, u: torch.Tensor) -> torch.Tensor:
        return u if self.transform is None else couple_colors(u, self.transform, self.channel_dim)

    def replace(self, x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """x with its known entries (in the observation basis) set to ``values``."""
        u = self.to_obs(x)
        m = self.mask.to(x.device)
        m = m.expand_as(u) if m.shape != u.shape else m
        return self.from_obs(torch.where(m, values.to(u).expand_as(u), u))

    def noised(self, sde: LinearSDE, t: torch.Tensor, x: torch.Tensor, z: torch.Tensor | None):
        """(alpha(t) y + sigma(t) z, alpha(t) y): the observation pushed through the forward kernel."""
        tv = as_time(t.to(x.dtype) if torch.is_tensor(t) else t, x)
        a = bcast(sde.alpha(tv).to(x), x)
        mean = a * self.y.to(x)
        if z is None:
            return mean, mean
        return mean + bcast(sde.sigma(tv).to(x), x) * z, mean


class ImputationStepper(Stepper):
    """Imputation / inpainting as a hook around any fixed-grid stepper (Song et al. 2021, App. I.2).

    Each step of the wrapped stepper takes x(t) to x(t_next); then the known entries are replaced:

        x[known]    <- alpha(t_next) y + sigma(t_next) z,     z ~ N(0, I),
        mean[known] <- alpha(t_next) y.

    Unlike the official ``inpaint_update_fn``, the replacement uses the time t_next at which the new
    state lives, and the noise-free ``mean`` (returned at the end with ``denoise=True``) gets the
    noise-free observation and keeps the stepper's own mean elsewhere (the official code builds it
    from the noisy x). Before the first step the known entries of x_T are drawn the same way at T.
    On the final step both x and mean carry y itself, so the known entries come back exactly.

    Args:
        inner: the stepper to wrap (predictor, PC, probability flow, a fast solver, ...).
        observation: an :class:`Observation`.
        noise: ``"fresh"`` (a new z every step, the paper's choice) or ``"fixed"`` (one z drawn at the
            start: the known entries follow a smooth path, natural for deterministic ODE steppers).
            Default: fresh for stochastic steppers, fixed for deterministic ones.
    """

    def __init__(self, inner: Stepper, observation: Observation, noise: str | None = None):
        if not isinstance(inner, Stepper):
            raise TypeError(f"inner must be a Stepper; got {type(inner).__name__}")
        if not isinstance(observation, Observation):
            raise TypeError(f"observation must be an Observation; got {type(observation).__name__}")
        noise = noise if noise is not None else ("fresh" if inner.stochastic else "fixed")
        if noise not in ("fresh", "fixed"):
            raise ValueError(f"noise must be 'fresh' or 'fixed'; got noise = {noise!r}")
        self.inner, self.obs, self.noise = inner, observation, noise
        self.name = f"impute[{inner.name}]"
        self.order, self.nfe_per_step, self.stochastic = inner.order, inner.nfe_per_step, True

    def check(self, sde):
        self.inner.check(sde)

    def nfe(self, steps: int) -> int:
        return self.inner.nfe(steps)

    def init(self, ctx: Context, x: torch.Tensor) -> None:
        self.obs.check(x)
        self.inner.init(ctx, x)
        if self.noise == "fixed":
            ctx.state["impute_z"] = ctx.randn_like(self.obs.to_obs(x))

    def _z(self, ctx, x):
        return ctx.state["impute_z"] if self.noise == "fixed" else ctx.randn_like(x)

    def step(self, ctx: Context, x, t, t_next, i, last) -> StepOutput:
        if i == 0:
            x_known, _ = self.obs.noised(ctx.sde, t, x, self._z(ctx, x))
            x = self.obs.replace(x, x_known)
        out = self.inner.step(ctx, x, t, t_next, i, last)
        if last:
            y = self.obs.y.to(out.x)
            return StepOutput(
                self.obs.replace(out.x, y), self.obs.replace(out.mean, y), out.x0, out.score, out.t_score, out.x_in
            )
        x_known, mean_known = self.obs.noised(ctx.sde, t_next, out.x, self._z(ctx, out.x))
        return StepOutput(
            self.obs.replace(out.x, x_known),
            self.obs.replace(out.mean, mean_known),
            out.x0,
            out.score,
            out.t_score,
            out.x_in,
        )


def _build_stepper(sampler, options: dict) -> Stepper:
    if isinstance(sampler, Stepper):
        if options:
            raise ValueError(f"sampler options {sorted(options)} given with a Stepper object")
        return sampler
    available_samplers()
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; valid samplers: {sorted(SAMPLERS)}")
    spec = SAMPLERS[sampler]
    if spec.build is None:
        raise ValueError(
            f"sampler {sampler!r} is an adaptive back-end that chooses its own steps, so it has no step to hook "
            "for imputation; use a fixed-grid sampler: 'probability_flow' (fixed-step PF ODE), 'pc', "
            "'reverse_diffusion', 'euler_maruyama', 'ancestral' or a fast solver. Guidance (score transforms) "
            "does work with the adaptive samplers."
        )
    return spec.build(**options)


def impute(
    sde: LinearSDE,
    score_fn: Callable,
    y: torch.Tensor,
    mask: torch.Tensor,
    shape: Sequence[int] | None = None,
    sampler: str | Stepper = "pc",
    steps: int | None = None,
    noise: str | None = None,
    transform: torch.Tensor | None = None,
    channel_dim: int = 1,
    generator: Generator = None,
    cond=None,
    **kwargs,
) -> SampleResult:
    """Sample the unknown entries given ``y`` on ``mask`` (inpainting; Song et al. 2021, App. I.2).

    Args:
        sde, score_fn: the forward SDE and the (unconditional or, with ``cond``, guided) score.
        y: observed values [B, ...] (or the event shape, shared); mask: True = known.
        shape: [B, ...] of the samples (default y's shape when y is batched).
        sampler: a fixed-grid sampler name (or a Stepper); its options go in ``kwargs`` together
            with :func:`~score_sde.sample`'s (``grid``, ``eps``, ``x_T``, ...).
        noise: see :class:`ImputationStepper`.
        transform, channel_dim: an orthogonal channel transform; y and mask then live in u = x M.
    Returns:
        :class:`~score_sde.solvers.loop.SampleResult` whose known entries equal y.
    """
    sample_keys = {"x_T", "eps", "denoise", "progress", "grid", "nfe", "callback", "record", "dtype", "device"}
    sample_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in sample_keys}
    obs = Observation(y, mask, transform, channel_dim)
    if shape is None and sample_kw.get("x_T") is None:
        if y.ndim != obs.mask.ndim + 1:
            raise ValueError("give shape=[B, ...] (y has no batch dimension)")
        shape = tuple(y.shape)
    stepper = ImputationStepper(_build_stepper(sampler, kwargs), obs, noise)
    return sample(sde, score_fn, shape, sampler=stepper, steps=steps, generator=generator, cond=cond, **sample_kw)


def colorize(
    sde: LinearSDE,
    score_fn: Callable,
    gray: torch.Tensor,
    sampler: str | Stepper = "pc",
    steps: int | None = None,
    generator: Generator = None,
    **kwargs,
) -> SampleResult:
    """Colorization (Song et al. 2021, App. I.3): imputation in the decoupled colour basis.

    ``gray`` [B, H, W] or [B, 1, H, W] is the channel mean of the wanted RGB image. In the
    basis u = x M (:data:`COLOR_DECOUPLE`) the first channel is sqrt(3) * gray and is known; the
    two colour channels are imputed. M is orthogonal, so the forward noise stays isotropic in u.
    Returns samples [B, 3, H, W] whose channel mean equals ``gray`` (to rounding).
    """
    if not torch.is_tensor(gray):
        raise TypeError(f"gray must be a torch.Tensor; got {type(gray).__name__}")
    if gray.ndim == 4 and gray.shape[1] == 1:
        gray = gray[:, 0]
    if gray.ndim != 3:
        raise ValueError(f"gray must have shape [B, H, W] or [B, 1, H, W]; got {tuple(gray.shape)}")
    B, H, W = gray.shape
    u = torch.zeros(B, 3, H, W, dtype=gray.dtype, device=gray.device)
    u[:, 0] = math.sqrt(3.0) * gray
    mask = torch.zeros(3, H, W, dtype=torch.bool, device=gray.device)
    mask[0] = True
    return impute(
        sde, score_fn, u, mask, (B, 3, H, W), sampler, steps, transform=COLOR_DECOUPLE, generator=generator, **kwargs
    )


# ---------------------------------------------------------------------------------------------
# Noise-conditional classifiers: training under the forward process, accuracy against noise
# ---------------------------------------------------------------------------------------------


def classifier_loss(
    classifier: Callable,
    sde: LinearSDE,
    x0: torch.Tensor,
    y: torch.Tensor,
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
    t: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of a noise-conditional classifier on forward-noised data (scalar).

    t ~ U(eps, T), x_t = alpha(t) x0 + sigma(t) z (the same noise process as the score model),
    loss = E[-log p_t(y | x_t)] with ``classifier(x_t, t) -> logits [B, K]``.
    """
    check_finite(x0, "x0")
    y = _labels(y, x0)
    if t is None:
        t = eps + (sde.T - eps) * torch.rand(x0.shape[0], generator=generator, dtype=x0.dtype, device=x0.device)
    xt, _ = sde.perturb(x0, t, generator=generator)
    logits = classifier(xt, t)
    if logits.ndim != 2 or logits.shape[0] != x0.shape[0]:
        raise ValueError(f"classifier must return logits of shape [B, K]; got {tuple(logits.shape)}")
    check_labels(y, logits.shape[1])
    return F.cross_entropy(logits, y)


def train_noisy_classifier(
    classifier: torch.nn.Module,
    sde: LinearSDE,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 2e-3,
    eps: float = 1e-5,
    weight_decay: float = 0.0,
    generator: torch.Generator | None = None,
    log_every: int = 0,
) -> list[float]:
    """Train ``classifier(x_t, t) -> logits`` with :func:`classifier_loss` (Adam, cosine lr decay).

    Args:
        x: training data [n, ...]; y: labels [n].
    Returns:
        the per-step training losses.
    """
    check_finite(x, "x")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape [n] = [{x.shape[0]}]; got {tuple(y.shape)}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1; got steps = {steps!r}")
    opt = torch.optim.Adam(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    classifier.train()
    losses = []
    for i in range(steps):
        idx = torch.randint(0, x.shape[0], (batch_size,), generator=generator)
        loss = classifier_loss(classifier, sde, x[idx], y[idx], eps=eps, generator=generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.detach())  # no host sync per step; converted once at the end
        if log_every and (i + 1) % log_every == 0:
            recent = torch.stack(losses[-log_every:]).tolist()
            print(f"classifier step {i + 1}/{steps}: loss {sum(recent) / log_every:.4f}")
    classifier.eval()
    return torch.stack(losses).tolist()


def accuracy_vs_noise(
    classifier: Callable,
    sde: LinearSDE,
    x: torch.Tensor,
    y: torch.Tensor,
    times: Sequence[float] | torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Accuracy of ``classifier(x_t, t)`` on x_t = alpha(t) x + sigma(t) z at each time, shape [len(times)].

    The curve of Song et al. 2021's noise-conditional classifier (accuracy falls to chance as
    sigma(t) grows). Evaluated without building a graph.
    """
    y = _labels(y, x)
    out = []
    with torch.inference_mode():
        for t in torch.as_tensor(times, dtype=torch.float64).flatten().tolist():
            tv = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
            xt, _ = sde.perturb(x, tv, generator=generator)
            pred = classifier(xt, tv).argmax(-1)
            out.append((pred == y).double().mean())
    return torch.stack(out)


__all__ = [
    "conditioning_of",
    "require_conditional",
    "check_labels",
    "null_condition",
    "drop_condition",
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "mixture_classifier",
    "MixtureClassScore",
    "mixture_conditional",
    "mixture_posterior",
    "transform_mixture",
    "COLOR_DECOUPLE",
    "decouple_colors",
    "couple_colors",
    "Observation",
    "ImputationStepper",
    "impute",
    "colorize",
    "classifier_loss",
    "train_noisy_classifier",
    "accuracy_vs_noise",
]
