"""A restricted unpickler for CIFAR-10's python batches.

Security: CIFAR-10's python batches are pickles, and unpickling can run arbitrary code. They are
read with :class:`RestrictedUnpickler`, which resolves only the globals needed to rebuild numpy
arrays of plain (non-object) dtypes -- ``numpy.core.multiarray._reconstruct`` (and its numpy 2
path), numpy's protocol-5 ``_frombuffer``, ``numpy.ndarray``, ``numpy.dtype`` (object dtypes refused)
and the ``_codecs.encode(str, "latin1")`` that python 3 uses for bytes at protocol 2 -- and raises
:class:`pickle.UnpicklingError` naming any other global (``os.system``, ``builtins.eval``, ...).
Containers, numbers, strings and bytes need no globals. ``.npz`` files are read with
``allow_pickle=False``.
"""

from __future__ import annotations

import io
import pickle

import numpy as np


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals needed for numpy arrays of plain dtypes.

    Anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) raises
    :class:`pickle.UnpicklingError` naming the refused global, so no code from the file runs.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name} from a pickle: only numpy arrays and plain "
                "Python containers are allowed (pickles can execute code)"
            )
        return {
            "dtype": _safe_dtype,
            "ndarray": np.ndarray,
            "_reconstruct": _reconstruct,
            "_frombuffer": _frombuffer,
            "encode": _latin1_encode,
        }[name]


try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct


def _frombuffer(buf, dtype, shape, order):
    """numpy's protocol-5 array constructor, restricted to plain dtypes (a copy, writeable)."""
    dt = _safe_dtype(dtype)
    return np.frombuffer(buf, dtype=dt).reshape(shape, order=order).copy()


def _latin1_encode(obj, encoding="latin1", errors="strict"):
    """How python 3 pickles bytes at protocol <= 2: _codecs.encode(str, 'latin1'); only that is allowed."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r} in a pickle")
    return obj.encode("latin1", errors)


def _safe_dtype(spec, *args):
    dt = np.dtype(spec)
    if dt.hasobject:
        raise pickle.UnpicklingError(f"refusing numpy object dtype {spec!r} in a pickle")
    return dt


def safe_unpickle(data: bytes, encoding: str = "bytes"):
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (python 2 strings decoded per ``encoding``)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A data file refused by :class:`RestrictedUnpickler` (or not a pickle at all); a ValueError too, so the
    command line prints it as one ``score-sde: error:`` line."""
