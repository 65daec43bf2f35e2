"""Elementwise ops against PyTorch eager: unary math and activations, binary arithmetic, clip, cast, where.

Expected values come from nn modules, Tensor operators, closed formulas or numpy, so a wrong mapping
(say `floor_divide` to truncation, or `hardsigmoid` to sigmoid) shows up as a value mismatch.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from engine_cases import check_case_in_engine
from helpers import case, check_case, randn, uniform

FP32, FP16, BF16 = torch.float32, torch.float16, torch.bfloat16


def _np(fn):
    """Expected value from a numpy function of the inputs, back as a tensor of the first input's dtype."""
    return lambda *xs: torch.from_numpy(np.asarray(fn(*(x.numpy() for x in xs)))).to(xs[0].dtype)


def _relu6(x):
    return torch.clamp(x, 0, 6)


# unary ops: (IR op, id, input maker, expected)
UNARY = [
    ("nn.relu", "relu", lambda: [randn(3, 5)], lambda x: nn.ReLU()(x)),
    ("sigmoid", "sigmoid", lambda: [randn(3, 5)], lambda x: 1 / (1 + torch.exp(-x))),
    ("tanh", "tanh", lambda: [randn(3, 5)], nn.Tanh()),
    ("exp", "exp", lambda: [randn(3, 5)], _np(np.exp)),
    ("log", "log", lambda: [uniform(0.1, 5, 3, 5)], _np(np.log)),
    ("sqrt", "sqrt", lambda: [uniform(0.1, 5, 3, 5)], _np(np.sqrt)),
    ("rsqrt", "rsqrt", lambda: [uniform(0.1, 5, 3, 5)], _np(lambda x: 1 / np.sqrt(x))),
    ("abs", "abs", lambda: [randn(3, 5)], _np(np.abs)),
    ("negative", "negative", lambda: [randn(3, 5)], lambda x: -x),
    ("sin", "sin", lambda: [randn(3, 5)], _np(np.sin)),
    ("cos", "cos", lambda: [randn(3, 5)], _np(np.cos)),
    ("tan", "tan", lambda: [uniform(-1.2, 1.2, 3, 5)], _np(np.tan)),
    ("atan", "atan", lambda: [randn(3, 5) * 3], _np(np.arctan)),
    ("ceil", "ceil", lambda: [randn(3, 5) * 3], _np(np.ceil)),
    ("floor", "floor", lambda: [randn(3, 5) * 3], _np(np.floor)),
    # halves round to even, as in numpy
    (
        "round",
        "round-half-even",
        lambda: [torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.4, -0.6])],
        lambda x: torch.tensor([-2.0, -2.0, -0.0, 0.0, 2.0, 2.0, 0.0, -1.0]),
    ),
    ("sign", "sign", lambda: [torch.tensor([-3.0, 0.0, 2.5, -0.1])], _np(np.sign)),
    (
        "reciprocal",
        "reciprocal",
        lambda: [uniform(0.5, 3, 3, 5) * torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0])],
        _np(lambda x: 1 / x),
    ),
    ("erf", "erf", lambda: [randn(3, 5)], lambda x: x.clone().apply_(math.erf)),
    ("logical_not", "logical_not", lambda: [torch.tensor([True, False, True])], lambda x: ~x),
    ("nn.silu", "silu", lambda: [randn(3, 5)], lambda x: x * torch.sigmoid(x)),
    ("nn.mish", "mish", lambda: [randn(3, 5)], lambda x: x * torch.tanh(torch.log1p(torch.exp(x)))),
    ("nn.hardswish", "hardswish", lambda: [randn(3, 5) * 4], lambda x: x * _relu6(x + 3) / 6),
    ("nn.hardsigmoid", "hardsigmoid", lambda: [randn(3, 5) * 4], lambda x: _relu6(x + 3) / 6),
    ("nn.softplus", "softplus", lambda: [randn(3, 5) * 3], lambda x: torch.log1p(torch.exp(x))),
]

CASES = [
    case(name, op, make, expected, dtype=None if op == "logical_not" else FP32) for op, name, make, expected in UNARY
]

