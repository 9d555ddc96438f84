"""Step reduction by training: progressive distillation, consistency models and reflow.

One job per module: :mod:`.config` (the options), :mod:`.teacher` (exact mixture or workdir teacher and the
compatibility check), :mod:`.progressive` (Salimans & Ho 2022), :mod:`.boundary` and :mod:`.consistency`
(Song et al. 2023), :mod:`.reflow` (Liu et al. 2022) and :mod:`.runner` (the resumable loop and its workdir).
The command line is ``score-sde distill`` (:mod:`score_sde.distill_cli`); docs/distillation.md has the
equations and measured results.
"""

from .boundary import ConsistencyModel
from .config import DistillConfig, distill_config_from_dict, validate_distill
from .runner import DistillResult, DistillRun, distill
from .teacher import Teacher

__all__ = [
    "ConsistencyModel",
    "DistillConfig",
    "DistillResult",
    "DistillRun",
    "Teacher",
    "distill",
    "distill_config_from_dict",
    "validate_distill",
]
