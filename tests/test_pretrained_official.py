"""load_official against outputs of the official score_sde code (reduced networks, every option).

``tests/data/official_fixtures.pt`` was made by running the official PyTorch code (outside this
repository) on reduced versions of its configs that together cover every NCSN++ option and the
DDPM net: for each case it holds the config (YAML form), the official state-dict keys and shapes,
the official ``parameters()`` order, the seeds of the weights (drawn by :func:`draw`, repeated here),
inputs x, t and the official ``get_score_fn(sde, model, train=False, continuous=...)`` outputs with
the EMA weights (``score``, float32; ``score_f64``, float64) and with the raw weights (``score_raw``).
"""

import glob
import math
import os
import re

import numpy as np
import pytest
import torch
import yaml

import score_sde as ss
from score_sde.pretrained import load_official, load_official_config, load_pretrained

DATA = os.path.join(os.path.dirname(__file__), "data", "official_fixtures.pt")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = torch.load(DATA, weights_only=True)
TOL = 2e-5


def draw(name, shape, g):
    """The weight-drawing rule used when the fixtures were made (scaled to typical magnitudes)."""
    z = torch.randn(shape, generator=g, dtype=torch.float32)
    last = name.rsplit(".", 1)[-1]
    if len(shape) == 1:
        if last == "W":  # Fourier frequencies
            return 16.0 * z
        return (1.0 if last == "weight" else 0.0) + 0.1 * z  # GroupNorm scales / biases
    fan_in = shape[0] if last == "W" else math.prod(shape[1:])  # NIN.W is [in, out]
    return z / math.sqrt(fan_in)


def checkpoint(case):
    """The official-format checkpoint of a fixture case (DataParallel keys, EMA list, optimizer, step)."""
    g1, g2 = (torch.Generator().manual_seed(s) for s in case["seeds"])
    model = {f"module.{k}": draw(k, shape, g1) for k, shape in case["keys"]}
    model["module.sigmas"] = case["sigmas"]
    shapes = dict(case["keys"])
    shadow = [draw(n, shapes[n], g2) for n in case["params"]]
    return {"model": model, "ema": {"decay": 0.999, "num_updates": 5, "shadow_params": shadow},
            "optimizer": {"state": {}, "param_groups": []}, "step": 5}  # fmt: skip


def rel_err(a, b):
    a, b = a.double().flatten(1), b.double().flatten(1)
    return float(((a - b).norm(dim=1) / b.norm(dim=1)).max())


@pytest.mark.parametrize("name", sorted(FIX))
def test_matches_official_score(name):
    case = FIX[name]
    ckpt = checkpoint(case)
    model = load_official(ckpt, case["config"])
    with torch.no_grad():
        assert rel_err(model(case["x"], case["t"]), case["score"]) <= TOL
        raw = load_official(ckpt, case["config"], ema=False)
        assert rel_err(raw(case["x"], case["t"]), case["score_raw"]) <= TOL
        # in float64 the mapping is exact up to float64 round-off
        m64 = load_official(ckpt, case["config"], dtype=torch.float64)
        assert rel_err(m64(case["x"].double(), case["t"].double()), case["score_f64"]) <= 1e-9
    # the EMA weights matter here (a loader that ignored them would fail the first check)
    assert rel_err(case["score"], case["score_raw"]) > 0.1


def test_recipe_scaling_and_views():
    case = FIX["ve_cont_fourier_fir_inresidual"]
    model = load_official(checkpoint(case), case["config"])
    assert isinstance(model, ss.ScoreModel) and isinstance(model.sde, ss.VESDE)
    assert model.sde.sigma_max == 50.0 and model.data_scaling == ss.DataScaling.unit()
    assert model.sampling == {"sampler": "pc", "predictor": "reverse_diffusion", "corrector": "langevin",
                              "snr": 0.16, "corrector_steps": 1, "denoise": True}  # fmt: skip
    # the recipe runs as ss.sample keyword arguments (3 steps here, to keep the test short)
    g = torch.Generator().manual_seed(0)
    x_T = model.sde.prior_sampling((2, 3, 8, 8), generator=g, dtype=torch.float32)
    res = ss.sample(model.sde, model, x_T=x_T, generator=g, steps=3, **model.sampling)
    assert res.x.shape == (2, 3, 8, 8) and torch.isfinite(res.x).all() and res.nfe == 6
    vp = load_official(checkpoint(FIX["vp_cont_ddpmpp"]), FIX["vp_cont_ddpmpp"]["config"])
    assert vp.data_scaling == ss.DataScaling.centered() and vp.sampling["predictor"] == "euler_maruyama"
    x, t = FIX["vp_cont_ddpmpp"]["x"], FIX["vp_cont_ddpmpp"]["t"]
    with torch.no_grad():  # eps view = -sigma(t) score
        s = vp.sde.sigma(t)[:, None, None, None]
        assert torch.allclose(vp.eps(x, t), -s * vp(x, t), rtol=1e-5, atol=1e-6)


