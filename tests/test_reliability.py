"""Reliability: the workdir lock, damaged checkpoints and configs, resume checks, divergence, launcher death."""

import csv
import os
import subprocess
import sys
import warnings

import pytest
import torch

from score_sde import cli
from score_sde.training import Trainer, load_config, save_config
from score_sde.training.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from score_sde.training.guards import TrainingDiverged
from score_sde.training.trainer import load_workdir
from score_sde.training.workdir import LauncherDied, LauncherWatch, MetricsLog, WorkdirLock, WorkdirLocked

TINY = [
    "data.dataset=mixture",
    "data.n_train=128",
    "data.n_test=16",
    "model.kind=mlp",
    "model.hidden=16",
    "model.depth=1",
    "model.emb_dim=8",
    "training.batch_size=16",
    "training.lr=1e-3",
    "training.warmup=2",
    "training.log_every=3",
    "training.ckpt_every=5",
    "training.keep_ckpts=5",
    "training.progress=false",
    "training.dtype=float32",
    "eval.num=16",
    "sampling.sampler=euler_maruyama",
    "sampling.steps=4",
]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(*extra):
    return load_config(None, [*TINY, *extra])


def rows(wd):
    with open(os.path.join(wd, "metrics.csv"), newline="") as f:
        return [(r["step"], r["loss"], r["lr"], r["grad_norm"]) for r in csv.DictReader(f)]


# ---- the lock ---------------------------------------------------------------------------------------------------
def test_second_trainer_on_a_held_workdir_fails_at_once_naming_the_pid(tmp_path):
    a = Trainer(tiny("training.n_iters=5"), tmp_path)
    with pytest.raises(WorkdirLocked, match=rf"pid {os.getpid()}\b"):
        Trainer(tiny("training.n_iters=5"), tmp_path)
    a.fit()  # releases the lock when done
    Trainer(tiny("training.n_iters=5"), tmp_path).close()


