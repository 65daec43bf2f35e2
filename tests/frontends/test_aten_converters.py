"""Every ATen converter, one small module per case: `from_torch` must produce the IR op the case names and no
opaque node (unless the case says which one to expect), and `ir.execute` must match PyTorch eager on the same
module within the tolerance of the output dtype.

Cases convert with a dynamic batch (traced at batch 2, run at 2 and 3) unless they say otherwise; a few more run
with `dynamic_batch=False`. Cases that take equal inputs share one `from_torch` call (see `convert_cases`) and are
checked on their own outputs and nodes. `test_every_aten_converter_has_a_case` records which converters really
produced IR and fails for any registered ATen converter that no case reaches.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._pytree import tree_leaves

from helpers import assert_close
from tensorforge import ir
from tensorforge.frontends import converters, from_torch
from tensorforge.frontends.converters import registered_names
from tensorforge.ir import Sym, TensorType
from tensorforge.ir.execute import bind_symbols

FP16 = torch.float16
TRACE_BATCH, OTHER_BATCH = 2, 3

_GEN = torch.Generator().manual_seed(0)  # weights and index buffers built at import, the same on every run


def const(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_GEN)


# -- inputs: each maps a batch size to one input tensor; equal specs build equal inputs ------------------------


@dataclass(frozen=True)
class Input:
    kind: str  # randn, positive, ints or bools
    shape: tuple[int, ...]  # after the batch dimension
    dtype: torch.dtype = torch.float32
    low: int = 0  # ints: the range [low, high)
    high: int = 0

    def __call__(self, batch: int) -> torch.Tensor:
        shape = (batch, *self.shape)
        if self.kind == "ints":
            return torch.randint(self.low, self.high, shape, dtype=self.dtype)
        if self.kind == "bools":
            return torch.rand(shape) > 0.5
        return (torch.rand(shape) + 0.1 if self.kind == "positive" else torch.randn(shape)).to(self.dtype)


def randn(*shape: int, dtype: torch.dtype = torch.float32) -> Input:
    return Input("randn", shape, dtype)


def positive(*shape: int) -> Input:
    return Input("positive", shape)


def ints(high: int, *shape: int, dtype: torch.dtype = torch.int64, low: int = 0) -> Input:
    return Input("ints", shape, dtype, low, high)


def bools(*shape: int) -> Input:
    return Input("bools", shape, torch.bool)


# -- cases --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    make_module: Callable[[], nn.Module]
    inputs: tuple[Callable[[int], torch.Tensor], ...]
    ops: tuple[str, ...]  # IR ops the conversion must produce
    opaque: tuple[str, ...] = ()  # opaque nodes the conversion must produce (none unless listed)
    dynamic: bool = True  # convert with dynamic_batch and run at two batch sizes
    core_aten: bool = False  # pass a core-ATen ExportedProgram (ep.run_decompositions()), as users may
    alone: bool = False  # never share a conversion with other cases (cases with marks)

    def make_inputs(self, batch: int) -> tuple[torch.Tensor, ...]:
        return tuple(make(batch) for make in self.inputs)


def _forward1(self, x):
    return self.call(x)


def _forward2(self, x, y):
    return self.call(x, y)


def _forward3(self, x, y, z):
    return self.call(x, y, z)


_FORWARDS = {1: _forward1, 2: _forward2, 3: _forward3}


@functools.cache
def with_arity(cls: type, arity: int) -> type:
    """`cls` with forward(x), forward(x, y), ...: torch.export makes dimensions dynamic per named parameter."""
    return type(f"{cls.__name__}{arity}", (cls,), {"forward": _FORWARDS[arity]})


class Fn(nn.Module):
    """call(*inputs) = fn(*inputs, **buffers); buffers become graph constants."""

    def __init__(self, fn, buffers: dict[str, torch.Tensor]):
        super().__init__()
        self.fn = fn
        self.buffer_names = tuple(buffers)
        for name, tensor in buffers.items():
            self.register_buffer(name, tensor.clone())

    def call(self, *inputs):
        return self.fn(*inputs, **{name: getattr(self, name) for name in self.buffer_names})


class Bundle(nn.Module):
    """call(*inputs) = every part applied to the same inputs (see `convert_cases`)."""

    def __init__(self, parts: list[nn.Module]):
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def call(self, *inputs):
        return tuple(part(*inputs) for part in self.parts)


def _ops(ops) -> tuple[str, ...]:
    return (ops,) if isinstance(ops, str) else tuple(ops)


def mod(name: str, make_module, inputs, ops, *, opaque=(), dynamic=True, core_aten=False, marks=()):
    """A case for a module built by `make_module()`."""
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    case = Case(name, make_module, inputs, _ops(ops), _ops(opaque), dynamic, core_aten, alone=bool(marks))
    return pytest.param(case, id=name, marks=marks)


def fun(name: str, fn, inputs, ops, *, buffers: dict[str, torch.Tensor] | None = None, **options):
    """A case for `fn(*inputs, **buffers)` wrapped in a module."""
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    module_class = with_arity(Fn, len(inputs))
    return mod(name, lambda: module_class(fn, dict(buffers or {})), inputs, ops, **options)


def with_random_state(module: nn.Module) -> nn.Module:
    """Random affine parameters and running statistics, so normalization cases are not identities."""
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if name.endswith("running_var"):
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor))
    return module


CONV = [
    mod("conv1d-bias", lambda: nn.Conv1d(3, 4, 3), randn(3, 10), ("nn.conv1d", "nn.bias_add")),
    mod(
        "conv1d-nobias-stride2-pad1",
        lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1, bias=False),
        randn(3, 10),
        "nn.conv1d",
    ),
    mod("conv1d-groups-dilation", lambda: nn.Conv1d(3, 6, 3, groups=3, dilation=2), randn(3, 10), "nn.conv1d"),
    mod("conv2d-bias", lambda: nn.Conv2d(3, 4, 3, padding=1), randn(3, 6, 6), ("nn.conv2d", "nn.bias_add")),
    mod("conv2d-nobias-stride2", lambda: nn.Conv2d(3, 4, 3, stride=2, bias=False), randn(3, 6, 6), "nn.conv2d"),
    mod("conv2d-groups", lambda: nn.Conv2d(4, 6, 3, groups=2), randn(4, 6, 6), "nn.conv2d"),
    mod("conv2d-depthwise", lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4), randn(4, 6, 6), "nn.conv2d"),
    mod("conv2d-dilation2", lambda: nn.Conv2d(3, 4, 3, padding=2, dilation=2), randn(3, 6, 6), "nn.conv2d"),
    mod("conv2d-same-even-kernel", lambda: nn.Conv2d(3, 2, 4, padding="same"), randn(3, 6, 6), ("nn.pad", "nn.conv2d")),
    mod("conv2d-fp16", lambda: nn.Conv2d(3, 4, 3).half(), randn(3, 6, 6, dtype=FP16), "nn.conv2d"),
    # padding="valid" reaches aten.convolution as padding=[0], one value for every spatial axis (SigLIP's patches)
    mod(
        "conv2d-valid-patches",
        lambda: nn.Conv2d(3, 4, 2, stride=2, padding="valid"),
        randn(3, 6, 6),
        ("nn.conv2d", "nn.bias_add"),
    ),
    mod("conv1d-valid", lambda: nn.Conv1d(3, 4, 3, padding="valid"), randn(3, 10), ("nn.conv1d", "nn.bias_add")),
    mod(
        "conv3d-valid-dilation", lambda: nn.Conv3d(2, 3, 2, padding="valid", dilation=2), randn(2, 5, 5, 5), "nn.conv3d"
    ),
    mod("conv3d-bias", lambda: nn.Conv3d(2, 3, 3, padding=1), randn(2, 4, 4, 4), ("nn.conv3d", "nn.bias_add")),
    mod(
        "conv3d-nobias-groups", lambda: nn.Conv3d(2, 4, (1, 3, 3), groups=2, bias=False), randn(2, 4, 4, 4), "nn.conv3d"
    ),
    mod("conv_transpose1d-stride2", lambda: nn.ConvTranspose1d(3, 2, 3, stride=2), randn(3, 5), "nn.conv1d_transpose"),
    mod(
        "conv_transpose2d-output_padding",
        lambda: nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1),
        randn(4, 5, 5),
        ("nn.conv2d_transpose", "nn.bias_add"),
    ),
    mod(
        "conv_transpose2d-groups-dilation",
        lambda: nn.ConvTranspose2d(4, 4, 3, groups=2, dilation=2, bias=False),
        randn(4, 5, 5),
        "nn.conv2d_transpose",
    ),
    mod(
        "conv_transpose3d-stride2",
        lambda: nn.ConvTranspose3d(2, 2, 2, stride=2),
        randn(2, 4, 4, 4),
        "nn.conv3d_transpose",
    ),
]

# F.fold (col2im) is a grouped transposed convolution with a one-hot kernel
FOLD = [
    fun("fold-stride2-pad1", lambda x: F.fold(x, (6, 6), 3, padding=1, stride=2), randn(18, 9), "nn.conv2d_transpose"),
    fun(
        "fold-output-padding", lambda x: F.fold(x, (8, 7), 3, padding=1, stride=2), randn(9, 16), "nn.conv2d_transpose"
    ),
    fun("fold-dilation-rect", lambda x: F.fold(x, (5, 6), (2, 3), dilation=2), randn(12, 6), "nn.conv2d_transpose"),
    fun("fold-unbatched", lambda x: F.fold(x[0], (4, 4), 2, stride=2), randn(8, 4), "nn.conv2d_transpose"),
]

LINALG = [
    mod("linear-bias", lambda: nn.Linear(8, 5), randn(3, 8), ("nn.dense", "nn.bias_add")),
    mod("linear-nobias", lambda: nn.Linear(8, 5, bias=False), randn(3, 8), "nn.dense"),
    mod("linear-fp16", lambda: nn.Linear(4, 5).half(), randn(4, dtype=FP16), "nn.dense"),
    mod("linear-core-aten", lambda: nn.Linear(8, 5), randn(8), ("matmul", "add"), core_aten=True),
    mod("linear-3d-core-aten", lambda: nn.Linear(8, 5), randn(3, 8, 8), ("reshape", "matmul"), core_aten=True),
    fun("matmul-broadcast", lambda x, w: torch.matmul(x, w), randn(3, 4), "matmul", buffers={"w": const(2, 1, 4, 6)}),
    fun("matmul-batched", torch.matmul, (randn(4, 5), randn(5, 3)), "matmul"),
    fun("matmul-vector", lambda x, w: x @ w, randn(5), "matmul", buffers={"w": const(5)}),
    fun("mm", lambda x, w: torch.mm(x, w), randn(5), "matmul", buffers={"w": const(5, 3)}),
    fun("bmm", torch.bmm, (randn(4, 5), randn(5, 3)), "nn.batch_matmul"),
    fun(
        "addmm",
        torch.addmm,
        (lambda b: torch.randn(3), randn(5), lambda b: torch.randn(5, 3)),
        ("matmul", "add"),
        dynamic=False,
    ),
    fun(
        "addmm-alpha-beta",
        lambda x, bias, w: torch.addmm(bias, x, w, beta=0.5, alpha=2.0),
        randn(5),
        ("matmul", "multiply", "add"),
        buffers={"bias": const(3), "w": const(5, 3)},
    ),
    fun(
        "addmm-beta0-ignores-nan",
        lambda x, bias, w: torch.addmm(bias, x, w, beta=0),
        randn(5),
        "matmul",
        buffers={"bias": torch.full((3,), float("nan")), "w": const(5, 3)},
    ),
]


def unary(name, fn, ops, inputs=randn(3, 4), **options):  # noqa: B008 - an Input is a frozen spec
    return fun(name, fn, inputs, ops, **options)


ACTIVATIONS = [
    unary("relu", torch.relu, "nn.relu"),
    unary("relu6", F.relu6, "clip"),
    unary("hardtanh", lambda x: F.hardtanh(x, -0.5, 2.0), "clip"),
    unary("clamp", lambda x: x.clamp(-0.5, 0.5), "clip"),
    unary("clamp_min", lambda x: torch.clamp_min(x, 0.1), "clip"),
    unary("clamp_max", lambda x: torch.clamp_max(x, 0.1), "clip"),
    fun(
        "clamp-tensor-bounds",
        lambda x, lo, hi: x.clamp(lo, hi),
        randn(3, 4),
        ("maximum", "minimum"),
        buffers={"lo": -0.5 * const(4).abs(), "hi": 0.5 * const(3, 1).abs()},
    ),
    # Hugging Face T5's FP16 overflow guard: bounds computed from the tensor itself, 0-d
    unary(
        "clamp-computed-bound", lambda x: x.clamp(-0.5 * x.abs().amax(), 0.5 * x.abs().amax()), ("maximum", "minimum")
    ),
    fun("clamp_min-tensor", lambda x, lo: torch.clamp_min(x, lo), randn(3, 4), "maximum", buffers={"lo": const(4)}),
    fun("clamp_max-tensor", lambda x, hi: torch.clamp_max(x, hi), randn(3, 4), "minimum", buffers={"hi": const(4)}),
    # infinities and NaNs made inside the graph: 1 / round(x) is +-inf where x rounds to 0, log(x) NaN below 0
    unary("isinf", lambda x: torch.isinf(1 / x.round()), ("abs", "equal")),
    unary("isnan", lambda x: torch.isnan(torch.log(x)), "not_equal"),
    unary("isfinite", lambda x: torch.isfinite(torch.log(x) / x.round()), ("abs", "less")),
    unary("leaky_relu", lambda x: F.leaky_relu(x, 0.2), "nn.leaky_relu"),
    unary("elu", F.elu, "nn.elu"),
    unary("elu-alpha", lambda x: F.elu(x, alpha=0.5), "nn.elu"),
    mod("prelu-per-channel", lambda: with_random_state(nn.PReLU(3)), randn(3, 4), "nn.prelu"),
    mod("prelu-shared", lambda: nn.PReLU(), randn(3, 4), "nn.prelu"),
    unary("softplus", F.softplus, "nn.softplus"),
    unary("silu", F.silu, "nn.silu"),
    unary("mish", F.mish, "nn.mish"),
    unary("hardswish", F.hardswish, "nn.hardswish"),
    unary("hardsigmoid", F.hardsigmoid, "nn.hardsigmoid"),
    unary("gelu", F.gelu, "nn.gelu"),
    unary("gelu-tanh", lambda x: F.gelu(x, approximate="tanh"), "nn.gelu"),
    unary("gelu-fp16", F.gelu, "nn.gelu", randn(4, dtype=FP16)),
    unary("sigmoid", torch.sigmoid, "sigmoid"),
    unary("tanh", torch.tanh, "tanh"),
    unary("exp", torch.exp, "exp"),
    unary("log", torch.log, "log", positive(3, 4)),
    unary("sqrt", torch.sqrt, "sqrt", positive(3, 4)),
    unary("rsqrt", torch.rsqrt, "rsqrt", positive(3, 4)),
    unary("reciprocal", torch.reciprocal, "reciprocal", positive(3, 4)),
    unary("abs", torch.abs, "abs"),
    unary("neg", torch.neg, "negative"),
    unary("sin", torch.sin, "sin"),
    unary("cos", torch.cos, "cos"),
    unary("tan", torch.tan, "tan"),
    unary("atan", torch.atan, "atan"),
    unary("ceil", torch.ceil, "ceil"),
    unary("floor", torch.floor, "floor"),
    unary("round", lambda x: torch.round(x * 4), "round"),
    unary("sign", torch.sign, "sign"),
    unary("erf", torch.erf, "erf"),
    unary("logical_not", torch.logical_not, "logical_not"),
    # the converters decline these parameterizations: the node runs through PyTorch, still correct
    unary("softplus-beta", lambda x: F.softplus(x, beta=2.0), (), opaque="torch.aten.softplus.default"),
    unary("selu", F.selu, (), opaque="torch.aten.elu.default"),
]

BINARY = [
    fun("add-tensor", torch.add, (randn(4), randn(4)), "add"),
    fun("add-broadcast", lambda x, b: x + b, randn(3, 4), "add", buffers={"b": const(4)}),
    fun("add-alpha", lambda x, y: torch.add(x, y, alpha=2), (randn(4), randn(4)), ("multiply", "add")),
    fun("add-scalar", lambda x: x + 2.5, randn(4), "add"),
    fun("add-scalar-int32", lambda x: x + 3, ints(10, 4, dtype=torch.int32), "add"),
    fun("add-scalar-fp16", lambda x: x + 0.5, randn(4, dtype=FP16), "add"),
    fun("add-Scalar-overload", lambda x: torch.ops.aten.add.Scalar(x, 2.5, alpha=2), randn(4), ("multiply", "add")),
    fun("sub-tensor", torch.sub, (randn(4), randn(4)), "subtract"),
    fun("sub-alpha", lambda x, y: torch.sub(x, y, alpha=0.5), (randn(4), randn(4)), ("multiply", "subtract")),
    fun("sub-scalar", lambda x: x - 1, randn(4), "subtract"),
    fun("sub-Scalar-overload", lambda x: torch.ops.aten.sub.Scalar(x, 2.5), randn(4), "subtract"),
    fun("rsub-scalar", lambda x: 2.0 - x, randn(4), "subtract"),
    fun("rsub-tensor-alpha", lambda x, y: torch.rsub(x, y, alpha=2), (randn(4), randn(4)), ("multiply", "subtract")),
    fun("mul-tensor", torch.mul, (randn(4), randn(4)), "multiply"),
    fun("mul-scalar", lambda x: x * 3, randn(4), "multiply"),
    # two booleans: the product is their and, the sum their or (the engine's arithmetic takes numbers, not bool)
    fun("mul-bool-masks", lambda x, y: (x > 0) * (y > 0), (randn(4), randn(4)), "logical_and"),
    fun("mul-bool-scalar", lambda x: (x > 0) * True, randn(4), "logical_and"),
    fun("add-bool-masks", lambda x, y: (x > 0) + (y > 0.5), (randn(4), randn(4)), "logical_or"),
    fun("mul-bool-int-scalar", lambda x: (x > 0) * 3, randn(4), ("cast", "multiply")),
    # a boolean and a number: the boolean is cast to the number's type, as PyTorch promotes it
    fun("mul-bool-float", lambda x, y: (x > 0) * y, (randn(4), randn(4)), ("cast", "multiply")),
    fun("mul-float-bool-fp16", lambda x, y: y * (x > 0), (randn(4), randn(4, dtype=FP16)), ("cast", "multiply")),
    fun("add-bool-float", lambda x, y: (x > 0) + y, (randn(4), randn(4)), ("cast", "add")),
    fun("mul-scalar-fp16", lambda x: x * 0.1, randn(4, dtype=FP16), "multiply"),
    fun("mul-scalar-fp64", lambda x: x * 0.1, randn(4, dtype=torch.float64), "multiply"),
    fun("div-tensor", torch.div, (randn(4), positive(4)), "divide"),
    fun("div-scalar", lambda x: x / 4, randn(4), "divide"),
    fun("div-floor", lambda x, y: torch.div(x, y, rounding_mode="floor"), (randn(4), positive(4)), "floor_divide"),
    fun("div-trunc", lambda x, y: torch.div(x, y, rounding_mode="trunc"), (randn(4), positive(4)), "trunc_divide"),
    fun("div-floor-scalar", lambda x: torch.div(x, 0.3, rounding_mode="floor"), randn(4), "floor_divide"),
    fun(
        "div-Scalar_mode-overload",
        lambda x: torch.ops.aten.div.Scalar_mode(x, 0.3, rounding_mode="trunc"),
        randn(4),
        "trunc_divide",
    ),
    fun("floordiv-int", lambda x: x // 3, ints(20, 4, low=-20), "floor_divide"),
    fun("pow-scalar-exponent", lambda x: x**2, randn(4), "power"),
    fun("pow-float-exponent", lambda x: x**0.5, positive(3, 4), "power"),
    fun("pow-scalar-base", lambda x: 2**x, randn(4), "power"),
    fun("pow-tensor", lambda exponent, base: base**exponent, (randn(4), positive(4)), "power"),
    fun("maximum", torch.maximum, (randn(4), randn(4)), "maximum"),
    fun("minimum", torch.minimum, (randn(4), randn(4)), "minimum"),
    fun("remainder-tensor", torch.remainder, (randn(4), positive(4)), "floor_mod"),
    fun("remainder-scalar", lambda x: x % 0.7, randn(4), "floor_mod"),
    fun("remainder-int", lambda x: x % 3, ints(20, 4, low=-20), "floor_mod"),
    fun("fmod-tensor", torch.fmod, (randn(4), positive(4)), "trunc_mod"),
    fun("fmod-scalar", lambda x: torch.fmod(x, -0.7), randn(4), "trunc_mod"),
    fun("fmod-int", lambda x: torch.fmod(x, 3), ints(20, 4, low=-20), "trunc_mod"),
    fun("eq-tensor", torch.eq, (ints(3, 4), ints(3, 4)), "equal"),
    fun("ne-scalar", lambda x: x != 1, ints(20, 4, low=-20), "not_equal"),
    fun("lt-tensor", torch.lt, (randn(4), randn(4)), "less"),
    fun("le-scalar", lambda x: x <= 0.1, randn(4), "less_equal"),
    fun("gt-scalar", lambda x: x > 0.1, randn(4), "greater"),
    fun("ge-tensor", torch.ge, (randn(4), randn(4)), "greater_equal"),
    fun("logical_and", torch.logical_and, (bools(4), bools(4)), "logical_and"),
    fun("logical_or-float", torch.logical_or, (randn(4), bools(4)), "logical_or"),
    fun("logical_xor", torch.logical_xor, (bools(4), bools(4)), "logical_xor"),
    fun("bitwise-and-bool", lambda x, y: (x > 0) & (y > 0), (randn(4), randn(4)), "logical_and"),
    fun("bitwise-or-bool", lambda x, y: x | y, (bools(4), bools(4)), "logical_or"),
    fun("bitwise-not-bool", lambda x: ~(x > 0), randn(4), "logical_not"),
    # integer bit logic has no IR op: the converter declines and the node stays in PyTorch
    fun("bitwise-and-int", lambda x, y: x & y, (ints(3, 4), ints(3, 4)), (), opaque="torch.aten.bitwise_and.Tensor"),
    fun("where", lambda x, y: torch.where(x > 0, x, y), (randn(4), randn(4)), ("greater", "where")),
    fun("where-scalar", lambda x: torch.where(x > 0, x, 0.0), randn(4), ("full", "where")),
    fun("masked_fill-scalar", lambda x, m: x.masked_fill(m, -1e4), (randn(4), bools(4)), "where"),
    fun("masked_fill-tensor", lambda x, m: x.masked_fill(m, torch.tensor(0.5)), (randn(4), bools(4)), "where"),
    fun("masked_fill-fp16", lambda x: x.masked_fill(x > 0, -1e4), randn(4, dtype=FP16), "where"),
]

CASTS = [
    fun("cast-half", lambda x: x.half(), randn(4), "cast"),
    fun("cast-int32", lambda x: (x * 10).to(torch.int32), randn(4), "cast"),
    fun("cast-float-from-half", lambda x: x.float(), randn(4, dtype=FP16), "cast"),
    fun("cast-bool", lambda x: x.bool(), ints(20, 4, low=-20), "cast"),
    fun("cast-same-dtype", lambda x: x.to(torch.float32) + 1, randn(4), "add"),
    fun("detach", lambda x: x.detach() * 2, randn(4), "multiply"),
    fun("alias", lambda x: torch.ops.aten.alias(x) * 2, randn(4), "multiply"),
    fun("dropout-eval", lambda x: F.dropout(x, 0.5, training=False) * 2, randn(4), "multiply"),
    mod("dropout-module-eval", lambda: nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)), randn(4), "nn.dense"),
]


def _slice_assign(x):
    """In-place slice assignment: functionalization turns it into copy and slice_scatter."""
    y = x * 2
    y[:, 1:3] = x[:, :1] * 3
    return y


SHAPES = [
    fun("view", lambda x: x.view(x.shape[0], -1), randn(3, 4), "reshape"),
    fun("view-fold-batch", lambda x: x.view(-1, 4) * 2, randn(3, 4), "reshape"),
    fun("reshape", lambda x: x.reshape(x.shape[0], 2, -1), randn(3, 4), "reshape"),
    fun("_unsafe_view", lambda x: torch.ops.aten._unsafe_view(x * 2, [x.shape[0], 4, 3]), randn(3, 4), "reshape"),
    fun("flatten-start1", lambda x: x.flatten(1), randn(2, 3, 4), "reshape"),
    fun("flatten-all", torch.flatten, randn(3, 4), "reshape"),
    fun("flatten-middle", lambda x: x.flatten(1, 2), randn(2, 3, 4), "reshape"),
    fun("permute", lambda x: x.permute(0, 2, 3, 1), randn(2, 3, 4), "transpose"),
    fun("permute-negative", lambda x: x.permute(0, -1, 1, 2), randn(2, 3, 4), "transpose"),
    fun("transpose", lambda x: x.transpose(1, 2), randn(3, 4), "transpose"),
    fun("transpose-negative", lambda x: x.transpose(-1, -2), randn(2, 3, 4), "transpose"),
    fun("t", lambda x: x.t(), randn(4), "transpose"),
    fun("contiguous", lambda x: x.transpose(1, 2).contiguous(), randn(3, 4), "transpose"),
    fun("unsqueeze", lambda x: x.unsqueeze(1), randn(4), "expand_dims"),
    fun("unsqueeze-negative", lambda x: x.unsqueeze(-1), randn(4), "expand_dims"),
    fun("squeeze-all", lambda x: x.unsqueeze(-1).squeeze(), randn(1, 4), "squeeze"),
    fun("squeeze-dim", lambda x: x.squeeze(1), randn(1, 4), "squeeze"),
    fun("squeeze-dims", lambda x: x.unsqueeze(-1).squeeze((1, -1)), randn(1, 4), "squeeze"),
    fun("squeeze-dim-not-1", lambda x: x.squeeze(1) * 2, randn(3, 4), "multiply"),
    fun("cat", lambda x, y: torch.cat([x, y], 1), (randn(4), randn(4)), "concatenate"),
    fun(
        "cat-negative-dim",
        lambda x, c: torch.cat([x, x * 2, c.expand(x.shape[0], 2)], -1),
        randn(4),
        "concatenate",
        buffers={"c": const(1, 2)},
    ),
    fun("stack", lambda x, y: torch.stack([x, y], 1), (randn(4), randn(4)), "stack"),
    fun("stack-last", lambda x, y: torch.stack([x, y], -1), (randn(4), randn(4)), "stack"),
    fun("split-size", lambda x: x.split(2, dim=1), randn(5), "split"),
    fun("split-sizes", lambda x: x.split([1, 3, 1], dim=-1), randn(3, 5), "split"),
    fun("split-one-piece", lambda x: [p * 2 for p in x.split(8, dim=1)], randn(5), "multiply"),
    fun("chunk", lambda x: x.chunk(2, -1), randn(3, 4), "split"),
    fun("chunk-uneven", lambda x: x.chunk(3, 1), randn(5), "split"),
    fun("unbind", lambda x: x.unbind(1), randn(3, 4), ("split", "squeeze")),
    fun("slice-step", lambda x: x[:, 1:-1:2], randn(5), "strided_slice"),
    fun("slice-negative-start", lambda x: x[:, -3:], randn(5), "strided_slice"),
    fun("slice-two-dims", lambda x: x[:, :100, 1::3], randn(3, 4), "strided_slice"),
    fun("select", lambda x: x[:, 1, 2], randn(3, 4), ("strided_slice", "squeeze")),
    fun("select-negative", lambda x: x[:, -1], randn(3, 4), ("strided_slice", "squeeze")),
    fun("select-batch", lambda x: x[-1] * 2, randn(3, 4), ("strided_slice", "squeeze")),
    fun("select-negative-2", lambda x: x[:, :, -2], randn(3, 4), ("strided_slice", "squeeze")),
    fun("expand", lambda x: x.expand(-1, 3, -1), randn(1, 4), "broadcast_to"),
    fun(
        "expand-to-batch",
        lambda x, c: c.expand(x.shape[0], -1, 4) + x,
        randn(3, 4),
        "broadcast_to",
        buffers={"c": const(1, 3, 1)},
    ),
    fun("expand-new-dim", lambda x: x.expand(2, -1, 3, -1), randn(1, 4), "broadcast_to"),
    fun("repeat", lambda x: x.repeat(1, 2, 3), randn(3, 4), "tile"),
    fun("repeat-more-dims", lambda x: x.repeat(2, 1, 1), randn(4), "tile"),
    fun("flip", lambda x: x.flip(1), randn(3, 4), "reverse"),
    fun("flip-two-dims", lambda x: x.flip((1, -1)), randn(3, 4), "reverse"),
    # the mean of a channels-last view is restored to its layout by an identity as_strided
    fun(
        "as_strided-identity",
        lambda x: F.adaptive_avg_pool3d(x.permute(0, 4, 1, 2, 3), 1) * 2,
        randn(2, 3, 3, 4),
        ("mean", "multiply"),
    ),
    fun(
        "as_strided-view",
        lambda x: torch.as_strided(x * 3, (x.shape[0], 2, 2), (6, 2, 1)),
        randn(2, 3),
        "multiply",
        opaque="torch.aten.as_strided.default",
    ),
    fun("roll-two-dims", lambda x: torch.roll(x, (1, -2), (1, -1)), randn(3, 4), "roll"),
    fun("roll-flattened", lambda x: torch.roll(x, 5), randn(3, 4), "roll"),
    fun("slice-assign", _slice_assign, randn(4, 3), "slice_scatter"),
    fun("copy-cast", lambda x: torch.zeros_like(x, dtype=FP16).copy_(x), randn(4), "cast"),
    fun(
        "copy-broadcast",
        lambda x, c: torch.zeros_like(x).copy_(c) + x,
        randn(3, 4),
        "broadcast_to",
        buffers={"c": const(4)},
    ),
]

GATHER = [
    # a router masking the experts it took: K indices per row, each position compared with them
    fun(
        "scatter-value-router-mask",
        lambda x: x.scatter(-1, x.topk(2, dim=-1).indices, float("-inf")),
        randn(3, 6),
        ("equal", "max", "where"),
    ),
    fun(
        "scatter-value-dim1",
        lambda x, i: x.scatter(1, i, 7.0),
        (randn(5, 4), ints(5, 2, 4)),
        ("equal", "where"),
    ),
    fun("scatter-value-int", lambda x, i: x.scatter(-1, i, 0), (ints(9, 6, dtype=torch.int32), ints(6, 3)), "where"),
    fun(
        "scatter-value-partial-index",
        lambda x, i: x.scatter(1, i, 1.0),
        (randn(5, 4), ints(5, 2, 2)),
        (),
        opaque="torch.aten.scatter.value",
    ),
    mod("embedding", lambda: nn.Embedding(10, 4), ints(10, 5), "take"),
    mod("embedding-padding_idx", lambda: nn.Embedding(10, 4, padding_idx=0), ints(10, 5), "take"),
    fun(
        "index_select",
        lambda x, idx: torch.index_select(x, 1, idx),
        randn(5),
        "take",
        buffers={"idx": torch.tensor([4, 0, 0, 2])},
    ),
    fun("index-one-tensor", lambda x, idx: x[idx], randn(4), "take", buffers={"idx": torch.tensor([1, 0, 1])}),
    fun("index-one-tensor-dim1", lambda x, idx: x[:, idx], randn(5), "take", buffers={"idx": torch.tensor([4, -1, 0])}),
    fun(
        "index-2d-tensor-dim1",
        lambda x, idx: x[:, idx],
        randn(5),
        "take",
        buffers={"idx": torch.tensor([[0, 1], [3, 4]])},
    ),
    fun(
        "index-two-tensors",
        lambda x, i, j: x[i, j],
        randn(5),
        "adv_index",
        buffers={"i": torch.tensor([0, 1, 1]), "j": torch.tensor([4, 0, -2])},
    ),
    fun(
        "index-two-tensors-inner",
        lambda x, i, j: x[:, i, j],
        randn(3, 4),
        "adv_index",
        buffers={"i": torch.tensor([2, 0]), "j": torch.tensor([[1], [3]])},
    ),
    fun(
        "index-tensor-input",
        lambda x, idx: x[:, idx],
        (lambda b: torch.randn(2, 6), lambda b: torch.tensor([5, 2])),
        "take",
        dynamic=False,
    ),
    fun("gather", lambda x, idx: torch.gather(x, 1, idx), (randn(4), ints(2, 4)), "gather"),
    fun("gather-dim0", lambda x, idx: torch.gather(x, 0, idx), (randn(4), ints(2, 4)), "gather"),
    # Tensor.unfold: sliding windows as a new last axis (HaloNet's halo blocks)
    fun("unfold-windows", lambda x: x.unfold(2, 3, 2), randn(4, 7, 5), ("take", "transpose")),
    fun("unfold-last-dim", lambda x: x.unfold(-1, 4, 4), randn(3, 8), "take"),
    fun("unfold-overlapping-2d", lambda x: x.unfold(1, 4, 2).unfold(2, 4, 2), randn(8, 8, 3), ("take", "transpose")),
]

PADS = [
    fun("pad-constant", lambda x: F.pad(x, (1, 2), value=0.5), randn(3, 4), "nn.pad"),
    fun("pad-constant-2d", lambda x: F.pad(x, (1, 1, 2, 0)), randn(2, 5, 5), "nn.pad"),
    fun("pad-reflect-1d", lambda x: F.pad(x, (2, 1), mode="reflect"), randn(3, 5), "nn.pad"),
    fun("pad-reflect", lambda x: F.pad(x, (1, 1, 2, 0), mode="reflect"), randn(2, 5, 5), "nn.pad"),
    fun("pad-reflect-3d", lambda x: F.pad(x, (1, 1, 1, 0, 0, 1), mode="reflect"), randn(2, 4, 4, 4), "nn.pad"),
    fun("pad-replicate-1d", lambda x: F.pad(x, (0, 3), mode="replicate"), randn(3, 4), "nn.pad"),
    fun("pad-replicate", lambda x: F.pad(x, (1, 2, 2, 1), mode="replicate"), randn(2, 5, 5), "nn.pad"),
    fun("pad-replicate-3d", lambda x: F.pad(x, (1, 1, 0, 2, 1, 0), mode="replicate"), randn(2, 4, 4, 4), "nn.pad"),
    # negative padding crops (F.fold's decomposition crops its padding off so)
    fun("pad-negative-crops", lambda x: F.pad(x, (-1, -2)), randn(3, 5), "strided_slice"),
    fun(
        "pad-crop-and-grow", lambda x: F.pad(x, (-1, 2, 0, -2), value=0.5), randn(2, 5, 5), ("strided_slice", "nn.pad")
    ),
]

POOLS = [
    mod("maxpool2d", lambda: nn.MaxPool2d(2), randn(3, 8, 8), "nn.max_pool2d"),
    mod("maxpool2d-ceil", lambda: nn.MaxPool2d(3, stride=2, ceil_mode=True), randn(3, 8, 8), "nn.max_pool2d"),
    mod(
        "maxpool2d-pad-dilation",
        lambda: nn.MaxPool2d(3, stride=1, padding=1, dilation=2),
        randn(3, 8, 8),
        "nn.max_pool2d",
    ),
    mod(
        "maxpool2d-core-aten",
        lambda: nn.MaxPool2d(3, stride=2, padding=1),
        randn(3, 8, 8),
        "nn.max_pool2d",
        core_aten=True,
    ),
    mod("maxpool3d-ceil", lambda: nn.MaxPool3d(3, stride=2, ceil_mode=True), randn(2, 4, 4, 4), "nn.max_pool3d"),
    mod("maxpool3d-core-aten", lambda: nn.MaxPool3d(2), randn(2, 4, 4, 4), "nn.max_pool3d", core_aten=True),
    # the indices output has no IR equivalent: the whole op stays in PyTorch
    fun(
        "maxpool2d-indices",
        lambda x: F.max_pool2d(x, 2, return_indices=True),
        randn(3, 8, 8),
        (),
        opaque="torch.aten.max_pool2d_with_indices.default",
    ),
    mod(
        "avgpool1d-count_include_pad-false",
        lambda: nn.AvgPool1d(3, stride=2, padding=1, count_include_pad=False),
        randn(3, 10),
        "nn.avg_pool1d",
    ),
    mod(
        "avgpool2d-count_include_pad-false",
        lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        randn(3, 8, 8),
        "nn.avg_pool2d",
    ),
    mod("avgpool2d-ceil", lambda: nn.AvgPool2d(3, stride=2, ceil_mode=True), randn(3, 8, 8), "nn.avg_pool2d"),
    mod(
        "avgpool3d-count_include_pad-false",
        lambda: nn.AvgPool3d(2, padding=1, count_include_pad=False),
        randn(2, 4, 4, 4),
        "nn.avg_pool3d",
    ),
    mod(
        "avgpool2d-divisor_override",
        lambda: nn.AvgPool2d(2, divisor_override=3),
        randn(3, 8, 8),
        (),
        opaque="torch.aten.avg_pool2d.default",
    ),
    mod("adaptive-avgpool-1x1", lambda: nn.AdaptiveAvgPool2d(1), randn(3, 8, 8), "nn.global_avg_pool2d"),
    mod("adaptive-avgpool-7x7", lambda: nn.AdaptiveAvgPool2d(7), randn(3, 14, 14), "nn.adaptive_avg_pool2d"),
    mod("adaptive-avgpool-7x7-uneven", lambda: nn.AdaptiveAvgPool2d(7), randn(3, 8, 8), "nn.adaptive_avg_pool2d"),
    mod(
        "adaptive-avgpool-7x7-core-aten",
        lambda: nn.AdaptiveAvgPool2d(7),
        randn(3, 8, 8),
        "nn.adaptive_avg_pool2d",
        core_aten=True,
    ),
    mod("adaptive-avgpool1d", lambda: nn.AdaptiveAvgPool1d(3), randn(3, 8), "nn.adaptive_avg_pool2d"),
    mod("adaptive-maxpool-1x1", lambda: nn.AdaptiveMaxPool2d(1), randn(3, 8, 8), "nn.global_max_pool2d"),
    mod("adaptive-maxpool-7x7", lambda: nn.AdaptiveMaxPool2d(7), randn(3, 8, 8), "nn.adaptive_max_pool2d"),
]


def interpolate(name, ops="image.resize2d", *, opaque=(), **kwargs):
    return fun(name, lambda x: F.interpolate(x, **kwargs), randn(3, 5, 6), ops, opaque=opaque)


RESIZE = [
    interpolate("upsample-nearest", scale_factor=2, mode="nearest"),
    interpolate("upsample-nearest-size", size=(7, 9), mode="nearest"),
    interpolate("upsample-nearest-exact", size=(7, 9), mode="nearest-exact"),
    interpolate("upsample-nearest-recompute-scale", scale_factor=1.5, mode="nearest", recompute_scale_factor=True),
    interpolate("interpolate-bilinear", scale_factor=2, mode="bilinear"),
    interpolate("interpolate-bilinear-align", size=(8, 8), mode="bilinear", align_corners=True),
    interpolate("interpolate-bilinear-align-scale", scale_factor=1.5, mode="bilinear", align_corners=True),
    interpolate("interpolate-bicubic", size=(8, 9), mode="bicubic"),
    interpolate("interpolate-bicubic-align", scale_factor=2, mode="bicubic", align_corners=True),
    # torch samples with 1/scale_factor, which a resize to the rounded size cannot express: kept in PyTorch
    interpolate("upsample-nearest-inexact-scale", (), opaque="torch.aten.upsample_nearest2d.vec", scale_factor=1.5),
    interpolate(
        "interpolate-bilinear-inexact-scale",
        (),
        opaque="torch.aten.upsample_bilinear2d.vec",
        scale_factor=1.5,
        mode="bilinear",
    ),
    # the .default overloads (explicit output size) are what older exports and hand-written code call
    fun(
        "upsample_nearest2d-default",
        lambda x: torch.ops.aten.upsample_nearest2d.default(x, [7, 9]),
        randn(3, 5, 6),
        "image.resize2d",
    ),
    fun(
        "upsample_nearest2d-default-exact-scales",
        lambda x: torch.ops.aten.upsample_nearest2d.default(x, [10, 3], 2.0, 0.5),
        randn(3, 5, 6),
        "image.resize2d",
    ),
    fun(
        "upsample_nearest2d-default-inexact-scales",
        lambda x: torch.ops.aten.upsample_nearest2d.default(x, [7, 9], 1.5, 1.5),
        randn(3, 5, 6),
        (),
        opaque="torch.aten.upsample_nearest2d.default",
    ),
    fun(
        "upsample_nearest_exact2d-default",
        lambda x: torch.ops.aten._upsample_nearest_exact2d.default(x, [7, 9]),
        randn(3, 5, 6),
        "image.resize2d",
    ),
    # torch decomposes this overload while tracing (a Python kernel at the Autograd key): the pieces must convert
    fun(
        "upsample_bilinear2d-default-decomposed",
        lambda x: torch.ops.aten.upsample_bilinear2d.default(x, [7, 9], True),
        randn(3, 5, 6),
        (),
    ),
]


def _topk_ties(x):
    y = x.round().clamp(-1, 1).masked_fill(x > 1.0, float("-inf"))
    values, indices = y.topk(4, dim=-1)
    distinct = (indices.unsqueeze(-1) == indices.unsqueeze(-2)).sum((-1, -2))  # k when no index repeats
    return values, y.gather(-1, indices), distinct


REDUCTIONS = [
    fun("sum-dim-keepdim", lambda x: x.sum(1, keepdim=True), randn(3, 4), "sum"),
    fun("sum-dims", lambda x: x.sum((1, -1)), randn(3, 4), "sum"),
    fun("sum-all", lambda x: x.sum(), randn(3, 4), "sum"),
    fun("sum-int32", lambda x: x.sum(1), ints(10, 4, dtype=torch.int32), "sum"),
    fun("sum-dtype", lambda x: x.sum(1, dtype=torch.float64), randn(4), ("cast", "sum")),
    fun("sum-dtype-int32", lambda x: x.sum(1, dtype=torch.int32), ints(10, 4, dtype=torch.int32), "sum"),
    fun("prod-dtype-int32", lambda x: x.prod(1, dtype=torch.int32), ints(10, 4, dtype=torch.int32), "prod"),
    fun("mean-dims-keepdim", lambda x: x.mean((1, 2), keepdim=True), randn(3, 4), "mean"),
    fun("mean-all", lambda x: x.mean(), randn(3, 4), "mean"),
    fun("prod-dim", lambda x: x.prod(1), randn(3, 4), "prod"),
    fun("prod-all", lambda x: x.prod(), randn(4), "prod"),
    fun("amax-dims", lambda x: x.amax((1, 2)), randn(3, 4), "max"),
    fun("amin-keepdim", lambda x: x.amin(-1, keepdim=True), randn(3, 4), "min"),
    fun("max-all", lambda x: x.max(), randn(3, 4), "max"),
    fun("min-all", lambda x: x.min(), randn(3, 4), "min"),
    fun("var-unbiased", lambda x: x.var(1), randn(5), "variance"),
    fun("var-correction0-keepdim", lambda x: x.var((1, 2), correction=0, keepdim=True), randn(3, 4), "variance"),
    fun("std", lambda x: x.std(-1), randn(5), ("variance", "sqrt")),
    fun("var-correction2", lambda x: x.var(1, correction=2), randn(5), (), opaque="torch.aten.var.correction"),
    fun("any-bool-dim", lambda x: (x > 0.5).any(1), randn(3, 4), ("cast", "max")),
    fun("any-float-dims-keepdim", lambda x: x.round().any((1, 2), keepdim=True), randn(3, 4), ("not_equal", "max")),
    fun("any-all-elements", lambda x: torch.isinf(1 / x.round()).any(), randn(3, 4), "max"),
    fun("all-bool-dim", lambda x: (x > -1.5).all(-1), randn(3, 4), ("cast", "min")),
    fun("all-bool-dims", lambda x: (x > -1.5).all((1, 2)), randn(3, 4), ("cast", "min")),
    fun("all-int-all-elements", lambda x: x.all(), ints(3, 4, dtype=torch.int32), ("not_equal", "min")),
    fun("cumsum-dim1", lambda x: x.cumsum(1), randn(5, 3), "cumsum"),
    fun("cumsum-negative-dim", lambda x: torch.cumsum(x, -1), randn(5, 3), "cumsum"),
    fun("cumsum-dtype-float64", lambda x: torch.cumsum(x, 1, dtype=torch.float64), randn(5), "cumsum"),
    # RoBERTa's position ids: an int mask, its running count (widened to int64) cast back, times the mask
    fun(
        "cumsum-int32-mask-positions",
        lambda m: (torch.cumsum(m, 1).type_as(m) + 1) * m,
        ints(2, 6, dtype=torch.int32),
        ("cumsum", "cast"),
    ),
    fun("cumsum-bool", lambda x: (x > 0).cumsum(-1), randn(6), ("greater", "cumsum")),
    fun("argmax-dim", lambda x: x.argmax(1), randn(5), "argmax"),
    fun("argmax-keepdim", lambda x: x.argmax(-1, keepdim=True), randn(3, 5), "argmax"),
    fun("argmax-all", lambda x: x.argmax(), randn(5), "argmax"),
    fun("argmin-dim", lambda x: x.argmin(1), randn(3, 5), "argmin"),
    fun("max-dim", lambda x: x.max(1), randn(3, 5), ("max", "argmax")),
    fun("max-dim-keepdim", lambda x: x.max(-1, keepdim=True), randn(3, 5), ("max", "argmax")),
    fun("min-dim", lambda x: x.min(1), randn(3, 5), ("min", "argmin")),
    # a mixture-of-experts router: k picks of a max and the first untaken position holding it
    fun("topk-router", lambda x: torch.topk(F.softmax(x, -1), 2, dim=-1), randn(6, 8), ("max", "argmax", "where")),
    fun("topk-k1-dim1", lambda x: x.topk(1, dim=1), randn(5, 3), ("max", "argmax")),
    fun("topk-smallest", lambda x: x.topk(3, largest=False), randn(7), ("min", "argmax")),
    # sorted=False leaves the order to the implementation: compared through sums, which do not depend on it
    fun(
        "topk-unsorted",
        lambda x: tuple(t.sum(-1) for t in x.topk(3, sorted=False)),
        randn(7),
        ("max", "argmax", "sum"),
    ),
    fun("topk-int32", lambda x: x.topk(3, dim=-1), ints(100, 6, dtype=torch.int32, low=-50), ("max", "argmax")),
    # ties and -inf: a taken position is masked out, so equal values are each picked once (torch orders ties its own
    # way: compared are the values, what the indices point at, and that the indices are distinct)
    fun("topk-ties-and-inf", _topk_ties, randn(5), ("max", "logical_and", "concatenate")),
    fun("topk-k-over-limit", lambda x: x.topk(9, dim=-1), randn(12), (), opaque="torch.aten.topk.default"),
    fun("softmax", lambda x: F.softmax(x, -1), randn(3, 5), "nn.softmax"),
    fun("softmax-dim1", lambda x: F.softmax(x, 1), randn(3, 5), "nn.softmax"),
    fun("softmax-dtype", lambda x: F.softmax(x, -1, dtype=torch.float32), randn(4, dtype=FP16), ("cast", "nn.softmax")),
    fun("softmax-core-aten", lambda x: F.softmax(x, -1), randn(3, 8, 8), "nn.softmax", core_aten=True),
    fun("log_softmax", lambda x: F.log_softmax(x, 1), randn(5), "nn.log_softmax"),
    fun("log_softmax-dtype", lambda x: F.log_softmax(x, -1, dtype=torch.float64), randn(5), ("cast", "nn.log_softmax")),
    fun(
        "log_softmax-core-aten",
        lambda x: F.log_softmax(x.half(), -1, dtype=torch.float32),
        randn(3, 8, 8),
        ("cast", "nn.log_softmax"),
        core_aten=True,
    ),
]

NORMS = [
    mod("layer_norm", lambda: with_random_state(nn.LayerNorm(8)), randn(3, 8), "nn.layer_norm"),
    mod("layer_norm-no-affine", lambda: nn.LayerNorm(8, elementwise_affine=False), randn(3, 8), "nn.layer_norm"),
    mod("layer_norm-two-dims", lambda: with_random_state(nn.LayerNorm((3, 8))), randn(3, 8), "nn.layer_norm"),
    mod("layer_norm-no-bias", lambda: with_random_state(nn.LayerNorm(8, bias=False)), randn(3, 8), "nn.layer_norm"),
    mod(
        "layer_norm-core-aten",
        lambda: with_random_state(nn.LayerNorm(8)),
        randn(3, 8, 8),
        "nn.layer_norm",
        core_aten=True,
    ),
    mod("group_norm", lambda: with_random_state(nn.GroupNorm(2, 4)), randn(4, 6, 6), "nn.group_norm"),
    mod("group_norm-no-affine", lambda: nn.GroupNorm(1, 3, affine=False), randn(3, 4), "nn.group_norm"),
    mod(
        "group_norm-core-aten",
        lambda: with_random_state(nn.GroupNorm(1, 3)),
        randn(3, 8, 8),
        "nn.group_norm",
        core_aten=True,
    ),
    mod("batch_norm1d", lambda: with_random_state(nn.BatchNorm1d(4)), randn(4), "nn.batch_norm"),
    mod("batch_norm1d-3d-input", lambda: with_random_state(nn.BatchNorm1d(3)), randn(3, 5), "nn.batch_norm"),
    mod("batch_norm2d", lambda: with_random_state(nn.BatchNorm2d(3)), randn(3, 8, 8), "nn.batch_norm"),
    mod(
        "batch_norm2d-no-affine",
        lambda: with_random_state(nn.BatchNorm2d(3, affine=False)),
        randn(3, 8, 8),
        "nn.batch_norm",
    ),
    mod("batch_norm3d", lambda: with_random_state(nn.BatchNorm3d(2)), randn(2, 4, 4, 4), "nn.batch_norm"),
    # training=True without running statistics: the batch's own statistics (instance-free normalisation)
    fun(
        "batch_norm-batch-statistics",
        lambda x, weight, bias: F.batch_norm(x, None, None, weight, bias, training=True, eps=1e-3),
        randn(3, 5, 5),
        ("mean", "rsqrt", "add"),
        buffers={"weight": const(3), "bias": const(3)},
    ),
    fun(
        "batch_norm-batch-statistics-no-affine",
        lambda x: F.batch_norm(x, None, None, training=True),
        randn(4),
        ("mean", "rsqrt", "multiply"),
    ),
    # weight standardisation (timm's ScaledStdConv2d, NFNets): a weight normalised per output channel at every call
    fun(
        "batch_norm-weight-standardisation",
        lambda x, weight, gain: F.conv2d(
            x, F.batch_norm(weight.reshape(1, 4, -1), None, None, gain, training=True, momentum=0.0).reshape(4, 3, 3, 3)
        ),
        randn(3, 6, 6),
        ("mean", "rsqrt", "nn.conv2d"),
        buffers={"weight": const(4, 3, 3, 3), "gain": const(4)},
    ),
]


def attention(name, **kwargs):
    buffers = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
    options = {k: v for k, v in kwargs.items() if k not in buffers}

    def fn(q, k, v, **masks):
        return F.scaled_dot_product_attention(q, k, v, **masks, **options)

    return fun(
        name, fn, (randn(2, 5, 8), randn(2, 6, 8), randn(2, 6, 8)), "nn.scaled_dot_product_attention", buffers=buffers
    )


ATTENTION = [
    attention("sdpa"),
    attention("sdpa-causal", is_causal=True),
    attention("sdpa-float-mask", attn_mask=const(5, 6)),
    attention("sdpa-bool-mask", attn_mask=torch.tril(torch.ones(5, 6, dtype=torch.bool))),
    attention("sdpa-scale", scale=0.3),
]


class WithState(nn.Module):
    """call(x, h[, c]): a recurrent layer run from a given initial state (LSTM: (h, c))."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def call(self, x, h, c=None):
        return self.layer(x, h if c is None else (h, c))


