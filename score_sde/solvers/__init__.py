"""The one integrator layer: time grids, steppers, the loop, and the adaptive back-ends."""

from .api import SAMPLERS, available_samplers, register_sampler, sample, sampler_option_names
from .base import Context, CountingScore, StepOutput, Stepper
from .correctors import CORRECTORS, AnnealedLangevinCorrector, LangevinCorrector, PCStepper, register_corrector
from .grids import GRIDS, make_grid
from .loop import SampleResult, integrate
from .ode import NFEBudgetExceeded, odeint_clamped, odeint_pf, probability_flow_drift
from .predictors import PREDICTORS, AncestralSampling, EulerMaruyama, ProbabilityFlowPredictor, ReverseDiffusion

__all__ = [
    "NFEBudgetExceeded",
    "odeint_clamped",
    "odeint_pf",
    "probability_flow_drift",
    "sample",
    "available_samplers",
    "register_sampler",
    "sampler_option_names",
    "SAMPLERS",
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
