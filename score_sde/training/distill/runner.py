"""The resumable distillation loop shared by the three methods, and its workdir.

A run is ``rounds x iters`` optimiser steps (progressive: one round per halving; reflow: one per
coupling; consistency: one round). At the first step of round r the round's fixed inputs are built from the
weights at that moment (progressive: the frozen teacher copy; reflow: the coupled pairs; consistency: the
target network) and the optimiser and EMA restart. Step k draws all its randomness from a generator seeded
by (seed, k), and every checkpoint holds the student, its EMA, the optimiser, the consistency target network
and the round's inputs, so a run killed at any moment and started again ends with bit-identical weights.

The workdir is an ordinary one: ``config.yaml`` (the student's config, whose ``sampling`` section names the
sampler, steps and end time the student was distilled for), ``checkpoints/checkpoint_<step>.pt`` written
atomically (``model``, ``ema``, ``config``, ``data_shape`` as the trainer writes them, plus ``distill``:
method, options, sampler, steps, eps and the explicit time grid), ``metrics.csv`` and ``distill.yaml`` (the
options and the grid). ``score-sde sample`` / ``evaluate`` and :func:`~score_sde.training.services.load_workdir`
read it like a trained one (a consistency student comes back as a
:class:`~score_sde.training.distill.boundary.ConsistencyModel`).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

import torch
import yaml

from ...score import ScoreModel
from ...sde import VESDE, VPSDE, SubVPSDE
from ...solvers.grids import make_grid
from ..builders import _mix_seed, build_network
from ..checkpoint import checkpoint_path, latest_valid_checkpoint, prune_checkpoints, save_checkpoint
from ..config import Config, DataConfig, ModelConfig, SDEConfig, config_from_plain, save_config
from ..ema import ExponentialMovingAverage
from ..guards import load_weights
from ..workdir import MetricsLog, WorkdirLock, atomic_write_text, remove_stale_temps
from .boundary import ConsistencyModel, marker
from .config import DistillConfig, validate_distill
from .consistency import consistency_loss, ct_schedule, karras_times
from .progressive import nested_grids, progressive_loss
from .reflow import couple, reflow_loss
from .teacher import Teacher, describe_sde

METRIC_FIELDS = ("step", "round", "loss")
# options that may change when a run is resumed (they do not change the weights)
RESUMABLE_CHANGES = ("ckpt_every", "keep_ckpts", "log_every")


def sde_config(sde) -> SDEConfig | None:
    """The config section of a VP / sub-VP / VE SDE (None for a general linear SDE)."""
    if isinstance(sde, SubVPSDE):
        return SDEConfig(kind="subvpsde", beta_min=sde.beta_0, beta_max=sde.beta_1, N=sde.N)
    if isinstance(sde, VPSDE) and type(sde) is VPSDE and sde.schedule == "linear":
        return SDEConfig(kind="vpsde", beta_min=sde.beta_0, beta_max=sde.beta_1, N=sde.N)
    if isinstance(sde, VESDE):
        return SDEConfig(kind="vesde", sigma_min=sde.sigma_min, sigma_max=sde.sigma_max, N=sde.N)
    return None


@dataclass
class DistillResult:
    """The distilled student (EMA weights) and how to sample it: ``ss.sample(sde, model, sampler=sampler,
    steps=steps, eps=eps)`` uses ``grid`` (the sampler's default grid kind, stored here as times)."""

    model: ScoreModel
    sde: object
    sampler: str
    steps: int
    eps: float
    grid: torch.Tensor
    history: list = field(default_factory=list)
    cfg: Config | None = None


class DistillRun:
    """Distil ``teacher`` with options ``dcfg`` into a student (see the module docstring).

    Args:
        teacher: a :class:`~score_sde.training.distill.teacher.Teacher`.
        dcfg: the :class:`~score_sde.training.distill.config.DistillConfig`.
        sde: the student's SDE (default the teacher's; only reflow may use another path, with the same prior).
        model: the student network's config section (default: the teacher's; for an exact teacher a residual
            MLP, 128 wide, 3 blocks, v-prediction, trained from scratch in the first round).
        cfg: the student's whole config for the workdir (default: the teacher's with ``model`` / ``sampling``
            replaced, or for an exact teacher on VP / sub-VP / VE a config naming the ``mixture`` data set, the
            8-Gaussian ring: give ``cfg`` when the teacher's mixture is another one).
        workdir: where checkpoints go (None: in memory only). device, dtype: of the student.
    """

    def __init__(self, teacher: Teacher, dcfg: DistillConfig, *, sde=None, model: ModelConfig | None = None,
                 cfg: Config | None = None, workdir: str | os.PathLike | None = None, device="cpu",
                 dtype=torch.float32, progress: bool = False):  # fmt: skip
        self.teacher, self.dcfg = teacher, validate_distill(copy.deepcopy(dcfg))
        self.sde = teacher.sde if sde is None else sde
        d = self.dcfg
        if d.method == "reflow":
            if self.sde.prior_std != teacher.sde.prior_std:
                raise ValueError(
                    f"incompatible teacher: reflow couples the teacher's prior noise with samples, but the student SDE "
                    f"{describe_sde(self.sde)} has prior std {self.sde.prior_std} and the teacher "
                    f"({teacher.description}) {teacher.sde.prior_std}"
                )
        else:
            teacher.check_student(self.sde, teacher.data_shape, "the student SDE")
        self.eps = float(self.sde.default_eps if d.eps is None else d.eps)
        self.sde.check_eps(self.eps)
        self.device, self.dtype, self.progress = torch.device(device), dtype, progress
        self.shape = teacher.data_shape
        if model is None:
            model = copy.deepcopy(teacher.cfg.model) if teacher.cfg is not None else ModelConfig(
                kind="mlp", prediction="v", hidden=128, depth=3, emb_dim=64)  # fmt: skip
        self.model_cfg = model
        self.cfg = self._student_config(cfg)
        self._build_student()
        self.workdir = None if workdir is None else os.fspath(workdir)
        self.step, self.round, self.history = 0, -1, []
        self.round_state: dict = {}
        self._lock = None

    # -- construction ---------------------------------------------------------------------------
    def _student_config(self, cfg: Config | None) -> Config | None:
        d = self.dcfg
        if cfg is None:
            if self.teacher.cfg is not None:
                cfg = config_from_plain(self.teacher.cfg.to_dict())
            else:
                sc = sde_config(self.sde)
                if sc is None:
                    return None
                cfg = Config(data=DataConfig(dataset="mixture"), sde=sc)
            cfg.model = copy.deepcopy(self.model_cfg)
        else:
            cfg = config_from_plain(cfg.to_dict())
        s = cfg.sampling
        s.sampler = "consistency" if d.method == "consistency" else "ddim"
        s.steps, s.eps = d.steps, self.eps
        cfg.training.dtype = "float64" if self.dtype == torch.float64 else "float32"
        cfg.training.seed, cfg.training.ema_rate = d.seed, d.ema_rate
        return cfg

    def _build_student(self) -> None:
        d, m = self.dcfg, self.model_cfg
        copy_teacher = self.teacher.model is not None and d.method in ("progressive", "reflow")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_mix_seed(d.seed, 99))
            net = build_network(m, self.shape)
        if copy_teacher:  # Salimans & Ho / Liu et al.: the student starts as a copy of the teacher
            try:
                load_weights(net, self.teacher.model.net.state_dict(), what="student network")
            except ValueError as e:
                raise ValueError(f"incompatible teacher: the student network config does not take the teacher's "
                                 f"weights ({e})") from None  # fmt: skip
        self.net = net.to(self.device, self.dtype)
        if d.method == "consistency":
            self.student = ConsistencyModel(self.net, self.sde, self.eps, d.sigma_data, m.time_labels)
        else:
            self.student = ScoreModel(self.net, self.sde, prediction=m.prediction, time_labels=m.time_labels)
        self.target = copy.deepcopy(self.student) if d.method == "consistency" else None
        if self.target is not None:
            for p in self.target.parameters():
                p.requires_grad_(False)
        self._fresh_optimiser()

    def _fresh_optimiser(self) -> None:
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=self.dcfg.lr)
        self.ema = ExponentialMovingAverage(self.net, self.dcfg.ema_rate)

    # -- sampling description -------------------------------------------------------------------
    def round_steps(self, r: int) -> int:
        """The student's step count in round r (progressive); ``steps`` otherwise."""
        d = self.dcfg
        return d.teacher_steps >> (r + 1) if d.method == "progressive" else d.steps

    def sampling(self) -> tuple[str, int, torch.Tensor]:
        d = self.dcfg
        if d.method == "consistency":
            return "consistency", d.steps, make_grid(self.sde, "karras", d.steps, self.eps)
        return "ddim", d.steps, make_grid(self.sde, "auto", d.steps, self.eps)

    # -- rounds ---------------------------------------------------------------------------------
    def _begin_round(self, r: int) -> None:
        """Build round r's inputs from the current weights; restart optimiser and EMA (not in round 0)."""
        d = self.dcfg
        if r > 0:
            self.ema.copy_to(self.net)
            self._fresh_optimiser()
        self.round, self.round_state = r, {}
        if d.method == "progressive" and r > 0:
            self.round_state["teacher_net"] = copy.deepcopy(self.net.state_dict())
        if d.method == "reflow":
            teacher = self.teacher if r == 0 else Teacher.from_student(self.teacher, self.student)
            g = torch.Generator().manual_seed(_mix_seed(d.seed, 7, r))
            x0, z = couple(teacher.sde, teacher.score, d.pairs, self.shape, g, sampler=d.pair_sampler,
                           steps=d.pair_steps, eps=self.eps, dtype=self.dtype, device=self.device)  # fmt: skip
            self.round_state["x0"], self.round_state["z"] = x0, z
        self._use_round_state()

    def _use_round_state(self) -> None:
        d, r = self.dcfg, self.round
        self._round_teacher = self.teacher
        if d.method == "progressive":
            if r > 0:
                frozen = copy.deepcopy(self.student)
                frozen.net.load_state_dict(self.round_state["teacher_net"])
                self._round_teacher = Teacher.from_student(self.teacher, frozen)
            self._grids = nested_grids(self.sde, self.round_steps(r), self.eps)
        elif d.method == "consistency":
            self._times = {}

    # -- one step -------------------------------------------------------------------------------
    def _loss(self, k: int, g: torch.Generator) -> torch.Tensor:
        d = self.dcfg
        if d.method == "reflow":
            idx = torch.randint(0, d.pairs, (d.batch_size,), generator=g)
            x0, z = self.round_state["x0"][idx], self.round_state["z"][idx]
            return reflow_loss(self.student, x0.to(self.device), z.to(self.device), g, self.eps, d.reflow_weighting)
        x0 = self.teacher.sample_data(d.batch_size, g).to(self.device, self.dtype)
        if d.method == "progressive":
            return progressive_loss(self.student, self._round_teacher, x0, self._grids, g, target=d.target,
                                    weighting=d.weighting)  # fmt: skip
        if d.mode == "cd":
            times = self._cm_times(d.cm_points)
            return consistency_loss(self.student, self.target, x0, times, g, teacher=self.teacher, ode_step=d.ode_step)
        N, self._mu = ct_schedule(k, d.iters, d.ct_s0, d.ct_s1, d.ct_mu0)
        return consistency_loss(self.student, self.target, x0, self._cm_times(N), g)

    def _cm_times(self, n: int) -> torch.Tensor:
        if n not in self._times:
            self._times[n] = karras_times(self.sde, n, self.eps)
        return self._times[n]

    @torch.no_grad()
    def _update_target(self) -> None:
        d = self.dcfg
        mu = d.target_ema if d.mode == "cd" else self._mu
        for pt, p in zip(self.target.net.parameters(), self.net.parameters(), strict=True):
            pt.lerp_(p, 1.0 - mu)

    def train_step(self) -> float:
        d = self.dcfg
        r = self.step // d.iters
        if r != self.round:
            self._begin_round(r)
        g = torch.Generator().manual_seed(_mix_seed(d.seed, self.step))
        loss = self._loss(self.step - r * d.iters, g)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"distillation loss is not finite at step {self.step}: {float(loss)}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if d.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, d.grad_clip)
        self.optimizer.step()
        self.ema.update()
        if self.target is not None:
            self._update_target()
        self.step += 1
        return float(loss.detach())

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        sampler, steps, grid = self.sampling()
        state = {
            "format": "score_sde.checkpoint/1",
            "step": self.step,
            "model": self.net.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "config": self.cfg.to_dict() if self.cfg is not None else None,
            "data_shape": list(self.shape),
            "data_scaling": None,
            "distill": {
                "method": self.dcfg.method,
                "options": self.dcfg.to_dict(),
                "teacher": self.teacher.description,
                "sampler": sampler,
                "steps": steps,
                "eps": self.eps,
                "grid": grid.tolist(),
                "round": self.round,
            },
            "round_state": self.round_state,
        }
        if self.target is not None:
            state["target"] = self.target.net.state_dict()
            state["consistency"] = marker(self.student)
        return state

    def load_state_dict(self, state: dict, path: str = "checkpoint") -> None:
        info = state.get("distill") or {}
        old = info.get("options") or {}
        diff = sorted(k for k, v in self.dcfg.to_dict().items() if k not in RESUMABLE_CHANGES and old.get(k) != v)
        if diff:
            pairs = ", ".join(f"{k}: {old.get(k)!r} -> {getattr(self.dcfg, k)!r}" for k in diff)
            raise ValueError(f"checkpoint {path!r} was written with other distill options ({pairs}); use another "
                             f"workdir or the same options")  # fmt: skip
        if tuple(state["data_shape"]) != self.shape:
            raise ValueError(f"checkpoint {path!r} holds a student of data shape {tuple(state['data_shape'])}; the "
                             f"teacher has {self.shape}")  # fmt: skip
        self.step = int(state["step"])
        self.round = int(info.get("round", -1))
        load_weights(self.net, state["model"], what=f"student of {path!r}")
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.target is not None:
            self.target.net.load_state_dict(state["target"])
        self.round_state = state.get("round_state") or {}
        if self.round >= 0:
            self._use_round_state()

    def save(self) -> str | None:
        if self.workdir is None:
            return None
        folder = os.path.join(self.workdir, "checkpoints")
        path = save_checkpoint(checkpoint_path(folder, self.step), self.state_dict())
        prune_checkpoints(folder, self.dcfg.keep_ckpts)
        return path

    def _open_workdir(self) -> None:
        if self.cfg is None:
            raise ValueError(
                f"a distillation workdir needs a config the loaders can read; the student SDE {describe_sde(self.sde)} "
                f"has no config section (only vpsde / subvpsde / vesde do)"
            )
        os.makedirs(self.workdir, exist_ok=True)
        self._lock = WorkdirLock(self.workdir).acquire()
        folder = os.path.join(self.workdir, "checkpoints")
        remove_stale_temps([self.workdir, folder])
        path, state = latest_valid_checkpoint(folder, map_location=self.device, quarantine=True)
        if path is not None:
            self.load_state_dict(state, path)
        save_config(self.cfg, os.path.join(self.workdir, "config.yaml"))
        sampler, steps, grid = self.sampling()
        meta = {"distill": self.dcfg.to_dict(), "teacher": self.teacher.description, "sampler": sampler,
                "steps": steps, "eps": self.eps, "grid": grid.tolist()}  # fmt: skip
        atomic_write_text(os.path.join(self.workdir, "distill.yaml"), yaml.safe_dump(meta, sort_keys=False))
        self._metrics = MetricsLog(os.path.join(self.workdir, "metrics.csv"), METRIC_FIELDS)
        self._metrics.open(keep_through=self.step)

    # -- the loop -------------------------------------------------------------------------------
    def run(self, on_round_end=None) -> DistillResult:
        """Train to ``rounds x iters`` steps (resuming the workdir's newest checkpoint) and return the student.
        ``on_round_end(run, r)`` is called after each round's last step (e.g. to keep the 2-step student of a
        progressive run)."""
        d = self.dcfg
        total = d.n_rounds * d.iters
        try:
            if self.workdir is not None:
                self._open_workdir()
            bar = None
            if self.progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, initial=self.step, desc=f"distill {d.method}")
            while self.step < total:
                loss = self.train_step()
                if self.step % d.log_every == 0 or self.step == total:
                    row = {"step": self.step, "round": self.round, "loss": f"{loss:.6g}"}
                    self.history.append(row)
                    if self.workdir is not None:
                        self._metrics.append(row)
                if self.step % d.ckpt_every == 0 or self.step % d.iters == 0:
                    self.save()
                if on_round_end is not None and self.step % d.iters == 0:
                    on_round_end(self, self.step // d.iters - 1)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4g}", round=self.round, refresh=False)
            if bar is not None:
                bar.close()
        finally:
            if self._lock is not None:
                self._lock.release()
        return self.result()

    def result(self) -> DistillResult:
        """The student with its EMA weights (a copy) and its sampling recipe (progressive: of the current round)."""
        model = copy.deepcopy(self.student)
        ema = ExponentialMovingAverage(model.net, self.ema.decay)
        ema.load_state_dict(self.ema.state_dict())
        ema.copy_to(model.net)
        model.eval()
        sampler, steps, grid = self.sampling()
        if self.dcfg.method == "progressive" and self.round >= 0:
            steps = self.round_steps(self.round)
            grid = make_grid(self.sde, "auto", steps, self.eps)
        return DistillResult(model, self.sde, sampler, steps, self.eps, grid, list(self.history), self.cfg)


def distill(teacher: Teacher, dcfg: DistillConfig | None = None, **kwargs) -> DistillResult:
    """Run :class:`DistillRun` (keyword arguments as there) and return the student."""
    return DistillRun(teacher, dcfg or DistillConfig(), **kwargs).run()


__all__ = ["DistillRun", "DistillResult", "distill", "sde_config"]
