"""Our NCSN++ vs diffusers' NCSN++ ``UNet2DModel`` with the same weights: CPU time, forward and
forward + backward.

The diffusers network is the architecture of the ``google/ncsnpp-*`` pipelines (skip blocks = NCSN++
with ``progressive="output_skip"``, ``progressive_input="input_skip"``, BigGAN blocks with FIR
resampling, Fourier features of ln sigma, output divided by sigma), built locally with random
weights at CIFAR-10 size (widths 128/256/256/256, 2 blocks per level, attention at 16x16); nothing
is downloaded. Its weights are copied into :class:`score_sde.nets.NCSNpp` (the mapping below) and
the outputs are checked to agree before anything is timed. Rounds alternate between the two nets;
the medians of the process CPU time (one thread by default) are reported with the ratio
ours / diffusers (below 1: ours is faster).

    python benchmarks/ncsnpp_vs_diffusers.py [--batch 8] [--rounds 5]

Writes ``benchmarks/results/ncsnpp_vs_diffusers.txt``. Needs ``pip install diffusers``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from score_sde.nets import NCSNpp  # noqa: E402

WIDTHS, BLOCKS, SIZE = (128, 256, 256, 256), 2, 32


def diffusers_ncsnpp():
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=SIZE, in_channels=3, out_channels=3, block_out_channels=WIDTHS, layers_per_block=BLOCKS,
        down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D", "SkipDownBlock2D", "SkipDownBlock2D"),
        up_block_types=("SkipUpBlock2D", "SkipUpBlock2D", "AttnSkipUpBlock2D", "SkipUpBlock2D"),
        time_embedding_type="fourier", norm_eps=1e-6, mid_block_scale_factor=math.sqrt(2.0), norm_num_groups=None,
        attention_head_dim=None, center_input_sample=False, act_fn="silu",
    )  # fmt: skip


def ours_ncsnpp():
    return NCSNpp(num_channels=3, image_size=SIZE, nf=WIDTHS[0], ch_mult=tuple(w // WIDTHS[0] for w in WIDTHS),
                  num_res_blocks=BLOCKS, attn_resolutions=(16,), dropout=0.0, fir=True, fir_kernel=(1, 3, 3, 1),
                  skip_rescale=True, resblock_type="biggan", progressive="output_skip",
                  progressive_input="input_skip", progressive_combine="sum", embedding_type="fourier",
                  fourier_scale=16.0, scale_by_sigma=True, centered=True)  # fmt: skip


# ---- diffusers -> ours, module by module in the order of our all_modules ---------------------
def _copy(dst, src):
    with torch.no_grad():
        if dst.shape != src.shape:
            raise ValueError(f"shape mismatch {tuple(dst.shape)} vs {tuple(src.shape)}")
        dst.copy_(src)


def _resnet(ours, theirs):
    for a, b in (("GroupNorm_0", "norm1"), ("Conv_0", "conv1"), ("Dense_0", "time_emb_proj"),
                 ("GroupNorm_1", "norm2"), ("Conv_1", "conv2"), ("Conv_2", "conv_shortcut")):  # fmt: skip
        if hasattr(ours, a):
            _copy(getattr(ours, a).weight, getattr(theirs, b).weight)
            _copy(getattr(ours, a).bias, getattr(theirs, b).bias)


def _attn(ours, theirs):
    _copy(ours.GroupNorm_0.weight, theirs.group_norm.weight)
    _copy(ours.GroupNorm_0.bias, theirs.group_norm.bias)
    pairs = (("NIN_0", theirs.to_q), ("NIN_1", theirs.to_k), ("NIN_2", theirs.to_v), ("NIN_3", theirs.to_out[0]))
    for nin, lin in pairs:
        _copy(getattr(ours, nin).W, lin.weight.T)  # NIN.W is [in, out], Linear.weight is [out, in]
        _copy(getattr(ours, nin).b, lin.bias)


def _plain(ours, theirs):
    _copy(ours.weight, theirs.weight)
    _copy(ours.bias, theirs.bias)


def load_from_diffusers(ours: NCSNpp, theirs) -> None:
    """Copy a diffusers NCSN++ ``UNet2DModel``'s weights into ``ours`` (same architecture)."""
    mods = iter(ours.all_modules)
    _copy(next(mods).W, theirs.time_proj.weight)
    _plain(next(mods), theirs.time_embedding.linear_1)
    _plain(next(mods), theirs.time_embedding.linear_2)
    _plain(next(mods), theirs.conv_in)
    for blk in theirs.down_blocks:
        for j, res in enumerate(blk.resnets):
            _resnet(next(mods), res)
            if hasattr(blk, "attentions"):
                _attn(next(mods), blk.attentions[j])
        if blk.downsamplers is not None:
            _resnet(next(mods), blk.resnet_down)
            _plain(next(mods).Conv_0, blk.skip_conv)
    mid = theirs.mid_block
    _resnet(next(mods), mid.resnets[0])
    _attn(next(mods), mid.attentions[0])
    _resnet(next(mods), mid.resnets[1])
    for blk in theirs.up_blocks:
        for res in blk.resnets:
            _resnet(next(mods), res)
        if hasattr(blk, "attentions"):
            _attn(next(mods), blk.attentions[0])
        if blk.resnet_up is not None:
            _plain(next(mods), blk.skip_norm)
            _plain(next(mods), blk.skip_conv)
            _resnet(next(mods), blk.resnet_up)
        else:
            _plain(next(mods), theirs.conv_norm_out)
            _plain(next(mods), theirs.conv_out)
    if next(mods, None) is not None:
        raise ValueError("ours has modules that diffusers' net does not")


