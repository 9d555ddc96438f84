"""The score-sde command: train / resume / sample / likelihood, bad configs named before training."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from score_sde import cli
from score_sde.training import load_config, save_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "data.dataset=mixture",
    "data.n_train=256",
    "data.n_test=16",
    "model.hidden=32",
    "model.depth=1",
    "model.emb_dim=16",
    "training.batch_size=32",
    "training.n_iters=20",
    "training.warmup=2",
    "training.log_every=10",
    "training.ckpt_every=10",
    "training.progress=false",
    "eval.num=16",
    "sampling.sampler=euler_maruyama",
    "sampling.steps=10",
]


@pytest.fixture
def cfg_path(tmp_path):
    p = tmp_path / "tiny.yaml"
    save_config(load_config(None, TINY), p)
    return p


def run(*args):
    return cli.main([str(a) for a in args])


def test_help_lists_commands_and_registry(capsys):
    with pytest.raises(SystemExit):
        run("--help")
    out = capsys.readouterr().out
    assert all(c in out for c in ("train", "sample", "likelihood"))
    if os.path.isfile(os.path.join(ROOT, "paper_figures", "run_all.py")):
        assert "figures" in out  # the paper-figures hook of a source checkout
    called = []
    cli.register_subcommand("hello", "say hello", lambda p: p.add_argument("--who"), lambda a: called.append(a.who))
    try:
        assert run("hello", "--who", "me") == 0 and called == ["me"]
    finally:
        del cli.SUBCOMMANDS["hello"]


def test_console_script_and_module_entry_points(tmp_path):
    for cmd in ([os.path.join(os.path.dirname(sys.executable), "score-sde")], [sys.executable, "-m", "score_sde"]):
        if not os.path.exists(cmd[0]):
            continue
        r = subprocess.run([*cmd, "train", "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert r.returncode == 0 and "--workdir" in r.stdout


def test_train_resume_sample_likelihood(tmp_path, cfg_path, capsys):
    wd = tmp_path / "run"
    assert run("train", "--config", cfg_path, "--workdir", wd) == 0
    assert "trained to step 20" in capsys.readouterr().out
    assert sorted(os.listdir(wd / "checkpoints")) == ["checkpoint_10.pt", "checkpoint_20.pt"]
    assert run("train", "--workdir", wd) == 0  # resume with the stored config: nothing left to do
    assert "already trained to step 20" in capsys.readouterr().out
    assert run("train", "--workdir", wd, "--set", "training.n_iters=30") == 0
    assert "resumed at step 20, trained to step 30" in capsys.readouterr().out
    # a --config that disagrees with the workdir is refused, naming the key
    other = tmp_path / "other.yaml"
    save_config(load_config(None, [*TINY, "training.lr=0.5"]), other)
    assert run("train", "--config", other, "--workdir", wd) == 2
    assert "training.lr" in capsys.readouterr().err

    assert run("sample", "--workdir", wd, "--num", 5, "--out", tmp_path / "s.npz", "--steps", 5) == 0
    x = np.load(tmp_path / "s.npz")["samples"]
    assert x.shape == (5, 2) and np.isfinite(x).all()
    assert run("sample", "--workdir", wd, "--num", 50, "--out", tmp_path / "s.png", "--sampler", "ode") == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    assert run("likelihood", "--workdir", wd, "--divergence", "exact", "--out", tmp_path / "ll.json") == 0
    res = json.load(open(tmp_path / "ll.json"))
    assert res["eval_n"] == 16 and res["step"] == 30 and np.isfinite(res["eval_nll"])
    assert "bits/dim" in capsys.readouterr().out


def test_sample_errors(tmp_path, cfg_path, capsys):
    wd = tmp_path / "run"
    run("train", "--config", cfg_path, "--workdir", wd, "--set", "training.n_iters=10")
    assert run("sample", "--workdir", wd, "--out", tmp_path / "s.jpg") == 2
    assert ".png or .npz" in capsys.readouterr().err
    assert run("sample", "--workdir", wd, "--out", tmp_path / "s.npz", "--sampler", "magic") == 2
    assert "magic" in capsys.readouterr().err
    assert run("sample", "--workdir", tmp_path / "empty", "--out", tmp_path / "s.npz") == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_crafted_checkpoint_is_refused_by_the_cli(tmp_path, cfg_path, capsys):
    marker = tmp_path / "code_ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"step": 1, "model": Evil()}, tmp_path / "run" / "checkpoints" / "checkpoint_1.pt")
    assert run("sample", "--workdir", tmp_path / "run", "--out", tmp_path / "s.npz") == 2
    assert "refusing to load checkpoint" in capsys.readouterr().err
    assert not marker.exists()


@pytest.mark.parametrize(
    "yaml_text, key",
    [
        ("training:\n  lrr: 0.1\n", "training.lrr"),  # unknown key
        ("training:\n  batch_size: many\n", "training.batch_size"),  # wrong type
        ("training:\n  lr: -2.0e-4\n", "training.lr"),  # negative learning rate
        ("data:\n  dataset: npz\n  root: /no/such/file.npz\n", "data.root"),  # missing dataset file
    ],
)
def test_bad_config_fails_before_training(tmp_path, yaml_text, key, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml_text)
    wd = tmp_path / "run"
    assert run("train", "--config", p, "--workdir", wd) == 2
    err = capsys.readouterr().err
    assert key in err and err.startswith("score-sde: error:")
    assert not wd.exists()  # nothing was trained or written


def test_bad_set_override_is_named(tmp_path, cfg_path, capsys):
    assert run("train", "--config", cfg_path, "--workdir", tmp_path / "w", "--set", "training.n_iters=ten") == 2
    assert "training.n_iters" in capsys.readouterr().err
    assert run("train", "--workdir", tmp_path / "w2") == 2
    assert "--config" in capsys.readouterr().err
