"""Typed configs: defaults, YAML overrides, --set coercion, and errors that name the key."""

import os

import pytest
import yaml

from score_sde.training import config as C

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs")


def test_defaults_are_official():
    cfg = C.default_config()
    t = cfg.training
    assert (t.lr, t.warmup, t.grad_clip, t.batch_size) == (2e-4, 5000, 1.0, 128)
    assert cfg.training.eps == 1e-5 and cfg.sde.beta_min == 0.1 and cfg.sde.beta_max == 20.0
    assert (cfg.sde.sigma_min, cfg.sde.sigma_max) == (0.01, 50.0)


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text("training:\n  lr: 1e-3\n  n_iters: 2e3\nmodel:\n  ch_mult: [1, 2]\n  attn_resolutions: 8\n")
    cfg = C.load_config(
        p,
        [
            "training.batch_size=32",
            "model.ch_mult=1,2,4",
            "training.ema_rate=none",
            "sde.kind=subvpsde",
            "training.progress=false",
            "data.root=/x/y",
        ],
    )
    assert cfg.training.lr == 1e-3 and isinstance(cfg.training.lr, float)  # "1e-3" is a string in YAML 1.1
    assert cfg.training.n_iters == 2000 and isinstance(cfg.training.n_iters, int)
    assert cfg.training.batch_size == 32
    assert cfg.model.ch_mult == [1, 2, 4] and cfg.model.attn_resolutions == [8]
    assert cfg.training.ema_rate is None and cfg.sde.kind == "subvpsde" and cfg.training.progress is False
    assert cfg.data.root == "/x/y"
    # untouched keys keep their defaults
    assert cfg.training.warmup == C.default_config().training.warmup


def test_base_inheritance(tmp_path):
    (tmp_path / "a.yaml").write_text("training:\n  lr: 0.001\n  warmup: 10\nsde:\n  kind: vpsde\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nsde:\n  kind: vesde\ntraining:\n  warmup: 20\n")
    cfg = C.load_config(tmp_path / "b.yaml")
    assert (cfg.training.lr, cfg.training.warmup, cfg.sde.kind) == (0.001, 20, "vesde")


def test_round_trip_through_yaml(tmp_path):
    cfg = C.load_config(None, ["model.kind=unet", "training.lr=3e-4"])
    C.save_config(cfg, tmp_path / "c.yaml")
    assert C.load_config(tmp_path / "c.yaml") == cfg
    assert C.config_from_plain(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "text, key",
    [
        ("training:\n  lrr: 0.1\n", "training.lrr"),
        ("trainin:\n  lr: 0.1\n", "trainin"),
        ("model:\n  widht: 3\n", "model.widht"),
    ],
)
def test_unknown_key_is_named(tmp_path, text, key):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        C.load_config(p)


def test_unknown_override_key_suggests():
    with pytest.raises(ValueError, match=r"training\.lrr.*did you mean 'training.lr'"):
        C.apply_overrides(C.default_config(), ["training.lrr=1"])
    with pytest.raises(ValueError, match="section.key=value"):
        C.apply_overrides(C.default_config(), ["training.lr"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("training.lr=fast", "training.lr"),
        ("training.batch_size=12.5", "training.batch_size"),
        ("training.progress=maybe", "training.progress"),
        ("model.ch_mult=1,x", r"model.ch_mult\[1\]"),
    ],
)
def test_wrong_type_override_is_named(override, key):
    with pytest.raises(TypeError, match=key):
        C.apply_overrides(C.default_config(), [override])


@pytest.mark.parametrize(
    "text, key",
    [
        ("training:\n  lr: fast\n", "training.lr"),
        ("training:\n  batch_size: [1, 2]\n", "training.batch_size"),
        ("training:\n  progress: 1\n", "training.progress"),
        ("sde:\n  kind: 3\n", "sde.kind"),
        ("training:\n  n_iters: null\n", "training.n_iters"),
    ],
)
def test_wrong_type_in_yaml_is_named(tmp_path, text, key):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(TypeError, match=key.replace(".", r"\.")):
        C.load_config(p)


