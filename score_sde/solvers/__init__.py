"""The one integrator layer: a problem, a method, one driver and one observer.

:class:`Problem` (the SDE, the counted score, the equation, the run's grid) is solved by a method, a
fixed-grid :class:`Stepper` (typed state through ``init`` / ``advance``) or an :class:`AdaptiveMethod`
(torchdiffeq, torchsde), through :func:`run`, watched by an :class:`Observer`; options come grouped as
:class:`OutputOptions` and :class:`AdaptiveOptions`. ``ss.sample`` maps names and keywords to these.
"""

from . import fast  # noqa: F401  (score_sde.solvers.fast: the fast samplers under one name)
from .api import available_samplers, sample, sampler_option_names
from .base import Context, CountingScore, StatefulStepper, StepOutput, Stepper
from .correctors import AnnealedLangevinCorrector, LangevinCorrector, PCStepper
from .driver import AdaptiveMethod, run
from .grids import GRIDS, make_grid
from .loop import integrate
from .observer import Observer, OutputOptions, SampleResult
from .ode import AdaptiveOptions, NFEBudgetExceeded, odeint_clamped, odeint_pf, probability_flow_drift
from .predictors import AncestralSampling, EulerMaruyama, ProbabilityFlowPredictor, ReverseDiffusion
from .problem import Problem
from .registry import CORRECTORS, PREDICTORS, SAMPLERS, SamplerSpec, register_corrector, register_sampler

__all__ = [
    "Problem",
    "run",
    "AdaptiveMethod",
    "Observer",
    "OutputOptions",
    "AdaptiveOptions",
    "StatefulStepper",
    "NFEBudgetExceeded",
    "odeint_clamped",
    "odeint_pf",
    "probability_flow_drift",
    "sample",
    "available_samplers",
    "register_sampler",
    "sampler_option_names",
    "SAMPLERS",
    "SamplerSpec",
    "Stepper",
    "StepOutput",
    "Context",
    "CountingScore",
    "PCStepper",
    "LangevinCorrector",
    "AnnealedLangevinCorrector",
    "CORRECTORS",
    "register_corrector",
    "PREDICTORS",
    "AncestralSampling",
    "EulerMaruyama",
    "ReverseDiffusion",
    "ProbabilityFlowPredictor",
    "make_grid",
    "GRIDS",
    "SampleResult",
    "integrate",
]
