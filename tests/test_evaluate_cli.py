"""``score-sde evaluate``: resumable shards (SIGKILL then rerun), torchrun ranks = one process, metrics JSON."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import torch

from score_sde.evaluation import load_feature_net
from score_sde.evaluation.shards import load_shards, sample_seed
from score_sde.training import Trainer, load_config

pytest.importorskip("sklearn")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
TINY_DIGITS = [
    "data.dataset=digits",
    "data.uniform_dequantization=true",
    "model.kind=mlp",
    "model.hidden=32",
    "model.depth=1",
    "model.emb_dim=16",
    "training.batch_size=32",
    "training.n_iters=4",
    "training.warmup=1",
    "training.log_every=2",
    "training.ckpt_every=4",
    "training.progress=false",
    "training.device=cpu",
    "sampling.sampler=euler_maruyama",
    "sampling.steps=100",
]
NUM, SHARD = 48, 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    wd = tmp_path_factory.mktemp("eval") / "digits"
    Trainer(load_config(None, TINY_DIGITS), str(wd)).fit()
    cache = tmp_path_factory.getbasetemp() / "score_sde_cache"  # shared with test_evaluation_fd_digits.py
    load_feature_net("fd-digits", cache_dir=cache)  # trained once here, not inside the timed subprocesses
    return wd, cache


def _env():
    empty = os.path.join(tempfile.gettempdir(), "score-sde-empty-torch-home")
    env = dict(os.environ, OMP_NUM_THREADS="1", TORCH_HOME=empty)
    env.pop("SCORE_SDE_INCEPTION_WEIGHTS", None)  # no Inception weights: FID is skipped and said so
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return env


def _cmd(wd, cache, out):
    return ["evaluate", "--workdir", str(wd), "--num-samples", str(NUM), "--shard-size", str(SHARD),
            "--batch-size", "3", "--kid-subsets", "5", "--out", str(out), "--cache-dir", str(cache)]  # fmt: skip


def _run(args, cwd):
    r = subprocess.run([sys.executable, "-m", "score_sde", *args], cwd=cwd, env=_env(), capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def full_run(setup, tmp_path_factory):
    """One uninterrupted single-process run, the baseline of both tests."""
    wd, cache = setup
    out = tmp_path_factory.mktemp("full") / "out"
    _run(_cmd(wd, cache, out), out.parent)
    return out


def _metrics(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


def test_killed_run_resumes_to_the_same_metrics(setup, full_run, tmp_path):
    wd, cache = setup
    full = full_run
    m = _metrics(full)
    for key in ("num_samples", "sampler", "nfe", "feature_net", "fd_digits", "kid", "kid_stderr", "precision",
                "recall"):  # fmt: skip
        assert key in m, key
    assert m["num_samples"] == NUM and m["sampler"] == "euler_maruyama" and m["nfe"] == 100
    assert m["feature_net"] == "fd-digits" and "fid" not in m and m["fd_digits"] > 0
    assert any("Inception" in n for n in m["notes"])  # no weights on this machine: said, not hidden
    assert os.path.getsize(full / "samples.png") > 0

    killed = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-m", "score_sde", *_cmd(wd, cache, killed), "--no-progress"], cwd=tmp_path,
                         env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    shards = killed / "shards"
    t0 = time.time()
    while not (shards / "shard_00001.pt").exists() and time.time() - t0 < 120 and p.poll() is None:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = len(list(shards.glob("shard_*.pt")))
    assert 2 <= done < NUM // SHARD, f"the kill did not land mid-run ({done} shards)"
    assert not (killed / "metrics.json").exists()
    r = _run(_cmd(wd, cache, killed), tmp_path)
    assert f"skipped {done} finished shard(s)" in r.stdout
    assert _metrics(killed) == m
    xa, _ = load_shards(str(full / "shards"), NUM, SHARD)
    xb, _ = load_shards(str(killed / "shards"), NUM, SHARD)
    assert torch.equal(xa, xb)
    # a rerun with other settings in the same folder is refused instead of mixing samples
    r = subprocess.run([sys.executable, "-m", "score_sde", *_cmd(wd, cache, killed), "--seed", "1"], cwd=tmp_path,
                       env=_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 2 and "seed: 0 -> 1" in r.stderr


@pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun not installed next to python")
def test_two_torchrun_ranks_give_the_samples_and_metrics_of_one_process(setup, full_run, tmp_path):
    wd, cache = setup
    one, two = full_run, tmp_path / "two"
    r = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "score_sde", *_cmd(wd, cache, two)],
                       cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 rank(s)" in r.stdout
    x1, _ = load_shards(str(one / "shards"), NUM, SHARD)
    x2, _ = load_shards(str(two / "shards"), NUM, SHARD)
    assert torch.equal(x1, x2) and len({tuple(v) for v in x1.flatten(1).tolist()}) == NUM
    assert _metrics(one) == _metrics(two)


def test_sample_seeds_are_distinct_and_fixed():
    seeds = [sample_seed(0, i) for i in range(1000)] + [sample_seed(1, i) for i in range(1000)]
    assert len(set(seeds)) == 2000 and all(0 <= s < 2**63 for s in seeds)
    assert sample_seed(0, 0) == sample_seed(0, 0)
