"""The adaptive back-ends (``ode`` through torchdiffeq, ``sde`` through torchsde) record and call back
like the fixed-grid samplers: states at their save times, with Tweedie x_0 estimates."""

import pytest
import torch

import score_sde as ss
from score_sde.solvers.ode import SAVE_POINTS
from tests.problems import SDES, mixture_2d


@pytest.mark.parametrize("sampler, opts", [("ode", {}), ("ode", {"steps": 6}), ("sde", {"steps": 12})])
def test_adaptive_record_and_callback(sampler, opts):
    gmm, sde = mixture_2d(), SDES["vp"]()
    f = gmm.score_fn(sde)
    x_T = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    seen = []

    def run(**kw):
        return ss.sample(sde, f, x_T=x_T, sampler=sampler, generator=torch.Generator().manual_seed(1), **opts, **kw)

    res = run(record=True, callback=lambda i, t, x, x0: seen.append((i, float(t), x, x0)))
    n = opts.get("steps", SAVE_POINTS)
    assert len(res.trajectory) == len(res.x0_preds) == len(seen) == n
    assert torch.equal(res.trajectory[-1], res.x)
    assert [s[0] for s in seen] == list(range(n))  # increasing i
    ts = [s[1] for s in seen]
    assert all(a > b for a, b in zip(ts, ts[1:])) and ts[-1] == pytest.approx(sde.default_eps)
    assert all(torch.equal(s[2], x) for s, x in zip(seen, res.trajectory))
    # the x_0 estimates are Tweedie's from the exact score at the saved state (here: the exact posterior mean)
    for (_, t, x, x0), x0_rec in zip(seen, res.x0_preds):
        assert x0 is x0_rec
        assert torch.allclose(x0, gmm.denoise(x, torch.tensor(t, dtype=torch.float64), sde), atol=1e-8)
    assert res.info["observer_nfe"] == n
    # observing changes nothing: same samples, same solver NFE
    plain = run()
    assert torch.equal(plain.x, res.x) and plain.nfe == res.nfe
    assert "observer_nfe" not in plain.info and not plain.trajectory


def test_sde_record_with_per_sample_generators():
    gmm, sde = mixture_2d(), SDES["ve"]()
    f = gmm.score_fn(sde)
    x_T = sde.prior_sampling((3, 2), generator=torch.Generator().manual_seed(0))
    gens = [torch.Generator().manual_seed(s) for s in range(3)]
    res = ss.sample(sde, f, x_T=x_T, sampler="sde", steps=8, record=True, generator=gens)
    gens = [torch.Generator().manual_seed(s) for s in range(3)]
    plain = ss.sample(sde, f, x_T=x_T, sampler="sde", steps=8, generator=gens)
    assert len(res.trajectory) == 8 and res.trajectory[0].shape == (3, 2)
    assert torch.equal(res.trajectory[-1], res.x) and torch.equal(plain.x, res.x)