def recurrent(name, make_layer, inputs, ops=("nn.dense", "sigmoid", "tanh"), **options):
    """A case for an nn.LSTM / GRU / RNN (or cell), with its initial state as further inputs where given."""
    if isinstance(inputs, tuple):
        return mod(name, lambda: with_arity(WithState, len(inputs))(make_layer()), inputs, ops, **options)
    return mod(name, make_layer, inputs, ops, **options)


def state(*shape: int):
    """An initial state [layers * directions, batch, hidden]: the batch is its axis 1."""
    return lambda batch: torch.randn(shape[0], batch, *shape[1:])


# torch.export's decompositions write nn.LSTM, nn.GRU and nn.RNN (aten.lstm.input, gru.input, rnn_tanh.input,
# rnn_relu.input) as unrolled linear layers (the input projection of every step up front, then per step a linear of
# the hidden state) and pointwise gates, which the converters above take: there is no recurrent converter here.
# Sequence-first layers have the batch on axis 1, which export specializes: they convert with a static batch.
RECURRENT = [
    recurrent("lstm-batch-first", lambda: nn.LSTM(8, 16, batch_first=True), randn(5, 8)),
    recurrent(
        "lstm-batch-first-bidirectional-2-layers",
        lambda: nn.LSTM(8, 16, num_layers=2, batch_first=True, bidirectional=True),
        randn(5, 8),
    ),
    recurrent("lstm-sequence-first", lambda: nn.LSTM(8, 16), randn(3, 8), dynamic=False),
    recurrent(
        "lstm-sequence-first-bidirectional-2-layers",
        lambda: nn.LSTM(8, 16, num_layers=2, bidirectional=True),
        randn(3, 8),
        dynamic=False,
    ),
    recurrent(
        "lstm-initial-state",
        lambda: nn.LSTM(8, 16, batch_first=True),
        (randn(5, 8), state(1, 16), state(1, 16)),
        dynamic=False,
    ),
    recurrent("lstm-proj_size", lambda: nn.LSTM(8, 16, proj_size=6, batch_first=True), randn(5, 8)),
    recurrent("gru-batch-first", lambda: nn.GRU(8, 16, batch_first=True), randn(5, 8)),
    recurrent(
        "gru-batch-first-bidirectional-2-layers",
        lambda: nn.GRU(8, 16, num_layers=2, batch_first=True, bidirectional=True),
        randn(5, 8),
    ),
    recurrent(
        "gru-sequence-first-bidirectional-2-layers",
        lambda: nn.GRU(8, 16, num_layers=2, bidirectional=True),
        randn(3, 8),
        dynamic=False,
    ),
    recurrent(
        "gru-initial-state-bidirectional",
        lambda: nn.GRU(8, 16, batch_first=True, bidirectional=True),
        (randn(5, 8), state(2, 16)),
        dynamic=False,
    ),
    recurrent("rnn-tanh-batch-first", lambda: nn.RNN(8, 16, batch_first=True), randn(5, 8), ("nn.dense", "tanh")),
    recurrent(
        "rnn-tanh-batch-first-bidirectional-2-layers",
        lambda: nn.RNN(8, 16, num_layers=2, batch_first=True, bidirectional=True),
        randn(5, 8),
        ("nn.dense", "tanh"),
    ),
    recurrent(
        "rnn-relu-sequence-first-bidirectional-2-layers",
        lambda: nn.RNN(8, 16, num_layers=2, nonlinearity="relu", bidirectional=True),
        randn(3, 8),
        ("nn.dense", "nn.relu"),
        dynamic=False,
    ),
    recurrent("lstm-cell", lambda: nn.LSTMCell(8, 16), randn(8)),
    recurrent("gru-cell", lambda: nn.GRUCell(8, 16), randn(8)),
    recurrent("rnn-cell", lambda: nn.RNNCell(8, 16), randn(8), ("nn.dense", "tanh")),
    # F.one_hot: a comparison with an arange (its range checks are asserts, which the frontend drops)
    fun("one_hot", lambda x: F.one_hot(x, 7), ints(7, 4), ("arange", "equal")),
    fun("one_hot-scaled", lambda x: F.one_hot(x, 5).float() * 2.0, ints(5, 3, 2), ("arange", "equal", "multiply")),
]


