"""The trainer: exact resumption (in-process and after SIGKILL), bad configs, outputs, the main job."""

import csv
import importlib.util
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from score_sde.training import Trainer, apply_overrides, default_config, load_config, save_config
from score_sde.training.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable

TINY = [
    "data.dataset=mixture",
    "data.n_train=512",
    "data.n_test=64",
    "model.kind=mlp",
    "model.hidden=32",
    "model.depth=1",
    "model.emb_dim=16",
    "training.batch_size=64",
    "training.lr=1e-3",
    "training.warmup=10",
    "training.ema_rate=0.99",
    "training.log_every=10",
    "training.progress=false",
    "training.seed=3",
]


def tiny(*extra):
    return load_config(None, [*TINY, *extra])


def assert_same_state(a: dict, b: dict):
    assert a["step"] == b["step"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for x, y in zip(a["ema"]["shadow"], b["ema"]["shadow"], strict=True):
        assert torch.equal(x, y)
    for i, st in a["optimizer"]["state"].items():
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["optimizer"]["state"][i][k])), (i, k)


def tiny_unet(tmp_path, *extra):
    """A tiny U-Net with dropout 0.1 on 8x8 images: its dropout masks come from torch's global RNG."""
    import numpy as np

    path = tmp_path / "images.npz"
    if not path.exists():
        np.savez(path, x=np.random.RandomState(0).randint(0, 256, size=(64, 8, 8, 1)).astype(np.uint8))
    return load_config(None, [
        "data.dataset=npz", f"data.root={path}", "model.kind=unet", "model.ch=8", "model.ch_mult=[1]",
        "model.num_res_blocks=1", "model.attn_resolutions=[]", "model.dropout=0.1", "training.batch_size=8",
        "training.lr=1e-3", "training.warmup=2", "training.ema_rate=0.99", "training.log_every=4",
        "training.progress=false", "training.seed=3", "training.dtype=float64", *extra,
    ])  # fmt: skip


