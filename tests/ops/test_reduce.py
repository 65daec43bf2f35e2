"""Reductions against numpy: axis None / one axis / a tuple / negative axes, with and without keepdims; and the
running sum (cumsum) by axis and accumulation dtype, each cumsum case also run through an engine plan."""

import numpy as np
import pytest
import torch

from engine_cases import check_case_in_engine
from helpers import case, check_case, randn

FP32 = torch.float32


def np_reduce(fn, axis=None, keepdims=False, **kw):
    """numpy's reduction of the input, as a tensor of numpy's result dtype (float32 stays float32)."""

    def expected(x):
        return torch.from_numpy(np.asarray(fn(x.numpy(), axis=axis, keepdims=keepdims, **kw)))

    return expected


def _attrs(axis, keepdims):
    return {"axis": axis, "keepdims": keepdims}


# (op, numpy function); each runs through the same axis variants
_REDUCTIONS = [
    ("sum", np.sum),
    ("prod", np.prod),
    ("max", np.max),
    ("min", np.min),
    ("mean", np.mean),
    ("variance", np.var),
]
_AXES = [
    ("axis-none", None, False),
    ("axis-none-keepdims", None, True),
    ("axis1", (1,), False),
    ("axis-tuple-0-2-keepdims", (0, 2), True),
    ("axis-negative", (-1,), False),
]

CASES = []
for op, fn in _REDUCTIONS:
    for label, axis, keep in _AXES:
        # prod of many normal samples underflows toward 0: keep values near 1
        make = (lambda: [1 + 0.2 * randn(2, 3, 4)]) if op == "prod" else (lambda: [randn(2, 3, 4)])
        CASES.append(case(f"{op}-{label}", op, make, np_reduce(fn, axis, keep), _attrs(axis, keep), dtype=FP32))

CASES += [
    case(
        "variance-unbiased-axis1",
        "variance",
        lambda: [randn(2, 5, 3)],
        np_reduce(np.var, (1,), False, ddof=1),
        {"axis": (1,), "unbiased": True},
        dtype=FP32,
    ),
    case(
        "variance-unbiased-axis-none",
        "variance",
        lambda: [randn(3, 4)],
        np_reduce(np.var, None, False, ddof=1),
        {"unbiased": True},
        dtype=FP32,
    ),
    case(
        "sum-int64-axis0", "sum", lambda: [torch.arange(12).reshape(3, 4) - 5], np_reduce(np.sum, (0,)), {"axis": (0,)}
    ),
    case(
        "max-int32-axis1-keepdims",
        "max",
        lambda: [torch.tensor([[3, -1, 7], [0, 9, -4]], dtype=torch.int32)],
        np_reduce(np.max, (1,), True),
        _attrs((1,), True),
    ),
    case(
        "prod-axis-tuple-1-2",
        "prod",
        lambda: [1 + 0.2 * randn(2, 3, 4)],
        np_reduce(np.prod, (1, 2)),
        {"axis": (1, 2)},
        dtype=FP32,
    ),
    case(
        "prod-axis-tuple-negative-keepdims",
        "prod",
        lambda: [1 + 0.2 * randn(2, 3, 4)],
        np_reduce(np.prod, (-1, 0), True),
        _attrs((-1, 0), True),
        dtype=FP32,
    ),
    case(
        "mean-fp16-axis-last",
        "mean",
        lambda: [randn(3, 8)],
        lambda x: x.mean(dim=-1),
        {"axis": (-1,)},
        dtype=torch.float16,
    ),
]


def np_arg(fn, axis=None, keepdims=False):
    def expected(x):
        return torch.from_numpy(np.asarray(fn(x.numpy(), axis=axis, keepdims=keepdims)).astype(np.int64))

    return expected


