"""The fast samplers, one import away: a re-export of the family modules.

:mod:`~score_sde.solvers.fast_base` (the denoiser / half-log-SNR view, Taylor weights, tables, final
policy), :mod:`~score_sde.solvers.ddim`, :mod:`~score_sde.solvers.dpm_solver` (singlestep),
:mod:`~score_sde.solvers.multistep` (DPM-Solver++ 2M/3M, UniPC), :mod:`~score_sde.solvers.sde_dpm`
(SDE-DPM-Solver++(2M)) and :mod:`~score_sde.solvers.edm` (Heun / EDM / Restart).
"""

from __future__ import annotations

from .ddim import DDIM
from .dpm_solver import DPMSolver, _dpm1, _dpm2, _dpm3, dpm_solver_fast_orders  # noqa: F401
from .edm import EDMHeun, Restart, _edm, _heun  # noqa: F401
from .fast_base import FINALS, ExpState, ExpStepper, taylor_weights
from .multistep import DPMSolverPP, Multistep, UniPC
from .sde_dpm import DPMSolverPP2MSDE

__all__ = [
    "FINALS",
    "taylor_weights",
    "dpm_solver_fast_orders",
    "ExpState",
    "ExpStepper",
    "DDIM",
    "DPMSolver",
    "Multistep",
    "DPMSolverPP",
    "UniPC",
    "DPMSolverPP2MSDE",
    "EDMHeun",
    "Restart",
]
