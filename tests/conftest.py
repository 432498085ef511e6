"""Fixtures shared by the whole suite."""

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture
def one_thread():
    """One torch and BLAS thread: the tests' models and steps are tiny, where threads only
    contend, and one thread keeps timings robust on a busy machine. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)
