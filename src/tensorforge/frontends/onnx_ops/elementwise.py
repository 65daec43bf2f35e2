"""Elementwise ONNX ops: unary math and activations, binary arithmetic, comparisons, logic, Clip, Cast, Where.

ONNX requires both operands of a binary op to have one dtype and keeps it; PyTorch promotes. The
converters cast back where the two differ (integer Div, Pow with a float exponent on integers).
"""

from __future__ import annotations

import torch

from ..onnx_dtypes import IR_DTYPES
from .context import same_dtype
from .registry import Unsupported, onnx_converter

_INT = ("int64", "int32", "int16", "int8", "uint8")

# (ONNX op, since-versions reachable from opset 11, IR op) — one input, no attributes
UNARY = [
    ("Relu", (6, 13, 14), "nn.relu"),
    ("Sigmoid", (6, 13), "sigmoid"),
    ("Tanh", (6, 13), "tanh"),
    ("Exp", (6, 13), "exp"),
    ("Log", (6, 13), "log"),
    ("Sqrt", (6, 13), "sqrt"),
    ("Abs", (6, 13), "abs"),
    ("Neg", (6, 13), "negative"),
    ("Sin", (7, 22), "sin"),
    ("Cos", (7, 22), "cos"),
    ("Tan", (7, 22), "tan"),
    ("Atan", (7, 22), "atan"),
    ("Ceil", (6, 13), "ceil"),
    ("Floor", (6, 13), "floor"),
    ("Round", (11, 22), "round"),  # both round half to even
    ("Sign", (9, 13), "sign"),
    ("Reciprocal", (6, 13), "reciprocal"),
    ("Erf", (9, 13), "erf"),
    ("Not", (1,), "logical_not"),
    ("Softplus", (1, 22), "nn.softplus"),
    ("Mish", (18, 22), "nn.mish"),
    ("HardSwish", (14, 22), "nn.hardswish"),
]

# (ONNX op, since-versions, IR op) — two inputs with numpy broadcasting
BINARY = [
    ("Sub", (7, 13, 14), "subtract"),
    ("Mul", (7, 13, 14), "multiply"),
    ("Equal", (11, 13, 19), "equal"),
    ("Less", (9, 13), "less"),
    ("Greater", (9, 13), "greater"),
    ("LessOrEqual", (12, 16), "less_equal"),
    ("GreaterOrEqual", (12, 16), "greater_equal"),
    ("And", (7,), "logical_and"),
    ("Or", (7,), "logical_or"),
    ("Xor", (7,), "logical_xor"),
]


def _declare_unary(op_type: str, versions: tuple[int, ...], ir_op: str) -> None:
    def convert(ctx, **inputs):
        (x,) = inputs.values()
        return ctx.emit(ir_op, x)

    convert.__name__ = f"convert_{op_type.lower()}"
    onnx_converter(op_type, since=versions)(convert)


def _declare_binary(op_type: str, versions: tuple[int, ...], ir_op: str) -> None:
    def convert(ctx, *, A, B):
        return ctx.emit(ir_op, A, B)

    convert.__name__ = f"convert_{op_type.lower()}"
    onnx_converter(op_type, since=versions)(convert)


for _op, _versions, _ir in UNARY:
    _declare_unary(_op, _versions, _ir)
for _op, _versions, _ir in BINARY:
    _declare_binary(_op, _versions, _ir)


def _linear_output(x) -> bool:
    return x.value is not None and x.value.producer is not None and x.value.producer.op in ("nn.dense", "matmul")


@onnx_converter("Add", since=(7, 13, 14))
def add(ctx, *, A, B):
    # exporters write a linear layer as MatMul + Add (bias first or second): the engine fuses dense + bias_add
    for x, bias in ((A, B), (B, A)):
        if (
            _linear_output(x)
            and bias.const is not None
            and bias.rank == 1
            and bias.shape[0] == x.shape[-1]
            and bias.dtype == x.dtype
        ):
            return ctx.emit("nn.bias_add", x, bias, axis=-1)
    return ctx.emit("add", A, B)


@onnx_converter("Div", since=(7, 13, 14))
def div(ctx, *, A, B):
    # integer Div truncates toward zero (C semantics); PyTorch's true division would give floats
    return ctx.emit("trunc_divide" if A.dtype in _INT else "divide", A, B)


