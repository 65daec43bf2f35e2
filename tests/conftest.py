"""Shared pytest setup. Its presence also puts tests/ on sys.path, so test modules can `import helpers`."""

import os

import pytest
import torch


def pytest_configure(config):
    """Under pytest-xdist (`-n N`), each worker takes its share of the cores for PyTorch's threads: N workers of
    all the cores each would oversubscribe the machine and spin."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))


@pytest.fixture(autouse=True)
def _deterministic():
    """Every test starts from the same random state, so a failure reproduces alone and in the suite."""
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` skip cleanly on machines without CUDA (CI); on a GPU machine they run."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
