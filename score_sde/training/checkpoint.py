"""Checkpoints: written atomically, loaded without ever running code from the file.

A checkpoint is a dict of tensors and plain Python values (str, int, float, bool, None, lists,
dicts): model and EMA weights, optimiser state, step, the RNG states (torch, CUDA, numpy,
``random`` and named ``torch.Generator`` s), the resolved config and the data scaling.

* Writing: ``torch.save`` into a temporary file in the same folder, ``flush`` + ``fsync``, then
  ``os.replace`` onto the final name (atomic on POSIX), then ``fsync`` of the folder
  (:func:`score_sde.training.workdir.atomic_write`). A process killed at any moment leaves either
  the previous checkpoint or the new one, never half a file.
* Checksums: the file is a zip archive whose every record carries a CRC-32; :func:`load_checkpoint`
  verifies all of them before unpickling, so flipped bytes or a truncated file raise
  :class:`CheckpointError` instead of loading damaged weights. :func:`latest_valid_checkpoint`
  skips such a file with a warning and returns the newest one that verifies.
* Reading: ``torch.load(..., weights_only=True)``: the restricted unpickler accepts tensors and
  plain containers only, so a crafted file whose unpickling would call a function
  (``__reduce__``) is refused with :class:`CheckpointError` before anything runs.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import warnings
import zipfile

import numpy as np
import torch

from .workdir import atomic_write

CKPT_RE = re.compile(r"^checkpoint_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that can not be loaded safely (foreign objects, corrupt or missing file)."""


def save_checkpoint(path: str | os.PathLike, state: dict) -> str:
    """Atomically write ``state`` to ``path`` (temp file in the same folder, fsync, os.replace)."""
    return atomic_write(path, lambda f: torch.save(state, f))


def verify_checksums(path: str | os.PathLike) -> None:
    """Check the CRC-32 of every record of a zip-format checkpoint; :class:`CheckpointError` on a mismatch,
    a truncated archive or damaged headers. Files that are not zip archives are left to the unpickler."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise CheckpointError(f"checkpoint {path!r} is damaged (truncated or corrupt archive: {e})") from None
    if bad is not None:
        raise CheckpointError(
            f"checkpoint {path!r} is damaged: the checksum (CRC-32) of its record {bad!r} does not match"
        )


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)``.

    Raises :class:`CheckpointError` naming the file when it is missing, corrupt, or holds anything
    but tensors and plain containers (such a file is refused; none of its code runs).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path!r}")
    verify_checksums(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load checkpoint {path!r}: it holds objects other than tensors and plain "
            f"containers, and loading runs with weights_only=True (nothing from the file was executed). "
            f"Details: {str(e).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"could not read checkpoint {path!r}: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path!r} must hold a dict; got {type(state).__name__}")
    return state


# ---------------------------------------------------------------------------------------------
# RNG states as tensors / plain values


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict:
    """The RNG states of torch (CPU and CUDA), numpy, ``random`` and the named generators."""
    np_name, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(py_version), "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    """Restore what :func:`rng_state` returned (and the states of the named generators)."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    for k, g in (generators or {}).items():
        if k not in state["generators"]:
            raise CheckpointError(f"checkpoint holds no state of generator {k!r}")
        g.set_state(state["generators"][k].cpu())


# ---------------------------------------------------------------------------------------------
# a folder of numbered checkpoints


def checkpoint_path(folder: str | os.PathLike, step: int) -> str:
    return os.path.join(os.fspath(folder), f"checkpoint_{int(step)}.pt")


def list_checkpoints(folder: str | os.PathLike) -> list[tuple[int, str]]:
    """(step, path) of the complete checkpoints in ``folder``, oldest first (temp files ignored)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return []
    found = [(int(m.group(1)), os.path.join(folder, n)) for n in os.listdir(folder) if (m := CKPT_RE.match(n))]
    return sorted(found)


def latest_checkpoint(folder: str | os.PathLike) -> str | None:
    """Path of the checkpoint with the highest step, or None."""
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def latest_valid_checkpoint(
    folder: str | os.PathLike, map_location="cpu", quarantine: bool = False
) -> tuple[str, dict] | tuple[None, None]:
    """(path, state) of the newest checkpoint in ``folder`` that loads and verifies; (None, None) when the
    folder holds no checkpoint.

    A damaged newer checkpoint is skipped with a warning; with ``quarantine`` (the workdir lock's holder) it
    is renamed to ``<name>.corrupt`` so that it is neither listed nor pruned again. When checkpoints exist
    but none loads, :class:`CheckpointError` names the newest one's problem (nothing is renamed).
    """
    bad: list[tuple[str, CheckpointError]] = []
    for _, p in reversed(list_checkpoints(folder)):
        try:
            state = load_checkpoint(p, map_location=map_location)
        except CheckpointError as e:
            bad.append((p, e))
            continue
        for q, e in bad:
            note = ""
            if quarantine:
                os.replace(q, q + ".corrupt")
                note = f" (renamed to {os.path.basename(q)}.corrupt)"
            warnings.warn(f"skipping checkpoint {q!r}{note}: {e}", RuntimeWarning, stacklevel=2)
        return p, state
    if bad:
        n, where = len(bad), os.fspath(folder)
        raise CheckpointError(f"none of the {n} checkpoint(s) in {where!r} loads; the newest: {bad[0][1]}")
    return None, None


def prune_checkpoints(folder: str | os.PathLike, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints."""
    for _, p in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        os.unlink(p)


__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
    "checkpoint_path",
    "list_checkpoints",
    "latest_checkpoint",
    "latest_valid_checkpoint",
    "verify_checksums",
    "prune_checkpoints",
]
