"""diffusers pipelines load as score models and sample number for number; denoiser adapters.

A random-initialised small ``UNet2DModel`` in a pipeline is saved with ``save_pretrained``; the
pipeline runs from a seeded generator while its scheduler's outputs are recorded (the pipeline
itself is not modified; its final image is clamped to [0, 1], so we compare the last scheduler
step's sample before that). ``load_diffusers(folder)`` and ``ss.sample(model.sde, model, x_T=...,
generator=g, **model.sampling)`` from the same generator state must give the same sample.

Precision: the schedulers keep their tables (``alphas_cumprod``, ...) in float32 whatever the UNet's
dtype. The float64 tests cast those tables to float64 (the pipeline's code is unchanged) and then
require agreement to float64 round-off, max |ours - theirs| <= 1e-10 max(1, max |theirs|): the two
samplers are the same arithmetic. The float32 tests run the pipelines as shipped and require 1e-5 of
the same scale (3e-5 for DDIM: float32 round-off amplified by 1/sqrt(alpha_bar) ~ 10 in the x_0
estimates of a random network; measured 1.4e-5).

The tests that need diffusers skip when it is not installed (``pip install 'score_sde[diffusers]'``).
"""

import json
import sys

import pytest
import torch

import score_sde as ss
from score_sde.pretrained import DenoiserModel, load_diffusers, unet2d_score_model

N_TRAIN = 50
SHAPE = (2, 3, 8, 8)


@pytest.fixture(scope="module")
def diffusers():
    mod = pytest.importorskip("diffusers")
    mod.utils.logging.set_verbosity_error()
    return mod


@pytest.fixture
def float32():
    """float32 as the default dtype inside the test: the UNet, the pipeline's noise and ours follow it."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield torch.float32
    torch.set_default_dtype(old)


def tiny_unet(diffusers, fourier=False, seed=0):
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        time_embedding_type="fourier" if fourier else "positional",
    )


def promote_tables(scheduler):
    """Cast the scheduler's precomputed float32 tables to float64 (its step code is unchanged)."""
    for key in ("alphas_cumprod", "final_alpha_cumprod", "one"):
        if torch.is_tensor(getattr(scheduler, key, None)):
            setattr(scheduler, key, getattr(scheduler, key).double())


def run_pipeline(pipe, step_name, seed, **call):
    """Run the pipeline from ``seed``; return the scheduler outputs of every step (in order). In float64
    the scheduler's tables are cast to float64 first."""
    if torch.get_default_dtype() == torch.float64:
        promote_tables(pipe.scheduler)
    pipe.set_progress_bar_config(disable=True)
    outs, step = [], getattr(pipe.scheduler, step_name)

    def recording_step(*args, **kw):
        out = step(*args, **kw)
        outs.append(out)
        return out

    setattr(pipe.scheduler, step_name, recording_step)
    gen = ss.per_sample_generators(seed) if isinstance(seed, list) else torch.Generator().manual_seed(seed)
    pipe(batch_size=SHAPE[0], generator=gen, output_type="np", **call)
    return outs


def ours(model, seed):
    """x_T and every noise draw from the same generator(s) as the pipeline."""
    gen = ss.per_sample_generators(seed) if isinstance(seed, list) else torch.Generator().manual_seed(seed)
    x_T = model.sde.prior_sampling(SHAPE, generator=gen)
    with torch.no_grad():
        return ss.sample(model.sde, model, x_T=x_T, generator=gen, **model.sampling)


def assert_close(x, ref, tol=None):
    tol = (1e-10 if x.dtype == torch.float64 else 1e-5) if tol is None else tol
    err = (x - ref).abs().max().item()
    scale = max(1.0, ref.abs().max().item())
    assert err <= tol * scale, (err, scale)
    assert ref.abs().max() > 0.1  # a non-trivial sample


@pytest.mark.parametrize(
    "variance_type, clip_sample, steps, seed",
    [
        ("fixed_small", True, None, 1),
        ("fixed_small", False, None, [3, 4]),  # one generator per sample
        ("fixed_large", True, None, 2),
        ("fixed_large", False, 10, 5),  # every 5th timestep of the chain
    ],
)
def test_ddpm_pipeline(diffusers, tmp_path, variance_type, clip_sample, steps, seed):
    check_ddpm(diffusers, tmp_path, variance_type, clip_sample, steps, seed)


def test_ddpm_pipeline_float32(diffusers, tmp_path, float32):
    """float32 UNet (the pipelines' usual dtype): the chain's times map to the right timesteps."""
    check_ddpm(diffusers, tmp_path, "fixed_small", True, None, 8, float32)


