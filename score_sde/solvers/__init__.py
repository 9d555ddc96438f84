"""The one integrator layer: time grids, steppers, the loop, and the adaptive back-ends."""

from .api import available_samplers, sample, sampler_option_names
from .base import Context, CountingScore, StepOutput, Stepper
from .correctors import AnnealedLangevinCorrector, LangevinCorrector, PCStepper
from .grids import GRIDS, make_grid
from .loop import SampleResult, integrate
from .ode import NFEBudgetExceeded, odeint_clamped, odeint_pf, probability_flow_drift
from .predictors import AncestralSampling, EulerMaruyama, ProbabilityFlowPredictor, ReverseDiffusion
from .registry import CORRECTORS, PREDICTORS, SAMPLERS, SamplerSpec, register_corrector, register_sampler

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