def test_lock_held_by_another_process_and_stale_lock_taken_over(tmp_path):
    wd = tmp_path / "w"
    src = os.path.join(ROOT, "score_sde", "training", "workdir.py")
    code = (
        "import importlib.util, sys, time\n"
        f"spec = importlib.util.spec_from_file_location('wd', {src!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"lock = m.WorkdirLock({str(wd)!r}).acquire(); print('held', flush=True); time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        cfg = tmp_path / "c.yaml"
        save_config(tiny("training.n_iters=5"), cfg)
        with pytest.raises(WorkdirLocked, match=rf"pid {p.pid}\b"):
            Trainer(tiny("training.n_iters=5"), wd)
        assert cli.main(["train", "--config", str(cfg), "--workdir", str(wd)]) == 2
    finally:
        p.kill()
        p.wait()
    # the killed holder's lock file stays, with its pid, but the kernel released the lock: taken over
    assert (wd / ".lock").read_text().strip() == str(p.pid)
    with WorkdirLock(wd) as lock:
        assert lock.held and (wd / ".lock").read_text().strip() == str(os.getpid())


def test_launcher_death_stops_a_worker(monkeypatch):
    w = LauncherWatch(enabled=True)
    w.check()
    monkeypatch.setattr(os, "getppid", lambda: w.ppid + 1)
    with pytest.raises(LauncherDied, match=f"pid {w.ppid}"):
        w.check()
    LauncherWatch(enabled=False).check()  # a single process never checks


# ---- damaged files ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_newest_checkpoint_is_skipped_for_the_newest_valid_one(tmp_path, damage):
    Trainer(tiny("training.n_iters=10"), tmp_path).fit()
    ckpts = dict(list_checkpoints(tmp_path / "checkpoints"))
    newest = ckpts[10]
    data = bytearray(open(newest, "rb").read())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    open(newest, "wb").write(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(newest)
    with pytest.warns(RuntimeWarning, match="skipping checkpoint.*checkpoint_10"):
        cfg, sde, model, state = load_workdir(tmp_path, device="cpu")  # sample / likelihood
    assert state["step"] == 5
    (tmp_path / "checkpoints" / ".tmp-killed.pt").write_bytes(b"half a checkpoint")
    with pytest.warns(RuntimeWarning, match="renamed to checkpoint_10.pt.corrupt"):
        tr = Trainer(tiny("training.n_iters=10"), tmp_path)
    assert tr.step == 5
    assert not (tmp_path / "checkpoints" / ".tmp-killed.pt").exists()  # stale temp files removed on start
    tr.fit()
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [5, 10]
    assert (tmp_path / "checkpoints" / "checkpoint_10.pt.corrupt").exists()


@pytest.mark.parametrize("content", ["", "data:\n  dataset: mixture\n", "training: [unclosed\n"])
def test_damaged_config_yaml_uses_the_checkpoints_config_never_defaults(tmp_path, content):
    cfg_file = tmp_path / "c.yaml"
    save_config(tiny("training.n_iters=5", "training.lr=3e-3"), cfg_file)
    wd = tmp_path / "w"
    assert cli.main(["train", "--config", str(cfg_file), "--workdir", str(wd)]) == 0
    (wd / "config.yaml").write_text(content)
    with pytest.warns(RuntimeWarning, match="config.yaml.*damaged"):
        cfg = cli.resolve_train_config(None, str(wd), ["training.n_iters=10"])
    assert cfg.training.lr == 3e-3 and cfg.training.batch_size == 16 and cfg.training.n_iters == 10
    for p in (wd / "checkpoints").iterdir():
        p.unlink()
    with pytest.raises(cli.UsageError, match="damaged.*no checkpoint"):
        cli.resolve_train_config(None, str(wd), [])


def test_metrics_log_drops_a_torn_row_and_newer_rows_atomically(tmp_path):
    p = tmp_path / "m.csv"
    log = MetricsLog(p, ("step", "loss"))
    log.open(keep_through=0)
    for s in (3, 6, 9):
        log.append({"step": s, "loss": 0.5})
    with open(p, "a") as f:
        f.write("12,0.2")  # a row torn by a kill
    ino = os.stat(p).st_ino
    log.open(keep_through=6)
    assert [r["step"] for r in log.read_rows()] == ["3", "6"]
    assert os.stat(p).st_ino != ino  # a new file replaced the old one (never truncated in place)
    ino = os.stat(p).st_ino
    log.open(keep_through=6)
    assert os.stat(p).st_ino == ino  # nothing to drop: left alone


# ---- resuming --------------------------------------------------------------------------------------------------
def test_resume_between_logged_steps_logs_the_same_rows(tmp_path):
    Trainer(tiny("training.n_iters=13"), tmp_path / "a").fit()

    def crash(tr, step, metrics):
        if step == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # dies at step 8: the last checkpoint (5) lies inside a log window
        Trainer(tiny("training.n_iters=13"), tmp_path / "b", callbacks=[crash]).fit()
    Trainer(tiny("training.n_iters=13"), tmp_path / "b").fit()
    assert rows(tmp_path / "a") == rows(tmp_path / "b")
    assert [r[0] for r in rows(tmp_path / "a")] == ["3", "6", "9", "12", "13"]


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.prediction=x0", "model.prediction"),
        ("sde.kind=subvpsde", "sde.kind"),
        ("model.hidden=32", "model.hidden"),
    ],
)
def test_resume_with_a_changed_model_or_sde_is_refused_unless_allowed(tmp_path, override, key):
    cfg_file = tmp_path / "c.yaml"
    save_config(tiny("training.n_iters=5"), cfg_file)
    wd = tmp_path / "w"
    assert cli.main(["train", "--config", str(cfg_file), "--workdir", str(wd)]) == 0
    with pytest.raises(ValueError, match=rf"{key}.*--allow-config-change"):
        Trainer(tiny("training.n_iters=10", override), wd)
    assert cli.main(["train", "--workdir", str(wd), "--set", "training.n_iters=10", override]) == 2
    argv = ["train", "--workdir", str(wd), "--allow-config-change", "--set", "training.n_iters=10", override]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = cli.main(argv)
    if key == "model.hidden":  # the weights can not fit: a clear error, not torch's size-mismatch traceback
        assert code == 2
        with pytest.raises(ValueError, match="weights do not fit"), pytest.warns(UserWarning):
            Trainer(tiny("training.n_iters=10", override), wd, allow_config_change=True)
    else:
        assert code == 0
        assert key in (wd / "events.log").read_text()


