"""The quadrature scheme: x(t) by the probability-flow ODE alone, then Delta = \\int div f~ dt by adaptive
Clenshaw–Curtis quadrature (:mod:`score_sde.quadrature`) at nodes on that path."""

from __future__ import annotations

import warnings

import torch

from ..quadrature import AdaptiveClenshawCurtis
from ..solvers.base import CountingScore
from ..solvers.ode import odeint_clamped, probability_flow_drift
from ..utils import flat_dim
from .divergence import _VJP, _depends_on_other_leaf, _divergence_exact, _divergence_hutchinson, _no_graph_divergence
from .options import DivergenceOptions, ODESolveOptions

# ---- the quadrature scheme: x(t) by the PF-ODE, Delta by adaptive quadrature along it ----------------
QUAD_PATH_TOL = 0.1  # the x-solve of the quadrature scheme runs at this fraction of rtol, atol (see _solve_quadrature)


class _PathScore:
    """The score as the x-solve calls it: x cast to the score's dtype and back; evaluated under ``no_grad``
    unless a graph is kept (then the solve is differentiable through torchdiffeq's steps)."""

    def __init__(self, score: CountingScore, work: torch.dtype, keep: bool):
        self.score, self.work, self.keep = score, work, keep

    def __call__(self, x, t):
        if self.keep:
            return self.score(x.to(self.work), t.to(self.work)).to(x.dtype)
        with torch.no_grad():
            return self.score(x.to(self.work), t.to(self.work)).to(x.dtype)