def test_checkpoint_file_and_load_pretrained(tmp_path):
    case = FIX["ddpm_vp_disc"]
    path = tmp_path / "checkpoint_26.pth"
    torch.save(checkpoint(case), path)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(case["config"]))
    model = load_pretrained(f"official:{path}", config=str(cfg_path))
    with torch.no_grad():
        assert rel_err(model(case["x"], case["t"]), case["score"]) <= TOL
    with pytest.raises(ValueError, match="give its config"):
        load_pretrained(f"official:{path}")
    with pytest.raises(ValueError, match="unknown pretrained source 'nope'"):
        load_pretrained(f"nope:{path}")
    with pytest.raises(ValueError, match="<source>:<path>"):
        load_pretrained(str(path))
    with pytest.raises(FileNotFoundError):
        load_official(tmp_path / "missing.pth", case["config"])


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling would create the marker folder
        return (os.makedirs, (self.marker,))


def test_crafted_pickle_is_refused_and_never_runs(tmp_path):
    marker = str(tmp_path / "pwned")
    case = FIX["vp_cont_ddpmpp"]
    ckpt = checkpoint(case)
    ckpt["step"] = _Payload(marker)
    path = tmp_path / "evil.pth"
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="refusing to load"):
        load_official(path, case["config"])
    assert not os.path.exists(marker)


def test_other_architecture_lists_mismatched_keys():
    ddpm = FIX["ddpm_vp_disc"]
    ncsnpp_cfg = FIX["vp_cont_ddpmpp"]["config"]
    with pytest.raises(ValueError) as e:
        load_official(checkpoint(ddpm), ncsnpp_cfg)
    msg = str(e.value)
    assert re.search(r"missing \(\d+\): all_modules\.\d+\.", msg)  # counted, and the keys named
    assert re.search(r"unexpected \(\d+\): all_modules\.\d+\.", msg) and "mis-shaped (" in msg
    # a width mismatch lists the mis-shaped keys with both shapes
    cfg = {**ncsnpp_cfg, "model": {**ncsnpp_cfg["model"], "nf": 16}}
    with pytest.raises(ValueError, match=r"mis-shaped .*checkpoint \(32, 8\), network \(64, 16\)"):
        load_official(checkpoint(FIX["vp_cont_ddpmpp"]), cfg)


def test_bad_ema_and_missing_entries():
    case = FIX["vp_cont_ddpmpp"]
    ckpt = checkpoint(case)
    ckpt["ema"]["shadow_params"] = ckpt["ema"]["shadow_params"][:-1]
    with pytest.raises(ValueError, match="EMA tensors for"):
        load_official(ckpt, case["config"])
    load_official(ckpt, case["config"], ema=False)  # the raw weights still load
    ckpt = checkpoint(case)
    del ckpt["ema"]
    with pytest.raises(ValueError, match="ema=False"):
        load_official(ckpt, case["config"])
    with pytest.raises(ValueError, match="no 'model' entry"):
        load_official({"ema": {}}, case["config"])


def test_official_yaml_configs():
    paths = sorted(glob.glob(os.path.join(ROOT, "configs", "official", "**", "*.yaml"), recursive=True))
    assert len(paths) >= 19
    for p in paths:
        cfg = load_official_config(p)
        rel = os.path.relpath(p, os.path.join(ROOT, "configs", "official"))
        assert cfg["official_config"] == "configs/" + rel[: -len(".yaml")] + ".py"
        assert isinstance(cfg["paper"], dict) and cfg["paper"]["source"]
    deep = load_official_config(os.path.join(ROOT, "configs/official/ve/cifar10_ncsnpp_deep_continuous.yaml"))
    assert deep["paper"]["fid"] == 2.20 and deep["model"]["num_res_blocks"] == 8


