"""The optimiser of the training recipe (official score_sde, Song et al. 2021, App. D): Adam, a linear
learning-rate warmup and clipping of the global gradient norm."""

from __future__ import annotations

import torch

from .config import TrainingConfig


def build_optimizer(params: list[torch.Tensor], t: TrainingConfig) -> torch.optim.Adam:
    """Adam on ``params`` with the betas, eps and weight decay of ``t`` (the learning rate is set per step).

    ``foreach=True``: one kernel per update for all tensors (also on the CPU).
    """
    return torch.optim.Adam(
        params, lr=t.lr, betas=(t.beta1, t.beta2), eps=t.adam_eps, weight_decay=t.weight_decay, foreach=True
    )


def warmup_lr(step: int, lr: float, warmup: int) -> float:
    """``lr * min(1, (step + 1) / warmup)``: linear warmup over ``warmup`` steps (step counted from 0);
    ``lr`` from the start when ``warmup`` is 0."""
    return lr * min(1.0, (step + 1) / warmup) if warmup > 0 else lr


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale the gradients so that their global 2-norm is at most ``max_norm``; returns the norm before.

    The rule of ``torch.nn.utils.clip_grad_norm_`` (factor min(1, max_norm / (norm + 1e-6))) in four
    foreach kernels, without its per-call grouping overhead.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    return norm


__all__ = ["build_optimizer", "warmup_lr", "clip_grad_norm"]