CREATION = [
    fun("full-dynamic", lambda x: x + torch.full((x.shape[0], 4), 2.0), randn(4), ("full", "add")),
    fun("full-int", lambda x: (x * 2, torch.full((2, 3), 7)), randn(4), "full"),
    fun("new_zeros", lambda x: (x * 2, x.new_zeros((2, 3))), randn(4), "full"),
    fun("zeros", lambda x: x + torch.zeros(4), randn(4), ("full", "add")),
    fun("ones-int32", lambda x: x + torch.ones(4, dtype=torch.int32), ints(10, 4, dtype=torch.int32), ("full", "add")),
    fun("arange", lambda x: x + torch.arange(4), randn(4), ("arange", "add")),
    fun("arange-start", lambda x: x * torch.arange(1, 5), randn(4), "arange"),
    fun("arange-float-step", lambda x: x + torch.arange(0, 2, 0.5), randn(4), "arange"),
    fun("arange-dynamic", lambda x: x + torch.arange(x.shape[0])[:, None], randn(4), "arange"),
    fun("zeros_like", lambda x: x * 2 + torch.zeros_like(x), randn(4), "full_like"),
    fun("ones_like-dtype", lambda x: (x * 2, torch.ones_like(x, dtype=torch.int32)), randn(4), "full_like"),
    fun("full_like", lambda x: x * torch.full_like(x, 3.0), randn(4), "full_like"),
    fun("scalar-tensor-constant", lambda x: x + torch.tensor(2.0), randn(4), "add"),
    fun("scalar_tensor", lambda x: x * torch.scalar_tensor(3.0), randn(4), ("full", "multiply")),
]

