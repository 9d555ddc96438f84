"""Divergence of the score, div s = tr(ds/dx): exact (D vector-Jacobian products, chunked) or the
Skilling–Hutchinson estimate v^T (ds/dx) v with E[v v^T] = I (Song et al. 2021, App. D.2)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..utils import Generator, flat_dim


def _no_graph_divergence(score: Callable, s: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The divergence of a score whose output carries no autograd graph back to ``x``.

    A score constant in x (same output at a shifted x) has divergence exactly 0. Otherwise the score was
    computed under ``torch.no_grad()`` or detached from x, its divergence can not be formed, and a
    ``ValueError`` says so (instead of torch's "element 0 of tensors does not require grad")."""
    with torch.no_grad():
        shifted = score(x.detach() * 1.25 + 0.5, t)
    if torch.equal(shifted, s.detach()):
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    raise ValueError(
        "log_likelihood needs the divergence of score_fn, but its output carries no gradient with respect to x "
        "(computed under torch.no_grad(), detached, or via numpy?); remove the no_grad/detach inside score_fn"
    )


# ---- divergence of the score ------------------------------------------------------------------------
class _VJP:
    """Vector-Jacobian products of ``s(x)`` with several cotangents at once (``is_grads_batched``), or one
    at a time where a score's ops do not support vmap (detected once, then remembered)."""

    def __init__(self):
        self.batched = True
        self.basis: dict = {}  # one-hot cotangents of the exact divergence, reused across evaluations

    def __call__(self, s, x, vs: torch.Tensor, create_graph: bool, last: bool) -> torch.Tensor:
        """vs: [C, B, ...] cotangents; returns [C, B, ...] rows (ds/dx)^T v."""
        if vs.shape[0] > 1 and self.batched:
            try:
                return torch.autograd.grad(
                    s, x, vs, retain_graph=create_graph or not last, create_graph=create_graph, is_grads_batched=True
                )[0]
            except RuntimeError:
                self.batched = False
        if vs.shape[0] == 1:
            keep = create_graph or not last
            return torch.autograd.grad(s, x, vs[0], retain_graph=keep, create_graph=create_graph)[0][None]
        out = []
        for c in range(vs.shape[0]):
            keep = create_graph or not (last and c == vs.shape[0] - 1)
            out.append(torch.autograd.grad(s, x, vs[c], retain_graph=keep, create_graph=create_graph)[0])
        return torch.stack(out)


def _divergence_exact(s, x, vjp: _VJP, create_graph: bool, chunk_size: int, acc: torch.dtype) -> torch.Tensor:
    """sum_i ds_i/dx_i per sample, shape [B], summed in dtype ``acc``: the Jacobian diagonal from D one-hot
    cotangents e_i, ``chunk_size`` dimensions per batched vector-Jacobian product."""
    B, D = x.shape[0], flat_dim(x)
    div = None
    for start in range(0, D, chunk_size):
        key = (start, tuple(x.shape), x.dtype, x.device)
        if key not in vjp.basis:
            idx = torch.arange(start, min(start + chunk_size, D), device=x.device)
            cidx = torch.arange(idx.numel(), device=x.device)
            vs = x.new_zeros(idx.numel(), B, D)
            vs[cidx, :, idx] = 1.0
            vjp.basis[key] = (vs.reshape(idx.numel(), *x.shape), cidx, idx)
        vs, cidx, idx = vjp.basis[key]
        C = idx.numel()
        rows = vjp(s, x, vs, create_graph, last=start + C >= D).reshape(C, B, D)
        part = rows[cidx, :, idx].to(acc).sum(0)
        div = part if div is None else div + part
    return div


def _divergence_hutchinson(s, x, probes: torch.Tensor, probes_acc: torch.Tensor, vjp: _VJP, create_graph: bool):
    """Skilling–Hutchinson estimate mean_k v_k^T (ds/dx) v_k, shape [B]; probes: [k, B, ...] in x's dtype (the
    cotangents), probes_acc: the same in the dtype the products are summed in."""
    k, B = probes.shape[0], x.shape[0]
    rows = vjp(s, x, probes, create_graph, last=True)  # the product promotes rows to the dtype of probes_acc
    est = (rows * probes_acc).reshape(k, B, -1).sum((0, 2))
    return est / k if k > 1 else est


def _draw_probes(x: torch.Tensor, k: int, noise: str, generator: Generator) -> torch.Tensor:
    """k probes per sample, shape [k, B, ...], Rademacher (+-1) or standard normal, from ``generator``
    (one ``torch.Generator``, a sequence of B per-sample generators, or None for the global RNG)."""

    def draw(shape, g):
        if noise == "gaussian":
            return torch.randn(shape, generator=g, dtype=x.dtype, device=x.device)
        return torch.randint(0, 2, shape, generator=g, dtype=x.dtype, device=x.device) * 2 - 1

    if generator is None or isinstance(generator, torch.Generator):
        return draw((k, *x.shape), generator)
    gens = list(generator)
    if len(gens) != x.shape[0]:
        raise ValueError(f"got {len(gens)} per-sample generators for a batch of {x.shape[0]}")
    return torch.cat([draw((k, 1, *x.shape[1:]), g) for g in gens], dim=1)


def _depends_on_other_leaf(out: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether ``out``'s autograd graph reaches a leaf that requires grad other than ``x`` (a parameter)."""
    stack, seen = [out.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        var = getattr(fn, "variable", None)
        if var is not None and var is not x:
            return True
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return False

