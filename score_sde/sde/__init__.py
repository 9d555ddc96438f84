"""Forward SDEs and their schedules (bottom layer: never calls a network)."""

from .base import LinearSDE, ReverseSDE
from .general import GeneralLinearSDE
from .ve import VESDE
from .vp import VPSDE, DiscreteVPSDE, SubVPSDE

__all__ = ["LinearSDE", "ReverseSDE", "VPSDE", "SubVPSDE", "VESDE", "DiscreteVPSDE", "GeneralLinearSDE"]