@onnx_converter("Mod", since=(10, 13, 28))
def mod(ctx, *, A, B, fmod):
    if not fmod:
        return ctx.emit("floor_mod", A, B)  # the result takes the divisor's sign, like Python's %
    # fmod: the result takes the dividend's sign: a - b * trunc(a / b)
    quotient = ctx.emit("trunc_divide", A, B)
    return ctx.emit("subtract", A, ctx.emit("multiply", B, quotient))


@onnx_converter("Pow", since=(7, 12, 13, 15))
def pow_(ctx, *, X, Y):
    return same_dtype(ctx, ctx.emit("power", X, Y), X)


def _variadic(ir_op: str):
    def convert(ctx, *, data_0):
        out = data_0[0]
        for x in data_0[1:]:
            out = ctx.emit(ir_op, out, x)
        return out

    return convert


onnx_converter("Max", since=(8, 12, 13))(_variadic("maximum"))
onnx_converter("Min", since=(8, 12, 13))(_variadic("minimum"))
onnx_converter("Sum", since=(8, 13))(_variadic("add"))


@onnx_converter("Mean", since=(8, 13))
def mean(ctx, *, data_0):
    total = _variadic("add")(ctx, data_0=data_0)
    return ctx.emit("divide", total, ctx.const(float(len(data_0)), dtype=total.dtype))


# -- activations with attributes ------------------------------------------------------------------


@onnx_converter("LeakyRelu", since=(6, 16))
def leaky_relu(ctx, *, X, alpha):
    return ctx.emit("nn.leaky_relu", X, alpha=float(alpha))


@onnx_converter("Elu", since=(6, 22))
def elu(ctx, *, X, alpha):
    return ctx.emit("nn.elu", X, alpha=float(alpha))


@onnx_converter("Selu", since=(6, 22))
def selu(ctx, *, X, alpha, gamma):
    return ctx.emit("multiply", ctx.emit("nn.elu", X, alpha=float(alpha)), ctx.const(float(gamma), dtype=X.dtype))


@onnx_converter("HardSigmoid", since=(6, 22))
def hard_sigmoid(ctx, *, X, alpha, beta):
    if abs(alpha - 1 / 6) < 1e-7 and beta == 0.5:
        return ctx.emit("nn.hardsigmoid", X)  # PyTorch's hardsigmoid is exactly this case
    scaled = ctx.emit(
        "add", ctx.emit("multiply", X, ctx.const(float(alpha), dtype=X.dtype)), ctx.const(float(beta), dtype=X.dtype)
    )
    return ctx.emit("clip", scaled, a_min=0.0, a_max=1.0)


@onnx_converter("Gelu", since=20)
def gelu(ctx, *, X, approximate):
    return ctx.emit("nn.gelu", X, approximate=approximate)


@onnx_converter("Softsign", since=(1, 22))
def softsign(ctx, *, input):
    one = ctx.const(1.0, dtype=input.dtype)
    return ctx.emit("divide", input, ctx.emit("add", one, ctx.emit("abs", input)))


@onnx_converter("ThresholdedRelu", since=(10, 22))
def thresholded_relu(ctx, *, X, alpha):
    keep = ctx.emit("greater", X, ctx.const(float(alpha), dtype=X.dtype))
    return ctx.emit("where", keep, X, ctx.const(0.0, dtype=X.dtype))


@onnx_converter("PRelu", since=(9, 16))
def prelu(ctx, *, X, slope):
    slope_const = slope.const
    if slope_const is not None and X.rank >= 2 and isinstance(X.shape[1], int):
        channels = X.shape[1]
        # nn.prelu takes one slope per channel (axis 1): a constant shaped (C,1,..,1), (C,) on 2-d data, or 1
        per_channel = slope_const.numel() in (1, channels) and (
            slope_const.numel() == 1
            or tuple(slope_const.shape) in ((channels,) + (1,) * (X.rank - 2),)
            or (X.rank == 2 and tuple(slope_const.shape) == (channels,))
        )
        if per_channel:
            return ctx.emit("nn.prelu", X, ctx.const(slope_const.reshape(-1)))
    negative = ctx.emit("less", X, ctx.const(0.0, dtype=X.dtype))
    return ctx.emit("where", negative, ctx.emit("multiply", X, slope), X)


# -- clip, cast, where, identity -----------------------------------------------------------------


