"""Every sampler reproduces the 2-D mixture under the VE SDE (see test_samplers_mixture.py)."""

import pytest

from tests.test_samplers_mixture import SAMPLERS, run_and_check


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_reproduces_mixture_ve(name):
    run_and_check(name, "ve")