CASES = (
    CONV
    + FOLD
    + LINALG
    + ACTIVATIONS
    + BINARY
    + CASTS
    + SHAPES
    + GATHER
    + PADS
    + POOLS
    + RESIZE
    + REDUCTIONS
    + NORMS
    + ATTENTION
    + RECURRENT
    + CREATION
)
CASE_BY_NAME = {p.values[0].name: p.values[0] for p in CASES}

# cases converted once more with dynamic_batch=False
STATIC_BATCH = ["conv2d-bias", "linear-bias", "view-fold-batch", "full-dynamic", "arange-dynamic", "sdpa-causal"]

# registered ATen converters no module reaches through from_torch (torch 2.14), and why
_ALWAYS_DECOMPOSED = "run_decompositions decomposes it even though the frontend leaves it out of the table"
UNREACHABLE: dict[str, str] = {
    "aten::reshape.default": f"{_ALWAYS_DECOMPOSED} (to view)",
    "aten::flatten.using_ints": f"{_ALWAYS_DECOMPOSED} (to view)",
    "aten::chunk.default": f"{_ALWAYS_DECOMPOSED} (to split / split_with_sizes)",
    "aten::contiguous.default": f"{_ALWAYS_DECOMPOSED} (to clone)",
    "aten::lift_fresh_copy.default": f"{_ALWAYS_DECOMPOSED} (to clone)",
    "aten::batch_norm.default": f"{_ALWAYS_DECOMPOSED} (to _native_batch_norm_legit_no_training)",
    "aten::dropout.default": f"{_ALWAYS_DECOMPOSED} (removed in eval; native_dropout in training)",
    "aten::upsample_bilinear2d.default": "torch decomposes it while tracing (Python kernel at the Autograd key)",
    "aten::upsample_bicubic2d.default": "torch decomposes it while tracing (Python kernel at the Autograd key)",
}


