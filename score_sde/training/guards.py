"""Training guards: divergence (non-finite loss or weights), resume compatibility, batch sizes that can not fit.

* :class:`DivergenceGuard` records, on the device and without a sync per step, the first step whose loss
  was not finite; :meth:`DivergenceGuard.check` (called at logged steps and before every checkpoint, where
  the trainer synchronises anyway) raises :class:`TrainingDiverged` naming that step, so a NaN checkpoint
  is never written and the last good one stays the newest.
* :func:`check_resume_config` refuses a resume whose ``model`` or ``sde`` section differs from the
  checkpoint's: the weights would be read under a different meaning (another prediction type, another
  SDE) or would not fit at all (another width). ``allow=True`` resumes anyway and records the change.
* :func:`check_batch_fits` refuses a batch whose input tensors alone exceed the device's memory.
"""

from __future__ import annotations

import math
import os
import time
import warnings

import torch


class TrainingDiverged(RuntimeError):
    """The loss or the parameters are no longer finite; training stopped before writing a checkpoint."""


class DivergenceGuard:
    """Track the first optimiser step with a non-finite loss (device-side; no per-step sync)."""

    def __init__(self, device):
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)

    def observe(self, step: int, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss.detach()).all()
        self.first_bad = torch.where(bad & (self.first_bad < 0), torch.full_like(self.first_bad, step), self.first_bad)

    def check(self, step: int, params=None, *, where: str, loss=None, workdir=None) -> None:
        """Raise :class:`TrainingDiverged` if a loss since the start or a parameter is not finite."""
        first = int(self.first_bad)
        if loss is not None and first < 0 and not bool(torch.isfinite(loss).all()):
            first = step
        what = None
        if first >= 0:
            what = f"the loss became non-finite at step {first}"
        elif params:
            norms = torch.stack(torch._foreach_norm([p.detach() for p in params]))
            if not bool(torch.isfinite(norms).all()):
                what = f"a parameter became non-finite by step {step}"
        if what is None:
            return
        ckpt = ""
        if workdir is not None:
            ckpt = f"; the checkpoints already in {os.path.join(os.fspath(workdir), 'checkpoints')!r} are kept"
        raise TrainingDiverged(
            f"training diverged: {what} (checked {where}); no checkpoint was written for it{ckpt}. Lower "
            "training.lr, keep training.grad_clip >= 0, or check the data for NaN/inf"
        )


# ---------------------------------------------------------------------------------------------
# resuming


RESUME_SECTIONS = ("model", "sde")


def flat_keys(d: dict, prefix: str = "") -> dict:
    """A nested dict as one level with dotted keys: {'a': {'b': 1}} -> {'a.b': 1}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_keys(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume_config(stored: dict | None, cfg, path: str, *, allow: bool, log_dir: str | None = None) -> list[str]:
    """Compare the ``model`` and ``sde`` sections of a checkpoint's config with ``cfg``.

    Returns the changed keys (``"key: old -> new"``). A change raises ``ValueError`` unless ``allow``; with
    ``allow`` it is warned about and appended to ``<log_dir>/events.log``.
    """
    if not isinstance(stored, dict):
        return []
    new = cfg.to_dict()
    a = flat_keys({s: stored.get(s, {}) for s in RESUME_SECTIONS})
    b = flat_keys({s: new[s] for s in RESUME_SECTIONS})
    changes = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if not changes:
        return []
    if not allow:
        raise ValueError(
            f"the config differs from the one checkpoint {path!r} was trained with in {'; '.join(changes)}. "
            "The weights would be resumed under another model or SDE. Use a new workdir, or pass "
            "--allow-config-change (Trainer(..., allow_config_change=True)) to resume anyway"
        )
    msg = f"resuming {path!r} with a changed config (allowed): {'; '.join(changes)}"
    warnings.warn(msg, UserWarning, stacklevel=3)
    if log_dir is not None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()}: {msg}\n"
        fd = os.open(os.path.join(log_dir, "events.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    return changes


def load_weights(net: torch.nn.Module, state: dict, what: str = "model") -> None:
    """``net.load_state_dict(state)`` with a ``ValueError`` naming the mismatched tensors instead of torch's."""
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()
        detail = "; ".join(line.strip() for line in first[1:4]) or first[0]
        raise ValueError(f"the checkpoint's weights do not fit the {what} built from the config: {detail}") from None


# ---------------------------------------------------------------------------------------------
# batch sizes


def device_memory(device: torch.device) -> int | None:
    """Total bytes of memory of ``device`` (None when unknown)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - platforms without sysconf
        return None


def check_batch_fits(cfg, shape: tuple[int, ...], micro: int, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse a ``training.batch_size`` whose tensors alone can not fit in the device's memory.

    A lower bound of one step's memory: the global batch's int64 indices plus, per micro-batch sample,
    the data, noise, noisy input and output (4 D values) and two copies (forward and gradient) of the
    hidden activations (``model.hidden`` x (``model.depth`` + 1) for the MLP, the first layer's
    ``model.ch`` x H x W for image networks). Real use is higher still.
    """
    t, m = cfg.training, cfg.model
    D = math.prod(shape)
    first = m.hidden * (m.depth + 1) if m.kind == "mlp" else m.ch * (math.prod(shape[1:]) if len(shape) == 3 else 1)
    need = t.batch_size * 8 + micro * (4 * D + 2 * first) * torch.tensor([], dtype=dtype).element_size()
    have = device_memory(device)
    if have is not None and need > have:
        raise ValueError(
            f"config key 'training.batch_size' = {t.batch_size} can not fit: its tensors alone need at least "
            f"{need / 2**30:.1f} GiB and the {device.type} device has {have / 2**30:.1f} GiB; use a smaller "
            "batch or training.accum_steps"
        )


__all__ = [
    "TrainingDiverged",
    "DivergenceGuard",
    "check_resume_config",
    "load_weights",
    "check_batch_fits",
    "device_memory",
]
