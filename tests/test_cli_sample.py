"""``score-sde sample``: every sampler and its options, per-sample seeds, guidance, inpainting, PNG output."""

import os

import numpy as np
import pytest
import torch

from score_sde import cli, sample_cli
from score_sde.solvers import CORRECTORS, SAMPLERS, register_corrector
from score_sde.solvers.correctors import NoneCorrector
from score_sde.training import load_config, save_config

TINY = [
    "data.dataset=mixture",
    "data.n_train=256",
    "data.n_test=16",
    "model.hidden=32",
    "model.depth=1",
    "model.emb_dim=16",
    "training.batch_size=32",
    "training.n_iters=10",
    "training.warmup=2",
    "training.log_every=10",
    "training.ckpt_every=10",
    "training.progress=false",
    "sampling.sampler=euler_maruyama",
    "sampling.steps=10",
]


def run(*args):
    return cli.main([str(a) for a in args])


def _train(folder, overrides):
    cfg = folder / "cfg.yaml"
    save_config(load_config(None, [*TINY, *overrides]), cfg)
    assert run("train", "--config", cfg, "--workdir", folder / "wd") == 0
    return folder / "wd"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("toy"), [])


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """An 8x8-digits model with 10 classes trained with label dropout (classifier-free guidance)."""
    pytest.importorskip("sklearn")
    over = ["data.dataset=digits", "data.n_train=null", "data.n_test=null", "model.num_classes=10",
            "training.cond_drop=0.2"]  # fmt: skip
    return _train(tmp_path_factory.mktemp("digits"), over)


def _npz(path):
    return np.load(path)["samples"]


@pytest.mark.parametrize("sampler, extra", [("euler_maruyama", []), ("pc", ["--corrector", "annealed_langevin"])])
def test_samples_do_not_depend_on_the_batch_size(toy, tmp_path, sampler, extra):
    outs = []
    for bs in (4, 8, 3):
        out = tmp_path / f"s{bs}.npz"
        assert run("sample", "--workdir", toy, "--seed", 3, "--num", 8, "--batch-size", bs, "--sampler", sampler,
                   "--steps", 6, *extra, "--out", out) == 0  # fmt: skip
        outs.append(_npz(out))
    # equal up to the rounding of the network's matmuls, whose kernels may depend on the batch size
    assert np.allclose(outs[0], outs[1], rtol=1e-5, atol=1e-4) and np.allclose(outs[0], outs[2], rtol=1e-5, atol=1e-4)
    run("sample", "--workdir", toy, "--seed", 4, "--num", 8, "--sampler", sampler, "--steps", 6, *extra,
        "--out", tmp_path / "other.npz")  # fmt: skip
    assert not np.allclose(outs[0], _npz(tmp_path / "other.npz"))  # the seed matters