@pytest.mark.parametrize(
    "override, key",
    [
        ("training.lr=-1e-4", "training.lr"),
        ("training.lr=0", "training.lr"),
        ("training.batch_size=0", "training.batch_size"),
        ("training.ema_rate=1.5", "training.ema_rate"),
        ("training.loss=l1", "training.loss"),
        ("sde.kind=cosine_vp", "sde.kind"),
        ("training.accum_steps=3", "training.batch_size"),
        ("model.kind=transformer", "model.kind"),
        ("training.dtype=float16", "training.dtype"),
        ("sde.beta_max=0.05", "sde.beta_max"),
    ],
)
def test_bad_value_is_named(override, key):
    cfg = C.apply_overrides(C.default_config(), [override])
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        C.validate(cfg, check_files=False)


@pytest.mark.parametrize("extra", ["model.prediction=edm", "model.time_labels=discrete"])
def test_fourier_embedding_needs_positive_labels(extra):
    cfg = C.apply_overrides(C.default_config(), ["model.embedding=fourier", extra])
    with pytest.raises(ValueError, match=r"model\.embedding.*positive labels.*sinusoidal"):
        C.validate(cfg, check_files=False)
    for labels in ("sigma", "continuous", "t999"):  # positive labels on [eps, T]
        ok = C.apply_overrides(C.default_config(), ["model.embedding=fourier", f"model.time_labels={labels}"])
        C.validate(ok, check_files=False)


def test_missing_dataset_file_is_named(tmp_path):
    cfg = C.apply_overrides(C.default_config(), ["data.dataset=npz", f"data.root={tmp_path / 'nope.npz'}"])
    with pytest.raises(ValueError, match=r"data\.root.*nope\.npz"):
        C.validate(cfg)
    cfg = C.apply_overrides(C.default_config(), ["data.dataset=npz"])
    with pytest.raises(ValueError, match=r"data\.root"):
        C.validate(cfg)


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        C.load_config("nope.yaml")


def test_yaml_is_read_safely(tmp_path):
    """A YAML tag that would construct a Python object is refused (yaml.safe_load)."""
    marker = tmp_path / "ran"
    p = tmp_path / "evil.yaml"
    p.write_text(f"training: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(yaml.YAMLError):
        C.load_config(p)
    assert not marker.exists()


def test_shipped_configs_load():
    names = sorted(n for n in os.listdir(CONFIG_DIR) if n.endswith(".yaml"))
    expected = {
        "toy_vp.yaml", "toy_subvp.yaml", "toy_ve.yaml", "digits_vp.yaml", "digits_subvp.yaml", "digits_ve.yaml",
        "mnist_vp.yaml", "cifar10_ddpmpp_continuous_vp.yaml", "cifar10_ddpmpp_continuous_subvp.yaml",
        "cifar10_ncsnpp_continuous_ve.yaml", "cifar10_ddpmpp_deep_continuous_vp.yaml",
        "cifar10_ddpmpp_deep_continuous_subvp.yaml", "cifar10_ncsnpp_deep_continuous_ve.yaml",
    }  # fmt: skip
    assert expected <= set(names)
    for n in names:
        cfg = C.load_config(os.path.join(CONFIG_DIR, n), validate_files=False)
        assert cfg.training.lr > 0
    cif = C.load_config(os.path.join(CONFIG_DIR, "cifar10_ncsnpp_continuous_ve.yaml"))
    assert (cif.sde.kind, cif.training.ema_rate, cif.model.embedding, cif.model.fourier_scale) == (
        "vesde", 0.999, "fourier", 16.0)  # fmt: skip
    deep = C.load_config(os.path.join(CONFIG_DIR, "cifar10_ddpmpp_deep_continuous_subvp.yaml"))
    assert (deep.model.num_res_blocks, deep.training.n_iters, deep.training.ema_rate) == (8, 950001, 0.9999)
