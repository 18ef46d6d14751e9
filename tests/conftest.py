"""Shared test setup.

Without a CUDA device the Triton kernels run on CPU tensors through Triton's interpreter, which
must be switched on before the first @triton.jit is evaluated: set it here, before any test
module imports fasttrack.kernels.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

HAS_CUDA = torch.cuda.is_available()

# Under pytest-xdist (the README's test command runs two workers on CI's two cores) each worker
# gets one torch thread: two workers of two threads each would fight over the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    """A generator with a fresh seed per test; the seed is printed so a failure can be replayed."""
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"rng seed: {seed}")
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True)
def _fresh_dispatch_cache():
    """Each test starts with an empty dispatch cache: tests monkeypatch backends' reasons."""
    from fasttrack.ops import dispatch
    dispatch.clear_cache()
    yield
    dispatch.clear_cache()


@pytest.fixture
def one_thread():
    """One torch thread for the test (timing- and training-heavy tests share the CPU)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
