"""Bad input gets a ValueError naming the value (one test per case)."""

import math

import pytest
import torch

import score_sde as ss


def test_t_outside_range():
    sde = ss.VPSDE()
    with pytest.raises(ValueError, match=r"t must lie in \[0.*1.5"):
        sde.marginal_prob(torch.zeros(2, 3), torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="-0.1"):
        sde.sde(torch.zeros(2, 3), torch.tensor([-0.1, 0.2]))


def test_non_finite_x():
    sde = ss.VESDE()
    x = torch.zeros(2, 3)
    x[1, 2] = math.nan
    with pytest.raises(ValueError, match=r"x must be finite; x\[1, 2\] = nan"):
        sde.marginal_prob(x, 0.5)


def test_batch_sizes_differ():
    sde = ss.VPSDE()
    with pytest.raises(ValueError, match=r"shape \[B\] = \[4\].*\(3,\)"):
        sde.marginal_prob(torch.zeros(4, 2), torch.rand(3))


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, 1.5])
def test_betas_not_in_unit_interval(bad):
    betas = torch.linspace(1e-4, 0.02, 10)
    betas[3] = bad
    with pytest.raises(ValueError, match=rf"betas\[3\] = {bad}"):
        ss.VPSDE.from_betas(betas)


def test_sigma_min_not_below_sigma_max():
    with pytest.raises(ValueError, match="sigma_min = 50.*sigma_max = 50"):
        ss.VESDE(sigma_min=50.0, sigma_max=50.0)
    with pytest.raises(ValueError, match="sigma_min = 2.*sigma_max = 1"):
        ss.VESDE(sigma_min=2.0, sigma_max=1.0)


def test_bad_schedule_and_prediction_names():
    with pytest.raises(ValueError, match="schedule = 'quad'"):
        ss.VPSDE(schedule="quad")
    with pytest.raises(ValueError, match="'noise'"):
        ss.ScoreModel(lambda x, t: x, ss.VPSDE(), prediction="noise")
    with pytest.raises(ValueError, match="'steps'"):
        ss.ScoreModel(lambda x, t: x, ss.VPSDE(), time_labels="steps")