@onnx_converter("Clip", since=(11, 12, 13))
def clip(ctx, *, input, min, max):
    bounds = [(key, op, b) for key, op, b in (("a_min", "maximum", min), ("a_max", "minimum", max)) if b is not None]
    if all(b.const is not None for _, _, b in bounds):
        return ctx.emit("clip", input, **{key: b.const.item() for key, _, b in bounds}) if bounds else input
    out = input  # a run-time bound: elementwise maximum, then minimum, in the order ONNX applies them
    for key, op, b in bounds:
        out = ctx.emit("clip", out, **{key: b.const.item()}) if b.const is not None else ctx.emit(op, out, b)
    return out


CASTABLE = frozenset(IR_DTYPES.values()) - {"float8_e4m3fn"}


def _cast_check(*, to, **_):
    """Target dtype must have an IR type a cast makes (no strings, float8, 4-bit or unsigned 16/32/64-bit)."""
    if to not in IR_DTYPES:
        return f"cast to ONNX element type {to}, which has no IR dtype"
    return None if IR_DTYPES[to] in CASTABLE else _cast_refusal(IR_DTYPES[to])


@onnx_converter("Cast", since=(9, 13, 19, 21, 23, 24, 25, 28), check=_cast_check)
def cast(ctx, *, input, to, saturate=1, round_mode="up"):
    if to not in IR_DTYPES:
        raise Unsupported(_cast_check(to=to))
    return _cast(ctx, input, IR_DTYPES[to])


@onnx_converter("CastLike", since=(15, 19, 21, 23, 24, 25))
def cast_like(ctx, *, input, target_type, saturate=1, round_mode="up"):
    return _cast(ctx, input, target_type.dtype)


def _cast(ctx, input, dtype: str):
    if dtype == input.dtype:
        return input
    if dtype not in CASTABLE:
        raise Unsupported(_cast_refusal(dtype))
    return ctx.emit("cast", input, dtype=dtype)


def _cast_refusal(dtype: str) -> str:
    # float8 values come from `quantize` (ONNX's QuantizeLinear, whose rounding and saturation the IR op follows);
    # a plain cast's rounding and saturation modes are not mapped
    return (
        f"a cast to {dtype.upper().replace('_', '')}, which the IR cannot hold as a cast (only quantize makes float8)"
    )


@onnx_converter("Where", since=(9, 16))
def where(ctx, *, condition, X, Y):
    return ctx.emit("where", condition, X, Y)


@onnx_converter("Identity", since=(1, 13, 14, 16, 19, 21, 23, 24, 25))
def identity(ctx, *, input):
    return input


def _dropout_check(*, ratio=None, training_mode=None, **_):
    """Inference only: training_mode absent or a constant false (or a constant ratio of 0, which drops nothing)."""
    training = training_mode is not None and (training_mode.const is None or bool(training_mode.const.item()))
    if isinstance(ratio, float) or ratio is None:  # Dropout-10: an attribute (and no training mode)
        drops = ratio != 0.0
    else:
        drops = ratio.const is None or float(ratio.const.item()) != 0.0
    return "dropout in training mode" if training and drops else None


@onnx_converter("Dropout", since=(10, 12, 13, 22), check=_dropout_check)
def dropout(ctx, *, data, ratio=None, training_mode=None, seed=None):
    reason = _dropout_check(ratio=ratio, training_mode=training_mode)
    if reason:
        raise Unsupported(reason)
    mask = None
    if len(ctx.outputs_used) > 1 and ctx.outputs_used[1]:  # nothing is dropped: the mask is all true
        mask = ctx.emit("full_like", data, fill_value=True, dtype="bool")
    return data, mask


@onnx_converter("IsNaN", since=(9, 13, 20))
def is_nan(ctx, *, X):
    return ctx.emit("not_equal", X, X)


@onnx_converter("IsInf", since=(10, 20))
def is_inf(ctx, *, X, detect_negative, detect_positive):
    inf = torch.tensor(float("inf"))
    parts = []
    if detect_positive:
        parts.append(ctx.emit("equal", X, ctx.const(inf, dtype=X.dtype)))
    if detect_negative:
        parts.append(ctx.emit("equal", X, ctx.const(-inf, dtype=X.dtype)))
    if not parts:
        return ctx.emit("full_like", X, fill_value=False, dtype="bool")
    return parts[0] if len(parts) == 1 else ctx.emit("logical_or", *parts)
