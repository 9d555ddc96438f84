"""Training: data, losses, EMA, checkpoints, the trainer, configs and multi-process training.

Layering: training sits above the likelihood and integrator layers (it uses ``ss.sample`` and
``ss.log_likelihood`` for sample grids and evaluation) and below the command line.
"""

from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import (
    Config,
    DataConfig,
    EvalConfig,
    ModelConfig,
    SamplingConfig,
    SDEConfig,
    TrainingConfig,
    apply_overrides,
    config_from_dict,
    default_config,
    load_config,
    save_config,
    validate,
)
from .distributed import DistContext, init_distributed
from .ema import ExponentialMovingAverage, default_ema_rate
from .trainer import Trainer, build_network, build_sde, evaluate_nll, load_workdir, sample_model

__all__ = [
    "Config",
    "DataConfig",
    "ModelConfig",
    "SDEConfig",
    "TrainingConfig",
    "SamplingConfig",
    "EvalConfig",
    "default_config",
    "config_from_dict",
    "apply_overrides",
    "load_config",
    "save_config",
    "validate",
    "ExponentialMovingAverage",
    "default_ema_rate",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "Trainer",
    "build_sde",
    "build_network",
    "load_workdir",
    "sample_model",
    "evaluate_nll",
    "DistContext",
    "init_distributed",
]