# -- conversion, recording which converters produced IR ---------------------------------------------------------


@contextlib.contextmanager
def recording_converters(fired: set[str]):
    """While active, every registered converter that returns (does not decline) adds its registry key to `fired`."""
    originals = dict(converters._CONVERTERS)

    def recorded(key, fn):
        @functools.wraps(fn)
        def convert(ctx, **kwargs):
            result = fn(ctx, **kwargs)
            fired.add(key)
            return result

        return convert

    converters._CONVERTERS.update({key: recorded(key, fn) for key, fn in originals.items()})
    try:
        yield
    finally:
        converters._CONVERTERS.update(originals)


def _core_aten_program(module: nn.Module, inputs: tuple, dynamic: bool):
    shapes = tuple({0: torch.export.Dim.AUTO} if t.dim() else None for t in inputs) if dynamic else None
    return torch.export.export(module, inputs, dynamic_shapes=shapes, strict=False).run_decompositions()


@dataclass(frozen=True)
class CaseGraph:
    """Where one case ended up: the graph that holds it, its outputs there, and its own nodes."""

    module: nn.Module  # the case's module (eager reference)
    graph: ir.Graph
    outputs: list[ir.Value]
    nodes: list[ir.Node]  # the nodes the case's outputs depend on
    fired: frozenset[str]  # converters that produced IR in this from_torch call

    @staticmethod
    def whole(module: nn.Module, graph: ir.Graph) -> CaseGraph:
        return CaseGraph(module, graph, list(graph.outputs), list(graph.nodes), frozenset())