def _time(fn, reps=1):
    """CPU seconds of this process per call (robust to other jobs on a shared machine; one thread)."""
    t0 = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - t0) / reps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "ncsnpp_vs_diffusers.txt"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    theirs = diffusers_ncsnpp()
    with torch.no_grad():  # every weight random (the zero-initialised ones too)
        for prm in theirs.parameters():
            prm.add_(0.02 * torch.randn_like(prm))
    ours = ours_ncsnpp()
    load_from_diffusers(ours, theirs)
    theirs.eval(), ours.eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, SIZE, SIZE, generator=g)
    sigma = torch.exp(torch.empty(args.batch).uniform_(math.log(0.01), math.log(50.0), generator=g))
    with torch.no_grad():
        a, b = ours(x, sigma), theirs(x, sigma).sample
    err = float((a - b).norm() / b.norm())
    if not err < 1e-4:
        raise SystemExit(f"the two nets disagree (relative difference {err:.2e}); the weight mapping is wrong")
    n_params = sum(q.numel() for q in ours.parameters())

    def fwd(net, diff):
        with torch.no_grad():
            out = net(x, sigma)
        return out.sample if diff else out

    def fwd_bwd(net, diff):
        xr = x.clone().requires_grad_(True)
        out = net(xr, sigma)
        out = out.sample if diff else out
        out.square().mean().backward()

    res = {k: [] for k in ("ours_fwd", "diff_fwd", "ours_fb", "diff_fb")}
    fwd(ours, False), fwd(theirs, True), fwd_bwd(ours, False), fwd_bwd(theirs, True)  # warm up
    for _ in range(args.rounds):
        res["ours_fwd"].append(_time(lambda: fwd(ours, False)))
        res["diff_fwd"].append(_time(lambda: fwd(theirs, True)))
        res["ours_fb"].append(_time(lambda: fwd_bwd(ours, False)))
        res["diff_fb"].append(_time(lambda: fwd_bwd(theirs, True)))
        ours.zero_grad(set_to_none=True), theirs.zero_grad(set_to_none=True)
    med = {k: statistics.median(v) for k, v in res.items()}
    import diffusers

    lines = [
        "# our NCSNpp vs diffusers UNet2DModel (google/ncsnpp-* architecture at CIFAR-10 size), same weights, CPU",
        f"# command: python benchmarks/ncsnpp_vs_diffusers.py --batch {args.batch} --rounds {args.rounds} "
        f"--threads {args.threads}",
        f"# torch {torch.__version__}, diffusers {diffusers.__version__}; {n_params} parameters; batch {args.batch} "
        f"x 3 x {SIZE} x {SIZE}; outputs agree to {err:.1e} relative; medians of {args.rounds} alternating rounds",
        f"forward           ours {med['ours_fwd']:.3f} s  diffusers {med['diff_fwd']:.3f} s  "
        f"ratio ours/diffusers {med['ours_fwd'] / med['diff_fwd']:.3f}",
        f"forward+backward  ours {med['ours_fb']:.3f} s  diffusers {med['diff_fb']:.3f} s  "
        f"ratio ours/diffusers {med['ours_fb'] / med['diff_fb']:.3f}",
    ]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
