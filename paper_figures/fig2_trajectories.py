"""Song et al. 2021, Fig. 2: forward-SDE, reverse-SDE and probability-flow trajectories of a 1-D
mixture over the exact density p_t(x).

The data is a two-component 1-D Gaussian mixture under the VP SDE, so p_t is known exactly
(``GaussianMixture.log_prob``) and so is the probability-flow map: in 1-D the PF-ODE is the
monotone map that preserves the CDF, ``GaussianMixture.transport``. Three panels:

- forward SDE: data samples pushed through the exact forward transition kernel on a fine grid;
- reverse SDE: ``ss.sample(..., sampler="reverse_diffusion", record=True)`` from prior draws;
- probability flow: the PF-ODE dx/dt = f - 1/2 g^2 s (``sde.reverse(score, probability_flow=True)``)
  integrated by torchdiffeq's dopri5 at tight tolerance, with the exact transport map of the same
  starting points drawn dashed. Key number: max |x_ODE(t) - F_t^{-1}(F_T(x_T))| over all
  trajectories and recorded times (< 1e-4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchdiffeq

import score_sde as ss
from paper_figures import common
from score_sde.solvers.predictors import transition

NAME = "fig2"


@dataclass
class Config:
    weights: tuple = (0.35, 0.65)
    means: tuple = (-1.2, 1.0)
    variances: tuple = (0.04, 0.09)
    n_traj: int = 24  # trajectories drawn per panel
    n_eval: int = 4000  # reverse-SDE samples for the endpoint W2
    steps: int = 1000  # reverse-SDE steps; forward / ODE output times
    rtol: float = 1e-10
    atol: float = 1e-10
    eps: float = 1e-3
    seed: int = 0


FAST = dict(n_traj=12, n_eval=1000, steps=200, rtol=1e-9, atol=1e-9)


def run(cfg: Config, ctx: common.Context) -> common.Report:
    torch.set_default_dtype(torch.float64)
    g = torch.Generator().manual_seed(cfg.seed)
    gmm = ss.GaussianMixture(list(cfg.weights), [[m] for m in cfg.means], list(cfg.variances))
    sde = ss.VPSDE(0.1, 20.0, N=1000)
    score = gmm.score_fn(sde)
    times = torch.linspace(sde.T, cfg.eps, cfg.steps + 1)

    # forward SDE: exact transitions between consecutive output times (ascending)
    fwd_t = times.flip(0)
    x = gmm.sample(cfg.n_traj, generator=g)
    fwd = [x]
    for t0, t1 in zip(fwd_t[:-1], fwd_t[1:]):
        a, G2 = transition(sde, t1, t0)
        x = a * x + G2.sqrt() * torch.randn(x.shape, generator=g)
        fwd.append(x)
    fwd = torch.stack(fwd)[:, :, 0]  # [steps+1, n_traj], times ascending

    # reverse SDE through the package sampler
    x_T = sde.prior_sampling((cfg.n_traj, 1), generator=g)
    res = ss.sample(
        sde, score, x_T=x_T, sampler="reverse_diffusion", steps=cfg.steps, eps=cfg.eps, generator=g, record=True
    )
    rev = torch.stack([x_T] + res.trajectory)[:, :, 0]  # [steps+1, n_traj], times descending
    big = ss.sample(
        sde, score, shape=(cfg.n_eval, 1), sampler="reverse_diffusion", steps=cfg.steps, eps=cfg.eps, generator=g
    )
    w2_rev = common.sliced_w2(big.x, gmm.sample(200_000, generator=g), n_proj=1)

    # probability-flow ODE, adaptive dopri5, against the exact 1-D transport map
    rsde = sde.reverse(score, probability_flow=True)
    nfe = [0]

    def f(t, y):
        nfe[0] += 1
        return rsde.drift(y, t.expand(y.shape[0]))

    x_T = sde.prior_sampling((cfg.n_traj, 1), generator=g)
    # first_step keeps dopri5's initial probe inside [eps, T] and step_t makes it land on eps instead
    # of stepping past it (sigma(t) is NaN for t < 0)
    opts = dict(first_step=1e-3, step_t=times[-1:])
    ode = torchdiffeq.odeint(f, x_T, times, rtol=cfg.rtol, atol=cfg.atol, method="dopri5", options=opts)[:, :, 0]
    exact = torch.stack([gmm.transport(x_T[:, 0], sde.T, t, sde) for t in times])
    transport_err = float((ode - exact).abs().max())
    end_err = float((ode[-1] - exact[-1]).abs().max())

    # the package's fixed-step probability-flow predictor on the same starts, for scale
    pf = ss.sample(sde, score, x_T=x_T, sampler="probability_flow", steps=cfg.steps, eps=cfg.eps)
    pf_err = float((pf.x[:, 0] - exact[-1]).abs().max())

    # exact density heat map
    xs = torch.linspace(-3, 3, 241)
    tg = torch.linspace(cfg.eps, 1, 200)
    dens = torch.stack([gmm.log_prob(xs[:, None], t, sde).exp() for t in tg], 1)  # [x, t]

    plt = common.plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    panels = [
        ("forward SDE (data → noise)", fwd_t, fwd, None),
        ("reverse SDE (noise → data)", times, rev, None),
        (f"probability-flow ODE (dopri5, {nfe[0]} NFE)", times, ode, exact),
    ]
    for ax, (title, tt, traj, ref) in zip(axes, panels):
        ax.imshow(dens.sqrt().numpy(), origin="lower", aspect="auto", extent=[cfg.eps, 1, -3, 3], cmap="viridis")
        ax.plot(tt, traj, color="white", lw=0.6, alpha=0.9)
        if ref is not None:
            ax.plot(tt, ref, color="red", lw=0.8, ls="--", alpha=0.9)
        ax.set_title(title)
        ax.set_xlabel("t")
    axes[0].set_ylabel("x")
    axes[2].plot([], [], color="red", ls="--", label="exact transport F_t⁻¹(F_T(x_T))")
    axes[2].legend(loc="lower right", fontsize=7)
    fig.suptitle(f"1-D mixture under VP SDE; max |ODE − exact transport| = {transport_err:.1e}")
    common.savefig(fig, ctx)

    numbers = dict(
        transport_error_max=transport_err,
        transport_error_endpoint=end_err,
        ode_nfe=nfe[0],
        fixed_step_pf_error=pf_err,
        fixed_step_pf_steps=cfg.steps,
        reverse_sde_w2_to_data=w2_rev,
        reverse_sde_nfe=big.nfe,
    )
    md = common.md_table(
        ["quantity", "ours", "paper"],
        [
            ["max abs PF-ODE (dopri5) − exact transport, all t", f"{transport_err:.2e}", "– (figure only)"],
            ["… at t = eps", f"{end_err:.2e}", "–"],
            ["dopri5 NFE", nfe[0], "–"],
            [f"fixed-step PF predictor ({cfg.steps} steps) endpoint error", f"{pf_err:.2e}", "–"],
            [f"reverse SDE ({cfg.steps} steps) W2 to data", f"{w2_rev:.3f}", "–"],
        ],
    )
    return common.Report(numbers, paper={"figure": "qualitative (Fig. 2)"}, markdown=md)


def main(argv=None):
    return common.script_main(NAME, Config, FAST, run, argv, __doc__)


if __name__ == "__main__":
    main()
