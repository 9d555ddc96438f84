"""Per-step constants of a fixed-grid run, made once per grid and kept between runs.

A fixed-grid step multiplies tensors by schedule scalars and hands the score its time as a [B] tensor. Held as
ready-made tensors (0-d scalars in the data's dtype, [B] time vectors, the grid's 0-d times), they spare each
operation the wrapping of a Python number into a new tensor, but making them is itself a cost per step of a run
(benchmarks/loop_overhead.py, its "first run" column). Runs over the same grid (batches of samples, repeated
timings) find them here instead: the table is keyed by the *values* it is made from (the floats of a rule's rows,
the grid's times), so a hit is exactly the tensors a fresh run would make. The tensors are constants: nothing
writes into them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

KEEP = 16  # tables kept (least recently used dropped first); each is a few hundred kB at 1000 steps

_tables: OrderedDict = OrderedDict()


def kept(key: Hashable, make: Callable):
    """The table ``make()`` for ``key``, made on the first request and kept for the next ones."""
    table = _tables.get(key)
    if table is None:
        table = _tables[key] = make()
        if len(_tables) > KEEP:
            _tables.popitem(last=False)
    else:
        _tables.move_to_end(key)
    return table


def clear() -> None:
    """Drop every kept table."""
    _tables.clear()


__all__ = ["kept", "clear", "KEEP"]
