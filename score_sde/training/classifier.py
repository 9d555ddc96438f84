"""Noise-conditional classifiers for classifier guidance: trained under the forward process of the score
model (cross-entropy on x_t = alpha(t) x0 + sigma(t) z), and their accuracy against the noise level
(Song et al. 2021, Sec. 5)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..guidance.conditioning import _labels, check_labels
from ..sde.base import LinearSDE
from ..utils import check_finite

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


__all__ = ["classifier_loss", "train_noisy_classifier", "accuracy_vs_noise"]
