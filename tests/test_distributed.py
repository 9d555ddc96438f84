"""torchrun with two gloo processes: identical parameters on both ranks after every step, equal to one
process on the same global batch; sharded sampling and likelihood through the command line."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from score_sde.training import Trainer, load_config, save_config
from score_sde.training.distributed import DistContext, gather_cat, shard_indices, shard_range

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
TINY = [
    "data.dataset=mixture",
    "data.n_train=256",
    "data.n_test=32",
    "model.hidden=32",
    "model.depth=1",
    "model.emb_dim=16",
    "training.batch_size=32",
    "training.n_iters=6",
    "training.lr=1e-2",
    "training.warmup=2",
    "training.log_every=2",
    "training.ckpt_every=3",
    "training.progress=false",
    "training.dtype=float64",
    "training.device=cpu",
    "eval.num=32",
    "eval.divergence=exact",
    "eval.rtol=1e-8",
    "eval.atol=1e-8",
    "sampling.sampler=euler_maruyama",
    "sampling.steps=20",
]

pytestmark = pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun not installed next to python")


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return env


def _torchrun(args, cwd, timeout=240):
    r = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", *args], cwd=cwd, env=_env(),
                       capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _flat_params(trainer):
    return torch.cat([p.detach().flatten() for p in trainer.net.parameters()]).clone()


def test_two_ranks_match_each_other_and_one_process(tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    save_config(load_config(None, TINY), cfg_path)
    script = tmp_path / "ddp_train.py"
    script.write_text(
        textwrap.dedent(f"""
        import torch
        from score_sde.training import Trainer, load_config
        from score_sde.training.distributed import cleanup, init_distributed
        ctx = init_distributed("cpu")
        assert ctx.world_size == 2 and ctx.backend == "gloo"
        trace = []
        cb = lambda tr, step, m: trace.append(torch.cat([p.detach().flatten() for p in tr.net.parameters()]).clone())
        Trainer(load_config({str(cfg_path)!r}), {str(tmp_path / "ddp")!r}, dist=ctx, callbacks=[cb]).fit()
        torch.save(trace, {str(tmp_path)!r} + f"/trace_{{ctx.rank}}.pt")
        cleanup(ctx)
    """)
    )
    _torchrun([str(script)], cwd=tmp_path)
    r0 = torch.load(tmp_path / "trace_0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "trace_1.pt", weights_only=True)
    assert len(r0) == len(r1) == 6
    for a, b in zip(r0, r1):
        assert torch.equal(a, b)  # identical after every step
    # one process, the same global batch of 32 as two micro-batches of 16
    single = []
    cfg = load_config(cfg_path, ["training.accum_steps=2"])
    Trainer(cfg, None, callbacks=[lambda tr, step, m: single.append(_flat_params(tr))]).fit()
    for a, s in zip(r0, single):
        torch.testing.assert_close(a, s, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(r0[0], r0[-1])  # training moved the parameters
    # rank 0 alone wrote the logs: one row per logged step
    rows = (tmp_path / "ddp" / "metrics.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["2", "4", "6"]


# four torchrun launches: about 15-30 s on an idle 2-core machine
def test_cli_train_sample_likelihood_under_torchrun(tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    save_config(load_config(None, TINY), cfg_path)
    wd = str(tmp_path / "run")
    r = _torchrun(["-m", "score_sde", "train", "--config", str(cfg_path), "--workdir", wd], cwd=tmp_path)
    assert "trained to step 6" in r.stdout and r.stdout.count("trained to step") == 1  # rank 0 prints
    assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["checkpoint_3.pt", "checkpoint_6.pt"]
    _torchrun(["-m", "score_sde", "sample", "--workdir", wd, "--num-samples", "7", "--out", "s.npz"], cwd=tmp_path)
    x = np.load(tmp_path / "s.npz")["samples"]
    assert x.shape == (7, 2) and np.isfinite(x).all()
    assert len({tuple(row) for row in x.round(6).tolist()}) == 7  # the two ranks drew different samples
    _torchrun(["-m", "score_sde", "likelihood", "--workdir", wd, "--out", "ll2.json"], cwd=tmp_path)
    r = subprocess.run([sys.executable, "-m", "score_sde", "likelihood", "--workdir", wd, "--out", "ll1.json"],
                       cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    two, one = json.load(open(tmp_path / "ll2.json")), json.load(open(tmp_path / "ll1.json"))
    assert two["ranks"] == 2 and one["ranks"] == 1 and two["eval_n"] == one["eval_n"] == 32
    assert two["eval_nll"] == pytest.approx(one["eval_nll"], abs=1e-5)  # adaptive steps differ per shard


def test_shard_helpers():
    assert [shard_range(10, r, 3) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    assert [shard_range(2, r, 3) for r in range(3)] == [(0, 1), (1, 2), (2, 2)]
    assert shard_indices(torch.arange(7), 1, 2).tolist() == [1, 3, 5]
    with pytest.raises(ValueError, match="rank 3"):
        shard_range(5, 3, 2)
    x = torch.randn(4, 2)
    assert gather_cat(x, DistContext()) is x


def test_batch_split_matches_accumulation():
    """The shards of a global batch cover it exactly once, whatever the split."""
    tr = Trainer(load_config(None, [*TINY, "training.accum_steps=4"]))
    idx = tr.batch_indices(5)
    parts = [tr.micro_batch(5, m)[0] for m in range(4)]
    assert torch.equal(torch.cat(parts), tr.data[idx])
    assert len(set(idx.tolist())) == idx.numel()