# ---- divergence ------------------------------------------------------------------------------------------------
def test_divergence_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    cfg_file = tmp_path / "c.yaml"
    save_config(tiny("training.n_iters=5"), cfg_file)
    wd = tmp_path / "w"
    assert cli.main(["train", "--config", str(cfg_file), "--workdir", str(wd)]) == 0
    code = cli.main(["train", "--workdir", str(wd), "--set", "training.n_iters=40", "training.lr=1e10",
                     "training.grad_clip=-1"])  # fmt: skip
    assert code == 2
    assert "score-sde: error: training diverged" in capsys.readouterr().err
    assert [s for s, _ in list_checkpoints(wd / "checkpoints")] == [5]
    with pytest.raises(TrainingDiverged, match="non-finite"):
        Trainer(tiny("training.n_iters=40", "training.lr=1e10", "training.grad_clip=-1"), wd).fit()
    state = load_checkpoint(list_checkpoints(wd / "checkpoints")[-1][1])
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_sampling_a_diverged_checkpoint_is_refused(tmp_path):
    tr = Trainer(tiny("training.n_iters=5"), tmp_path)
    tr.fit()
    with torch.no_grad():
        next(tr.net.parameters()).fill_(float("nan"))
    tr.step, tr.guard.first_bad = 6, torch.tensor(-1)
    tr._take_workdir()
    from score_sde.training.checkpoint import checkpoint_path, save_checkpoint

    save_checkpoint(checkpoint_path(tr.ckpt_dir, 6), tr.state_dict())  # bypassing the guard on purpose
    tr.close()
    with pytest.raises(CheckpointError, match="non-finite weights"):
        load_workdir(tmp_path, device="cpu")
    with pytest.raises(TrainingDiverged, match="parameter became non-finite"):
        tr.save()  # the trainer's own save refuses


# ---- noise from CPU generators for data on another device -----------------------------------------------------------
def test_randn_like_draws_on_the_generators_device():
    """The noise comes from the generator's own device and is moved to x's: a CPU generator gives the same numbers
    whatever device x is on. (No GPU here: a 'meta' x stands for the other device; the old code drew on x's device,
    where a meta draw never touches the CPU generator's state.)"""
    from score_sde.utils import per_sample_generators, randn_like

    x = torch.empty(3, 2, dtype=torch.float32)
    a = randn_like(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, torch.randn(3, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float32))
    g = torch.Generator().manual_seed(4)
    out = randn_like(torch.empty(3, 2, dtype=torch.float32, device="meta"), g)
    assert out.device.type == "meta" and out.shape == (3, 2)
    # the CPU generator made the 6 draws
    assert torch.equal(torch.randn(3, 2, generator=g, dtype=torch.float32), _after(4, 6, (3, 2)))
    gens = per_sample_generators([1, 2, 3])
    randn_like(torch.empty(3, 2, dtype=torch.float32, device="meta"), gens)
    for s, gen in zip([1, 2, 3], gens):
        assert torch.equal(torch.randn(2, generator=gen, dtype=torch.float32), _after(s, 2, (2,)))
    with pytest.raises(TypeError, match="generator"):
        randn_like(x, [1, 2, 3])


def _after(seed: int, skip: int, shape) -> torch.Tensor:
    """The draws of shape ``shape`` a CPU generator seeded ``seed`` gives after ``skip`` normals."""
    g = torch.Generator().manual_seed(seed)
    torch.randn(skip, generator=g, dtype=torch.float32)
    return torch.randn(shape, generator=g, dtype=torch.float32)


def test_traceback_flag_shows_the_error_itself(tmp_path, monkeypatch):
    monkeypatch.delenv("SCORE_SDE_TRACEBACK", raising=False)
    argv = ["sample", "--workdir", str(tmp_path / "none"), "--num", "-4"]
    assert cli.main(argv) == 2
    with pytest.raises((cli.UsageError, ValueError), match="--num"):
        cli.main(["--traceback", *argv])


TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun not installed next to python")
def test_killing_the_torchrun_launcher_stops_its_workers(tmp_path):
    """SIGKILL of the torchrun agent: both workers notice their parent is gone and stop within a few steps."""
    import signal
    import textwrap
    import time

    cfg = tmp_path / "c.yaml"
    save_config(tiny("training.n_iters=100000", "training.ckpt_every=1000", "training.device=cpu"), cfg)
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent(f"""
        import os, time
        from score_sde.training import Trainer, load_config
        from score_sde.training.distributed import init_distributed
        ctx = init_distributed("cpu")
        open({str(tmp_path)!r} + f"/pid_{{ctx.rank}}", "w").write(str(os.getpid()))
        Trainer(load_config({str(cfg)!r}), {str(tmp_path / "wd")!r}, dist=ctx,
                callbacks=[lambda tr, step, m: time.sleep(0.02)]).fit()
    """))  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get(
        "PYTHONPATH")) if p))  # fmt: skip
    agent = subprocess.Popen([TORCHRUN, "--standalone", "--nproc_per_node=2", str(script)], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 180
        started = [tmp_path / "pid_0", tmp_path / "pid_1", tmp_path / "wd" / "metrics.csv"]
        while not all(p.exists() for p in started):
            assert time.time() < deadline and agent.poll() is None
            time.sleep(0.1)
        pids = [int((tmp_path / f"pid_{r}").read_text()) for r in (0, 1)]
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        deadline = time.time() + 60
        alive = pids
        while alive and time.time() < deadline:
            alive = [p for p in pids if os.path.exists(f"/proc/{p}") and "zombie" not in _status(p)]
            time.sleep(0.1)
        assert not alive, f"workers {alive} still running after their launcher died"
    finally:
        try:
            os.killpg(agent.pid, signal.SIGKILL)  # the workers share the agent's session
        except ProcessLookupError:
            pass


def _status(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            return f.read()
    except OSError:
        return "zombie"


# ---- non-finite scores ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["euler_maruyama", "pc", "ddim", "unipc", "sde"])
def test_a_nan_score_warns_exactly_once_naming_the_time(sampler):
    import score_sde as ss

    def score(x, t):  # finite until t drops below 0.5
        return torch.where(t[:, None] < 0.5, torch.full_like(x, float("nan")), -x)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = ss.sample(ss.VPSDE(), score, (3, 2), sampler=sampler, steps=10)
    hits = [w for w in caught if issubclass(w.category, ss.NonFiniteScoreWarning)]
    assert len(hits) == 1 and res.info["nonfinite"] is True
    t = float(str(hits[0].message).split("first at t = ")[1].split(",")[0])
    assert 0.3 < t < 0.5  # the first grid time below 0.5
    assert "3 of 3 samples" in str(hits[0].message)


def test_nan_score_in_adaptive_solves_is_an_error_and_in_fixed_steps_a_warning():
    import score_sde as ss

    x = torch.randn(3, 2)

    def score(x, t):
        return torch.where(t[:, None] > 0.5, torch.full_like(x, float("nan")), -x)

    with pytest.raises(ss.ODESolveError, match=r"score\) returned NaN/inf, first at t = 0\.[5-9]"):
        ss.log_likelihood(ss.VPSDE(), score, x)
    with pytest.warns(ss.NonFiniteScoreWarning, match="log p is NaN"):
        ss.log_likelihood(ss.VPSDE(), score, x, method="euler", options={"step_size": 0.05})
    with pytest.warns(ss.NonFiniteScoreWarning, match="sampler 'ode'"):
        ss.sample(ss.VPSDE(), score, (3, 2), sampler="ode", method="euler", steps=10)


def test_when_no_checkpoint_loads_training_refuses_to_start_afresh(tmp_path):
    Trainer(tiny("training.n_iters=5"), tmp_path).fit()
    (p,) = [p for _, p in list_checkpoints(tmp_path / "checkpoints")]
    open(p, "r+b").truncate(100)
    with pytest.raises(CheckpointError, match="none of the 1 checkpoint.*damaged"):
        Trainer(tiny("training.n_iters=10"), tmp_path)
    assert os.path.exists(p)  # nothing renamed
    WorkdirLock(tmp_path).acquire().release()  # the failed trainer released the lock


def test_a_batch_that_can_not_fit_is_refused_before_training(monkeypatch):
    from score_sde.training import guards

    monkeypatch.setattr(guards, "device_memory", lambda device: 24 * 2**30)  # a 24 GiB machine
    with pytest.raises(ValueError, match=r"training\.batch_size' = 1000000000 can not fit.*24\.0 GiB"):
        Trainer(tiny("training.batch_size=1000000000", "model.hidden=16"))
    Trainer(tiny("training.batch_size=4096"))  # large but fine
