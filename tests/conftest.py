"""Shared test set-up: one intra-op thread per test, so that results and run time do not depend on how busy the
machine is; freed CPU memory kept for reuse, as the entry scripts do (``utils.cpu_memory``); the one way to find
the reference data (``reference_file``).

Two OpenMP threads competing with another process for two cores run small tensor operations many times slower
than one thread; the tests use small tensors throughout, where a second thread gains little. Code under test that
sets its own thread count (`--threads`) is undone after each test.
"""

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from utils.cpu_memory import keep_freed_memory

REPOSITORY = Path(__file__).resolve().parents[1]
keep_freed_memory()


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reference_dir() -> Path:
    """Folder of torchvision's reference data: ``$STEREO_REFERENCE_DIR``, else ``shared/reference`` next to the
    repository (``../shared/reference`` from its root)."""
    return Path(os.environ.get("STEREO_REFERENCE_DIR", REPOSITORY.parent / "shared" / "reference"))


@pytest.fixture(scope="session")
def reference_file() -> Callable[[str], Path]:
    """``reference_file("crestereo/ref_a_forward.pt")`` -> its path. A missing file fails the test when ``CI`` is
    set (CI exists to run the reproductions) and skips it otherwise, saying where to put the data."""

    def find(relative: str) -> Path:
        path = reference_dir() / relative
        if not path.is_file():
            message = (
                f"reference file {path} is missing: put the reference data in {reference_dir()} "
                "(shared/reference next to the repository) or set STEREO_REFERENCE_DIR to its folder"
            )
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        return path

    return find
