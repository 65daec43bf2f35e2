"""Matrix products against nn.Linear, the @ operator and einsum: nn.dense, matmul, nn.batch_matmul."""

import pytest
import torch
import torch.nn as nn

from helpers import case, check_case, randn

FP32, FP16, BF16 = torch.float32, torch.float16, torch.bfloat16


def _linear(x, w):
    module = nn.Linear(w.shape[1], w.shape[0], bias=False).to(w.dtype)
    module.weight.data.copy_(w)
    return module(x)


CASES = [
    *[
        case("dense-2d", "nn.dense", lambda: [randn(4, 8), randn(5, 8)], _linear, dtype=dt, const=(1,))
        for dt in (FP32, FP16, BF16)
    ],
    case("dense-3d-tokens", "nn.dense", lambda: [randn(2, 3, 8), randn(6, 8)], _linear, dtype=FP32, const=(1,)),
    case(
        "dense-weight-as-input",
        "nn.dense",
        lambda: [randn(3, 4), randn(2, 4)],
        lambda x, w: torch.einsum("nk,mk->nm", x, w),
        dtype=FP32,
    ),
    *[
        case("matmul-2d", "matmul", lambda: [randn(4, 6), randn(6, 3)], lambda a, b: a @ b, dtype=dt)
        for dt in (FP32, FP16, BF16)
    ],
    case(
        "matmul-batched-broadcast",
        "matmul",
        lambda: [randn(2, 3, 4, 5), randn(5, 6)],
        lambda a, b: torch.einsum("xyik,kj->xyij", a, b),
        dtype=FP32,
    ),
    case(
        "matmul-batch-dims-broadcast",
        "matmul",
        lambda: [randn(2, 1, 4, 5), randn(3, 5, 2)],
        lambda a, b: torch.einsum("xzik,ykj->xyij", a, b),
        dtype=FP32,
    ),  # z has size 1
    case(
        "matmul-vector-matrix",
        "matmul",
        lambda: [randn(5), randn(5, 3)],
        lambda a, b: torch.einsum("k,kj->j", a, b),
        dtype=FP32,
    ),
    case(
        "matmul-matrix-vector",
        "matmul",
        lambda: [randn(4, 5), randn(5)],
        lambda a, b: torch.einsum("ik,k->i", a, b),
        dtype=FP32,
    ),
    case(
        "matmul-int64",
        "matmul",
        lambda: [torch.tensor([[1, 2], [3, 4]]), torch.tensor([[5], [6]])],
        lambda a, b: torch.tensor([[17], [39]]),
    ),
    *[
        case(
            "batch_matmul-transpose_b",
            "nn.batch_matmul",
            lambda: [randn(2, 3, 4), randn(2, 5, 4)],
            lambda a, b: torch.einsum("bik,bjk->bij", a, b),
            dtype=dt,
        )
        for dt in (FP32, FP16)
    ],
    case(
        "batch_matmul-plain",
        "nn.batch_matmul",
        lambda: [randn(2, 3, 4), randn(2, 4, 5)],
        lambda a, b: torch.einsum("bik,bkj->bij", a, b),
        {"transpose_b": False},
        dtype=FP32,
    ),
    case(
        "batch_matmul-transpose_a",
        "nn.batch_matmul",
        lambda: [randn(2, 4, 3), randn(2, 4, 5)],
        lambda a, b: torch.einsum("bki,bkj->bij", a, b),
        {"transpose_a": True, "transpose_b": False},
        dtype=FP32,
    ),
    case(
        "batch_matmul-transpose-both",
        "nn.batch_matmul",
        lambda: [randn(2, 4, 3), randn(2, 5, 4)],
        lambda a, b: torch.einsum("bki,bjk->bij", a, b),
        {"transpose_a": True, "transpose_b": True},
        dtype=FP32,
    ),
]


@pytest.mark.parametrize("c", CASES)
def test_linalg(c):
    check_case(c)
