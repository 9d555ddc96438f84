"""Imports the modules that register further samplers (adaptive back-ends, fast solvers)."""

import importlib

for _mod in ("ode", "sdeint", "fast"):
    try:
        importlib.import_module(f"{__package__}.{_mod}")
    except ModuleNotFoundError as e:  # a module not written yet
        if e.name != f"{__package__}.{_mod}":
            raise
