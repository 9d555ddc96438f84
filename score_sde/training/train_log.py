"""The training run's log: ``metrics.csv`` (one row per logged step) and, when the ``tensorboard`` package is
installed, the same scalars under ``tensorboard/``; both continue from the step a run resumed at."""

from __future__ import annotations

import os

from .workdir import MetricsLog

METRIC_FIELDS = ("step", "time_s", "loss", "lr", "grad_norm", "steps_per_s", "eval_nll", "eval_bpd")


class TrainLog:
    """The metrics of a run in ``workdir``, opened at ``step`` (rows and scalars after ``step`` are dropped:
    a resumed run logs the rows an uninterrupted one would have)."""

    def __init__(self, workdir: str, step: int, fields: tuple[str, ...] = METRIC_FIELDS):
        self.metrics = MetricsLog(os.path.join(workdir, "metrics.csv"), fields)
        self.metrics.open(keep_through=step)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=step)
        except ImportError:  # tensorboard not installed
            self.writer = None

    def append(self, row: dict) -> None:
        """Append ``row`` (a dict with ``step``) to metrics.csv and its non-empty values to TensorBoard."""
        self.metrics.append(row)
        if self.writer is not None:
            for k, v in row.items():
                if k != "step" and v != "" and v is not None:
                    self.writer.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


__all__ = ["METRIC_FIELDS", "TrainLog"]
