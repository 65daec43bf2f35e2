"""Shared pytest setup. Its presence also puts tests/ on sys.path, so test modules can `import helpers`."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic():
    """Every test starts from the same random state, so a failure reproduces alone and in the suite."""
    torch.manual_seed(0)
    yield
