"""Shared test set-up: one intra-op thread per test, so that results and run time do not depend on how busy the
machine is.

Two OpenMP threads competing with another process for two cores run small tensor operations many times slower
than one thread; the tests use small tensors throughout, where a second thread gains little. Code under test that
sets its own thread count (`--threads`) is undone after each test.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
