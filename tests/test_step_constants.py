"""Per-step constants kept between fixed-grid runs (score_sde.solvers.constants): a run that finds them kept gives
exactly the numbers of a run that makes them, and tables of other grids or dtypes are never handed out."""

import pytest
import torch

import score_sde as ss
from score_sde.solvers import constants


@pytest.mark.parametrize("sampler", ["ancestral", "euler_maruyama", "pc", "ddim", "dpm_solver_2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kept_tables_give_the_numbers_of_fresh_ones(sampler, dtype):
    sde = ss.VPSDE()
    x_T = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=dtype)

    def run(grid):
        return ss.sample(
            sde, lambda x, t: -x, x_T=x_T, grid=grid, sampler=sampler, generator=torch.Generator().manual_seed(1)
        ).x

    grid = ss.make_grid(sde, "uniform", 12)
    constants.clear()
    fresh = run(grid)
    again = run(grid.clone())  # the same values in another tensor: the kept tables
    assert torch.equal(fresh, again)
    other = run(ss.make_grid(sde, "quadratic", 12))  # other values: other tables
    constants.clear()
    assert torch.equal(other, run(ss.make_grid(sde, "quadratic", 12)))


def test_tables_of_other_dtypes_batches_and_grids_are_apart():
    sde = ss.VPSDE()
    constants.clear()
    p32 = ss.solvers.Problem(sde, ss.solvers.CountingScore(lambda x, t: x))
    g = ss.make_grid(sde, "uniform", 4)
    p32.set_grid(g, torch.zeros(2, 1, dtype=torch.float32))
    p64 = ss.solvers.Problem(sde, ss.solvers.CountingScore(lambda x, t: x))
    p64.set_grid(g, torch.zeros(2, 1, dtype=torch.float64))
    assert p32.tvecs[0].dtype == torch.float32 and p32.tvecs[0].shape == (2,)
    assert p64.tvecs[0].dtype == torch.float64 and p64.tvecs[0].shape == (2,)
    p64.set_grid(g, torch.zeros(3, 1, dtype=torch.float64))
    assert p64.tvecs[0].shape == (3,)
    p64.set_grid(g * 0.5, torch.zeros(3, 1, dtype=torch.float64))
    assert float(p64.times[0]) == pytest.approx(0.5 * float(g[0]))


def test_the_kept_tables_are_bounded():
    constants.clear()
    for k in range(3 * constants.KEEP):
        constants.kept(("k", k), lambda k=k: [k])
    assert len(constants._tables) == constants.KEEP
    assert constants.kept(("k", 3 * constants.KEEP - 1), lambda: None) == [3 * constants.KEEP - 1]