def _nodes_behind(graph: ir.Graph, outputs: list[ir.Value]) -> list[ir.Node]:
    needed, stack = set(), [v.producer for v in outputs if v.producer is not None]
    while stack:
        node = stack.pop()
        if id(node) not in needed:
            needed.add(id(node))
            stack += [v.producer for v in node.inputs if v.producer is not None]
    return [n for n in graph.nodes if id(n) in needed]


def _sharing_key(case: Case) -> tuple:
    return (case.name,) if case.alone else (case.inputs, case.dynamic, case.core_aten)


@functools.cache
def convert_cases(names: tuple[str, ...], dynamic: bool) -> dict[str, CaseGraph] | None:
    """Convert cases that take equal inputs in ONE from_torch call, each case's module a part of a Bundle.

    Why: every from_torch call pays ~0.3 s of fixed cost inside torch.export's run_decompositions, which would
    make this file take minutes; cases stay independent because each is checked on its own outputs and nodes.
    Returns None when the shared conversion fails or loses the dynamic batch: the cases then convert alone,
    so a failure shows up in the case that causes it.
    """
    cases = [CASE_BY_NAME[name] for name in names]
    torch.manual_seed(0)
    parts = [case.make_module().eval() for case in cases]
    inputs = cases[0].make_inputs(TRACE_BATCH)
    module = parts[0] if len(parts) == 1 else with_arity(Bundle, len(inputs))(parts).eval()
    with torch.no_grad():
        counts = [len(tree_leaves(part(*inputs))) for part in parts]
    fired: set[str] = set()
    try:
        with recording_converters(fired):
            if cases[0].core_aten:
                graph = from_torch(_core_aten_program(module, inputs, dynamic))
            else:
                graph = from_torch(module, inputs, dynamic_batch=dynamic)
    except Exception:
        if len(cases) == 1:
            raise
        return None
    if len(cases) > 1 and dynamic and not all(isinstance(v.type.shape[0], Sym) for v in graph.inputs if v.type.rank):
        return None
    result, start = {}, 0
    for case, part, count in zip(cases, parts, counts):
        outputs = graph.outputs[start : start + count]
        result[case.name] = CaseGraph(part, graph, outputs, _nodes_behind(graph, outputs), frozenset(fired))
        start += count
    return result