# binary ops, each with a broadcast in one of its operands
_SIGNS = torch.tensor([1.0, -1.0, 1.0, -1.0])
_A = lambda: [randn(2, 3, 4), randn(3, 1)]  # noqa: E731
_BOOLS = lambda: [torch.tensor([[True, False, True, False]]), torch.tensor([[True], [False]])]  # noqa: E731
BINARY = [
    ("add", "add-broadcast", _A, lambda a, b: a + b),
    ("subtract", "subtract-broadcast", _A, lambda a, b: a - b),
    ("multiply", "multiply-broadcast", _A, lambda a, b: a * b),
    ("divide", "divide-broadcast", lambda: [randn(2, 3, 4), uniform(0.5, 2, 4)], lambda a, b: a / b),
    ("floor_divide", "floor_divide", lambda: [randn(3, 4) * 5, uniform(0.5, 2, 4)], lambda a, b: torch.floor(a / b)),
    ("trunc_divide", "trunc_divide", lambda: [randn(3, 4) * 5, uniform(0.5, 2, 4)], lambda a, b: torch.trunc(a / b)),
    ("floor_mod", "floor_mod", lambda: [randn(3, 4) * 5, uniform(0.5, 2, 4)], _np(np.mod)),
    ("trunc_mod", "trunc_mod-negative-divisors", lambda: [randn(3, 4) * 5, uniform(0.5, 2, 4) * _SIGNS], _np(np.fmod)),
    ("power", "power", lambda: [uniform(0.5, 2, 3, 4), randn(4)], _np(np.power)),
    ("maximum", "maximum-broadcast", _A, _np(np.maximum)),
    ("minimum", "minimum-broadcast", _A, _np(np.minimum)),
]
CASES += [case(name, op, make, expected, dtype=FP32) for op, name, make, expected in BINARY]

# comparisons and logic produce bool
_CMP = lambda: [torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]), torch.tensor([2.0, 2.0, 2.0])]  # noqa: E731
CASES += [
    case("equal", "equal", _CMP, lambda a, b: a == b, dtype=FP32),
    case("not_equal", "not_equal", _CMP, lambda a, b: a != b, dtype=FP32),
    case("less", "less", _CMP, lambda a, b: a < b, dtype=FP32),
    case("less_equal", "less_equal", _CMP, lambda a, b: a <= b, dtype=FP32),
    case("greater", "greater", _CMP, lambda a, b: a > b, dtype=FP32),
    case("greater_equal", "greater_equal", _CMP, lambda a, b: a >= b, dtype=FP32),
    case("logical_and-broadcast", "logical_and", _BOOLS, lambda a, b: a & b),
    case("logical_or-broadcast", "logical_or", _BOOLS, lambda a, b: a | b),
    case("logical_xor-broadcast", "logical_xor", _BOOLS, lambda a, b: a ^ b),
]

# integer arithmetic: floor and truncation differ for negative operands
_INTS = lambda: [torch.tensor([7, -7, 7, -7, 0, 5]), torch.tensor([2, 2, -2, -2, 3, 5])]  # noqa: E731
_pairs = lambda fn: lambda a, b: torch.tensor([fn(x, y) for x, y in zip(a.tolist(), b.tolist())])  # noqa: E731
CASES += [
    case("add-int64", "add", _INTS, lambda a, b: a + b),
    case("floor_divide-int64-negative", "floor_divide", _INTS, _pairs(lambda x, y: x // y)),
    case("trunc_divide-int64-negative", "trunc_divide", _INTS, _pairs(lambda x, y: int(math.trunc(x / y)))),
    case("floor_mod-int64-negative", "floor_mod", _INTS, _pairs(lambda x, y: x % y)),
    case(
        "power-int64", "power", lambda: [torch.tensor([2, 3, -2]), torch.tensor([3, 2, 3])], _pairs(lambda x, y: x**y)
    ),
    # type promotion follows PyTorch: int + float -> float
    case(
        "add-promote-int-float",
        "add",
        lambda: [torch.tensor([1, 2, 3]), torch.tensor([0.5, 0.25, 0.125])],
        lambda a, b: torch.tensor([1.5, 2.25, 3.125]),
    ),
]

# the main ones in reduced precision
for dt in (FP16, BF16):
    CASES += [
        case("add-broadcast", "add", _A, lambda a, b: a + b, dtype=dt),
        case("gelu", "nn.gelu", lambda: [randn(4, 6) * 2], nn.GELU(), dtype=dt),
        case(
            "gelu-tanh",
            "nn.gelu",
            lambda: [randn(4, 6) * 2],
            nn.GELU(approximate="tanh"),
            {"approximate": "tanh"},
            dtype=dt,
        ),
        case("relu", "nn.relu", lambda: [randn(3, 5)], nn.ReLU(), dtype=dt),
        case("silu", "nn.silu", lambda: [randn(3, 5)], nn.SiLU(), dtype=dt),
    ]

_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
CASES += [
    case(
        "gelu", "nn.gelu", lambda: [randn(4, 6) * 2], lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))), dtype=FP32
    ),
    case(
        "gelu-tanh",
        "nn.gelu",
        lambda: [randn(4, 6) * 2],
        lambda x: 0.5 * x * (1 + torch.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3))),
        {"approximate": "tanh"},
        dtype=FP32,
    ),
    case(
        "leaky_relu-default",
        "nn.leaky_relu",
        lambda: [randn(3, 5)],
        lambda x: torch.where(x > 0, x, 0.01 * x),
        dtype=FP32,
    ),
    case("leaky_relu-alpha0.2", "nn.leaky_relu", lambda: [randn(3, 5)], nn.LeakyReLU(0.2), {"alpha": 0.2}, dtype=FP32),
    case(
        "elu-alpha0.5",
        "nn.elu",
        lambda: [randn(3, 5)],
        lambda x: torch.where(x > 0, x, 0.5 * (torch.exp(x) - 1)),
        {"alpha": 0.5},
        dtype=FP32,
    ),
    case("elu-default", "nn.elu", lambda: [randn(3, 5)], nn.ELU(), dtype=FP32),
]


