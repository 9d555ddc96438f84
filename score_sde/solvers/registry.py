"""The tables of sampling methods, at the bottom of the solvers package.

Three name → factory tables:

* :data:`SAMPLERS`: ``ss.sample(..., sampler=name)``; a :class:`SamplerSpec` holds either
  ``build(**options) -> Stepper`` (a fixed-grid method run by the one loop) or
  ``solve(sde, score_fn, x_T, ...) -> SampleResult`` (an adaptive back-end);
* :data:`PREDICTORS`: ``predictor=name`` of the ``pc`` sampler (Song et al. 2021, Alg. 1);
* :data:`CORRECTORS`: ``corrector=name`` of the ``pc`` sampler.

This module imports no method module: the built-in methods are registered in one place,
:mod:`score_sde.solvers.api`, which imports their modules explicitly. Users add their own with
:func:`register_sampler` and :func:`register_corrector`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class SamplerSpec:
    """A registered sampler: ``build(**options) -> Stepper`` or ``solve(...) -> SampleResult``.

    default_grid: grid kind used when the caller gives none ("discrete" means the SDE's chain when
    ``steps`` is not given, "uniform" otherwise).
    """

    name: str
    build: Callable | None = None
    solve: Callable | None = None
    default_grid: str = "discrete"
    doc: str = ""


SAMPLERS: dict[str, SamplerSpec] = {}
PREDICTORS: dict[str, Callable] = {}
CORRECTORS: dict[str, Callable] = {}


def register_sampler(name: str, *, build=None, solve=None, default_grid: str = "discrete", doc: str = "") -> None:
    """Make ``ss.sample(..., sampler=name, **options)`` run a method of your own.

    Give ``build`` for a fixed-grid method: ``build(**options)`` returns a
    :class:`~score_sde.solvers.base.Stepper` that the driver runs over a time grid (``default_grid``
    when the caller gives none: a kind of :func:`~score_sde.solvers.grids.make_grid`). Or give
    ``solve`` for a back-end owning its own loop: ``solve(sde, score_fn, x_T, *, eps, generator,
    progress, cond, steps, nfe, denoise, callback, **options)`` returns a
    :class:`~score_sde.solvers.observer.SampleResult`. The keyword arguments of ``build`` (or those of
    ``solve`` beyond the ones listed) are the sampler's options, checked by name. An existing name is
    replaced.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"a sampler name must be a non-empty string; got {name!r}")
    if (build is None) == (solve is None):
        raise TypeError(f"sampler {name!r}: give exactly one of build= (a Stepper factory) or solve=")
    if not callable(build if solve is None else solve):
        raise TypeError(f"sampler {name!r}: build/solve must be callable; got {build if solve is None else solve!r}")
    SAMPLERS[name] = SamplerSpec(name, build, solve, default_grid, doc)


def register_corrector(name: str, factory) -> None:
    """Make ``corrector=name`` of ``sampler="pc"`` build ``factory(**options)``.

    ``factory`` (usually a :class:`~score_sde.solvers.base.Stepper` subclass) is called with those of
    ``snr``, ``n_steps`` (``corrector_steps=`` of ``ss.sample``) and ``per_sample``
    (``per_sample_norms=``) that the caller gave and that its signature names; it returns an object
    with ``nfe_per_step`` (score calls per grid time; 0 skips the corrector) and
    ``correct(problem, x, t, t_next, i) -> (x, x_mean)``, which moves x at grid time t (0-d float64)
    before the predictor steps to t_next (Song et al. 2021, Alg. 1). Draw noise with
    ``problem.randn_like`` and evaluate the score with ``problem.score(x, t_vec)``
    (:class:`~score_sde.solvers.problem.Problem`) so that NFE counting and per-sample seeds work. An
    existing name is replaced.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"a corrector name must be a non-empty string; got {name!r}")
    if not callable(factory):
        raise TypeError(f"corrector {name!r}: factory must be callable (a Stepper subclass); got {factory!r}")
    CORRECTORS[name] = factory


__all__ = ["SamplerSpec", "SAMPLERS", "PREDICTORS", "CORRECTORS", "register_sampler", "register_corrector"]