SHARING: dict[tuple, tuple[str, ...]] = {}
for _case in CASE_BY_NAME.values():
    SHARING[_sharing_key(_case)] = SHARING.get(_sharing_key(_case), ()) + (_case.name,)


def case_graph(case: Case, dynamic: bool | None = None) -> CaseGraph:
    dynamic = case.dynamic if dynamic is None else dynamic
    shared = convert_cases(SHARING[_sharing_key(case)], dynamic) if dynamic == case.dynamic else None
    return (shared or convert_cases((case.name,), dynamic))[case.name]


def check_against_eager(conv: CaseGraph, inputs: tuple[torch.Tensor, ...]) -> None:
    """Run the graph on `inputs`; the case's outputs must have their inferred types and match eager."""
    with torch.no_grad():
        expected = tree_leaves(conv.module(*inputs))
    env = bind_symbols(conv.graph, inputs)
    results = dict(zip(map(id, conv.graph.outputs), ir.execute(conv.graph, *inputs)))
    actual = [results[id(v)] for v in conv.outputs]
    assert len(actual) == len(expected), f"{len(actual)} outputs, eager returns {len(expected)}"
    for value, a, e in zip(conv.outputs, actual, expected):
        inferred = TensorType(value.type.dtype, value.type.concrete_shape(env))
        assert TensorType.of(a) == inferred, f"%{value.name}: inferred {value.type}, execution gave {TensorType.of(a)}"
        assert_close(a, e)