def test_config_errors_name_the_key():
    cfg = FIX["vp_cont_ddpmpp"]["config"]
    with pytest.raises(ValueError, match="model.firr"):
        load_official_config({**cfg, "model": {**cfg["model"], "firr": True}})
    model = dict(cfg["model"])
    del model["progressive"]
    with pytest.raises(ValueError, match="model.progressive"):
        load_official_config({**cfg, "model": model})
    with pytest.raises(ValueError, match="training.sde"):
        load_official_config({**cfg, "training": {"sde": "edm", "continuous": True}})
    with pytest.raises(TypeError, match="model.nf"):
        load_official_config({**cfg, "model": {**cfg["model"], "nf": "wide"}})


def test_command_line_sample_and_convert(tmp_path, capsys):
    from score_sde.cli import main

    case = FIX["vp_cont_ddpmpp"]
    ckpt, cfg = tmp_path / "checkpoint_8.pth", tmp_path / "cfg.yaml"
    torch.save(checkpoint(case), ckpt)
    cfg.write_text(yaml.safe_dump(case["config"]))
    spec = f"official:{ckpt}"
    out = tmp_path / "s.npz"
    assert main(["sample", "--pretrained", spec, "--config", str(cfg), "--num", "2", "--steps", "2",
                 "--out", str(out)]) == 0  # fmt: skip
    samples = np.load(out)["samples"]
    assert samples.shape == (2, 3, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    # convert to a project workdir, then sample it through --workdir
    wd = tmp_path / "run"
    assert main(["convert", "--pretrained", spec, "--config", str(cfg), "--workdir", str(wd)]) == 0
    assert (wd / "config.yaml").is_file()
    out2 = tmp_path / "w.npz"
    assert main(["sample", "--workdir", str(wd), "--num", "2", "--steps", "2", "--out", str(out2)]) == 0
    assert np.load(out2)["samples"].shape == (2, 3, 8, 8)
    # the converted workdir holds the same score function
    from score_sde.training.trainer import load_workdir

    _, _, converted, _ = load_workdir(str(wd), device="cpu")
    with torch.no_grad():
        assert rel_err(converted(case["x"], case["t"]), case["score"]) <= 1e-4
    # what can not be converted, or is asked for wrongly, fails with a message (exit status 2)
    ve = FIX["ve_cont_fourier_fir_inresidual"]
    torch.save(checkpoint(ve), tmp_path / "ve.pth")
    (tmp_path / "ve.yaml").write_text(yaml.safe_dump(ve["config"]))
    capsys.readouterr()
    assert main(["convert", "--pretrained", f"official:{tmp_path / 've.pth'}", "--config", str(tmp_path / "ve.yaml"),
                 "--workdir", str(tmp_path / "ve_run")]) == 2  # fmt: skip
    assert "can not convert" in capsys.readouterr().err
    assert main(["sample", "--num", "2", "--out", str(out)]) == 2
    assert "--workdir" in capsys.readouterr().err
    assert main(["likelihood", "--pretrained", spec, "--config", str(cfg)]) == 2
    assert "--data-root" in capsys.readouterr().err


def test_command_line_likelihood_wiring(tmp_path, monkeypatch, capsys):
    """--pretrained likelihood hands the loaded model, its SDE and the data settings to evaluate_nll
    (the ODE solve itself is tested with the likelihood; a random net makes it too slow here)."""
    import score_sde.training.trainer as trainer
    from score_sde.cli import main

    case = FIX["ve_cont_fourier_fir_inresidual"]
    ckpt, cfg = tmp_path / "c.pth", tmp_path / "cfg.yaml"
    torch.save(checkpoint(case), ckpt)
    cfg.write_text(yaml.safe_dump(case["config"]))
    seen = {}

    def fake(cfg_, sde, model, **kw):
        seen.update(cfg=cfg_, sde=sde, model=model, **kw)
        return {"eval_nll": 1.0, "eval_bpd": 2.0, "eval_n": 3}

    monkeypatch.setattr(trainer, "evaluate_nll", fake)
    assert main(["likelihood", "--pretrained", f"official:{ckpt}", "--config", str(cfg), "--data-root",
                 str(tmp_path), "--num", "3", "--probes", "2"]) == 0  # fmt: skip
    assert "2.0000 bits/dim" in capsys.readouterr().out
    assert isinstance(seen["sde"], ss.VESDE) and seen["sde"] is seen["model"].sde
    assert seen["cfg"].data.dataset == "cifar10" and seen["cfg"].data.centered is False  # VE data on [0, 1]
    assert seen["cfg"].data.root == str(tmp_path) and seen["n"] == 3 and seen["probes"] == 2