def check_ddpm(diffusers, tmp_path, variance_type, clip_sample, steps, seed, dtype=torch.float64):
    sched = diffusers.DDPMScheduler(
        num_train_timesteps=N_TRAIN, beta_end=0.2, variance_type=variance_type, clip_sample=clip_sample
    )
    pipe = diffusers.DDPMPipeline(tiny_unet(diffusers), sched)
    pipe.save_pretrained(tmp_path)
    outs = run_pipeline(pipe, "step", seed, num_inference_steps=steps or N_TRAIN)

    model = load_diffusers(tmp_path, num_inference_steps=steps)
    from_object = load_diffusers(pipe, num_inference_steps=steps)
    assert from_object.net.unet is pipe.unet and torch.equal(from_object.sampling["grid"], model.sampling["grid"])
    assert model.sampling["sampler"] == "ancestral"
    assert model.sampling["variance"] == variance_type and model.sampling["clip_denoised"] is clip_sample
    assert torch.allclose(model.sde.alphas_cumprod, sched.alphas_cumprod.double(), rtol=1e-12, atol=0)
    res = ours(model, seed)
    assert res.nfe == len(outs) == (steps or N_TRAIN)
    assert res.x.dtype == dtype
    assert_close(res.x, outs[-1].prev_sample)
    if clip_sample:
        assert res.x.abs().max() <= 1.0  # the last step returns the clipped x_0


@pytest.mark.parametrize("clip_sample, spacing", [(True, "leading"), (False, "trailing")])
def test_ddim_pipeline(diffusers, tmp_path, clip_sample, spacing):
    check_ddim(diffusers, tmp_path, clip_sample, spacing, torch.float64)


def test_ddim_pipeline_float32(diffusers, tmp_path, float32):
    check_ddim(diffusers, tmp_path, True, "leading", float32)


def check_ddim(diffusers, tmp_path, clip_sample, spacing, dtype):
    sched = diffusers.DDIMScheduler(
        num_train_timesteps=N_TRAIN, beta_end=0.2, clip_sample=clip_sample, timestep_spacing=spacing
    )
    diffusers.DDIMPipeline(tiny_unet(diffusers), sched).save_pretrained(tmp_path)
    pipe = diffusers.DDIMPipeline.from_pretrained(tmp_path)
    outs = run_pipeline(pipe, "step", 7, num_inference_steps=10, eta=0.0)

    model = load_diffusers(tmp_path, num_inference_steps=10)
    assert model.sampling["sampler"] == "ddim" and model.sampling["eta"] == 0.0
    res = ours(model, 7)
    assert res.nfe == 10 and res.x.dtype == dtype
    assert_close(res.x, outs[-1].prev_sample, None if dtype == torch.float64 else 3e-5)


def test_ddim_default_steps_are_the_pipelines(diffusers, tmp_path):
    sched = diffusers.DDIMScheduler(num_train_timesteps=100, beta_end=0.1)
    diffusers.DDIMPipeline(tiny_unet(diffusers), sched).save_pretrained(tmp_path)
    grid = load_diffusers(tmp_path).sampling["grid"]
    sched.set_timesteps(50)  # DDIMPipeline's default num_inference_steps
    assert grid.numel() == 51 and grid[-1] == 0
    assert torch.allclose(grid[:-1], (sched.timesteps.double() + 1) / 100)


def test_score_sde_ve_pipeline(diffusers, tmp_path):
    check_ve(diffusers, tmp_path, torch.float64)


def test_score_sde_ve_pipeline_float32(diffusers, tmp_path, float32):
    check_ve(diffusers, tmp_path, float32)


def check_ve(diffusers, tmp_path, dtype):
    sched = diffusers.ScoreSdeVeScheduler(num_train_timesteps=30, sigma_max=5.0, snr=0.2)
    pipe = diffusers.ScoreSdeVePipeline(tiny_unet(diffusers, fourier=True), sched)
    pipe.save_pretrained(tmp_path)
    outs = run_pipeline(pipe, "step_pred", 11, num_inference_steps=30)

    model = load_diffusers(tmp_path)
    assert isinstance(model.sde, ss.VESDE) and model.sde.sigma_max == 5.0
    assert model.sampling["sampler"] == "pc" and model.sampling["snr"] == 0.2
    res = ours(model, 11)
    assert res.nfe == 2 * 30  # one corrector and one predictor evaluation per step
    assert res.x.dtype == dtype
    assert_close(res.x, outs[-1].prev_sample_mean)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_missing_diffusers_names_the_extra(monkeypatch, tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    monkeypatch.setitem(sys.modules, "diffusers", None)  # "import diffusers" now raises ImportError
    with pytest.raises(ImportError, match=r"score_sde\[diffusers\]"):
        load_diffusers(tmp_path)


def test_bad_sources(diffusers, tmp_path):
    with pytest.raises(TypeError, match="folder or a diffusers pipeline"):
        load_diffusers(3)
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_diffusers(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="StableDiffusionPipeline"):
        load_diffusers(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    with pytest.raises(ValueError, match="num_inference_steps"):
        load_diffusers(tmp_path, num_inference_steps=0)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"variance_type": "learned_range"}, "learned_range"),
        ({"thresholding": True}, "thresholding"),
        ({"rescale_betas_zero_snr": True}, "outside"),
    ],
)
def test_unsupported_scheduler_settings(diffusers, tmp_path, options, match):
    sched = diffusers.DDPMScheduler(num_train_timesteps=N_TRAIN, beta_end=0.2, **options)
    diffusers.DDPMPipeline(tiny_unet(diffusers), sched).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=match):
        load_diffusers(tmp_path)