for op, fn in (("argmax", np.argmax), ("argmin", np.argmin)):
    CASES += [
        case(f"{op}-axis1", op, lambda: [randn(3, 5, 4)], np_arg(fn, 1), {"axis": 1}, dtype=FP32),
        case(
            f"{op}-axis-negative-keepdims",
            op,
            lambda: [randn(3, 5, 4)],
            np_arg(fn, -1, True),
            {"axis": -1, "keepdims": True},
            dtype=FP32,
        ),
        case(f"{op}-axis-none-flat-index", op, lambda: [randn(3, 5)], np_arg(fn), dtype=FP32),
        case(
            f"{op}-axis-none-keepdims",
            op,
            lambda: [randn(3, 5)],
            np_arg(fn, None, True),
            {"keepdims": True},
            dtype=FP32,
        ),
        case(f"{op}-int64", op, lambda: [torch.tensor([[4, 9, 1], [7, 2, 8]])], np_arg(fn, 0), {"axis": 0}),
    ]


def np_cumsum(axis, dtype=None):
    """numpy's running sum in `dtype` (None: numpy's own, which widens int32 and bool to int64 as torch does)."""

    def expected(x):
        return torch.from_numpy(np.cumsum(x.numpy(), axis=axis, dtype=dtype))

    return expected


_NEAR_INT32_MAX = lambda: [torch.tensor([[2**31 - 3, 2, 5], [-7, 1, 2**31 - 1]], dtype=torch.int32)]  # noqa: E731
_MASK = lambda: [torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])]  # noqa: E731

# position ids from an attention mask (RoBERTa, OPT, BLOOM), and ONNX's CumSum (the input's dtype, wrapping)
ENGINE_CASES = [
    case("cumsum-axis1", "cumsum", lambda: [randn(3, 4, 5)], np_cumsum(1), {"axis": 1}, dtype=FP32),
    case("cumsum-negative-axis", "cumsum", lambda: [randn(3, 4, 5)], np_cumsum(2), {"axis": -1}, dtype=FP32),
    case("cumsum-int64-mask", "cumsum", _MASK, np_cumsum(1), {"axis": 1}),
    case(
        "cumsum-int64-negative-values-axis0",
        "cumsum",
        lambda: [torch.arange(12).reshape(3, 4) - 7],
        np_cumsum(0),
        {"axis": 0},
    ),
    case("cumsum-int32-widens-to-int64", "cumsum", _NEAR_INT32_MAX, np_cumsum(1), {"axis": 1}),
    case("cumsum-dtype-int32-wraps", "cumsum", _NEAR_INT32_MAX, np_cumsum(1, np.int32), {"axis": 1, "dtype": "int32"}),
    case(
        "cumsum-bool-counts",
        "cumsum",
        lambda: [torch.tensor([[True, False, True], [False, True, True]])],
        np_cumsum(-1),
        {"axis": -1},
    ),
    case("cumsum-dtype-float32-from-int64", "cumsum", _MASK, np_cumsum(1, np.float32), {"axis": 1, "dtype": "float32"}),
    case(
        "cumsum-dtype-float32-from-fp16",
        "cumsum",
        lambda: [randn(2, 6)],
        lambda x: torch.from_numpy(np.cumsum(x.float().numpy(), axis=1)),
        {"axis": 1, "dtype": "float32"},
        dtype=torch.float16,
    ),
]
CASES += ENGINE_CASES


@pytest.mark.parametrize("c", CASES)
def test_reduce(c):
    check_case(c)


@pytest.mark.parametrize("c", ENGINE_CASES)
def test_reduce_in_engine(c):
    check_case_in_engine(c)


def test_cumsum_refuses_a_bool_running_sum():
    from tensorforge.ir import Graph, TensorType
    from tensorforge.ir.registry import ShapeInferenceError

    g = Graph()
    x = g.add_input("x", TensorType("int64", (3, 4)))
    with pytest.raises(ShapeInferenceError, match="a running sum cannot be bool"):
        g.call("cumsum", x, axis=1, dtype="bool")