def test_resume_in_process_is_exact(tmp_path):
    """Weights, EMA, Adam state and the global RNG (dropout masks) all come back on resume."""
    cfg = tiny_unet(tmp_path, "training.n_iters=16", "training.ckpt_every=8")
    Trainer(cfg, tmp_path / "a").fit()
    t1 = Trainer(cfg, tmp_path / "b")
    t1.fit(n_iters=8)
    del t1
    torch.manual_seed(12345)  # whatever the global RNG holds now, resuming restores the saved state
    t2 = Trainer(cfg, tmp_path / "b")  # resumes from checkpoint_8
    assert t2.step == 8
    t2.fit()
    a = load_checkpoint(latest_checkpoint(tmp_path / "a" / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "b" / "checkpoints"))
    assert_same_state(a, b)
    rows = list(csv.DictReader(open(tmp_path / "b" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [4, 8, 12, 16]  # no duplicated rows after resuming
    # the check has power: the same resume with another global RNG state (other dropout masks) ends elsewhere
    shutil.copytree(tmp_path / "b" / "checkpoints", tmp_path / "c" / "checkpoints")
    os.remove(tmp_path / "c" / "checkpoints" / "checkpoint_16.pt")
    t3 = Trainer(cfg, tmp_path / "c")
    assert t3.step == 8
    torch.manual_seed(12345)
    t3.fit()
    c = load_checkpoint(latest_checkpoint(tmp_path / "c" / "checkpoints"))
    assert not all(torch.equal(a["model"][k], c["model"][k]) for k in a["model"])


def test_training_reduces_loss_and_writes_outputs(tmp_path):
    cfg = tiny("training.n_iters=200", "training.ckpt_every=100", "training.sample_every=200",
               "training.eval_every=200", "training.keep_ckpts=1", "eval.num=32", "sampling.steps=20",
               "sampling.num=16")  # fmt: skip
    tr = Trainer(cfg, tmp_path)
    first = float(tr.loss_fn(tr.model, tr.data[:512], generator=torch.Generator().manual_seed(0)).detach())
    out = tr.fit()
    last = float(tr.loss_fn(tr.model, tr.data[:512], generator=torch.Generator().manual_seed(0)).detach())
    assert last < 0.8 * first
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [200]  # keep_ckpts = 1
    assert (tmp_path / "samples" / "samples_200.png").stat().st_size > 0
    assert (tmp_path / "config.yaml").exists()
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert rows[-1]["step"] == "200" and float(rows[-1]["eval_nll"]) == pytest.approx(out["eval_nll"])
    assert out["eval_n"] == 32 and torch.isfinite(torch.tensor(out["eval_bpd"]))


def test_warmup_and_ema_defaults():
    tr = Trainer(tiny("training.warmup=4", "training.ema_rate=none", "training.n_iters=1"))
    assert [tr.lr_at(s) for s in range(5)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    assert tr.ema_rate == 0.9999
    tr = Trainer(tiny("sde.kind=vesde", "training.ema_rate=none", "training.n_iters=1"))
    assert tr.ema_rate == 0.999


def test_averaged_puts_weights_and_mode_back_when_the_block_raises():
    tr = Trainer(tiny("training.n_iters=1"))
    tr.fit()
    raw = [p.detach().clone() for p in tr.net.parameters()]
    tr.net.train()
    with pytest.raises(RuntimeError, match="boom"), tr.averaged():
        assert not tr.net.training
        assert any(not torch.equal(p, r) for p, r in zip(tr.net.parameters(), raw))  # EMA weights inside
        raise RuntimeError("boom")
    assert tr.net.training
    assert all(torch.equal(p, r) for p, r in zip(tr.net.parameters(), raw))


def test_gradient_clipping_bounds_the_update():
    tr = Trainer(tiny("training.grad_clip=1e-3", "training.warmup=0", "training.n_iters=1"))
    _, norm = tr.train_step()
    total = torch.sqrt(sum((p.grad**2).sum() for p in tr.params))
    assert float(norm) > 1e-3 and float(total) == pytest.approx(1e-3, rel=1e-4)


@pytest.mark.parametrize(
    "override, key",
    [
        ("training.lr=-0.1", "training.lr"),
        ("data.dataset=npz", "data.root"),
        ("model.context_dim=4", "model.context_dim"),
    ],
)
def test_bad_config_fails_before_anything_is_written(tmp_path, override, key):
    cfg = apply_overrides(default_config(), [*TINY, override])  # not validated yet
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        Trainer(cfg, tmp_path / "w")
    assert not (tmp_path / "w").exists()


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return env


def test_sigkill_and_resume_match_an_uninterrupted_run(tmp_path):
    """A run killed with SIGKILL resumes from its last checkpoint and ends bit-identical."""
    cfg_path = tmp_path / "tiny.yaml"  # the tiny U-Net with dropout: the global RNG must come back too
    save_config(tiny_unet(tmp_path, "training.n_iters=48", "training.ckpt_every=8", "training.dtype=float32"), cfg_path)
    ref = tmp_path / "ref"
    r = subprocess.run([PY, "-m", "score_sde", "train", "--config", str(cfg_path), "--workdir", str(ref)],
                       env=_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    # the same training, slowed down by a callback so that the kill lands mid-run
    victim = tmp_path / "victim"
    script = tmp_path / "slow_train.py"
    script.write_text(
        textwrap.dedent(f"""
        import time
        from score_sde.training import Trainer, apply_overrides, default_config, load_config, save_config
        cfg = load_config({str(cfg_path)!r})
        Trainer(cfg, {str(victim)!r}, callbacks=[lambda tr, step, m: time.sleep(0.01)]).fit()
    """)
    )
    proc = subprocess.Popen([PY, str(script)], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            steps = [s for s, _ in list_checkpoints(victim / "checkpoints")]
            if steps and max(steps) >= 16:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(s for s, _ in list_checkpoints(victim / "checkpoints"))
    assert 16 <= killed_at < 48
    for _, p in list_checkpoints(victim / "checkpoints"):
        load_checkpoint(p)  # every file on disk is complete (atomic writes)
    r = subprocess.run([PY, "-m", "score_sde", "train", "--config", str(cfg_path), "--workdir", str(victim)],
                       env=_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "resumed at step" in r.stdout
    a = load_checkpoint(latest_checkpoint(ref / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(victim / "checkpoints"))
    assert a["step"] == b["step"] == 48
    assert_same_state(a, b)


def _load_main_job():
    spec = importlib.util.spec_from_file_location("main_job", os.path.join(ROOT, "examples", "main_job.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_main_job_runs(tmp_path):
    """The main job end to end at smoke scale (train, two samplers, the ODE NLL, the MMD tests, the PNG); its
    quality claims are :func:`test_main_job_short` (slow)."""
    r = _load_main_job().run(
        out=str(tmp_path), n_iters=5, n_samples=50, n_test=50, overrides=("sampling.steps=10",), verbose=False
    )
    assert r["steps"] == 5 and math.isfinite(r["nll_model"]) and math.isfinite(r["nll_gaussian"])
    assert set(r["tests"]) == {"euler_maruyama", "ode", "gaussian_fit"}
    assert all(0 < t["p"] <= 1 for t in r["tests"].values()), r["tests"]
    assert {k: v.shape for k, v in r["samples"].items()} == {"euler_maruyama": (50, 2), "ode": (50, 2)}
    assert os.path.getsize(r["png"]) > 0


# about 10-25 s on an idle 2-core machine (17 s of CPU on one thread): trains 1000 steps for a quality claim
@pytest.mark.slow
def test_main_job_short(tmp_path):
    """A short main job: the ODE test NLL beats a fitted Gaussian and samples pass the MMD test."""
    r = _load_main_job().run(
        out=str(tmp_path), n_iters=1000, n_samples=400, n_test=400, overrides=("sampling.steps=200",), verbose=False
    )
    assert r["nll_model"] < r["nll_gaussian"] - 0.4, r
    # the two-sample test (MMD at the median bandwidth and a quarter of it, Bonferroni-combined) at level 0.02:
    # the model's samples pass it (measured p = 0.66 Euler-Maruyama, 0.22 ODE) and a Gaussian fitted to the
    # training data fails it (p = 0.010, the smallest 200 permutations give): the test has power here
    alpha = 0.02
    assert r["tests"]["euler_maruyama"]["p"] > alpha, r["tests"]
    assert r["tests"]["ode"]["p"] > alpha, r["tests"]
    assert r["tests"]["gaussian_fit"]["p"] < alpha, r["tests"]
    assert os.path.getsize(r["png"]) > 0


@pytest.mark.parametrize("name", ["toy_vp", "toy_subvp", "toy_ve", "digits_vp", "digits_subvp", "digits_ve"])
def test_small_shipped_configs_train(name, tmp_path):
    cfg = load_config(os.path.join(ROOT, "configs", f"{name}.yaml"), ["training.n_iters=3", "training.progress=false"])
    out = Trainer(cfg, tmp_path).fit()
    assert out["step"] == 3 and torch.isfinite(torch.tensor(out["loss"]))


@pytest.mark.parametrize(
    "name, shape",
    [
        ("cifar10_ddpmpp_continuous_vp", (3, 32, 32)),
        ("cifar10_ncsnpp_continuous_ve", (3, 32, 32)),
        ("mnist_vp", (1, 28, 28)),
    ],
)
def test_image_configs_build_their_networks(name, shape):
    from score_sde.training.trainer import build_network

    cfg = load_config(os.path.join(ROOT, "configs", f"{name}.yaml"))
    net = build_network(cfg.model, shape)
    assert net.num_res_blocks == cfg.model.num_res_blocks and net.ch == cfg.model.ch
    if name.startswith("cifar10_ddpmpp"):
        assert 50e6 < sum(p.numel() for p in net.parameters()) < 80e6  # DDPM++ cont. has ~62M parameters


@pytest.mark.parametrize("p, trained", [(0.0, False), (0.5, True)])
def test_cond_drop_trains_the_null_label(p, trained):
    """training.cond_drop replaces labels by the null label (index num_classes) for classifier-free guidance."""
    tr = Trainer(tiny("model.num_classes=8", f"training.cond_drop={p}", "training.n_iters=1"))
    assert tr.labels is not None
    tr.train_step()
    emb = next(m for m in tr.net.modules() if isinstance(m, torch.nn.Embedding))
    null_grad = emb.weight.grad[8].abs().sum().item()
    assert (null_grad > 0) == trained


def test_cond_drop_out_of_range_is_rejected():
    with pytest.raises(ValueError, match=r"training\.cond_drop"):
        Trainer(tiny("model.num_classes=8", "training.cond_drop=1.5"))
