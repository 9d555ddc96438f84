"""score_sde: score-based generative modelling in continuous time (Song et al. 2021).

The curated public API. The layers, each importing only those below it: sde -> analytic ->
score/nets -> solvers -> likelihood -> guidance -> pretrained/evaluation -> training -> cli.
"""

from . import analytic, guidance, metrics, nets, pretrained
from .analytic import EmpiricalDistribution, Gaussian, GaussianMixture
from .data_scaling import DataScaling
from .gridfit import FittedGrid, optimize_grid
from .guidance import ClassifierFreeGuidance, ClassifierGuidance, colorize, drop_condition, impute
from .likelihood import (
    DatasetBitsPerDim,
    LikelihoodResult,
    bits_per_dim,
    dataset_bits_per_dim,
    decode,
    encode,
    log_likelihood,
)
from .score import ScoreModel, convert, score_from_denoiser
from .sde import VESDE, VPSDE, DiscreteVPSDE, GeneralLinearSDE, LinearSDE, ReverseSDE, SubVPSDE
from .solvers import SampleResult, available_samplers, make_grid, sample
from .solvers.ode import ODESolveError
from .utils import NonFiniteScoreWarning, per_sample_generators

__version__ = "0.1.0"

__all__ = [
    "guidance",
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "impute",
    "colorize",
    "drop_condition",
    "analytic",
    "metrics",
    "nets",
    "pretrained",
    "GaussianMixture",
    "Gaussian",
    "EmpiricalDistribution",
    "ScoreModel",
    "convert",
    "score_from_denoiser",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "DiscreteVPSDE",
    "GeneralLinearSDE",
    "LinearSDE",
    "ReverseSDE",
    "sample",
    "SampleResult",
    "available_samplers",
    "make_grid",
    "optimize_grid",
    "FittedGrid",
    "per_sample_generators",
    "NonFiniteScoreWarning",
    "ODESolveError",
    "log_likelihood",
    "LikelihoodResult",
    "bits_per_dim",
    "dataset_bits_per_dim",
    "DatasetBitsPerDim",
    "encode",
    "decode",
    "DataScaling",
]
