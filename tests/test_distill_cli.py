"""``score-sde distill``: workdirs that ``sample`` reads, incompatible teachers, and resumption (SIGKILL mid-run,
then the same command again) to bit-identical weights."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

import score_sde as ss
from score_sde import cli
from score_sde.analytic import GaussianMixture
from score_sde.solvers.grids import make_grid
from score_sde.training import load_config, load_workdir, save_config
from score_sde.training.checkpoint import load_checkpoint
from score_sde.training.distill import ConsistencyModel, DistillConfig, DistillRun, Teacher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["data.dataset=mixture", "data.n_train=256", "data.n_test=16", "model.hidden=32", "model.depth=1",
        "model.emb_dim=16", "training.batch_size=32", "training.n_iters=10", "training.warmup=2",
        "training.log_every=10", "training.ckpt_every=10", "training.progress=false"]  # fmt: skip
FAST = ["iters=20", "batch_size=32", "pairs=64", "pair_steps=4", "ckpt_every=10"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teacher")
    save_config(load_config(None, TINY), folder / "cfg.yaml")
    assert cli.main(["train", "--config", str(folder / "cfg.yaml"), "--workdir", str(folder / "wd")]) == 0
    return folder / "wd"


@pytest.mark.parametrize("method", ["progressive", "consistency", "reflow"])
def test_distilled_workdir_samples_like_any_other(teacher, tmp_path, method):
    wd = tmp_path / "student"
    args = ["distill", "--method", method, "--teacher", str(teacher), "--workdir", str(wd), "--no-progress",
            "--set", *FAST, "steps=2", "teacher_steps=4"]  # fmt: skip
    assert cli.main(args) == 0
    cfg, sde, model, state = load_workdir(wd)
    sampler = "consistency" if method == "consistency" else "ddim"
    assert cfg.sampling.sampler == sampler and cfg.sampling.steps == 2
    assert isinstance(model, ConsistencyModel) == (method == "consistency")
    meta = yaml.safe_load(open(wd / "distill.yaml"))
    kind = "karras" if method == "consistency" else "auto"
    assert np.allclose(meta["grid"], make_grid(sde, kind, 2, cfg.sampling.eps).numpy())
    assert state["distill"]["grid"] == meta["grid"]
    out = tmp_path / "x.npz"
    assert cli.main(["sample", "--workdir", str(wd), "--num", "8", "--out", str(out)]) == 0
    x = np.load(out)["samples"]
    assert x.shape == (8, 2) and np.isfinite(x).all()


def test_incompatible_teacher_is_named(teacher, tmp_path, capsys):
    args = ["distill", "--method", "progressive", "--teacher", str(teacher), "--workdir", str(tmp_path / "s"),
            "--no-progress", "--set", "sde.kind=ve"]  # fmt: skip
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "incompatible teacher" in err and "vesde" in err and "vpsde" in err
    mix = GaussianMixture([1.0], torch.zeros(1, 3), torch.ones(1))
    t = Teacher.from_mixture(mix, ss.VPSDE())
    with pytest.raises(ValueError, match=r"shape \(2,\).*shape \(3,\)"):
        t.check_student(ss.VPSDE(), (2,))
    with pytest.raises(ValueError, match=r"beta_max=10.*beta_max=20"):
        DistillRun(t, DistillConfig(), sde=ss.VPSDE(beta_max=10.0))
    with pytest.raises(ValueError, match="teacher_steps"):
        DistillRun(t, DistillConfig(teacher_steps=6, steps=1))


def _weights(path):
    s = load_checkpoint(path)
    return s["model"], s["ema"]["shadow"], s["optimizer"]["state"], s["step"]


def _same(a, b):
    ma, ea, oa, sa = a
    mb, eb, ob, sb = b
    assert sa == sb
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    assert all(torch.equal(x, y) for x, y in zip(ea, eb, strict=True))
    assert all(torch.equal(oa[k]["exp_avg"], ob[k]["exp_avg"]) for k in oa)


def test_killed_distillation_resumes_bit_identical(teacher, tmp_path):
    """Progressive, 2 rounds of 40 steps, checkpoints every 10: SIGKILL after step 50 (round 2), same command again."""
    opts = ["iters=40", "batch_size=32", "teacher_steps=4", "steps=1", "ckpt_every=10", "keep_ckpts=50"]
    def cmd(wd):  # noqa: E306
        return [sys.executable, "-m", "score_sde", "distill", "--method", "progressive", "--teacher", str(teacher),
                "--workdir", str(wd), "--no-progress", "--set", *opts]  # fmt: skip

    full = tmp_path / "full"
    assert cli.main(cmd(full)[3:]) == 0  # the uninterrupted run, in this process
    killed = tmp_path / "killed"
    p = subprocess.Popen(cmd(killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ck = killed / "checkpoints"
    t0 = time.time()
    while not (ck / "checkpoint_50.pt").exists() and time.time() - t0 < 200 and p.poll() is None:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (ck / "checkpoint_80.pt").exists(), "the kill did not land mid-run"
    subprocess.run(cmd(killed), check=True, env=_env(), capture_output=True, timeout=300)
    _same(_weights(full / "checkpoints" / "checkpoint_80.pt"), _weights(ck / "checkpoint_80.pt"))


@pytest.mark.parametrize("method,extra,keep", [
    ("consistency", dict(mode="ct"), 14),
    ("consistency", dict(mode="cd"), 10),
    ("reflow", dict(rounds=2, pairs=64, pair_steps=4), 12),
    ("reflow", dict(rounds=2, pairs=64, pair_steps=4), 10),
    ("progressive", dict(teacher_steps=4), 10),
])  # fmt: skip
def test_resume_from_any_checkpoint_is_exact(tmp_path, method, extra, keep):
    """A finished run, cut back to its checkpoint at step ``keep`` (mid-round or at a round's end), runs again to
    the same weights."""
    mix = GaussianMixture([0.5, 0.5], torch.tensor([[-1.0, 0.0], [1.0, 0.5]]), torch.full((2,), 0.1))
    teacher = Teacher.from_mixture(mix, ss.VPSDE())
    dcfg = DistillConfig(method=method, iters=10, batch_size=16, ckpt_every=2, keep_ckpts=100, **extra)
    small = ss.training.ModelConfig(kind="mlp", prediction="v", hidden=16, depth=1, emb_dim=8)
    wd = tmp_path / "a"
    DistillRun(teacher, dcfg, model=small, workdir=wd).run()
    last = max(int(n.split("_")[1][:-3]) for n in os.listdir(wd / "checkpoints"))
    cut = tmp_path / "b"
    shutil.copytree(wd, cut)
    for n in os.listdir(cut / "checkpoints"):
        if int(n.split("_")[1][:-3]) > keep:
            os.unlink(cut / "checkpoints" / n)
    run = DistillRun(teacher, dcfg, model=small, workdir=cut)
    run.run()
    name = f"checkpoint_{last}.pt"
    _same(_weights(wd / "checkpoints" / name), _weights(cut / "checkpoints" / name))


def test_bad_options_are_named(teacher, tmp_path, capsys):
    base = ["distill", "--method", "consistency", "--teacher", str(teacher), "--no-progress"]
    assert cli.main([*base, "--workdir", str(tmp_path / "a"), "--set", "itres=5"]) == 2
    assert "itres" in capsys.readouterr().err
    assert cli.main([*base, "--workdir", str(tmp_path / "b"), "--set", "mode=xx"]) == 2
    assert "mode" in capsys.readouterr().err
    assert cli.main([*base, "--workdir", str(teacher)]) == 2
    assert "differ" in capsys.readouterr().err
    from score_sde.training.distill import validate_distill

    with pytest.raises(ValueError, match="sigma_data"):
        validate_distill(DistillConfig(sigma_data=-1.0))
