"""How closely ``load_diffusers`` + ``ss.sample(**model.sampling)`` reproduces diffusers' pipelines
at the published schedules (DDPM 1000-step linear and cosine chains, DDIM 50 of 1000 steps, score
SDE VE predictor-corrector), on a small random-initialised UNet2DModel (8x8, 2 samples).

For each case: max |ours - pipeline| of the final sample (before the pipeline's clamp to [0, 1]),
relative to max(1, max |pipeline|), in float32 (the pipelines as shipped), in float64 (UNet and noise
in float64; the scheduler still computes its coefficients from float32 tables), and in float64 with
the scheduler's tables (``alphas_cumprod``, ...) cast to float64 (then only float64 round-off is
left); and, as the round-off sensitivity of these random networks, the pipeline's own float32 sample
against its float64 run (same weights, same seed).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/diffusers_agreement.py   # needs: pip install diffusers
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

import score_sde as ss
from score_sde.pretrained import load_diffusers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (2, 3, 8, 8)


def tiny_unet(diffusers, fourier: bool):
    torch.manual_seed(0)
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


def pipeline_sample(pipe, step_name: str, seed: int, steps: int) -> torch.Tensor:
    """The last scheduler step's sample (the pipeline itself clamps its output to [0, 1])."""
    pipe.set_progress_bar_config(disable=True)
    outs, step = [], getattr(pipe.scheduler, step_name)

    def recording_step(*args, **kw):
        out = step(*args, **kw)
        outs.append(out)
        return out

    setattr(pipe.scheduler, step_name, recording_step)
    gen = torch.Generator().manual_seed(seed)
    pipe(batch_size=SHAPE[0], generator=gen, num_inference_steps=steps, output_type="np")
    last = outs[-1]
    return last.prev_sample_mean if step_name == "step_pred" else last.prev_sample


def promote_tables(scheduler) -> None:
    """Cast the scheduler's precomputed float32 tables to float64 (its step code is unchanged)."""
    for key in ("alphas_cumprod", "final_alpha_cumprod", "one"):
        if torch.is_tensor(getattr(scheduler, key, None)):
            setattr(scheduler, key, getattr(scheduler, key).double())


def run_case(diffusers, name, pipeline_cls, scheduler, steps, dtype, folder, tables64=False):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        fourier = pipeline_cls is diffusers.ScoreSdeVePipeline
        step_name = "step_pred" if fourier else "step"
        pipe = pipeline_cls(tiny_unet(diffusers, fourier).to(dtype), scheduler)
        pipe.save_pretrained(folder)
        if tables64:
            promote_tables(pipe.scheduler)
        t0 = time.perf_counter()
        theirs = pipeline_sample(pipe, step_name, 0, steps)
        t1 = time.perf_counter()
        model = load_diffusers(folder, num_inference_steps=steps, dtype=dtype)
        g = torch.Generator().manual_seed(0)
        x_T = model.sde.prior_sampling(SHAPE, generator=g, dtype=dtype)
        with torch.no_grad():
            res = ss.sample(model.sde, model, x_T=x_T, generator=g, **model.sampling)
        t2 = time.perf_counter()
    finally:
        torch.set_default_dtype(old)
    return theirs, res.x, t1 - t0, t2 - t1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "diffusers_agreement.md"))
    p.add_argument("--ve-steps", type=int, default=500)
    args = p.parse_args(argv)
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    torch.set_num_threads(1)
    cases = [
        ("DDPM linear, fixed_small, clip", diffusers.DDPMPipeline,
         lambda: diffusers.DDPMScheduler(variance_type="fixed_small", clip_sample=True), 1000),
        ("DDPM linear, fixed_large, no clip", diffusers.DDPMPipeline,
         lambda: diffusers.DDPMScheduler(variance_type="fixed_large", clip_sample=False), 1000),
        ("DDPM cosine, fixed_small, clip", diffusers.DDPMPipeline,
         lambda: diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2"), 1000),
        ("DDIM linear, 50 steps, clip", diffusers.DDIMPipeline, lambda: diffusers.DDIMScheduler(), 50),
        ("DDIM linear, 50 steps, no clip", diffusers.DDIMPipeline,
         lambda: diffusers.DDIMScheduler(clip_sample=False), 50),
        (f"score SDE VE, PC, {args.ve_steps} steps", diffusers.ScoreSdeVePipeline,
         lambda: diffusers.ScoreSdeVeScheduler(num_train_timesteps=args.ve_steps), args.ve_steps),
    ]  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cls, make, steps in cases:
            t32, o32, pt, ot = run_case(diffusers, name, cls, make(), steps, torch.float32, os.path.join(tmp, "a"))
            t64, o64, _, _ = run_case(diffusers, name, cls, make(), steps, torch.float64, os.path.join(tmp, "b"))
            tt, ot64, _, _ = run_case(diffusers, name, cls, make(), steps, torch.float64, os.path.join(tmp, "c"), True)
            scale = max(1.0, t32.abs().max().item())
            e32 = (o32 - t32).abs().max().item()
            r64 = (o64 - t64).abs().max().item() / max(1.0, t64.abs().max().item())
            r64t = (ot64 - tt).abs().max().item() / max(1.0, tt.abs().max().item())
            floor = (t32.double() - t64).abs().max().item()
            rows.append((name, steps, scale, e32, e32 / scale, r64, r64t, floor / scale, ot / pt))
            print(rows[-1], flush=True)
    lines = [
        "# diffusers pipelines vs load_diffusers + ss.sample(**model.sampling)",
        "",
        "Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/diffusers_agreement.py` "
        f"(diffusers {diffusers.__version__}, torch {torch.__version__}, CPU). Random-initialised UNet2DModel "
        "(block_out_channels (16, 32), 8x8, 3 channels), batch 2, generator seed 0 for both runs. "
        "Errors are max |ours - pipeline| of the final sample; 'rel.' divides by max(1, max |pipeline|). "
        "'float64, tables f64': the scheduler's alphas_cumprod (etc.) cast to float64 before the run. "
        "'pipeline f32 vs f64' is the pipeline's own float32 sample against its float64 run: how much these "
        "random networks amplify round-off. Times are wall-clock on a shared machine.",
        "",
        "| case | steps | max abs sample | float32 abs. error | float32 rel. | float64 rel. "
        "| float64, tables f64, rel. "
        "| pipeline f32 vs f64 (rel.) | time ours / pipeline (f32) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, steps, scale, e32, r32, r64, r64t, floor, ratio in rows:
        lines.append(
            f"| {name} | {steps} | {scale:.3g} | {e32:.2e} | {r32:.2e} | {r64:.2e} | {r64t:.2e} | {floor:.2e} "
            f"| {ratio:.2f} |"
        )
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
