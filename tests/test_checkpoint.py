"""Checkpoints: atomic writes, exact RNG round trips, weights-only loading, crafted pickles refused."""

import os
import pickle
import random

import numpy as np
import pytest
import torch

from score_sde.training.checkpoint import (
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from score_sde.training.ema import ExponentialMovingAverage, default_ema_rate


class _Evil:
    """Unpickling this object would run os.system (a crafted checkpoint)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_save_load_round_trip(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "step": 7, "config": {"a": [1, 2.0, None]}}
    p = save_checkpoint(tmp_path / "c.pt", state)
    back = load_checkpoint(p)
    assert back["step"] == 7 and back["config"] == {"a": [1, 2.0, None]}
    for k, v in net.state_dict().items():
        assert torch.equal(back["model"][k], v)
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp")] == []


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint(p, {"step": 1})

    class Unsavable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(Exception, match="boom"):
        save_checkpoint(p, {"step": 2, "bad": Unsavable()})
    assert load_checkpoint(p)["step"] == 1
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]  # no temp file left behind


@pytest.mark.parametrize("how", ["torch_save", "raw_pickle"])
def test_crafted_pickle_is_refused_and_never_runs(tmp_path, how):
    marker = tmp_path / "code_ran"
    p = tmp_path / "evil.pt"
    payload = {"model": {}, "step": 1, "x": _Evil(marker)}
    if how == "torch_save":
        torch.save(payload, p)
    else:
        with open(p, "wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(CheckpointError, match="refusing to load checkpoint.*weights_only"):
        load_checkpoint(p)
    assert not marker.exists()


def test_corrupt_and_missing(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")


def test_rng_states_round_trip(tmp_path):
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(4)
    np.random.randn()  # fills numpy's cached gaussian state path
    save_checkpoint(tmp_path / "r.pt", {"rng": rng_state({"g": g})})
    a = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=g))
    torch.rand(5), np.random.rand(5), random.random(), torch.rand(5, generator=g)  # move all states on
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"], {"g": g})
    b = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=g))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2] and torch.equal(a[3], b[3])
    with pytest.raises(CheckpointError, match="'h'"):
        set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"], {"h": g})


def test_numbered_checkpoints(tmp_path):
    for s in (5, 100, 20):
        save_checkpoint(checkpoint_path(tmp_path, s), {"step": s})
    (tmp_path / ".tmp-abc.pt").write_bytes(b"partial")  # a temp file of a killed writer is ignored
    assert [s for s, _ in list_checkpoints(tmp_path)] == [5, 20, 100]
    assert latest_checkpoint(tmp_path).endswith("checkpoint_100.pt")
    prune_checkpoints(tmp_path, 2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [20, 100]
    assert latest_checkpoint(tmp_path / "missing") is None


def test_ema_matches_formula_and_round_trips():
    net = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = ExponentialMovingAverage(net, decay=0.9)
    expect = torch.zeros_like(net.weight)
    for n in range(5):
        with torch.no_grad():
            net.weight.add_(1.0)
        d = min(0.9, (1 + n) / (10 + n))
        expect = d * expect + (1 - d) * net.weight.detach()
        ema.update()
    assert torch.allclose(ema.shadow[0], expect, atol=0, rtol=1e-6)
    raw = net.weight.detach().clone()
    with ema.average_parameters():
        assert torch.allclose(net.weight, expect)
    assert torch.equal(net.weight, raw)
    other = ExponentialMovingAverage(torch.nn.Linear(2, 1, bias=False), 0.5)
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.9 and other.num_updates == 5 and torch.equal(other.shadow[0], ema.shadow[0])
    with pytest.raises(ValueError, match="decay"):
        ExponentialMovingAverage(net, 1.0)
    with pytest.raises(ValueError, match="parameters"):
        ExponentialMovingAverage(torch.nn.Linear(2, 2), 0.9).load_state_dict(ema.state_dict())
    assert default_ema_rate("vesde") == 0.999 and default_ema_rate("vpsde") == 0.9999
