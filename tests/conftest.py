"""Shared pytest setup. Its presence also puts tests/ on sys.path, so test modules can `import helpers`."""

import pytest
import torch


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
