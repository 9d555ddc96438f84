"""Workdir safety: SIGKILL at random points and inside every kind of write, then resume.

A forked child trains a tiny MLP on a workdir and is killed (by itself, at a chosen write, or by the parent after a
random delay); after each kill every file must still be whole; the next child resumes. The final parameters and
metrics history must equal those of an uninterrupted run. Forking a process that already imported torch keeps
each run at a few hundred milliseconds.
"""

import csv
import os
import random
import signal
import sys
import time
import traceback

import pytest
import torch

from score_sde.training import Trainer, load_config
from score_sde.training.checkpoint import list_checkpoints, load_checkpoint
from score_sde.training.config import load_yaml, missing_keys
from score_sde.training.workdir import MetricsLog

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or not os.path.isdir("/proc/self/fd"), reason="needs fork")

CFG = [
    "data.dataset=mixture",
    "data.n_train=256",
    "data.n_test=16",
    "model.kind=mlp",
    "model.hidden=16",
    "model.depth=1",
    "model.emb_dim=8",
    "training.batch_size=16",
    "training.lr=1e-3",
    "training.warmup=5",
    "training.ema_rate=0.9",
    "training.n_iters=400",
    "training.log_every=3",  # checkpoints land between logged rows: the loss window must survive a resume
    "training.ckpt_every=5",
    "training.keep_ckpts=2",
    "training.sample_every=100",
    "training.progress=false",
    "training.seed=5",
    "training.dtype=float32",
    "sampling.sampler=euler_maruyama",
    "sampling.steps=4",
    "sampling.num=8",
]
COMPARED = ("step", "loss", "lr", "grad_norm", "eval_nll", "eval_bpd")  # all but wall-clock columns


def _cfg():
    return load_config(None, CFG)


def _rows(wd):
    with open(os.path.join(wd, "metrics.csv"), newline="") as f:
        return [tuple(r[k] for k in COMPARED) for r in csv.DictReader(f)]


FIRED = {}  # set in the child: the file that records which kill point fired