def test_sampler_options_are_checked_against_the_sampler(toy, tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert run("sample", "--workdir", toy, "--sampler", "pc", "--eta", 0.5, "--out", out) == 2
    err = capsys.readouterr().err
    assert "score-sde: error:" in err and "'eta'" in err and "'snr'" in err and "'corrector'" in err
    assert run("sample", "--workdir", toy, "--sampler", "unipc", "--opt", "bogus=1", "--out", out) == 2
    err = capsys.readouterr().err
    assert "'bogus'" in err and "'order'" in err
    assert run("sample", "--workdir", toy, "--sampler", "pc", "--corrector", "magic", "--out", out) == 2
    assert "magic" in capsys.readouterr().err
    # options reach the sampler: --opt order=3 and --nfe change the result; --grid too
    res = {}
    for name, args in {"o2": [], "o3": ["--opt", "order=3"], "grid": ["--grid", "uniform"]}.items():
        assert run("sample", "--workdir", toy, "--sampler", "unipc", "--nfe", 6, *args, "--num", 4,
                   "--out", tmp_path / f"{name}.npz") == 0  # fmt: skip
        res[name] = _npz(tmp_path / f"{name}.npz")
        assert "6 NFE" in capsys.readouterr().out
    assert not np.allclose(res["o2"], res["o3"]) and not np.allclose(res["o2"], res["grid"])
    assert run("sample", "--workdir", toy, "--opt", "oops", "--out", out) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_opt_values_are_yaml_scalars():
    assert sample_cli.parse_opts(["a=3", "b=1e-3", "c=true", "d=null", "e=[0.1, 2]", "f=langevin"]) == {
        "a": 3, "b": 1e-3, "c": True, "d": None, "e": [0.1, 2], "f": "langevin"}  # fmt: skip


def test_edm_churn_and_every_registered_sampler_reachable(toy, tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    for out, opts in ((a, []), (b, ["--opt", "S_churn=40", "--opt", "S_min=0.05", "--opt", "S_max=50"])):
        assert run("sample", "--workdir", toy, "--sampler", "edm", "--steps", 4, "--num", 4, *opts, "--out", out) == 0
    assert not np.allclose(_npz(a), _npz(b))


def test_plugin_module_registers_a_sampler_and_a_corrector(toy, tmp_path, monkeypatch, capsys):
    (tmp_path / "my_plugin_12.py").write_text(
        "from score_sde.solvers import register_sampler, register_corrector\n"
        "from score_sde.solvers.predictors import EulerMaruyama\n"
        "from score_sde.solvers.correctors import NoneCorrector\n"
        "class Shrink(EulerMaruyama):\n"
        "    def __init__(self, factor=1.0):\n"
        "        self.factor = factor\n"
        "    def step(self, ctx, x, t, t_next, i, last):\n"
        "        out = super().step(ctx, x, t, t_next, i, last)\n"
        "        out.x, out.mean = out.x * self.factor, out.mean * self.factor\n"
        "        return out\n"
        "register_sampler('_plugin_shrink', build=Shrink)\n"
    )
    monkeypatch.chdir(tmp_path)
    try:
        assert run("sample", "--workdir", toy, "--sampler", "_plugin_shrink", "--out", "x.npz") == 2
        assert "_plugin_shrink" in capsys.readouterr().err  # unknown without the plugin
        outs = []
        for f in (1.0, 0.0):
            assert run("sample", "--workdir", toy, "--plugin", "my_plugin_12", "--sampler", "_plugin_shrink",
                       "--opt", f"factor={f}", "--num", 4, "--out", f"p{f}.npz") == 0  # fmt: skip
            outs.append(_npz(tmp_path / f"p{f}.npz"))
        assert np.abs(outs[0]).max() > 0 and np.abs(outs[1]).max() == 0
        assert run("sample", "--workdir", toy, "--plugin", "no_such_module_12", "--out", "x.npz") == 2
        assert "no_such_module_12" in capsys.readouterr().err
    finally:
        SAMPLERS.pop("_plugin_shrink", None)


class Renoise(NoneCorrector):
    """A corrector without snr: one small Langevin-like move x <- x + 0.01 s + 0.1 z."""

    name, nfe_per_step, stochastic = "renoise", 1, True

    def __init__(self, n_steps: int = 1):
        self.n_steps = n_steps

    def correct(self, ctx, x, t, t_next, i=None):
        mean = x + 0.01 * ctx.score(x, ctx.time_at(i, t, x))
        return mean + 0.1 * ctx.randn_like(x), mean


def test_registered_corrector_without_snr(toy, tmp_path, capsys):
    register_corrector("_renoise12", Renoise)
    try:
        # the config's snr (a default) is not forced on a corrector that does not take it
        assert run("sample", "--workdir", toy, "--sampler", "pc", "--corrector", "_renoise12", "--steps", 3,
                   "--num", 4, "--out", tmp_path / "r.npz") == 0  # fmt: skip
        assert "6 NFE" in capsys.readouterr().out  # 3 predictor + 3 corrector evaluations (Renoise counts 1)
        assert run("sample", "--workdir", toy, "--sampler", "pc", "--corrector", "_renoise12", "--snr", 0.2,
                   "--out", tmp_path / "r.npz") == 2  # fmt: skip
        assert "takes no option(s) ['snr']" in capsys.readouterr().err
    finally:
        CORRECTORS.pop("_renoise12", None)


def test_png_grid_nrow_scale_and_scatter_title(digits, toy, tmp_path, monkeypatch):
    from PIL import Image

    out = tmp_path / "g.png"
    assert run("sample", "--workdir", digits, "--num", 64, "--steps", 3, "--out", out) == 0
    assert Image.open(out).size == (292, 292)  # 8 x 8 digits + 1-px gaps = 73 px, upsampled 4x to >= 32 px a digit
    assert run("sample", "--workdir", digits, "--num", 64, "--steps", 3, "--nrow", 16, "--scale", 2, "--out", out) == 0
    assert Image.open(out).size == (2 * (16 * 9 + 1), 2 * (4 * 9 + 1))
    titles = []
    monkeypatch.setattr("score_sde.training.trainer.save_samples", lambda x, p, centered, title: titles.append(title))
    assert run("sample", "--workdir", toy, "--sampler", "heun", "--steps", 4, "--out", tmp_path / "t.png") == 0
    assert titles and "heun" in titles[0] and "8 NFE" in titles[0]


def test_guidance_labels_and_inpainting_from_png(digits, toy, tmp_path, capsys):
    from PIL import Image

    mask = np.zeros((8, 8), np.uint8)
    mask[:4] = 255  # white = known: the upper half
    Image.fromarray(mask).save(tmp_path / "mask.png")
    img = np.random.default_rng(0).integers(0, 256, (8, 8)).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "img.png")
    out = tmp_path / "inp.npz"
    known = ["--mask", tmp_path / "mask.png", "--image", tmp_path / "img.png"]
    assert run("sample", "--workdir", digits, "--num", 6, "--steps", 4, *known, "--guidance-scale", 2,
               "--class-labels", "1,7", "--out", out) == 0  # fmt: skip
    d = np.load(out)
    x, y = d["samples"][:, 0], img / 255.0 * 2 - 1  # the digits config is centred to [-1, 1]
    assert list(d["labels"]) == [1, 7, 1, 7, 1, 7]
    assert np.abs(x[:, :4] - y[:4]).max() < 1e-5 and np.abs(x[:, 4:] - y[4:]).max() > 1e-2
    for args, msg in [
        (["--class-labels", "12"], "[0, 10)"),
        (["--mask", tmp_path / "mask.png"], "both --mask and --image"),
        (["--mask", tmp_path / "mask.png", "--image", tmp_path / "img.png", "--sampler", "ode"], "adaptive"),
    ]:
        assert run("sample", "--workdir", digits, "--num", 2, "--steps", 2, *args, "--out", out) == 2
        assert msg in capsys.readouterr().err
    assert run("sample", "--workdir", toy, "--guidance-scale", 2, "--out", out) == 2
    assert "class-conditional" in capsys.readouterr().err


def test_progress_bar_flag_and_version(toy, tmp_path, capsys):
    assert run("sample", "--workdir", toy, "--num", 2, "--out", tmp_path / "a.npz", "--progress") == 0
    assert "euler_maruyama:" in capsys.readouterr().err  # the tqdm bar of the loop
    assert run("sample", "--workdir", toy, "--num", 2, "--out", tmp_path / "a.npz") == 0  # not a terminal: no bar
    assert "euler_maruyama:" not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run("sample", "--help")
    helptext = " ".join(capsys.readouterr().out.split())
    assert "edm (S_churn, S_max, S_min, S_noise, final)" in helptext and "--guidance-scale" in helptext
    with pytest.raises(SystemExit):
        run("--version")
    import score_sde

    assert capsys.readouterr().out.strip() == f"score-sde {score_sde.__version__}"


def test_batch_coupled_samplers_are_named(toy, tmp_path, capsys):
    assert run("sample", "--workdir", toy, "--sampler", "pc", "--corrector", "langevin", "--steps", 3, "--num", 4,
               "--batch-size", 2, "--out", tmp_path / "a.npz") == 0  # fmt: skip
    assert "per_sample_norms" in capsys.readouterr().err
    assert os.path.isfile(tmp_path / "a.npz") and torch.isfinite(torch.from_numpy(_npz(tmp_path / "a.npz"))).all()