def test_unet_with_learned_variance_is_refused(diffusers):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=3, out_channels=6, block_out_channels=(16, 32), norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    )  # fmt: skip
    with pytest.raises(ValueError, match="6 channels for 3 input"):
        unet2d_score_model(unet, ss.VPSDE(), "epsilon")


# ---------------------------------------------------------------------------------------------
# adapters
# ---------------------------------------------------------------------------------------------
def test_unet_adapter_maps_prediction_names(diffusers):
    unet = tiny_unet(diffusers)
    sde = ss.VPSDE.from_betas(torch.linspace(1e-3, 0.2, N_TRAIN))
    x = torch.randn(SHAPE)
    for ours_name, theirs in (("eps", "epsilon"), ("x0", "sample"), ("v", "v_prediction")):
        m = unet2d_score_model(unet, sde, theirs)
        assert m.prediction == ours_name
    m = unet2d_score_model(unet, sde, "epsilon")
    t = torch.full((2,), 0.5)
    with torch.no_grad():
        eps = unet(x, sde.time_to_index(t)).sample
        assert torch.equal(m.eps(x, t), eps)


MU, S2 = 0.3, 0.25  # data N(MU, S2 I)


def gaussian_denoiser(x, sigma, cond=None):
    """E[x_0 | x_0 + sigma z = x] for x_0 ~ N(MU, S2 I) (sigma: [B]); ``cond`` shifts the mean."""
    s2 = sigma.reshape(-1, *([1] * (x.ndim - 1))) ** 2
    mu = MU if cond is None else MU + cond
    return (S2 * x + s2 * mu) / (S2 + s2)


@pytest.mark.parametrize("sde", [ss.VPSDE(), ss.SubVPSDE(), ss.VESDE(0.01, 50.0)], ids=["vp", "subvp", "ve"])
def test_denoiser_model_gives_the_exact_score(sde):
    gauss = ss.Gaussian(torch.full((4,), MU, dtype=torch.float64), S2 * torch.eye(4, dtype=torch.float64))
    model = DenoiserModel(gaussian_denoiser, sde)
    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    t = torch.tensor([1e-3, 0.1, 0.4, 0.7, 1.0], dtype=torch.float64)
    assert torch.allclose(model(x, t), gauss.score(x, t, sde), rtol=1e-8, atol=1e-8)
    assert torch.allclose(model.denoise(x, t), gauss.denoise(x, t, sde), rtol=1e-8, atol=1e-8)


def test_denoiser_model_passes_the_condition():
    sde = ss.VPSDE()
    x, t, c = torch.randn(3, 4, dtype=torch.float64), torch.full((3,), 0.5, dtype=torch.float64), 0.7
    positional = DenoiserModel(gaussian_denoiser, sde)
    keyword = DenoiserModel(lambda x, s, shift=None: gaussian_denoiser(x, s, shift), sde, cond_key="shift")
    assert torch.equal(positional(x, t, c), keyword(x, t, c))
    assert not torch.allclose(positional(x, t, c), positional(x, t))
    with pytest.raises(TypeError, match="callable"):
        DenoiserModel(3.0)


def test_denoiser_model_samples_the_gaussian():
    """Heun (EDM) on the default VESDE(0.002, 80) with the exact denoiser draws N(MU, S2 I)."""
    model = DenoiserModel(gaussian_denoiser)
    g = torch.Generator().manual_seed(0)
    res = ss.sample(model.sde, model, shape=(4000, 2), sampler="heun", steps=30, generator=g, dtype=torch.float64)
    assert abs(res.x.mean().item() - MU) < 0.02
    assert abs(res.x.var().item() - S2) < 0.02


def test_pretrained_spec_and_command_line(diffusers, tmp_path):
    """``load_pretrained("diffusers:DIR")`` and ``score-sde sample --pretrained diffusers:DIR`` load the folder;
    the samples on [0, 1] do not depend on --batch-size (one generator per sample)."""
    import numpy as np

    from score_sde import cli
    from score_sde.pretrained import load_pretrained

    sched = diffusers.DDIMScheduler(num_train_timesteps=50)
    diffusers.DDIMPipeline(tiny_unet(diffusers), sched).save_pretrained(tmp_path / "pipe")
    model = load_pretrained(f"diffusers:{tmp_path / 'pipe'}")
    assert model.sampling["sampler"] == "ddim" and model.data_shape == (3, 8, 8)
    with pytest.raises(ValueError, match="config"):
        load_pretrained(f"diffusers:{tmp_path / 'pipe'}", config="x.yaml")
    outs = []
    for bs in ("3", "1"):
        out = tmp_path / f"s{bs}.npz"
        argv = ["sample", "--pretrained", f"diffusers:{tmp_path / 'pipe'}", "--num", "3", "--steps", "4",
                "--batch-size", bs, "--out", str(out), "--device", "cpu"]  # fmt: skip
        assert cli.main(argv) == 0
        outs.append(np.load(out)["samples"])
    assert outs[0].shape == (3, 3, 8, 8) and np.isfinite(outs[0]).all()
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)