# -- tests ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_converter(case: Case):
    conv = case_graph(case)
    ops = [n.op for n in conv.nodes]
    listing = "\n".join(f"  {n.name} = {n.op}" for n in conv.nodes)
    assert sorted(op for n, op in zip(conv.nodes, ops) if n.opdef.opaque) == sorted(case.opaque), listing
    missing = [op for op in case.ops if op not in ops]
    assert not missing, f"expected IR op(s) {missing}; the case converted to:\n{listing}"
    for value in conv.graph.inputs:
        if value.type.rank:
            assert isinstance(value.type.shape[0], Sym) == case.dynamic, f"input {value.name}: {value.type}"
    for batch in (TRACE_BATCH, OTHER_BATCH) if case.dynamic else (TRACE_BATCH,):
        check_against_eager(conv, case.make_inputs(batch))


@pytest.mark.parametrize("name", STATIC_BATCH)
def test_static_batch(name: str):
    case = CASE_BY_NAME[name]
    conv = case_graph(case, dynamic=False)
    assert not conv.graph.opaque_nodes(), conv.graph.summary()
    assert all(v.type.is_static for v in conv.graph.inputs), [str(v.type) for v in conv.graph.inputs]
    check_against_eager(conv, case.make_inputs(TRACE_BATCH))
    with pytest.raises(ValueError, match="expected shape"):
        ir.execute(conv.graph, *case.make_inputs(OTHER_BATCH))


def test_every_aten_converter_has_a_case():
    aten = {name for name in registered_names() if name.startswith("aten::")}
    fired = set().union(*(case_graph(case).fired for case in CASE_BY_NAME.values()))
    assert not sorted(set(UNREACHABLE) - aten), "UNREACHABLE names converters that are not registered"
    assert not sorted(set(UNREACHABLE) & fired), "UNREACHABLE names converters that a case reaches"
    missing = sorted(aten - fired - set(UNREACHABLE))
    assert not missing, f"registered ATen converters that no case reaches: {missing}"


# -- nothing is dropped: ops without a converter become opaque nodes that run through PyTorch --------------------


class WithLogcumsumexp(nn.Module):
    def forward(self, x):
        return torch.relu(x).logcumsumexp(dim=1) * 0.5


def test_op_without_converter_becomes_opaque_and_runs():
    module = WithLogcumsumexp().eval()
    graph = from_torch(module, (torch.randn(TRACE_BATCH, 6),))
    assert [n.op for n in graph.opaque_nodes()] == ["torch.aten.logcumsumexp.default"]
    assert "torch.aten.logcumsumexp.default" in graph.summary()
    for batch in (TRACE_BATCH, OTHER_BATCH):
        check_against_eager(CaseGraph.whole(module, graph), (torch.randn(batch, 6),))


@torch.library.custom_op("tftest::scale2", mutates_args=())
def scale2(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@scale2.register_fake
def _scale2_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class WithCustomOp(nn.Module):
    def forward(self, x):
        return torch.ops.tftest.scale2(x + 1)


@pytest.fixture
def scale2_converter():
    """Registers a converter for tftest::scale2 for one test, then removes it (converters cannot be unregistered)."""

    @converters.converter("tftest::scale2")
    def convert_scale2(ctx, *, x):
        return ctx.emit("multiply", x, ctx.const(2.0, dtype=x.type.torch_dtype))

    yield convert_scale2
    del converters._CONVERTERS["tftest::scale2"]


def test_custom_op_becomes_opaque_and_runs():
    module = WithCustomOp().eval()
    graph = from_torch(module, (torch.randn(TRACE_BATCH, 4),))
    assert [n.op for n in graph.opaque_nodes()] == ["torch.tftest.scale2.default"]
    for batch in (TRACE_BATCH, OTHER_BATCH):
        check_against_eager(CaseGraph.whole(module, graph), (torch.randn(batch, 4),))


def test_custom_op_with_registered_converter(scale2_converter):
    module = WithCustomOp().eval()
    graph = from_torch(module, (torch.randn(TRACE_BATCH, 4),))
    assert graph.opaque_nodes() == []
    assert graph.op_counts()["multiply"] == 1
    for batch in (TRACE_BATCH, OTHER_BATCH):
        check_against_eager(CaseGraph.whole(module, graph), (torch.randn(batch, 4),))


# -- whole patterns through the engine --------------------------------------------------------------------------


class ExpertRouter(nn.Module):
    """A mixture-of-experts layer as transformers' batched experts run it: a softmax router, its top-2 experts
    (topk), each token's expert weights gathered and applied by a batched matmul, the picks summed by weight."""

    def __init__(self, hidden: int = 8, experts: int = 4, top: int = 2):
        super().__init__()
        self.gate = nn.Linear(hidden, experts, bias=False)
        self.experts = nn.Parameter(const(experts, hidden, hidden))
        self.top = top

    def forward(self, x):
        weights, chosen = torch.topk(F.softmax(self.gate(x), -1), self.top, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        tokens = x.repeat_interleave(self.top, dim=0).unsqueeze(-1)
        out = torch.bmm(self.experts[chosen.reshape(-1)], tokens).squeeze(-1) * weights.reshape(-1, 1)
        return out.view(x.shape[0], self.top, -1).sum(1)


def test_topk_router_runs_in_one_engine_region():
    import tensorforge as forge

    module = ExpertRouter().eval()
    graph = from_torch(module, (torch.randn(6, 8),))
    graph, config = forge.partition_for_tensorforge(graph, min_block_size=1, use_implicit_batch=False)
    built = forge.build(graph, config, device="cpu")
    assert len(built.regions) == 1 and not built.report.reasons(), str(built.report)
    for tokens in (6, 5):
        x = torch.randn(tokens, 8)
        with torch.no_grad():
            assert_close(built(x), module(x))


class IgnoredPositions(nn.Module):
    """Position ids computed from the padding mask and then ignored (ESM under rotary embeddings): torch.export keeps
    them, since an `_assert_tensor_metadata` the frontend drops reads one."""

    def forward(self, ids, x):
        mask = ids.ne(1).int()
        positions = torch.cumsum(mask, dim=1).type_as(mask) * mask  # noqa: F841 - computed, never read
        return x * 2


def test_results_nothing_reads_are_dropped():
    import tensorforge as forge

    module = IgnoredPositions().eval()
    inputs = (torch.randint(0, 5, (TRACE_BATCH, 6)), torch.randn(TRACE_BATCH, 6))
    graph = from_torch(module, inputs)
    assert [n.op for n in graph.nodes] == ["multiply"], graph.summary()
    graph, config = forge.partition_for_tensorforge(graph, min_block_size=1, use_implicit_batch=False)
    built = forge.build(graph, config, device="cpu")
    assert len(built.regions) == 1, str(built.report)
    assert_close(built(*inputs), module(*inputs))
