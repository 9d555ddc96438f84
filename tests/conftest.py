import os

import pytest
import torch

# One torch thread for the whole session (unless OMP_NUM_THREADS says otherwise). The suite's tensors are small:
# a second OpenMP thread mostly adds synchronisation, and on a shared machine spinning. It also makes a test's
# cost independent of the order of the files: the fixtures of test_evaluate_cli.py, test_evaluation_fd_digits.py
# and test_workdir_safety.py set one thread without restoring it, so before this every file after them ran on
# one thread and every file before them on all cores.
if not os.environ.get("OMP_NUM_THREADS"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _float64_and_seed():
    """Numerical tests run in float64 with a fixed seed (restored afterwards)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(old)