def _die(label=None):
    if label is not None and FIRED.get("path"):
        fd = os.open(FIRED["path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{label}\n".encode())
        os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


class _KillingFile:
    """A file object that writes part of the k-th write call's data, then kills the process."""

    def __init__(self, f, state, label):
        self._f, self._s, self._label = f, state, label

    def write(self, data):
        self._s["n"] += 1
        if self._s["n"] >= self._s["k"]:
            self._f.write(data[: max(1, len(data) // 2)])
            self._f.flush()
            _die(self._label)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def _arm(plan):
    """Install the kill point ``plan`` = (kind, pattern, k) in this (child) process."""
    kind, pattern, k = plan
    label = f"{kind}:{pattern}"
    hits = {"n": 0}

    def hit():
        hits["n"] += 1
        return hits["n"] >= k

    if kind == "write":  # torn write of a whole-file writer (checkpoint, config, metrics rewrite)
        real = os.fdopen

        def fdopen(fd, *a, **kw):
            f = real(fd, *a, **kw)
            target = os.readlink(f"/proc/self/fd/{fd}")
            if pattern in os.path.basename(target) or pattern == "*":
                if hit():
                    k_write = random.randint(1, 3) if target.endswith(".pt") else 1  # text files: one write call
                    return _KillingFile(f, {"n": 0, "k": k_write}, label)
            return f

        os.fdopen = fdopen
    elif kind in ("replace_before", "replace_after"):  # temp file complete, rename not done / just done
        real_replace = os.replace

        def replace(src, dst):
            if pattern in os.path.basename(dst) and hit():
                if kind == "replace_after":
                    real_replace(src, dst)
                _die(label)
            return real_replace(src, dst)

        os.replace = replace
    elif kind == "append":  # torn metrics row
        real_append = MetricsLog.append

        def append(self, row):
            if hit():
                import io

                buf = io.StringIO()
                csv.DictWriter(buf, fieldnames=self.fields).writerow({f: row.get(f, "") for f in self.fields})
                with open(self.path, "a", newline="") as f:
                    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                _die(label)
            return real_append(self, row)

        MetricsLog.append = append
    elif kind == "unlink":  # in the middle of pruning old checkpoints
        real_unlink = os.unlink

        def unlink(p):
            real_unlink(p)
            if pattern in os.path.basename(p) and hit():
                _die(label)

        os.unlink = unlink


def _child(wd, plan, fired=None):
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        torch.set_num_threads(1)
        sys.stdout = sys.stderr = open(os.devnull, "w")
        FIRED["path"] = fired
        if plan is not None:
            _arm(plan)
        tr = Trainer(_cfg(), wd)
        if plan is not None:  # a kill point that is not reached within 40 steps: die anyway
            stop = tr.step + 40
            tr.callbacks.append(lambda trainer, step, metrics: _die() if step >= stop else None)
        tr.fit()
        code = 0
    except BaseException:
        traceback.print_exc(file=sys.__stderr__)
    finally:
        os._exit(code)


def _check_whole(wd):
    """After a kill: no file lost or emptied; every checkpoint verifies."""
    if os.path.exists(os.path.join(wd, "config.yaml")):
        assert not missing_keys(load_yaml(os.path.join(wd, "config.yaml")))
    for _, p in list_checkpoints(os.path.join(wd, "checkpoints")):
        load_checkpoint(p)
    m = os.path.join(wd, "metrics.csv")
    if os.path.exists(m):
        with open(m) as f:
            assert f.readline().startswith("step,"), "metrics.csv lost its header"
    for name in os.listdir(os.path.join(wd, "samples")) if os.path.isdir(os.path.join(wd, "samples")) else []:
        if not name.startswith(".tmp-"):
            assert os.path.getsize(os.path.join(wd, "samples", name)) > 0


PLANS = [
    ("write", "checkpoint", 1),
    ("write", "checkpoint", 3),
    ("write", "config", 1),
    ("write", "metrics", 1),
    ("write", "*", 2),
    ("replace_before", "checkpoint_", 2),
    ("replace_after", "checkpoint_", 2),
    ("replace_before", "config.yaml", 1),
    ("replace_before", "samples_", 1),
    ("replace_before", "metrics.csv", 1),
    ("append", "", 2),
    ("append", "", 5),
    ("unlink", "checkpoint_", 1),
    ("timer", "", 0),
]


def test_sigkill_anywhere_then_resume_matches_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)
    import matplotlib

    matplotlib.use("Agg")
    ref = str(tmp_path / "ref")
    Trainer(_cfg(), ref).fit()
    ref_ckpt = load_checkpoint(list_checkpoints(os.path.join(ref, "checkpoints"))[-1][1])

    wd = str(tmp_path / "victim")
    rng = random.Random(19)
    kills, runs, kinds = 0, 0, set()
    while kills < 24:
        plan = PLANS[runs % len(PLANS)] if runs < 2 * len(PLANS) else ("timer", "", 0)
        plan = None if plan[0] == "timer" else plan
        runs += 1
        assert runs < 60, "the kill schedule stopped making progress"
        pid = _child(wd, plan, str(tmp_path / "fired.log"))
        # timer runs: a random kill from outside; armed runs die at their kill point (the deadline is a safety net)
        deadline = time.time() + (rng.uniform(0.05, 0.8) if plan is None else 120)
        status = None
        while time.time() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.005)
        else:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) or os.WEXITSTATUS(status) == 0, f"child failed (plan {plan})"
        if os.WIFSIGNALED(status):
            kills += 1
            kinds.add(plan[0] if plan else "timer")
        else:
            pytest.fail("training finished before the kill schedule did: raise training.n_iters")
        _check_whole(wd)
    assert kinds >= {"write", "replace_before", "replace_after", "append", "unlink", "timer"}
    fired = set((tmp_path / "fired.log").read_text().split())  # kill points reached before the random timer
    must = {"write:checkpoint", "write:config", "replace_before:checkpoint_", "replace_after:checkpoint_",
            "replace_before:config.yaml", "append:", "unlink:checkpoint_"}  # fmt: skip
    assert fired >= must, sorted(fired)

    pid = _child(wd, None)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    _check_whole(wd)
    got = load_checkpoint(list_checkpoints(os.path.join(wd, "checkpoints"))[-1][1])
    assert got["step"] == ref_ckpt["step"] == 400
    for k in ref_ckpt["model"]:
        assert torch.equal(got["model"][k], ref_ckpt["model"][k]), k
    for a, b in zip(got["ema"]["shadow"], ref_ckpt["ema"]["shadow"], strict=True):
        assert torch.equal(a, b)
    assert _rows(wd) == _rows(ref)  # the metrics history, row for row
    assert sorted(os.listdir(os.path.join(wd, "samples"))) == sorted(os.listdir(os.path.join(ref, "samples")))
    leftovers = [n for d in ("", "checkpoints", "samples") for n in os.listdir(os.path.join(wd, d)) if ".tmp-" in n]
    assert leftovers == []