def _prelu(x, alpha):
    module = nn.PReLU(num_parameters=alpha.numel())
    module.weight.data.copy_(alpha)
    return module(x)


CASES += [
    case(
        "prelu-per-channel",
        "nn.prelu",
        lambda: [randn(2, 3, 4, 4), torch.tensor([0.1, 0.5, -0.3])],
        _prelu,
        dtype=FP32,
        const=(1,),
    ),
    case("prelu-shared", "nn.prelu", lambda: [randn(2, 3, 4), torch.tensor([0.25])], _prelu, dtype=FP32, const=(1,)),
    case(
        "clip-both",
        "clip",
        lambda: [randn(3, 5) * 3],
        _np(lambda x: np.clip(x, -1.0, 2.0)),
        {"a_min": -1.0, "a_max": 2.0},
        dtype=FP32,
    ),
    case(
        "clip-min-only",
        "clip",
        lambda: [randn(3, 5) * 3],
        lambda x: torch.where(x < 0.5, 0.5, x),
        {"a_min": 0.5},
        dtype=FP32,
    ),
    case(
        "clip-max-only",
        "clip",
        lambda: [randn(3, 5) * 3],
        lambda x: torch.where(x > 0.5, 0.5, x),
        {"a_max": 0.5},
        dtype=FP32,
    ),
    case(
        "clip-relu6-int",
        "clip",
        lambda: [torch.tensor([-3, 0, 4, 9])],
        lambda x: torch.tensor([0, 0, 4, 6]),
        {"a_min": 0, "a_max": 6},
    ),
]

# cast: the dtype attribute takes IR names and torch dtypes alike
CASES += [
    case(
        "cast-fp32-to-int32-truncates",
        "cast",
        lambda: [torch.tensor([-2.7, -0.5, 0.5, 3.9])],
        lambda x: torch.tensor([-2, 0, 0, 3], dtype=torch.int32),
        {"dtype": "int32"},
    ),
    case("cast-fp32-to-fp16", "cast", lambda: [randn(3, 4)], lambda x: x.half(), {"dtype": "float16"}),
    case(
        "cast-fp32-to-bf16-torch-dtype",
        "cast",
        lambda: [randn(3, 4)],
        lambda x: x.bfloat16(),
        {"dtype": torch.bfloat16},
    ),
    case(
        "cast-int64-to-fp32",
        "cast",
        lambda: [torch.tensor([1, -2, 3])],
        lambda x: torch.tensor([1.0, -2.0, 3.0]),
        {"dtype": "float32"},
    ),
    case(
        "cast-fp32-to-bool",
        "cast",
        lambda: [torch.tensor([0.0, -1.0, 0.5])],
        lambda x: torch.tensor([False, True, True]),
        {"dtype": "bool"},
    ),
]

# where: condition, x and y broadcast against each other
CASES += [
    case(
        "where-broadcast",
        "where",
        lambda: [randn(3, 1) > 0, randn(1, 4), randn(4)],
        lambda c, x, y: torch.from_numpy(np.where(c.numpy(), x.numpy(), y.numpy())),
        dtype=FP32,
    ),
    case(
        "where-scalar-like-y",
        "where",
        lambda: [torch.tensor([True, False, True]), randn(2, 3), torch.zeros(())],
        lambda c, x, y: torch.from_numpy(np.where(c.numpy(), x.numpy(), 0.0).astype(np.float32)),
        dtype=FP32,
    ),
]


# ops added for Swin (roll's index arithmetic), each also run through an engine plan below
ENGINE_CASES = [
    case(
        "trunc_mod-scalar-divisor", "trunc_mod", lambda: [randn(3, 4) * 5, torch.tensor(-0.7)], _np(np.fmod), dtype=FP32
    ),
    case("trunc_mod-int64-negative", "trunc_mod", _INTS, _pairs(lambda x, y: int(math.fmod(x, y)))),
    case(
        "trunc_mod-fp16",
        "trunc_mod",
        lambda: [randn(3, 4) * 5, uniform(0.5, 2, 4) * _SIGNS],
        lambda a, b: (a.float() - torch.trunc(a.float() / b.float()) * b.float()).half(),
        dtype=FP16,
    ),
]
CASES += ENGINE_CASES


@pytest.mark.parametrize("c", CASES)
def test_elementwise(c):
    check_case(c)


@pytest.mark.parametrize("c", ENGINE_CASES)
def test_elementwise_in_engine(c):
    check_case_in_engine(c)
