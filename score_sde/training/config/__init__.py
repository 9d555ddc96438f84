"""Typed experiment configs: YAML files read into dataclasses (defaults plus overrides).

A config has six sections, each a dataclass with documented defaults:

===========  ======================================================================
``data``     which data set, its split sizes, centring, the file or folder it reads
``model``    the score network (``model.kind`` picks :func:`score_sde.nets.build_net`),
             its prediction type and time labels
``sde``      the forward SDE (VP, sub-VP, VE) and its parameters
``training`` optimiser (Adam + warmup + clipping), EMA, loss, batch, schedule of
             checkpoints / samples / evaluations, seed, device, dtype
``sampling`` the sampler used for sample grids and ``score-sde sample``
``eval``     the evaluation NLL (probability-flow ODE, Hutchinson probes)
===========  ======================================================================

A YAML file lists only what differs from the defaults (``base: other.yaml`` inherits from
another file first), like the official ``default_*_configs`` plus per-experiment overrides.
Files are read with ``yaml.safe_load`` only (never ``yaml.load``), so reading a config can not run
code. Unknown keys, wrong types and bad values raise ``ValueError`` / ``TypeError`` naming the
dotted key (``training.lr``) before anything is trained. Command-line overrides are
``key=value`` strings (``--set training.lr=1e-3``) coerced to the field's type.
"""

from .checks import validate
from .parsing import (  # noqa: F401  (ConfigYAMLError: as before)
    ConfigYAMLError,
    apply_overrides,
    coerce,
    config_from_dict,
    config_from_plain,
    default_config,
    load_config,
    load_yaml,
    missing_keys,
    save_config,
)
from .schema import (  # noqa: F401  (the lists of choices stay reachable as score_sde.training.config.<NAME>)
    DTYPES,
    FILE_DATASETS,
    LOSSES,
    REDUCES,
    SDE_KINDS,
    SECTIONS,
    TARGETS,
    WEIGHTINGS,
    Config,
    DataConfig,
    EvalConfig,
    ModelConfig,
    SamplingConfig,
    SDEConfig,
    TrainingConfig,
)

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
    "config_from_plain",
    "apply_overrides",
    "load_yaml",
    "load_config",
    "save_config",
    "missing_keys",
    "validate",
    "coerce",
]
