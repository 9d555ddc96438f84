"""examples/failure_modes.py: every failure mode of the seed text shows up against its healthy twin."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def rows():
    import torch

    default = torch.get_default_dtype()
    spec = importlib.util.spec_from_file_location("failure_modes", os.path.join(ROOT, "examples", "failure_modes.py"))
    fm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fm)
    res = fm.run(n=1000)
    assert torch.get_default_dtype() == default  # run() restores it
    assert "| blurry outputs |" in fm.table(res)
    return res["rows"]


def test_blurry_and_oversmoothed_outputs(rows):
    r = rows["blurry outputs"]
    assert r["healthy"] < 0.03 and r["failing"] > 5 * r["healthy"] and r["failing"] > 0.08
    r = rows["oversmoothing"]
    assert 0.85 < r["healthy"] < 1.2 and r["failing"] > 1.5


def test_weak_and_overstrong_guidance(rows):
    r = rows["poor prompt adherence"]
    assert r["healthy"] > 0.97 and r["failing"] < 0.8
    r = rows["mode collapse-like"]
    assert 0.33 < r["healthy"] < 0.47 and r["failing"] < 0.15  # the minor mode starves (true share 0.4)


def test_unstable_sampler_and_needless_steps(rows):
    r = rows["repeated artifacts"]
    assert r["healthy"] < 0.05 and r["failing"] > 0.3
    r = rows["slow generation"]
    assert r["sw2 healthy"] < 1.5 * r["sw2 failing"]  # same quality at 1/50 of the NFE
