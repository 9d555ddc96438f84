"""The NaN/inf watch of every solve (score_sde.utils.FiniteWatch / ScoreGuard): CPU outputs are held and summed
together, so these tests pin that the first non-finite one is still named exactly."""

import math
import warnings

import pytest
import torch

import score_sde as ss
from score_sde.utils import FiniteWatch, ScoreGuard


@pytest.mark.parametrize("hold", [1, 7, 1 << 16])
@pytest.mark.parametrize("bad_at", [0, 3, 40, 99])
def test_the_first_non_finite_tensor_is_named_whatever_the_hold(hold, bad_at):
    watch = FiniteWatch()
    watch.HOLD = hold
    for i in range(100):
        v = torch.ones(4, 3) * i
        if i >= bad_at:
            v[i % 4, 1] = float("nan") if i % 2 else float("inf")
        watch.see(v, torch.tensor(1.0 - i / 100))
    assert watch.first_bad() == bad_at
    assert watch.first_time() == pytest.approx(1.0 - bad_at / 100)


def test_finite_tensors_whose_total_overflows_are_not_reported():
    watch = FiniteWatch()
    for _ in range(8):
        watch.see(torch.full((16,), 3e38), 0.5)  # each finite; their sum overflows float32
    assert watch.first_bad() is None and watch.first_time() is None


def test_shapes_dtypes_and_half_precision_mixed():
    watch = FiniteWatch()
    watch.see(torch.ones(2, 3), 0.9)
    watch.see(torch.ones(5, dtype=torch.float64), 0.8)
    watch.see(torch.full((4,), 60000.0, dtype=torch.float16), 0.7)  # a float16 sum would overflow
    watch.see(torch.tensor([1.0, float("nan")], dtype=torch.bfloat16), 0.6)
    watch.see(torch.tensor([float("nan")]), 0.5)
    assert watch.first_bad() == 3 and watch.first_time() == pytest.approx(0.6)


def test_a_watch_that_found_one_stops_holding():
    watch = FiniteWatch()
    watch.HOLD = 2
    watch.see(torch.tensor([float("nan"), 0.0]), 0.3)
    assert watch.first_bad() == 0
    for _ in range(1000):
        watch.see(torch.ones(8), 0.1)
    assert watch._held == [] and watch.first_bad() == 0 and watch.calls == 1001


def test_gradients_are_not_kept_alive_by_held_tensors():
    w = torch.ones(3, requires_grad=True)
    watch = FiniteWatch()
    out = w * 2
    watch.see(out, 0.5)
    assert not watch._held[0][1].requires_grad  # held detached: the graph is not held
    assert watch.first_bad() is None


def test_guard_names_the_first_nan_of_a_long_fixed_grid_run():
    """1000 steps of a score that turns NaN at the 613th call: the warning names that evaluation and its time."""
    calls = [0]

    def score(x, t):
        calls[0] += 1
        return torch.full_like(x, float("nan")) if calls[0] >= 613 else -x

    grid = ss.make_grid(ss.VPSDE(), "uniform", 1000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ss.sample(ss.VPSDE(), score, (4, 2), sampler="euler_maruyama", grid=grid)
    msg = [str(w.message) for w in caught if issubclass(w.category, ss.NonFiniteScoreWarning)]
    assert len(msg) == 1 and "evaluation 613)" in msg[0], msg
    t = float(msg[0].split("first at t = ")[1].split(",")[0])
    assert math.isclose(t, float(grid[612]), rel_tol=1e-5)


def test_guard_still_checks_type_and_shape_at_every_call():
    guard = ScoreGuard(lambda x, t: x[:, :1] if t[0] < 0.5 else x, "test")
    x = torch.ones(3, 2)
    guard(x, torch.full((3,), 0.9))
    with pytest.raises(ValueError, match=r"returned shape \(3, 1\) for x of shape \(3, 2\)"):
        guard(x, torch.full((3,), 0.1))
