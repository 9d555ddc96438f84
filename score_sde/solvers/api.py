"""``ss.sample``: names at the boundary, objects inside.

Fixed-grid samplers are registered as builders returning a :class:`Stepper`, run by the one loop
over a time grid. Adaptive back-ends (``ode`` through torchdiffeq, ``sde`` through torchsde)
are registered as solve functions with the same calling convention and return the same
:class:`SampleResult`. The tables live in :mod:`score_sde.solvers.registry`, below every method;
this module sits on top: it imports the method modules explicitly and registers the built-ins in
one place (:func:`_register_builtins`, run once when it is imported).
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable

import torch

from ..sde.base import LinearSDE
from ..utils import check_finite
from . import consistency, ddim, dpm_solver, edm, multistep, ode, predictors, sde_dpm, sdeint
from .base import Stepper
from .correctors import AnnealedLangevinCorrector, LangevinCorrector, NoneCorrector, PCStepper
from .grids import make_grid
from .loop import integrate
from .observer import OutputOptions, SampleResult
from .registry import CORRECTORS, PREDICTORS, SAMPLERS, SamplerSpec, register_corrector, register_sampler


def _pick(table: dict, kind: str, name) -> type:
    if isinstance(name, Stepper):
        return name
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; valid {kind}s: {sorted(table)}")
    return table[name]


def _factory_params(factory) -> frozenset[str] | None:
    """Keyword names ``factory`` accepts (None: it takes ``**kwargs`` or cannot be inspected); remembered per
    factory (reading a signature costs more than a short sampling run's own overhead)."""
    try:
        return _SIGNATURES[factory]
    except (KeyError, TypeError):  # not seen yet, or not weakly referable / hashable
        pass
    names = _signature_names(factory)
    try:
        _SIGNATURES[factory] = names
    except TypeError:
        pass
    return names


_SIGNATURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _signature_names(factory) -> frozenset[str] | None:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return frozenset(n for n, p in params.items() if p.kind in kinds)


def _build_pc(
    predictor="reverse_diffusion", corrector="langevin", snr=None, corrector_steps=None, per_sample_norms=None
) -> Stepper:
    """PC stepper. ``snr`` (Langevin default 0.16), ``corrector_steps`` (default 1) and ``per_sample_norms``
    (default False) go to the corrector when given; a registered corrector that does not take one of
    them (:func:`~score_sde.solvers.correctors.register_corrector`) raises TypeError naming it."""
    p = _pick(PREDICTORS, "predictor", predictor)
    p = p if isinstance(p, Stepper) else p()
    c = _pick(CORRECTORS, "corrector", corrector)
    if not isinstance(c, Stepper):
        given = {"snr": snr, "n_steps": corrector_steps, "per_sample": per_sample_norms}
        given = {k: v for k, v in given.items() if v is not None}
        takes = _factory_params(c)
        if takes is not None:
            public = {"snr": "snr", "n_steps": "corrector_steps", "per_sample": "per_sample_norms"}
            bad = [public[k] for k in given if k not in takes]
            if bad:
                raise TypeError(f"corrector {corrector!r} takes no option(s) {bad}; it takes {sorted(takes)}")
        c = c(**given)
    return PCStepper(p, c)


def _register_builtins() -> None:
    """Register the built-in predictors, correctors and samplers: the one place they are named."""
    for name, cls in (
        ("none", predictors.NonePredictor),
        ("euler_maruyama", predictors.EulerMaruyama),
        ("reverse_diffusion", predictors.ReverseDiffusion),
        ("ancestral", predictors.AncestralSampling),
        ("probability_flow", predictors.ProbabilityFlowPredictor),
    ):
        PREDICTORS[name] = cls
    register_corrector("none", NoneCorrector)
    register_corrector("langevin", LangevinCorrector)
    register_corrector("annealed_langevin", AnnealedLangevinCorrector)

    register_sampler("pc", build=_build_pc, doc="predictor-corrector (Song et al. 2021, Alg. 1)")
    for name, cls in PREDICTORS.items():
        if name != "none":
            register_sampler(name, build=cls, doc=(cls.__doc__ or "").split("\n")[0])
    doc = "probability-flow ODE through torchdiffeq (dopri5 by default; rtol, atol, method)"
    register_sampler("ode", solve=ode.ode_sample, default_grid="uniform", doc=doc)
    doc = "reverse SDE through torchsde (euler by default; method, dt)"
    register_sampler("sde", solve=sdeint.sde_sample, default_grid="uniform", doc=doc)

    reg = register_sampler
    reg("ddim", build=ddim.DDIM, default_grid="auto", doc="DDIM with eta (eta=0: Euler in sigma~)")
    reg("dpm_solver_1", build=dpm_solver._dpm1, default_grid="logsnr", doc="DPM-Solver-1 (= DDIM)")
    reg("dpm_solver_2", build=dpm_solver._dpm2, default_grid="logsnr", doc="DPM-Solver-2, singlestep")
    reg("dpm_solver_3", build=dpm_solver._dpm3, default_grid="logsnr", doc="DPM-Solver-3, singlestep")
    reg("dpmpp_2m", build=functools.partial(multistep.DPMSolverPP, 2), default_grid="auto", doc="DPM-Solver++(2M)")
    reg("dpmpp_3m", build=functools.partial(multistep.DPMSolverPP, 3), default_grid="auto", doc="DPM-Solver++(3M)")
    reg("dpmpp_2m_sde", build=sde_dpm.DPMSolverPP2MSDE, default_grid="auto", doc="SDE-DPM-Solver++(2M)")
    reg("unipc", build=multistep.UniPC, default_grid="auto", doc="UniPC (UniP + UniC, bh2)")
    reg("heun", build=edm._heun, default_grid="karras", doc="EDM Heun (Karras et al. 2022, Alg. 1)")
    reg("edm", build=edm._edm, default_grid="karras", doc="EDM sampler (Alg. 2); deterministic unless S_churn > 0")
    reg("restart", build=edm.Restart, default_grid="karras", doc="Restart sampling (Xu et al. 2023)")
    reg("consistency", build=consistency.ConsistencySampler, default_grid="karras", doc="consistency models (Alg. 1)")


_register_builtins()

# arguments ``ss.sample`` itself hands to an adaptive back-end's solve function (not sampler options)
_SOLVE_ARGS = {"sde", "score_fn", "x_T", "eps", "generator", "progress", "cond", "steps", "nfe", "denoise",
               "callback", "record", "grid", "output"}  # fmt: skip


def sampler_option_names(sampler: str) -> list[str] | None:
    """The keyword options a registered sampler takes (``ss.sample(..., **options)``), sorted;
    ``None`` when it takes any (``**kwargs``) or cannot be inspected. Raises ValueError for an unknown name."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; valid samplers: {sorted(SAMPLERS)}")
    spec = SAMPLERS[sampler]
    names = _factory_params(spec.build if spec.solve is None else spec.solve)
    return None if names is None else sorted(names - _SOLVE_ARGS if spec.solve is not None else names)


def _check_options(spec: SamplerSpec, options: dict) -> None:
    """Raise TypeError naming any option the sampler does not take (and listing those it does)."""
    names = _factory_params(spec.build if spec.solve is None else spec.solve)
    if names is None:  # **kwargs / builtins: let the call itself complain
        return
    bad = sorted(set(options) - names)
    if bad:
        valid = sorted(names - _SOLVE_ARGS) if spec.solve is not None else sorted(names)
        raise TypeError(f"sampler {spec.name!r} got unknown option(s) {bad}; its options are {valid}")


def _steps_within(stepper: Stepper, nfe: int) -> int:
    """The most steps the stepper can run (``runs(steps)``, default all) within ``nfe`` evaluations."""
    runs = getattr(stepper, "runs", None)
    fits = [s for s in range(1, nfe + 1) if (runs is None or runs(s)) and stepper.nfe(s) <= nfe]
    if not fits:
        first = next((s for s in range(1, nfe + 2) if runs is None or runs(s)), None)
        need = f"{stepper.nfe(first)} NFE" if first is not None else f"more than {nfe} NFE"
        raise ValueError(f"nfe = {nfe} is below one run of {stepper.name} ({need})")
    return max(fits)


def available_samplers() -> list[str]:
    """The names ``ss.sample(..., sampler=name)`` accepts, sorted (built-in and registered ones)."""
    return sorted(SAMPLERS)


def sample(
    sde: LinearSDE,
    score_fn: Callable,
    shape=None,
    sampler: str | Stepper = "pc",
    steps: int | None = None,
    x_T: torch.Tensor | None = None,
    eps: float | None = None,
    denoise: bool = True,
    generator=None,
    progress: bool = False,
    *,
    grid=None,
    nfe: int | None = None,
    callback: Callable | None = None,
    record: bool = False,
    cond=None,
    dtype: torch.dtype | None = None,
    device=None,
    output: OutputOptions | None = None,
    **sampler_options,
) -> SampleResult:
    """Draw samples by integrating the reverse SDE / probability-flow ODE from T to ``eps``.

    Args:
        sde: the forward SDE (VP, sub-VP, VE, ...).
        score_fn: ``score_fn(x, t)`` (or ``(x, t, cond)``) -> grad log p_t(x), shape like x; t [B].
        shape: [B, ...] of the samples (or give ``x_T``).
        sampler: a registered name (``available_samplers()``) or a Stepper object.
        steps: number of grid steps (default: the SDE's N for the chain-based samplers).
        x_T: the starting noise, shape [B, ...] (default: a prior draw with ``generator``).
        eps: end time (default ``sde.default_eps``: 1e-3 VP/sub-VP, 1e-5 VE).
        denoise: make the final step return its noise-free mean (no extra NFE).
        generator: ``None`` (global RNG), a torch.Generator, or one generator per sample.
        progress: show a tqdm progress bar.
        grid: grid kind ("uniform", "quadratic", "discrete", "karras", "logsnr") or a tensor of times, or an
            ``ss.FittedGrid`` (refused unless fitted for this SDE, sampler and NFE; it sets nfe and eps).
        nfe: a budget of score evaluations; the largest number of steps within it is used.
        callback: ``callback(i, t, x, x0_hat)`` after every step (``ode``: at its output times, ``steps``
            of them or 32 by default; ``sde``: after every step; see
            :meth:`~score_sde.solvers.observer.Observer.saved`).
        record: keep the trajectory and x_0 estimates in the result (at the same times as ``callback``).
        output: ``denoise``, ``progress``, ``callback`` and ``record`` as one
            :class:`~score_sde.solvers.observer.OutputOptions` (instead of those keywords, not beside them).
        **sampler_options: options of the sampler: ``predictor``, ``corrector``, ``snr``,
            ``corrector_steps``, ``per_sample_norms`` for ``pc``; ``method``, ``rtol``, ``atol``,
            ``float64``, ``per_sample``, ``max_nfe``, ``options`` for ``ode``
            (:func:`score_sde.solvers.ode.ode_sample`; or ``solver=AdaptiveOptions(method, rtol, atol,
            options, max_nfe)``); ``method``, ``dt`` for ``sde``
            (:func:`score_sde.solvers.sdeint.sde_sample`). An unknown option raises TypeError.
    Returns:
        :class:`SampleResult` with ``.x`` and ``.nfe``.
    """
    if not isinstance(sde, LinearSDE):
        raise TypeError(f"sde must be a score_sde SDE (e.g. ss.VPSDE()); got {type(sde).__name__}")
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable; got {type(score_fn).__name__}")
    if isinstance(sampler, Stepper):
        spec = SamplerSpec(sampler.name, build=lambda **kw: sampler)
    elif sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; valid samplers: {sorted(SAMPLERS)}")
    else:
        spec = SAMPLERS[sampler]
    if getattr(grid, "is_fitted_grid", False):  # ss.FittedGrid (a layer above): checked against this call
        grid, nfe, eps, sampler_options = grid.resolve(sde, sampler, sampler_options, nfe=nfe, steps=steps, eps=eps)
        steps = None
    eps = sde.default_eps if eps is None else eps
    sde.check_eps(eps)
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise ValueError(f"steps must be an integer >= 1; got steps = {steps!r}")
    if nfe is not None and (not isinstance(nfe, int) or nfe < 1):
        raise ValueError(f"nfe must be an integer >= 1; got nfe = {nfe!r}")
    if x_T is None:
        if shape is None:
            raise ValueError("give shape=[B, ...] or x_T")
        shape = tuple(shape)
        if len(shape) < 1 or not all(isinstance(n, int) and n >= 1 for n in shape):
            raise ValueError(f"shape must be [B, ...] with positive integer sizes; got shape = {shape!r}")
        x_T = sde.prior_sampling(shape, generator=generator, dtype=dtype, device=device)
    else:
        check_finite(x_T, "x_T")
        if x_T.ndim < 1 or x_T.shape[0] < 1:
            raise ValueError(f"x_T must have shape [B, ...] with B >= 1; got x_T of shape {tuple(x_T.shape)}")
        if shape is not None and tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape = {tuple(shape)}")
        if not x_T.is_floating_point():
            raise TypeError(f"x_T must be a floating-point tensor; got dtype {x_T.dtype}")
        if dtype is not None:
            x_T = x_T.to(dtype)
    _check_options(spec, sampler_options)
    output = _output_options(output, denoise=denoise, progress=progress, callback=callback, record=record)
    if spec.solve is not None:
        extra = {}
        if output.record:
            extra["record"] = True
        if grid is not None:
            extra["grid"] = grid
        return spec.solve(
            sde,
            score_fn,
            x_T,
            eps=eps,
            generator=generator,
            progress=output.progress,
            cond=cond,
            steps=steps,
            nfe=nfe,
            denoise=output.denoise,
            callback=output.callback,
            **extra,
            **sampler_options,
        )
    stepper = spec.build(**sampler_options)
    stepper.check(sde)
    if nfe is not None:
        if steps is not None:
            raise ValueError("give either steps or nfe, not both")
        steps = _steps_within(stepper, nfe)
    if grid is None:  # the chain's own grid only when no step count is asked for
        grid = "uniform" if spec.default_grid == "discrete" and steps is not None else spec.default_grid
    if steps is None:
        steps = sde.N
    # a stepper may shape its own grid (e.g. a final denoising step to t = 0); otherwise the shared one
    build_grid = getattr(stepper, "build_grid", None)
    g = build_grid(sde, grid, steps, eps) if build_grid is not None else make_grid(sde, grid, steps, eps)
    return integrate(stepper, sde, score_fn, x_T, g, generator=generator, cond=cond, output=output)


def _output_options(output: OutputOptions | None, **keywords) -> OutputOptions:
    """``output=`` as given, or the keywords grouped; giving both is an error (unless the keywords keep their
    defaults)."""
    if output is None:
        return OutputOptions(**keywords)
    if not isinstance(output, OutputOptions):
        raise TypeError(f"output must be an OutputOptions; got {type(output).__name__}")
    changed = sorted(k for k, v in keywords.items() if v != getattr(OutputOptions(), k))
    if changed:
        raise ValueError(f"give {changed} inside output=OutputOptions(...) or as keywords, not both")
    return output