def _solve_quadrature(sde, score_fn, x: torch.Tensor, eps: float, div: DivergenceOptions, solve: ODESolveOptions):
    """(z, Delta, nfe, info) with Delta = D ln(alpha_T / alpha_eps) - 1/2 \\int g^2 div s dt, the integral by
    adaptive composite Clenshaw–Curtis quadrature (:mod:`score_sde.quadrature`) at nodes on the PF-ODE path.

    The path is solved QUAD_PATH_TOL = 10x tighter than rtol, atol: the integrand can be far more sensitive to
    x than x itself is to the solver's error (uniform data near its box's faces: at the same tolerance Delta
    was off by 1.2e-3 bits/dim at 1e-5; with the 10x tighter path 2.5e-4). The path needs
    forward passes only, so this is cheap where the scheme pays (the exact divergence at the nodes).

    ``div`` is resolved (probes a tensor [k, B, ...] or None; ``chunk_size`` None: sized per batch of nodes)."""
    divergence, probes, chunk_size, create_graph = div.kind, div.probes, div.chunk_size, div.create_graph
    rtol, atol, method, options, state_dtype = solve.rtol, solve.atol, solve.method, solve.options, solve.state_dtype
    score = CountingScore(score_fn)
    work, shape, B, D = x.dtype, tuple(x.shape), x.shape[0], flat_dim(x)
    keep = create_graph
    probe_calls = 0
    if keep is None:  # does the score reach a parameter that requires grad? one probe row tells
        probe_calls = 1
        with torch.enable_grad():
            x_leaf = x[:1].detach().requires_grad_(True)
            s1 = score(x_leaf, torch.full((1,), eps, dtype=work, device=x.device))
            keep = x.requires_grad or _depends_on_other_leaf(s1, x_leaf)
    if not keep:
        x = x.detach()
    x_state = x.to(state_dtype)  # names: x_state (state dtype), x (work dtype), x_leaf (graph leaf)
    rule = AdaptiveClenshawCurtis(eps, sde.T)
    drift = probability_flow_drift(sde, _PathScore(score, work, keep))
    path: dict[float, torch.Tensor] = {}
    nfe_ode = [0, 0]  # ODE right-hand sides; x-solves

    def solve(x_from, times: list[float], lo: float, hi: float) -> None:
        sol = odeint_clamped(
            drift,
            x_from,
            torch.tensor(times, dtype=state_dtype, device=x.device),
            lo=lo,
            hi=hi,
            rtol=rtol * QUAD_PATH_TOL,
            atol=atol * QUAD_PATH_TOL,
            method=method,
            options=options,  # odeint_clamped makes the last step land on hi
        )
        nfe_ode[0] += sol.nfe
        nfe_ode[1] += 1
        path.update(zip(times, sol.ys.unbind(0)))

    def positions(times: torch.Tensor, panels=()) -> torch.Tensor:
        """x at ``times`` (float64, increasing) on the PF-ODE path. The first solve (eps -> T) also returns the
        nodes of the quadrature tree's first levels (interpolated: no extra NFE). Nodes of deeper panels come
        from short solves across each run of adjacent new panels, started at its known left end, which also
        return every node those panels can ask for later (all their orders)."""
        want = [float(t) for t in times]
        if not path:
            solve(x_state, sorted(set(want) | set(rule.likely_times()) | {eps, sde.T}), eps, sde.T)
        missing = [t for t in want if t not in path]
        if missing:
            runs: list[list[float]] = []  # merged [a, b] of the panels holding missing nodes
            for a, b in sorted(panels):
                if any(a < t <= b for t in missing):
                    if runs and runs[-1][1] >= a:
                        runs[-1][1] = max(runs[-1][1], b)
                    else:
                        runs.append([a, b])
            for a, b in runs:
                inside = {t for p in panels if a <= p[0] and p[1] <= b for t in rule.nodes(p[0], p[1], rule.n_max)}
                inside |= {t for t in missing if a < t <= b}
                solve(path[a], sorted(inside | {a, b}), a, b)
        return torch.stack([path[t] for t in want])

    nodes_per_call = max(1, 2**20 // (B * D))
    vjp = _VJP()
    probes_work = None if probes is None else probes.to(work)

    def integrand(times: torch.Tensor, panels=()) -> torch.Tensor:
        """-1/2 g(t)^2 div s(x(t), t) at the nodes, [m, B] in the state dtype (nodes batched into one score call
        of up to ``nodes_per_call`` * B rows)."""
        x_path = positions(times, panels)  # [m, B, ...] in the state dtype
        vjp.basis.clear()  # one-hot cotangents are cached per row count m B: keep only this round's
        out = []
        for c in range(0, len(times), nodes_per_call):
            tc = times[c : c + nodes_per_call].to(device=x.device)
            m = tc.numel()
            x_nodes = x_path[c : c + m].reshape(m * B, *shape[1:]).to(work)
            tr = tc.repeat_interleave(B)
            with torch.enable_grad():
                x_leaf = x_nodes if keep and x_nodes.requires_grad else x_nodes.detach().requires_grad_(True)
                s = score(x_leaf, tr.to(work))
                if not s.requires_grad:
                    div_s = _no_graph_divergence(score.fn, s, x_leaf, tr.to(work))
                elif divergence == "exact":
                    chunk = chunk_size or max(1, min(D, 2**22 // (m * B * D)))
                    div_s = _divergence_exact(s, x_leaf, vjp, keep, chunk, state_dtype)
                else:
                    reps = (1, m) + (1,) * (len(shape) - 1)
                    div_s = _divergence_hutchinson(
                        s, x_leaf, probes_work.repeat(*reps), probes.to(state_dtype).repeat(*reps), vjp, keep
                    )
            if not keep:
                div_s = div_s.detach()
            out.append((-0.5 * sde.g2(tr) * div_s.to(state_dtype)).reshape(m, B))
        return torch.cat(out)

    res = rule.integrate(integrand, rtol, atol)
    z = positions(torch.tensor([sde.T], dtype=torch.float64))[0].view(shape)
    ends = torch.tensor([eps, sde.T], dtype=torch.float64)
    la = sde.log_alpha(ends)
    delta = res.value + D * (la[1] - la[0]).to(device=x.device, dtype=state_dtype)
    if not res.converged:
        warnings.warn(
            f"log_likelihood: the quadrature of Delta did not reach rtol = {rtol:g}, atol = {atol:g} "
            f"(estimated error up to {float(res.error.max()):.3g} nats against a tolerance of "
            f"{float(res.tolerance.min()):.3g}) with {len(res.orders)} panels (limit {rule.max_panels}); "
            "the result is less accurate than asked (try scheme='augmented')",
            RuntimeWarning,
            stacklevel=4,
        )
    info = {
        "scheme": "quadrature",
        "nfe_ode": nfe_ode[0],
        "ode_solves": nfe_ode[1],
        "nodes": res.evaluations,
        "score_calls": score.nfe,
        "delta_error": res.error.detach(),
        "orders": res.orders,
    }
    return z, delta, nfe_ode[0] + res.evaluations + probe_calls, info


