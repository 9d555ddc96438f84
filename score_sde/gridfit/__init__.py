"""Time grids fitted to a model (``ss.optimize_grid``, ``ss.FittedGrid``); a layer above the solvers.

- :mod:`.object`: the :class:`FittedGrid` (times + what they were fitted for + cost), JSON save/load, checks;
- :mod:`.param`: the monotone log-SNR parameterisation searched over;
- :mod:`.teacher`: the loss against teacher trajectories; :mod:`.bound`: the teacher-free local-error bound;
- :mod:`.api`: :func:`optimize_grid`.
"""

from .api import METHODS, optimize_grid
from .object import FittedGrid, grid_path, sde_fingerprint

__all__ = ["optimize_grid", "FittedGrid", "grid_path", "sde_fingerprint", "METHODS"]
