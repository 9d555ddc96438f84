"""Bits per dimension of discrete data through an explicit :class:`~score_sde.data_scaling.DataScaling`:
per batch (:func:`bits_per_dim`) and over a data set with standard errors (:func:`dataset_bits_per_dim`,
:class:`DatasetBitsPerDim`, :func:`summarize_bits_per_dim`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from ..data_scaling import DataScaling
from ..sde.base import LinearSDE
from ..utils import Generator, check_finite, flat_dim
from .api import log_likelihood


def _check_scaling(scaling) -> None:
    if not isinstance(scaling, DataScaling):
        raise TypeError(
            "scaling must be a DataScaling (e.g. DataScaling.centered(256) for [-1, 1] or "
            f"DataScaling.unit(256) for [0, 1]); got {type(scaling).__name__}"
        )


def _bits_per_dim(sde, score_fn, data, scaling, dequantize, generator, dtype, kwargs):
    _check_scaling(scaling)
    if torch.is_tensor(data) and (data.ndim < 1 or data.shape[0] == 0 or data.numel() == 0):
        raise ValueError(f"data must hold at least one sample [B >= 1, ...]; got data of shape {tuple(data.shape)}")
    if dequantize:
        if not torch.is_tensor(data):
            raise TypeError(f"data must be a torch.Tensor of integer levels; got {type(data).__name__}")
        if isinstance(generator, (list, tuple)):
            x = torch.cat([scaling.dequantize(data[i : i + 1], g, dtype) for i, g in enumerate(generator)])
        else:
            x = scaling.dequantize(data, generator, dtype)
    else:
        check_finite(data, "data")
        x = data if dtype is None else data.to(dtype)
    res = log_likelihood(sde, score_fn, x, generator=generator, **kwargs)
    return scaling.bits_per_dim(res.logp, flat_dim(x)), res


def bits_per_dim(
    sde: LinearSDE,
    score_fn: Callable,
    data: torch.Tensor,
    scaling: DataScaling,
    *,
    dequantize: bool = True,
    generator: Generator = None,
    dtype: torch.dtype | None = None,
    **likelihood_kwargs,
) -> torch.Tensor:
    """Bits per dimension of discrete data under the model, shape [B].

    With levels n in {0..K-1}, uniform dequantization y = (n + u)/K, u ~ U[0,1), and x = a y + b
    (``scaling``), the bound on -log2 P(n) / D is (see :mod:`score_sde.data_scaling`)

        bpd = -log p_eps(x) / (D ln 2) - log2 a + log2 K.

    Args:
        data: integer levels [B, ...]; or, with ``dequantize=False``, already continuous data in model space.
        scaling: the :class:`DataScaling` (K, a, b).
        generator: seeds the dequantization noise and then the Hutchinson probes.
        dtype: floating dtype of the dequantized data (default torch's default dtype).
        **likelihood_kwargs: passed to :func:`log_likelihood` (divergence, rtol, atol, eps, probes, ...).
    """
    return _bits_per_dim(sde, score_fn, data, scaling, dequantize, generator, dtype, likelihood_kwargs)[0]


@dataclass
class DatasetBitsPerDim:
    """Mean bits/dim over a dataset, its standard errors and its parts; unpacks as ``mean, stderr = result``.

    With K levels, the map x = a y + b to model space, and uniform dequantization, each sample's bits/dim is

        bpd = -log pi(x(T)) / (D ln 2)   [prior term]
              - Delta / (D ln 2)          [ODE integral, Delta = int_eps^T div f~ dt]
              + log2 K - log2 a           [dequantization: bin width 1/K and the change of scale]

    (see :mod:`score_sde.data_scaling`); the first two together are the continuous NLL in model space,
    -log p_eps(x) / (D ln 2). For continuous data (``scaling=None``) the last term is 0.

    Attributes:
        mean: mean bpd over samples (each averaged over the repeats).
        stderr: standard error of ``mean`` as an estimate of the data set's expected bpd: std of the per-sample
            bpd / sqrt(num) (NaN for one sample); it includes the estimator's noise.
        num: samples. nfe: score evaluations in all (every batch and repeat).
        per_sample: tensor [num], each sample's bpd averaged over the repeats.
        repeats: evaluations of each sample (fresh dequantization noise and Hutchinson probes each time).
        mc_stderr: standard error of ``mean`` from the estimator's own randomness alone (dequantization and
            probes; the data held fixed): sqrt(sum_i var_r(bpd_ir) / repeats) / num, from the spread over the
            repeats (NaN for one repeat). Two runs with other seeds on the same data differ by about this.
        prior_bpd, integral_bpd, dequantization_bpd: the three terms above, averaged (they sum to ``mean``).
        nll_nats: continuous NLL in model space, mean -log p_eps(x) in nats per sample (not bits/dim of the
            discrete data; it depends on the data's scale).
        dim: D, dimensions per sample.
        nfe_per_sample: score evaluations per sample and repeat (the ODE solver's count, averaged over batches).
        solver_error_bpd: the solver's own estimate of its error in Delta, as bits/dim averaged over samples
            (``scheme="quadrature"``: its ``delta_error``); None when the scheme gives no estimate.
        per_repeat, prior_logp, delta, delta_error: tensors [num, repeats]: bpd, log pi(x(T)), Delta and the
            solver's error estimate of Delta (nats; None without one) of every evaluation (not in ``repr``).
    """

    mean: float
    stderr: float
    num: int
    nfe: int
    per_sample: torch.Tensor = field(repr=False)
    repeats: int = 1
    mc_stderr: float = float("nan")
    prior_bpd: float = float("nan")
    integral_bpd: float = float("nan")
    dequantization_bpd: float = float("nan")
    nll_nats: float = float("nan")
    dim: int | None = None
    nfe_per_sample: float = float("nan")
    solver_error_bpd: float | None = None
    per_repeat: torch.Tensor | None = field(default=None, repr=False)
    prior_logp: torch.Tensor | None = field(default=None, repr=False)
    delta: torch.Tensor | None = field(default=None, repr=False)
    delta_error: torch.Tensor | None = field(default=None, repr=False)

    def __iter__(self):
        return iter((self.mean, self.stderr))

    def __repr__(self) -> str:  # a one-line summary: the per-sample tensors can hold a whole test set
        return (
            f"{type(self).__name__}(mean={self.mean:.4f}, stderr={self.stderr:.4f}, num={self.num}, "
            f"repeats={self.repeats}, nfe={self.nfe}, per_sample shape {tuple(self.per_sample.shape)})"
        )

    def to_dict(self) -> dict:
        """The scalar fields as a JSON-ready dict (no tensors)."""
        skip = {"per_sample", "per_repeat", "prior_logp", "delta", "delta_error"}
        return {k: v for k, v in self.__dict__.items() if k not in skip}


def summarize_bits_per_dim(
    prior_logp: torch.Tensor,
    delta: torch.Tensor,
    dim: int,
    scaling: DataScaling | None,
    nfe: int,
    solves: int,
    delta_error: torch.Tensor | None = None,
) -> DatasetBitsPerDim:
    """:class:`DatasetBitsPerDim` from the per-evaluation terms ``prior_logp`` and ``delta``, [N, R] in nats.

    Args:
        dim: D. scaling: the data's :class:`DataScaling` (None: continuous data, no dequantization term).
        nfe: score evaluations in all; solves: ODE solves they were spent on (batches x repeats).
        delta_error: the solver's error estimate of Delta [N, R] in nats, or None.
    """
    prior_logp, delta = prior_logp.double().cpu(), delta.double().cpu()
    if prior_logp.ndim != 2 or prior_logp.shape != delta.shape or prior_logp.shape[0] < 1:
        shapes = f"{tuple(prior_logp.shape)}, {tuple(delta.shape)}"
        raise ValueError(f"prior_logp and delta must be [N, R] alike; got {shapes}")
    n, r = prior_logp.shape
    to_bits = dim * math.log(2)
    offset = 0.0 if scaling is None else float(scaling.bits_per_dim(torch.zeros((), dtype=torch.float64), dim))
    per_repeat = -(prior_logp + delta) / to_bits + offset
    per = per_repeat.mean(1)
    stderr = float(per.std() / math.sqrt(n)) if n > 1 else float("nan")
    mc = float(per_repeat.var(dim=1).sum().div(r).sqrt() / n) if r > 1 else float("nan")
    err = None if delta_error is None else float(delta_error.double().mean() / to_bits)
    return DatasetBitsPerDim(
        mean=float(per.mean()), stderr=stderr, num=n, nfe=int(nfe), per_sample=per, repeats=r, mc_stderr=mc,
        prior_bpd=float(-prior_logp.mean() / to_bits), integral_bpd=float(-delta.mean() / to_bits),
        dequantization_bpd=offset, nll_nats=float(-(prior_logp + delta).mean()), dim=int(dim),
        nfe_per_sample=nfe / max(solves, 1), solver_error_bpd=err, per_repeat=per_repeat, prior_logp=prior_logp,
        delta=delta, delta_error=None if delta_error is None else delta_error.double().cpu(),
    )  # fmt: skip


def _batches(data, batch_size: int):
    if torch.is_tensor(data):
        yield from torch.split(data, batch_size)
        return
    for item in data:
        b = item[0] if isinstance(item, (tuple, list)) else item
        if not torch.is_tensor(b):
            raise TypeError(f"each batch must be a tensor or a (tensor, ...) tuple; got {type(b).__name__}")
        yield b


def dataset_bits_per_dim(
    sde: LinearSDE,
    score_fn: Callable,
    data: torch.Tensor | Iterable,
    scaling: DataScaling | None,
    *,
    batch_size: int = 128,
    repeats: int = 1,
    generator: Generator = None,
    max_batches: int | None = None,
    dequantize: bool = True,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    **likelihood_kwargs,
) -> DatasetBitsPerDim:
    """Bits/dim of a dataset under a trained score model (Song et al. 2021, Table 2 protocol).

    Each batch is evaluated ``repeats`` times (fresh dequantization noise and probes; the official code
    makes 5 passes with one Hutchinson probe) and each sample's bpd is averaged over the repeats; the
    result is the mean over samples, its standard error, the estimator's own standard error (from the
    spread over the repeats), the three terms of the bound and the solver's NFE and error estimate.
    Runs without building a graph for parameters (an evaluation, not differentiable); the divergence
    still uses autograd inside.

    Args:
        data: a tensor [N, ...] of integer levels (split into ``batch_size`` batches), or an iterable of
            batches (tensors or ``(tensor, label)`` tuples, e.g. a DataLoader).
        scaling: the :class:`DataScaling`; None for continuous data (model-space points, no dequantization:
            the "bits/dim" is then the continuous NLL / (D ln 2)).
        max_batches: stop after this many batches.
        device: move each batch here before evaluation.
        **likelihood_kwargs: passed to :func:`log_likelihood` (e.g. ``divergence="hutchinson"``, ``rtol``).

    Returns:
        :class:`DatasetBitsPerDim` (``mean, stderr = result``; ``result.to_dict()`` for JSON).
    """
    if scaling is not None:
        _check_scaling(scaling)
    for name, val in (("batch_size", batch_size), ("repeats", repeats)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {name} = {val!r}")
    priors, deltas, errors, nfe, solves, dim = [], [], [], 0, 0, None
    it = _batches(data, batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="bits/dim")
    with torch.no_grad():
        for i, batch in enumerate(it):
            if max_batches is not None and i >= max_batches:
                break
            if device is not None:
                batch = batch.to(device)
            pr, de, er = [], [], []
            for _ in range(repeats):
                if scaling is None:
                    check_finite(batch, "data")
                    x = batch if dtype is None else batch.to(dtype)
                    res = log_likelihood(sde, score_fn, x, generator=generator, **likelihood_kwargs)
                else:
                    kw = likelihood_kwargs
                    _, res = _bits_per_dim(sde, score_fn, batch, scaling, dequantize, generator, dtype, kw)
                dim = flat_dim(batch)
                pr.append(res.prior_logp.double().cpu())
                de.append(res.delta.double().cpu())
                e = res.info.get("delta_error")
                er.append(None if e is None else torch.as_tensor(e, dtype=torch.float64).cpu().reshape(-1))
                nfe += res.nfe
                solves += 1
            priors.append(torch.stack(pr, 1))
            deltas.append(torch.stack(de, 1))
            errors.append(None if any(e is None for e in er) else torch.stack(er, 1))
    if not priors:
        raise ValueError("data yielded no batches")
    err = None if any(e is None for e in errors) else torch.cat(errors)
    return summarize_bits_per_dim(torch.cat(priors), torch.cat(deltas), dim, scaling, nfe, solves, err)


