"""The trainer: denoising score matching with Adam, warmup, clipping, EMA and exact resumption.

One optimiser step (official score_sde recipe, Song et al. 2021, App. D):

1. learning rate ``lr * min(1, (step + 1) / warmup)`` (linear warmup);
2. for each of ``accum_steps`` micro-batches: loss (DSM by default) / accum_steps, backward;
   under DDP the gradients are averaged over ranks;
3. clip the global gradient norm to ``grad_clip`` (skipped when < 0);
4. Adam step; EMA update of the weights.

Exact resumption. The data order and the loss's random draws are functions of ``(seed, step, shard)``
(:class:`~score_sde.training.batches.BatchStream`); a checkpoint holds everything else (weights, EMA, Adam
moments, step, the global RNG states), so a run killed at any point and restarted from its last checkpoint
ends with bit-identical parameters, and N ranks with accumulation a reproduce one process with accumulation
N·a on the same global batch (up to the order of floating-point sums).

A workdir holds ``config.yaml``, ``checkpoints/checkpoint_<step>.pt`` (atomic), ``metrics.csv``,
``samples/`` (PNG grids) and, when the ``tensorboard`` package is installed, ``tensorboard/``.

Reliability (:mod:`score_sde.training.workdir`, :mod:`score_sde.training.guards`): one process at a time
holds a workdir (a lock naming its pid); every file is written atomically or appended line by line; the
running loss window is part of the checkpoint, so a resumed run logs the same rows as an uninterrupted
one; a damaged newest checkpoint is skipped for the newest one that verifies; a non-finite loss or
parameter stops training with :class:`~score_sde.training.guards.TrainingDiverged` before any
checkpoint of it is written; a resume whose config changes the model or the SDE is refused unless
``allow_config_change=True`` (``--allow-config-change``).

Pieces in their own modules: the data stream (:mod:`~score_sde.training.batches`), Adam, warmup and clipping
(:mod:`~score_sde.training.optim`), metrics.csv and TensorBoard (:mod:`~score_sde.training.train_log`), the
objects built from a config (:mod:`~score_sde.training.builders`) and the services on a trained model and its
workdir (sampling, NLL, PNGs, :func:`load_workdir`; :mod:`~score_sde.training.services`); the names the old
single module defined stay importable from here.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

import torch

from ..score import ScoreModel
from .batches import BatchStream
from .builders import (  # noqa: F401  (the old import path)
    IMAGE_NETS,
    _label_scale,
    _mix_seed,
    build_loss,
    build_network,
    build_sde,
    net_kwargs,
    resolve_device,
    scaling_from_plain,
    scaling_to_plain,
)
from .checkpoint import (
    checkpoint_path,
    latest_valid_checkpoint,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import SDE_KINDS, Config, save_config, validate
from .distributed import DistContext, all_reduce_mean, barrier, wrap_ddp
from .ema import ExponentialMovingAverage, default_ema_rate
from .guards import DivergenceGuard, check_batch_fits, check_resume_config, load_weights
from .optim import build_optimizer, clip_grad_norm, warmup_lr
from .services import (  # noqa: F401  (the old import path)
    evaluate_nll,
    image_grid,
    load_split,
    load_workdir,
    sample_model,
    sampler_options,
    save_samples,
)
from .train_log import METRIC_FIELDS, TrainLog  # noqa: F401  (the old import path of METRIC_FIELDS)
from .workdir import LauncherWatch, WorkdirLock, remove_stale_temps, under_torchrun

# ---------------------------------------------------------------------------------------------
# the trainer


class Trainer:
    """Train a score model from a :class:`Config` in ``workdir`` (resuming from its checkpoints).

    Args:
        config: the experiment; validated (types, values, data files) before anything is built.
        workdir: folder of config, checkpoints, metrics and samples (None: keep nothing on disk).
        dist: the process's place in a torchrun job (default: a single process).
        callbacks: ``fn(trainer, step, metrics)`` called after every optimiser step (``metrics``
            holds ``loss`` of that step, a float).
        resume: load the newest valid checkpoint of ``workdir`` when there is one.
        allow_config_change: resume even when the config's ``model`` or ``sde`` section differs from the
            checkpoint's (a warning and a line in ``<workdir>/events.log`` record it); refused otherwise.

    With a ``workdir``, rank 0 holds the workdir lock from construction until :meth:`fit` returns (or
    :meth:`close`); a second trainer on the same workdir raises
    :class:`~score_sde.training.workdir.WorkdirLocked` naming the holder's pid.
    """

    def __init__(
        self,
        config: Config,
        workdir: str | os.PathLike | None = None,
        *,
        dist: DistContext | None = None,
        callbacks: tuple[Callable, ...] | list[Callable] = (),
        resume: bool = True,
        allow_config_change: bool = False,
    ):
        validate(config, check_files=True)
        self.cfg = config
        self.workdir = None if workdir is None else os.fspath(workdir)
        self.dist = dist or DistContext()
        self.callbacks = list(callbacks)
        t = config.training
        self.device = resolve_device(t.device)
        if self.dist.distributed and self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.dtype = getattr(torch, t.dtype)
        self.allow_config_change = allow_config_change
        self.batches = b = BatchStream(config, self.dist, self.device, self.dtype)  # checks the batch split
        self.train_set, self.data, self.labels, self.shape = b.train_set, b.data, b.labels, b.shape
        check_batch_fits(config, self.shape, b.micro, self.device, self.dtype)
        self.sde = build_sde(config)
        torch.manual_seed(t.seed)  # same initial weights on every rank
        self.net = build_network(config.model, self.shape).to(self.device, self.dtype)  # float32 init draws
        self.ddp_net = wrap_ddp(self.net, self.dist)
        param = dict(prediction=config.model.prediction, time_labels=config.model.time_labels)
        self.model = ScoreModel(self.ddp_net, self.sde, **param)  # trains through DDP's gradient averaging
        self.eval_model = ScoreModel(self.net, self.sde, **param)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.params, t)
        self.ema_rate = t.ema_rate if t.ema_rate is not None else default_ema_rate(SDE_KINDS[config.sde.kind])
        self.ema = ExponentialMovingAverage(self.net, self.ema_rate)
        self.loss_fn = build_loss(config)
        self.step = 0
        self._log_files = None  # a TrainLog while fit() runs (rank 0 with a workdir)
        self._eval_cache: dict = {}
        self._window = torch.zeros((), device=self.device, dtype=self.dtype)  # the running loss window
        self._n_window = 0  # (steps since the last logged row): part of the checkpoint
        self.guard = DivergenceGuard(self.device)
        self._watch = LauncherWatch(enabled=self.dist.distributed and under_torchrun())
        self._lock = None
        torch.manual_seed(_mix_seed(t.seed, self.dist.rank, 1))  # dropout etc. (saved in checkpoints)
        if self.workdir is not None and self.dist.is_main:
            self._take_workdir()
        try:
            if self.workdir is not None and resume:
                self._resume()
        except BaseException:
            self.close()
            raise

    # -- paths and the workdir lock -------------------------------------------------------------
    @property
    def ckpt_dir(self) -> str:
        return os.path.join(self.workdir, "checkpoints")

    def _take_workdir(self) -> None:
        """Take the workdir lock (rank 0) and delete the temp files a killed run left behind."""
        if self._lock is None:
            self._lock = WorkdirLock(self.workdir)
        self._lock.acquire()
        remove_stale_temps([self.workdir, self.ckpt_dir, os.path.join(self.workdir, "samples")])

    def close(self) -> None:
        """Release the workdir lock (also done when :meth:`fit` returns or raises)."""
        if self._lock is not None:
            self._lock.release()

    # -- data (:class:`~score_sde.training.batches.BatchStream`) ------------------------------------
    def batch_indices(self, step: int) -> torch.Tensor:
        """Indices [B] of the global batch of ``step``."""
        return self.batches.batch_indices(step)

    def shard_generator(self, step: int, shard: int) -> torch.Generator:
        """The generator of the draws of one shard of one step."""
        return self.batches.shard_generator(step, shard)

    def micro_batch(self, step: int, micro: int):
        """(x0, cond, generator) of this rank's ``micro``-th micro-batch of ``step``."""
        return self.batches.micro_batch(step, micro)

    # -- one step -------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """Linear warmup to ``training.lr`` over ``training.warmup`` steps (step counted from 0)."""
        return warmup_lr(step, self.cfg.training.lr, self.cfg.training.warmup)

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One optimiser step at ``self.step``; returns (loss of this rank, gradient norm)."""
        t = self.cfg.training
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        if t.accum_steps == 1 and not self.dist.distributed:  # the common case, without extra ops
            x0, cond, g = self.micro_batch(self.step, 0)
            loss = self.loss_fn(self.model, x0, generator=g, cond=cond)
            loss.backward()
            total = loss.detach()
        else:
            total = torch.zeros((), device=self.device, dtype=self.dtype)
            for m in range(t.accum_steps):
                x0, cond, g = self.micro_batch(self.step, m)
                sync = not self.dist.distributed or m == t.accum_steps - 1
                with contextlib.nullcontext() if sync else self.ddp_net.no_sync():
                    loss = self.loss_fn(self.model, x0, generator=g, cond=cond)
                    (loss / t.accum_steps).backward()
                total += loss.detach() / t.accum_steps
        grad_norm = clip_grad_norm(self.params, t.grad_clip) if t.grad_clip >= 0 else None
        self.optimizer.step()
        self.ema.update()
        self.step += 1
        self.guard.observe(self.step, total)
        return total, grad_norm

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs, as tensors and plain values (weights_only-loadable)."""
        return {
            "format": "score_sde.checkpoint/1",
            "step": self.step,
            "model": self.net.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(),
            "config": self.cfg.to_dict(),
            "data_scaling": scaling_to_plain(self.train_set.scaling),
            "data_shape": list(self.shape),
            "world_size": self.dist.world_size,
            "log_window": {"sum": self._window.detach().clone(), "n": self._n_window},
        }

    def save(self) -> str | None:
        """Write ``checkpoints/checkpoint_<step>.pt`` atomically (rank 0) and prune old ones.

        Raises :class:`~score_sde.training.guards.TrainingDiverged` (writing nothing) when a loss since the
        last check or a parameter is not finite."""
        self.guard.check(self.step, self.params, where="before writing a checkpoint", workdir=self.workdir)
        path = None
        if self.workdir is not None and self.dist.is_main:
            path = save_checkpoint(checkpoint_path(self.ckpt_dir, self.step), self.state_dict())
            prune_checkpoints(self.ckpt_dir, self.cfg.training.keep_ckpts)
        barrier(self.dist)
        return path

    def load_state_dict(self, state: dict) -> None:
        load_weights(self.net, state["model"], what="model")
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        win = state.get("log_window")
        if win is not None:
            self._window = win["sum"].to(self._window)
            self._n_window = int(win["n"])
        if state.get("world_size", 1) == self.dist.world_size:
            set_rng_state(state["rng"])

    def _resume(self) -> None:
        path, state = latest_valid_checkpoint(self.ckpt_dir, map_location=self.device, quarantine=self.dist.is_main)
        if path is None:
            return
        check_resume_config(
            state.get("config"), self.cfg, path, allow=self.allow_config_change,
            log_dir=self.workdir if self.dist.is_main else None,
        )  # fmt: skip
        if "data_shape" in state and tuple(state["data_shape"]) != self.shape:
            raise ValueError(
                f"checkpoint {path!r} was trained on data of shape {tuple(state['data_shape'])}; the config's data "
                f"set has shape {self.shape}"
            )
        self.load_state_dict(state)

    # -- logging --------------------------------------------------------------------------------
    def _open_logs(self) -> None:
        """Write config.yaml (atomically), keep the metrics rows up to the resumed step, open TensorBoard."""
        if self.workdir is None or not self.dist.is_main:
            return
        self._take_workdir()  # held since construction unless fit() ran before
        save_config(self.cfg, os.path.join(self.workdir, "config.yaml"))
        self._log_files = TrainLog(self.workdir, self.step)

    def _log(self, row: dict) -> None:
        if self._log_files is not None:
            self._log_files.append(row)

    # -- evaluation -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def averaged(self):
        """Inside the block the network holds the EMA weights and is in eval mode; both are put back on
        leaving it, also when the block raises."""
        was_training = self.net.training
        self.net.eval()
        try:
            with self.ema.average_parameters():
                yield
        finally:
            self.net.train(was_training)

    def sample(self, num: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` samples [num, ...] from the EMA model with ``cfg.sampling`` (rank-local)."""
        with self.averaged():
            return sample_model(
                self.cfg,
                self.sde,
                self.eval_model,
                self.shape,
                num or self.cfg.sampling.num,
                device=self.device,
                dtype=self.dtype,
                generator=generator,
            )

    def evaluate(self) -> dict:
        """Evaluation NLL of the EMA model on held-out data through the PF-ODE (``cfg.eval``)."""
        with self.averaged():
            return evaluate_nll(
                self.cfg,
                self.sde,
                self.eval_model,
                device=self.device,
                dist=self.dist,
                cache=self._eval_cache,
            )

    def _write_samples(self) -> None:
        if not self.dist.is_main or self.workdir is None:  # sampling has no collectives: rank 0 only
            return
        g = torch.Generator(device=self.device).manual_seed(_mix_seed(self.cfg.sampling.seed, self.step))
        x = self.sample(generator=g)
        path = os.path.join(self.workdir, "samples", f"samples_{self.step}.png")
        save_samples(x, path, centered=self.cfg.data.centered)

    # -- the loop -------------------------------------------------------------------------------
    def fit(self, n_iters: int | None = None) -> dict:
        """Train until ``step == n_iters`` (default ``training.n_iters``); returns a summary dict.

        Raises :class:`~score_sde.training.guards.TrainingDiverged` when the loss or the parameters stop being
        finite (the checkpoints written before stay; none is written after). Releases the workdir lock on return.
        """
        try:
            return self._fit(n_iters)
        finally:
            if self._log_files is not None:
                self._log_files.close()
                self._log_files = None
            self.close()

    def _fit(self, n_iters: int | None) -> dict:
        t = self.cfg.training
        n_iters = t.n_iters if n_iters is None else n_iters
        self._open_logs()
        from tqdm.auto import tqdm

        bar = tqdm(
            total=n_iters,
            initial=self.step,
            disable=not (t.progress and self.dist.is_main),
            desc="train",
            dynamic_ncols=True,
        )
        self.net.train()
        t0, step0 = time.perf_counter(), self.step
        last = {}
        while self.step < n_iters:
            self._watch.check()
            loss, grad_norm = self.train_step()
            self._window += loss
            self._n_window += 1
            step = self.step
            if self.callbacks:
                for cb in self.callbacks:
                    cb(self, step, {"loss": float(loss)})
            row = {}
            if step % t.log_every == 0 or step == n_iters:
                mean_loss = all_reduce_mean(self._window / self._n_window, self.dist)
                self.guard.check(step, None, where="at a logged step", loss=mean_loss, workdir=self.workdir)
                dt = time.perf_counter() - t0
                row.update(
                    loss=float(mean_loss),
                    lr=self.lr_at(step - 1),
                    grad_norm=float(grad_norm) if grad_norm is not None else "",
                    steps_per_s=(step - step0) / dt if dt > 0 else "",
                )
                self._window = torch.zeros_like(self._window)
                self._n_window = 0
                bar.set_postfix(loss=f"{row['loss']:.4g}")
            if t.eval_every and (step % t.eval_every == 0 or step == n_iters):
                row.update(self.evaluate())
            if row:
                row.update(step=step, time_s=time.perf_counter() - t0)
                self._log(row)
                last.update(row)
            if t.sample_every and (step % t.sample_every == 0 or step == n_iters):
                self._write_samples()
            if step % t.ckpt_every == 0 or step == n_iters:
                self.save()
            bar.update(1)
        bar.close()
        wall = time.perf_counter() - t0
        return {
            "step": self.step,
            "wall_s": wall,
            "steps_per_s": (self.step - step0) / wall if wall > 0 else 0.0,
            **{k: v for k, v in last.items() if k not in ("step", "time_s")},
        }


__all__ = [
    "Trainer",
    "build_sde",
    "build_network",
    "build_loss",
    "load_workdir",
    "net_kwargs",
    "sample_model",
    "evaluate_nll",
    "save_samples",
    "image_grid",
    "load_split",
]
