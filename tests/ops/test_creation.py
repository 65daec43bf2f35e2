"""arange, full and full_like against Python ranges and numpy.full."""

import numpy as np
import pytest
import torch

from helpers import case, check_case, randn

CASES = [
    case("arange-stop", "arange", lambda: [], lambda: torch.tensor(list(range(5))), {"stop": 5}),
    case(
        "arange-start-stop-step",
        "arange",
        lambda: [],
        lambda: torch.tensor(list(range(2, 11, 3))),
        {"start": 2, "stop": 11, "step": 3},
    ),
    case(
        "arange-negative-step",
        "arange",
        lambda: [],
        lambda: torch.tensor(list(range(5, -3, -2))),
        {"start": 5, "stop": -3, "step": -2},
    ),
    case(
        "arange-int32",
        "arange",
        lambda: [],
        lambda: torch.tensor([0, 1, 2], dtype=torch.int32),
        {"stop": 3, "dtype": "int32"},
    ),
    case(
        "arange-float32",
        "arange",
        lambda: [],
        lambda: torch.from_numpy(np.arange(0.0, 1.0, 0.25, dtype=np.float32)),
        {"start": 0.0, "stop": 1.0, "step": 0.25, "dtype": "float32"},
    ),
    case(
        "full-default-zeros",
        "full",
        lambda: [],
        lambda: torch.from_numpy(np.zeros((2, 3), np.float32)),
        {"shape": (2, 3)},
    ),
    case(
        "full-value-float16",
        "full",
        lambda: [],
        lambda: torch.from_numpy(np.full((3,), 2.5, np.float16)),
        {"shape": (3,), "fill_value": 2.5, "dtype": "float16"},
    ),
    case(
        "full-int64",
        "full",
        lambda: [],
        lambda: torch.from_numpy(np.full((2, 2), 7, np.int64)),
        {"shape": (2, 2), "fill_value": 7, "dtype": "int64"},
    ),
    case(
        "full-bool",
        "full",
        lambda: [],
        lambda: torch.from_numpy(np.full((4,), True)),
        {"shape": (4,), "fill_value": True, "dtype": "bool"},
    ),
    case("full-scalar-shape", "full", lambda: [], lambda: torch.tensor(-1.0), {"shape": (), "fill_value": -1.0}),
    case(
        "full_like-keeps-dtype",
        "full_like",
        lambda: [randn(2, 3).half()],
        lambda x: torch.from_numpy(np.full((2, 3), 3.0, np.float16)),
        {"fill_value": 3.0},
    ),
    case(
        "full_like-int-input",
        "full_like",
        lambda: [torch.arange(4)],
        lambda x: torch.from_numpy(np.full((4,), 0, np.int64)),
    ),
    case(
        "full_like-dtype-int32",
        "full_like",
        lambda: [randn(2, 3)],
        lambda x: torch.from_numpy(np.full((2, 3), 4, np.int32)),
        {"fill_value": 4, "dtype": "int32"},
    ),
    case(
        "full_like-fp32",
        "full_like",
        lambda: [randn(3, 1)],
        lambda x: torch.from_numpy(np.full((3, 1), -0.5, np.float32)),
        {"fill_value": -0.5},
        dtype=torch.float32,
    ),
]


@pytest.mark.parametrize("c", CASES)
def test_creation(c):
    check_case(c)
