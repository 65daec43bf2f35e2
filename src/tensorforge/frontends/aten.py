"""ATen -> IR converters, by family. Each takes the op's arguments by their schema names.

Ops listed here are also kept whole by the frontend's decomposition (it only decomposes what has
no converter), so `aten.linear` arrives as a linear layer, not as a transpose and a matmul.
"""

from __future__ import annotations

import sys

import torch

from ..ir.graph import Value
from ..ir.symbolic import SymExpr
from ..ir.types import FLOAT_DTYPES, dtype_name, torch_dtype
from .converters import Unsupported, converter

_END = sys.maxsize  # "to the end" in slices


def _identity(ctx, *, self, **_):
    return self


def _static(dim) -> int:
    if not isinstance(dim, int):
        raise Unsupported(f"needs a static size, got {dim}")
    return dim


# -- unary elementwise and activations ----------------------------------------------------------

_UNARY = {
    "relu": "nn.relu",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "exp": "exp",
    "log": "log",
    "sqrt": "sqrt",
    "rsqrt": "rsqrt",
    "abs": "abs",
    "neg": "negative",
    "sin": "sin",
    "cos": "cos",
    "tan": "tan",
    "atan": "atan",
    "ceil": "ceil",
    "floor": "floor",
    "sign": "sign",
    "reciprocal": "reciprocal",
    "erf": "erf",
    "logical_not": "logical_not",
    "silu": "nn.silu",
    "mish": "nn.mish",
    "hardswish": "nn.hardswish",
    "hardsigmoid": "nn.hardsigmoid",
}


def _declare_unary(aten_name: str, ir_op: str) -> None:
    def convert(ctx, *, self, **_):
        return ctx.emit(ir_op, self)

    convert.__name__ = f"convert_{aten_name}"
    converter(f"aten::{aten_name}.default")(convert)


for _aten, _ir in _UNARY.items():
    _declare_unary(_aten, _ir)


@converter("aten::round.default")
def round_(ctx, *, self):
    return ctx.emit("round", self)


@converter("aten::bitwise_not.default")
def bitwise_not(ctx, *, self):
    if self.type.dtype != "bool":
        raise Unsupported("bitwise_not of integers")
    return ctx.emit("logical_not", self)


@converter("aten::gelu.default")
def gelu(ctx, *, self, approximate):
    return ctx.emit("nn.gelu", self, approximate=approximate)


@converter("aten::leaky_relu.default")
def leaky_relu(ctx, *, self, negative_slope):
    return ctx.emit("nn.leaky_relu", self, alpha=float(negative_slope))


@converter("aten::elu.default")
def elu(ctx, *, self, alpha, scale, input_scale):
    if scale != 1 or input_scale != 1:
        raise Unsupported("elu with scale or input_scale")
    return ctx.emit("nn.elu", self, alpha=float(alpha))


@converter("aten::prelu.default")
def prelu(ctx, *, self, weight):
    return ctx.emit("nn.prelu", self, weight)


@converter("aten::softplus.default")
def softplus(ctx, *, self, beta, threshold):
    if beta != 1 or threshold != 20:
        raise Unsupported("softplus with non-default beta/threshold")
    return ctx.emit("nn.softplus", self)


@converter("aten::hardtanh.default")
def hardtanh(ctx, *, self, min_val, max_val):
    return ctx.emit("clip", self, a_min=min_val, a_max=max_val)


@converter("aten::clamp.default")
def clamp(ctx, *, self, min, max):
    return ctx.emit("clip", self, a_min=min, a_max=max)


@converter("aten::clamp_min.default")
def clamp_min(ctx, *, self, min):
    return ctx.emit("clip", self, a_min=min)


@converter("aten::clamp_max.default")
def clamp_max(ctx, *, self, max):
    return ctx.emit("clip", self, a_max=max)


@converter("aten::clamp.Tensor", "aten::clamp_min.Tensor", "aten::clamp_max.Tensor")
def clamp_tensor(ctx, *, self, min=None, max=None):
    """Bounds that are tensors (Hugging Face's T5 clamps FP16 hidden states to a bound it computes): a maximum,
    then a minimum, which is clamp's definition (a lower bound above the upper gives the upper) and its type
    promotion (PyTorch's, as every IR binary op)."""
    out = self
    if min is not None:
        out = ctx.emit("maximum", out, ctx.value(min))
    if max is not None:
        out = ctx.emit("minimum", out, ctx.value(max))
    return out


# -- float classification: infinities and NaNs, from comparisons the engine already runs ----------


def _float_operand(x, what: str):
    if x.type.dtype not in FLOAT_DTYPES:
        raise Unsupported(f"{what} of a {x.type.dtype} tensor")
    return x


@converter("aten::isinf.default")
def isinf(ctx, *, self):
    x = _float_operand(self, "isinf")
    return ctx.emit("equal", ctx.graph.call("abs", x), ctx.value(float("inf")))


@converter("aten::isnan.default")
def isnan(ctx, *, self):
    x = _float_operand(self, "isnan")
    return ctx.emit("not_equal", x, x)  # NaN is the one value unequal to itself


@converter("aten::isfinite.default")
def isfinite(ctx, *, self):
    x = _float_operand(self, "isfinite")
    return ctx.emit("less", ctx.graph.call("abs", x), ctx.value(float("inf")))  # NaN < inf is false too


# -- binary elementwise -------------------------------------------------------------------------

_BINARY = {
    "mul": "multiply",
    "div": "divide",
    "maximum": "maximum",
    "minimum": "minimum",
    "pow": "power",
    "eq": "equal",
    "ne": "not_equal",
    "lt": "less",
    "le": "less_equal",
    "gt": "greater",
    "ge": "greater_equal",
    "logical_and": "logical_and",
    "logical_or": "logical_or",
    "logical_xor": "logical_xor",
    "remainder": "floor_mod",
    "fmod": "trunc_mod",
}


# arithmetic on two booleans is boolean logic in PyTorch (a mask times a mask, RecurrentGemma's): the logical op says
# so, and the engine, whose arithmetic takes numbers, takes it
_BOOLEAN_FORMS = {"multiply": "logical_and", "add": "logical_or"}


# arithmetic promotes a boolean operand to the other's type (a mask times hidden states, RecurrentGemma's): the
# cast is made explicit, since the engine's arithmetic takes numbers only
_ARITHMETIC = ("add", "subtract", "multiply", "divide", "power", "maximum", "minimum", "floor_mod", "trunc_mod")


def _both_bool(lhs: Value, rhs) -> bool:
    rhs_bool = rhs.type.dtype == "bool" if isinstance(rhs, Value) else isinstance(rhs, bool)
    return lhs.type.dtype == "bool" and rhs_bool


def _promote_bool(ctx, lhs: Value, rhs: Value) -> tuple[Value, Value]:
    """(lhs, rhs) with a boolean operand cast to the other operand's type, as PyTorch promotes it."""
    if lhs.type.dtype == "bool" and rhs.type.dtype != "bool":
        lhs = ctx.graph.call("cast", lhs, dtype=rhs.type.dtype)
    elif rhs.type.dtype == "bool" and lhs.type.dtype != "bool":
        rhs = ctx.graph.call("cast", rhs, dtype=lhs.type.dtype)
    return lhs, rhs


def _declare_binary(aten_name: str, ir_op: str) -> None:
    def convert(ctx, *, self, other=None, exponent=None):
        rhs = other if exponent is None else exponent
        if not hasattr(self, "type"):
            raise Unsupported("a scalar first operand")
        if ir_op in _BOOLEAN_FORMS and _both_bool(self, rhs):
            return ctx.emit(_BOOLEAN_FORMS[ir_op], self, ctx.value(rhs))
        lhs, rhs = self, ctx.value(rhs)
        if ir_op in _ARITHMETIC:
            lhs, rhs = _promote_bool(ctx, lhs, rhs)
        return ctx.emit(ir_op, lhs, rhs)

    convert.__name__ = f"convert_{aten_name}"
    converter(f"aten::{aten_name}")(convert)  # every overload: .Tensor, .Scalar, .Tensor_Scalar, ...


for _aten, _ir in _BINARY.items():
    _declare_binary(_aten, _ir)


@converter("aten::pow.Scalar")
def pow_scalar(ctx, *, self, exponent):
    return ctx.emit("power", ctx.value(self), exponent)


@converter("aten::bitwise_and.Tensor", "aten::bitwise_or.Tensor")
def bitwise_logic(ctx, *, self, other):
    if self.type.dtype != "bool" or other.type.dtype != "bool":
        raise Unsupported("bitwise logic on integers")
    op = "logical_and" if ctx.fx_node.target._schema.name.endswith("and") else "logical_or"
    return ctx.emit(op, self, other)


@converter("aten::div.Tensor_mode", "aten::div.Scalar_mode")
def div_mode(ctx, *, self, other, rounding_mode):
    op = {None: "divide", "floor": "floor_divide", "trunc": "trunc_divide"}[rounding_mode]
    return ctx.emit(op, self, ctx.value(other))


def _add_like(ctx, op, lhs, rhs, alpha):
    lhs, rhs = _promote_bool(ctx, lhs, ctx.value(rhs))
    if alpha != 1:
        rhs = ctx.emit("multiply", rhs, ctx.value(alpha))
    return ctx.emit(op, lhs, rhs)


@converter("aten::add.Tensor", "aten::add.Scalar")
def add(ctx, *, self, other, alpha):
    if _both_bool(self, other) and alpha:  # True + x is True: alpha (a bool here) only ever scales by one
        return ctx.emit("logical_or", self, ctx.value(other))
    return _add_like(ctx, "add", self, other, alpha)


@converter("aten::sub.Tensor", "aten::sub.Scalar")
def sub(ctx, *, self, other, alpha):
    return _add_like(ctx, "subtract", self, other, alpha)


@converter("aten::rsub.Scalar", "aten::rsub.Tensor")
def rsub(ctx, *, self, other, alpha):
    scaled = self if alpha == 1 else ctx.emit("multiply", self, ctx.value(alpha))
    return ctx.emit("subtract", ctx.value(other), scaled)


@converter("aten::where.self")
def where(ctx, *, condition, self, other):
    return ctx.emit("where", condition, self, other)


@converter("aten::masked_fill.Scalar", "aten::masked_fill.Tensor")
def masked_fill(ctx, *, self, mask, value):
    fill = ctx.const(value, dtype=self.type.torch_dtype) if not hasattr(value, "type") else value
    return ctx.emit("where", mask, fill, self)


# -- dtype and identity ---------------------------------------------------------------------------


@converter("aten::_to_copy.default")
def to_copy(ctx, *, self, dtype=None, **_):
    if dtype is None or dtype_name(dtype) == self.type.dtype:
        return self  # a device or layout move: the graph is device-agnostic
    return ctx.emit("cast", self, dtype=dtype_name(dtype))


@converter("aten::copy.default")
def copy(ctx, *, self, src, non_blocking=False):
    """The functional form of `self.copy_(src)`: src cast to self's dtype and broadcast to its shape (what
    functionalization leaves of an in-place slice assignment); self's values are not read."""
    out = src if src.type.dtype == self.type.dtype else ctx.emit("cast", src, dtype=self.type.dtype)
    return out if out.type.shape == self.type.shape else ctx.emit("broadcast_to", out, shape=self.type.shape)


converter(
    "aten::clone.default",
    "aten::alias.default",
    "aten::detach.default",
    "aten::lift_fresh_copy.default",
    "aten::contiguous.default",
)(_identity)


@converter("aten::dropout.default")
def dropout(ctx, *, input, p, train):
    if train and p > 0:
        raise Unsupported("dropout in training mode")
    return input


# -- shape and layout -----------------------------------------------------------------------------


@converter("aten::view.default", "aten::_unsafe_view.default", "aten::reshape.default")
def view(ctx, *, self, size=None, shape=None):
    return ctx.emit("reshape", self, newshape=tuple(size if size is not None else shape))


@converter("aten::permute.default")
def permute(ctx, *, self, dims):
    return ctx.emit("transpose", self, axes=tuple(d % self.type.rank for d in dims))


@converter("aten::t.default")
def t(ctx, *, self):
    return self if self.type.rank < 2 else ctx.emit("transpose", self, axes=(1, 0))


@converter("aten::transpose.int")
def transpose(ctx, *, self, dim0, dim1):
    axes = list(range(self.type.rank))
    a, b = dim0 % self.type.rank, dim1 % self.type.rank
    axes[a], axes[b] = axes[b], axes[a]
    return ctx.emit("transpose", self, axes=tuple(axes))


@converter("aten::unsqueeze.default")
def unsqueeze(ctx, *, self, dim):
    return ctx.emit("expand_dims", self, axis=dim % (self.type.rank + 1))


@converter("aten::squeeze.default", "aten::squeeze.dim", "aten::squeeze.dims")
def squeeze(ctx, *, self, dim=None):
    dims = (dim,) if isinstance(dim, int) else dim
    if dims is None:
        dims = tuple(i for i, d in enumerate(self.type.shape) if d == 1)
    dims = tuple(d % self.type.rank for d in dims if self.type.shape[d % self.type.rank] == 1)  # torch skips non-1
    return ctx.emit("squeeze", self, axis=dims) if dims else self


@converter("aten::flatten.using_ints")
def flatten(ctx, *, self, start_dim, end_dim):
    shape = self.type.shape
    start, end = start_dim % max(len(shape), 1), end_dim % max(len(shape), 1)
    if shape[start : end + 1] and all(isinstance(d, int) for d in shape[start : end + 1]):
        merged = 1
        for d in shape[start : end + 1]:
            merged *= d
    else:
        merged = -1
    return ctx.emit("reshape", self, newshape=tuple(shape[:start]) + (merged,) + tuple(shape[end + 1 :]))


@converter("aten::cat.default")
def cat(ctx, *, tensors, dim):
    rank = max(t.type.rank for t in tensors)
    tensors = [t for t in tensors if not (t.type.rank == 1 and t.type.shape[0] == 0)]  # torch skips empty 1-d
    return ctx.emit("concatenate", *tensors, axis=dim % rank)


@converter("aten::stack.default")
def stack(ctx, *, tensors, dim):
    return ctx.emit("stack", *tensors, axis=dim % (tensors[0].type.rank + 1))


def _split_points(sizes) -> tuple[int, ...]:
    points, total = [], 0
    for s in sizes[:-1]:
        total += s
        points.append(total)
    return tuple(points)


@converter("aten::split.Tensor", "aten::split_with_sizes.default")
def split(ctx, *, self, dim, split_size=None, split_sizes=None):
    dim = dim % self.type.rank
    length = _static(self.type.shape[dim])
    if split_sizes is None:
        split_sizes = [min(split_size, length - i) for i in range(0, length, split_size)]
    if len(split_sizes) == 1:
        return (self,)
    out = ctx.emit("split", self, indices_or_sections=_split_points(list(split_sizes)), axis=dim)
    return out


@converter("aten::chunk.default")
def chunk(ctx, *, self, chunks, dim):
    length = _static(self.type.shape[dim % self.type.rank])
    size = -(-length // chunks)
    return split(ctx, self=self, dim=dim, split_size=size)


@converter("aten::unbind.int")
def unbind(ctx, *, self, dim):
    dim = dim % self.type.rank
    length = _static(self.type.shape[dim])
    pieces = ctx.emit("split", self, indices_or_sections=length, axis=dim) if length > 1 else (self,)
    pieces = pieces if isinstance(pieces, tuple) else (pieces,)
    return tuple(ctx.emit("squeeze", p, axis=(dim,)) for p in pieces)


@converter("aten::slice.Tensor")
def slice_(ctx, *, self, dim, start, end, step):
    dim = dim % self.type.rank
    start = 0 if start is None else start
    end = _END if end is None else end
    if start == 0 and end == _END and step == 1:
        return self
    return ctx.emit("strided_slice", self, begin=(start,), end=(end,), strides=(step,), axes=(dim,))


@converter("aten::slice_scatter.default")
def slice_scatter(ctx, *, self, src, dim, start, end, step):
    """What functionalization makes of `x[..., a:b] = y`; a slice as long as its axis (step 1) is all of self."""
    dim = dim % self.type.rank
    start = 0 if start is None else start
    end = _END if end is None else end
    if not isinstance(start, int) or not isinstance(end, int):
        raise Unsupported(f"slice_scatter with symbolic bounds {start}:{end}")
    if step == 1 and src.type.shape == self.type.shape:
        return src if src.type.dtype == self.type.dtype else ctx.emit("cast", src, dtype=self.type.dtype)
    return ctx.emit("slice_scatter", self, src, axis=dim, begin=start, end=end, stride=step)


@converter("aten::select.int")
def select(ctx, *, self, dim, index):
    dim = dim % self.type.rank
    end = _END if index == -1 else index + 1
    picked = ctx.emit("strided_slice", self, begin=(index,), end=(end,), strides=(1,), axes=(dim,))
    return ctx.emit("squeeze", picked, axis=(dim,))


@converter("aten::expand.default")
def expand(ctx, *, self, size, implicit=False):
    if tuple(size) == self.type.shape:
        return self
    return ctx.emit("broadcast_to", self, shape=tuple(size))


@converter("aten::repeat.default")
def repeat(ctx, *, self, repeats):
    return ctx.emit("tile", self, reps=tuple(repeats))


@converter("aten::as_strided.default")
def as_strided(ctx, *, self, size, stride, storage_offset=None):
    """Only the identity view: `size` is self's shape and `stride` walks a contiguous self in order (what a
    decomposition leaves when it restores a layout, e.g. adaptive_avg_pool3d's mean over size-1 axes)."""
    source = ctx.fx_node.args[0].meta.get("val")
    shape = self.type.shape
    if (
        tuple(size) != shape
        or storage_offset not in (None, 0)
        or not isinstance(source, torch.Tensor)
        or not all(isinstance(d, int) for d in shape[1:])
        or source.storage_offset() != 0
    ):
        raise Unsupported("as_strided other than an identity view")
    contiguous = [1] * len(shape)
    for axis in range(len(shape) - 2, -1, -1):
        contiguous[axis] = contiguous[axis + 1] * shape[axis + 1]
    for axis, dim in enumerate(shape):
        if dim != 1 and not (stride[axis] == contiguous[axis] == source.stride()[axis]):
            raise Unsupported("as_strided other than an identity view")
    return self


@converter("aten::roll.default")
def roll(ctx, *, self, shifts, dims):
    if not all(isinstance(s, int) for s in shifts):
        raise Unsupported(f"roll by a symbolic shift {tuple(shifts)}")
    axis = tuple(d % self.type.rank for d in dims) if dims else None
    return ctx.emit("roll", self, shift=tuple(shifts), axis=axis)


@converter("aten::flip.default")
def flip(ctx, *, self, dims):
    for d in dims:
        self = ctx.emit("reverse", self, axis=d % self.type.rank)
    return self


# -- gathering ------------------------------------------------------------------------------------


@converter("aten::embedding.default")
def embedding(ctx, *, weight, indices, **_):
    return ctx.emit("take", weight, indices, axis=0)


@converter("aten::index_select.default")
def index_select(ctx, *, self, dim, index):
    return ctx.emit("take", self, index, axis=dim % self.type.rank)


@converter("aten::index.Tensor")
def index(ctx, *, self, indices):
    used = [(axis, i) for axis, i in enumerate(indices) if i is not None]
    if any(i.type.dtype == "bool" for _, i in used):
        raise Unsupported("boolean-mask indexing (its output shape depends on the data)")
    if len(used) == 1 and used[0][1].type.rank >= 0:
        axis, idx = used[0]
        return ctx.emit("take", self, idx, axis=axis)
    return ctx.emit("adv_index", self, *(i for _, i in used), axes=tuple(a for a, _ in used))


@converter("aten::unfold.default")
def unfold(ctx, *, self, dimension, size, step):
    """Tensor.unfold (HaloNet's overlapping halo blocks): every window of `size` along `dimension`, `step` apart, as
    a new last axis; a take with a constant (windows, size) index, then that axis moved to the end."""
    if self.type.rank == 0:
        raise Unsupported("unfold of a 0-d tensor")
    dim = dimension % self.type.rank
    length = self.type.shape[dim]
    if not isinstance(length, int):
        raise Unsupported(f"unfold along the symbolic axis {length}")
    index = torch.arange((length - size) // step + 1)[:, None] * step + torch.arange(size)
    if dim == self.type.rank - 1:
        return ctx.emit("take", self, ctx.const(index), axis=dim)
    picked = ctx.graph.call("take", self, ctx.const(index), axis=dim)
    axes = [a for a in range(self.type.rank + 1) if a != dim + 1] + [dim + 1]
    return ctx.emit("transpose", picked, axes=tuple(axes))


@converter("aten::gather.default")
def gather(ctx, *, self, dim, index, sparse_grad=False):
    return ctx.emit("gather", self, index, axis=dim % self.type.rank)


@converter("aten::scatter.value")
def scatter_value(ctx, *, self, dim, index, value):
    """`self` with `value` written where `index` points along `dim`: each position is compared with the K indices
    of its row and takes `value` if any names it, else keeps its own (K x N compares for N positions). Phi-MoE's
    router masks the experts it already took so. The index must span the other axes as `self` does."""
    axis = dim % max(self.type.rank, 1)
    others = [d for i, d in enumerate(self.type.shape) if i != axis]
    if index.type.rank != self.type.rank or [d for i, d in enumerate(index.type.shape) if i != axis] != others:
        raise Unsupported(f"scatter of index {index.type} into {self.type}: the index must span the other axes")
    size = _static(self.type.shape[axis])
    _static(index.type.shape[axis])
    shape = [1] * (self.type.rank + 1)
    shape[axis + 1] = size
    positions = ctx.const(torch.arange(size).reshape(shape))
    named = ctx.graph.call("equal", ctx.graph.call("expand_dims", index, axis=axis + 1), positions)
    count = ctx.graph.call("max", ctx.graph.call("cast", named, dtype="int32"), axis=(axis,), keepdims=False)
    hit = ctx.graph.call("cast", count, dtype="bool")
    return ctx.emit("where", hit, ctx.const(value, dtype=self.type.torch_dtype), self)


# -- padding --------------------------------------------------------------------------------------


def _pad_pairs(rank: int, pad) -> tuple:
    """torch's flat (last-dim-first) pad list -> one (before, after) pair per dimension."""
    pairs = [(0, 0)] * rank
    for i in range(len(pad) // 2):
        pairs[rank - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return tuple(pairs)


def _pad_width(rank: int, pad) -> tuple:
    pairs = _pad_pairs(rank, pad)
    if any(p < 0 for pair in pairs for p in pair):
        raise Unsupported("negative padding (cropping)")
    return pairs


@converter("aten::constant_pad_nd.default")
def constant_pad_nd(ctx, *, self, pad, value):
    """A negative pad crops that side (F.fold's decomposition pads by -padding to cut its border off): those
    sides become one slice, the rest a pad; the two never meet on one side."""
    pairs = _pad_pairs(self.type.rank, pad)
    cropped = [(axis, -before, -after) for axis, (before, after) in enumerate(pairs) if before < 0 or after < 0]
    pad_width = tuple((max(before, 0), max(after, 0)) for before, after in pairs)
    x = self
    if cropped:
        x = ctx.graph.call(
            "strided_slice",
            x,
            begin=tuple(max(before, 0) for _, before, _ in cropped),
            end=tuple(-after if after > 0 else _END for _, _, after in cropped),
            axes=tuple(axis for axis, _, _ in cropped),
        )
    if not any(p for pair in pad_width for p in pair):
        return x
    return ctx.emit("nn.pad", x, pad_width=pad_width, pad_value=float(value))


def _declare_pad(aten_prefix: str, mode: str) -> None:
    def convert(ctx, *, self, padding):
        return ctx.emit("nn.pad", self, pad_width=_pad_width(self.type.rank, padding), pad_mode=mode)

    convert.__name__ = f"convert_{aten_prefix}"
    converter(*(f"aten::{aten_prefix}{n}d.default" for n in (1, 2, 3)))(convert)


_declare_pad("reflection_pad", "reflect")
_declare_pad("replication_pad", "edge")


# -- convolution and matrix products ---------------------------------------------------------------


def _per_axis(values, ndim: int) -> tuple:
    """A convolution's stride/padding/dilation for each spatial axis: ATen takes one value for all of them too
    (`Conv2d(padding="valid")` decomposes to `padding=[0]`)."""
    values = tuple(values)
    return values * ndim if len(values) == 1 else values


@converter("aten::convolution.default")
def convolution(ctx, *, input, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    ndim = weight.type.rank - 2
    if ndim not in (1, 2, 3):
        raise Unsupported(f"{ndim}-d convolution")
    stride, padding, dilation = (_per_axis(v, ndim) for v in (stride, padding, dilation))
    output_padding = _per_axis(output_padding, ndim)
    if transposed:
        out = ctx.emit(
            f"nn.conv{ndim}d_transpose",
            input,
            weight,
            strides=tuple(stride),
            padding=tuple(padding),
            output_padding=tuple(output_padding),
            dilation=tuple(dilation),
            groups=groups,
        )
    else:
        out = ctx.emit(
            f"nn.conv{ndim}d",
            input,
            weight,
            strides=tuple(stride),
            padding=tuple(padding),
            dilation=tuple(dilation),
            groups=groups,
        )
    return out if bias is None else ctx.emit("nn.bias_add", out, bias, axis=1)


@converter("aten::col2im.default")
def col2im(ctx, *, self, output_size, kernel_size, dilation, padding, stride):
    """F.fold (VOLO's outlook attention) as a transposed convolution, one group per channel, whose one-hot kernel
    puts column (i, j) of a channel at window offset (i, j): overlapping windows add up, as they do in the
    decomposition's scatter-add (index_put with accumulate), which the engine has no op for."""
    unbatched = self.type.rank == 2
    x = ctx.graph.call("expand_dims", self, axis=0) if unbatched else self
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = kernel_size, dilation, padding, stride
    height, width = output_size
    columns, blocks = x.type.shape[1:]
    if not isinstance(columns, int) or not isinstance(blocks, int) or columns % (kh * kw):
        raise Unsupported(f"col2im of {columns} columns x {blocks} blocks with a {kh}x{kw} kernel")
    natural = [  # the size the blocks cover, which output_padding tops up to output_size
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, k, d, p, s in ((height, kh, dh, ph, sh), (width, kw, dw, pw, sw))
    ]
    if natural[0] * natural[1] != blocks:
        raise Unsupported(f"col2im: {blocks} blocks do not tile a {height}x{width} output")
    grid = ctx.graph.call("reshape", x, newshape=(-1, columns, *natural))
    one_hot = torch.eye(kh * kw, dtype=x.type.torch_dtype).reshape(kh * kw, 1, kh, kw)
    kernel = ctx.const(one_hot.repeat(columns // (kh * kw), 1, 1, 1))
    output_padding = tuple(
        size - ((n - 1) * s - 2 * p + d * (k - 1) + 1)
        for size, n, k, d, p, s in ((height, natural[0], kh, dh, ph, sh), (width, natural[1], kw, dw, pw, sw))
    )
    out = (ctx.graph.call if unbatched else ctx.emit)(
        "nn.conv2d_transpose",
        grid,
        kernel,
        strides=(sh, sw),
        padding=(ph, pw),
        output_padding=output_padding,
        dilation=(dh, dw),
        groups=columns // (kh * kw),
    )
    return ctx.emit("squeeze", out, axis=(0,)) if unbatched else out


@converter("aten::linear.default")
def linear(ctx, *, input, weight, bias):
    out = ctx.emit("nn.dense", input, weight)
    return out if bias is None else ctx.emit("nn.bias_add", out, bias, axis=-1)


@converter("aten::addmm.default")
def addmm(ctx, *, self, mat1, mat2, beta, alpha):
    out = ctx.emit("matmul", mat1, mat2)
    if alpha != 1:
        out = ctx.emit("multiply", out, ctx.value(alpha))
    if beta == 0:  # torch then ignores `self`, NaN and inf included
        return out
    bias = self if beta == 1 else ctx.emit("multiply", self, ctx.value(beta))
    return ctx.emit("add", out, bias)


@converter("aten::mm.default", "aten::matmul.default")
def matmul(ctx, *, self, mat2=None, other=None):
    return ctx.emit("matmul", self, mat2 if mat2 is not None else other)


@converter("aten::bmm.default")
def bmm(ctx, *, self, mat2):
    return ctx.emit("nn.batch_matmul", self, mat2, transpose_b=False)


@converter("aten::scaled_dot_product_attention.default")
def scaled_dot_product_attention(ctx, *, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa=False):
    if dropout_p or enable_gqa:
        raise Unsupported("attention with dropout or grouped-query broadcasting")
    inputs = (query, key, value) if attn_mask is None else (query, key, value, attn_mask)
    return ctx.emit("nn.scaled_dot_product_attention", *inputs, is_causal=bool(is_causal), scale=scale)


# -- normalization ----------------------------------------------------------------------------------


def _ones_if_none(ctx, tensor, shape, dtype, fill=1.0):
    return tensor if tensor is not None else ctx.const(torch.full(shape, fill, dtype=torch.float32).to(dtype))


@converter("aten::layer_norm.default")
def layer_norm(ctx, *, input, normalized_shape, weight, bias, eps, cudnn_enable=True):
    shape = tuple(normalized_shape)
    dtype = input.type.torch_dtype
    weight = _ones_if_none(ctx, weight, shape, dtype)
    bias = _ones_if_none(ctx, bias, shape, dtype, fill=0.0)
    return ctx.emit("nn.layer_norm", input, weight, bias, axis=input.type.rank - len(shape), epsilon=float(eps))


@converter("aten::native_layer_norm.default")
def native_layer_norm(ctx, *, input, normalized_shape, weight, bias, eps):
    if any(u.args[1] != 0 for u in ctx.users()):
        raise Unsupported("uses the mean/rstd outputs")
    return (
        layer_norm(ctx, input=input, normalized_shape=normalized_shape, weight=weight, bias=bias, eps=eps),
        None,
        None,
    )


@converter("aten::group_norm.default")
def group_norm(ctx, *, input, num_groups, weight, bias, eps, cudnn_enabled=True):
    channels = (input.type.shape[1],)
    dtype = input.type.torch_dtype
    weight = _ones_if_none(ctx, weight, channels, dtype)
    bias = _ones_if_none(ctx, bias, channels, dtype, fill=0.0)
    return ctx.emit("nn.group_norm", input, weight, bias, num_groups=num_groups, epsilon=float(eps))


@converter("aten::native_group_norm.default")
def native_group_norm(ctx, *, input, weight, bias, N, C, HxW, group, eps):  # noqa: N803
    if any(u.args[1] != 0 for u in ctx.users()):
        raise Unsupported("uses the mean/rstd outputs")
    return (group_norm(ctx, input=input, num_groups=group, weight=weight, bias=bias, eps=eps), None, None)


def _batch_norm(ctx, input, weight, bias, running_mean, running_var, eps):
    if running_mean is None or running_var is None:
        raise Unsupported("batch norm without running statistics")
    channels = (input.type.shape[1],)
    dtype = running_mean.type.torch_dtype
    weight = _ones_if_none(ctx, weight, channels, dtype)
    bias = _ones_if_none(ctx, bias, channels, dtype, fill=0.0)
    return ctx.emit("nn.batch_norm", input, weight, bias, running_mean, running_var, axis=1, epsilon=float(eps))


@converter("aten::_native_batch_norm_legit_no_training.default")
def batch_norm_no_training(ctx, *, input, weight, bias, running_mean, running_var, momentum, eps):
    if any(u.args[1] != 0 for u in ctx.users()):
        raise Unsupported("uses the saved mean/invstd outputs")
    return (_batch_norm(ctx, input, weight, bias, running_mean, running_var, eps), None, None)


@converter("aten::_native_batch_norm_legit.no_stats")
def batch_norm_batch_statistics(ctx, *, input, weight, bias, training, momentum, eps):
    """F.batch_norm(training=True) without running statistics: normalised by the input's own mean and biased
    variance over every axis but the channels. Weight standardisation (timm's NFNets) does this to a weight at
    every call, and on a constant the whole computation folds into one before partitioning. Elementwise ops, not
    nn.batch_norm: the engine's batch norm takes constant statistics only."""
    if any(u.args[1] != 0 for u in ctx.users()):
        raise Unsupported("uses the saved mean/invstd outputs")
    call = ctx.graph.call
    axes = tuple(a for a in range(input.type.rank) if a != 1)
    centered = call("subtract", input, call("mean", input, axis=axes, keepdims=True))
    variance = call("mean", call("multiply", centered, centered), axis=axes, keepdims=True)
    scale = call("rsqrt", call("add", variance, ctx.value(float(eps))))
    per_channel = (-1,) + (1,) * (input.type.rank - 2)
    if weight is not None:
        scale = call("multiply", scale, call("reshape", weight, newshape=per_channel))
    if bias is None:
        return ctx.emit("multiply", centered, scale), None, None
    return ctx.emit("add", call("multiply", centered, scale), call("reshape", bias, newshape=per_channel)), None, None


@converter("aten::batch_norm.default")
def batch_norm(ctx, *, input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled):
    if training:
        raise Unsupported("batch norm in training mode")
    return _batch_norm(ctx, input, weight, bias, running_mean, running_var, eps)


@converter("aten::_softmax.default", "aten::softmax.int")
def softmax(ctx, *, self, dim, half_to_float=False, dtype=None):
    x = self if dtype is None else ctx.emit("cast", self, dtype=dtype_name(dtype))
    if half_to_float:
        x = ctx.emit("cast", x, dtype="float32")
    return ctx.emit("nn.softmax", x, axis=dim % self.type.rank)


@converter("aten::_log_softmax.default", "aten::log_softmax.int")
def log_softmax(ctx, *, self, dim, half_to_float=False, dtype=None):
    x = self if dtype is None else ctx.emit("cast", self, dtype=dtype_name(dtype))
    if half_to_float:
        x = ctx.emit("cast", x, dtype="float32")
    return ctx.emit("nn.log_softmax", x, axis=dim % self.type.rank)


# -- pooling and resizing ---------------------------------------------------------------------------


def _pool_args(kernel_size, stride, padding, ndim):
    k = tuple(kernel_size) * (ndim if len(kernel_size) == 1 else 1)
    s = tuple(stride) * (ndim if len(stride) == 1 else 1) if stride else k
    p = tuple(padding) * (ndim if len(padding) == 1 else 1)
    return k, s, p


def _declare_max_pool(ndim: int) -> None:
    def convert(ctx, *, self, kernel_size, stride, padding, dilation, ceil_mode):
        with_indices = ctx.fx_node.target._schema.name.endswith("with_indices")
        if with_indices and any(u.args[1] != 0 for u in ctx.users()):
            raise Unsupported("uses the pooling indices")
        k, s, p = _pool_args(kernel_size, stride, padding, ndim)
        d = tuple(dilation) * (ndim if len(dilation) == 1 else 1)
        out = ctx.emit(
            f"nn.max_pool{ndim}d", self, pool_size=k, strides=s, padding=p, dilation=d, ceil_mode=bool(ceil_mode)
        )
        return (out, None) if with_indices else out

    convert.__name__ = f"convert_max_pool{ndim}d"
    converter(f"aten::max_pool{ndim}d.default", f"aten::max_pool{ndim}d_with_indices.default")(convert)


def _declare_avg_pool(ndim: int) -> None:
    def convert(ctx, *, self, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override=None):
        if divisor_override:
            raise Unsupported("avg_pool with divisor_override")
        k, s, p = _pool_args(kernel_size, stride, padding, ndim)
        return ctx.emit(
            f"nn.avg_pool{ndim}d",
            self,
            pool_size=k,
            strides=s,
            padding=p,
            ceil_mode=bool(ceil_mode),
            count_include_pad=bool(count_include_pad),
        )

    convert.__name__ = f"convert_avg_pool{ndim}d"
    converter(f"aten::avg_pool{ndim}d.default")(convert)


for _n in (2, 3):
    _declare_max_pool(_n)
for _n in (1, 2, 3):
    _declare_avg_pool(_n)


@converter("aten::adaptive_avg_pool2d.default", "aten::_adaptive_avg_pool2d.default")
def adaptive_avg_pool2d(ctx, *, self, output_size):
    size = tuple(output_size)
    if self.type.rank == 4 and size == (1, 1):
        return ctx.emit("nn.global_avg_pool2d", self)
    return ctx.emit("nn.adaptive_avg_pool2d", self, output_size=size)


@converter("aten::adaptive_max_pool2d.default")
def adaptive_max_pool2d(ctx, *, self, output_size):
    if any(u.args[1] != 0 for u in ctx.users()):
        raise Unsupported("uses the pooling indices")
    size = tuple(output_size)
    if self.type.rank == 4 and size == (1, 1):
        return ctx.emit("nn.global_max_pool2d", self), None
    return ctx.emit("nn.adaptive_max_pool2d", self, output_size=size), None


def _resize(ctx, data, method, align_corners=False, scale_factors=None, scales_h=None, scales_w=None):
    size = ctx.output_shape()[-2:]
    scales = scale_factors if scale_factors is not None else (scales_h, scales_w)
    if not align_corners:
        # given a scale factor, torch maps output pixels back with 1/scale, not in/out: only equal when exact
        for scale, in_size, out_size in zip(scales, data.type.shape[-2:], size):
            if scale is None:
                continue
            exact = float(scale).is_integer() and in_size * int(scale) == out_size
            if not exact and (not isinstance(in_size, int) or float(scale) * in_size != out_size):
                raise Unsupported(f"scale factor {scale} maps {in_size} pixels to {out_size} only approximately")
    return ctx.emit("image.resize2d", data, size=size, method=method, align_corners=bool(align_corners))


@converter("aten::upsample_nearest2d.vec", "aten::upsample_nearest2d.default")
def upsample_nearest2d(ctx, *, input=None, self=None, output_size=None, **scales):
    return _resize(ctx, input if input is not None else self, "nearest", **scales)


@converter("aten::_upsample_nearest_exact2d.vec", "aten::_upsample_nearest_exact2d.default")
def upsample_nearest_exact2d(ctx, *, input=None, self=None, output_size=None, **scales):
    return _resize(ctx, input if input is not None else self, "nearest_exact", **scales)


@converter("aten::upsample_bilinear2d.vec", "aten::upsample_bilinear2d.default")
def upsample_bilinear2d(ctx, *, align_corners, input=None, self=None, output_size=None, **scales):
    return _resize(ctx, input if input is not None else self, "linear", align_corners, **scales)


@converter("aten::upsample_bicubic2d.vec", "aten::upsample_bicubic2d.default")
def upsample_bicubic2d(ctx, *, align_corners, input=None, self=None, output_size=None, **scales):
    return _resize(ctx, input if input is not None else self, "cubic", align_corners, **scales)


# -- reductions -------------------------------------------------------------------------------------


def _reduce_axes(x, dim):
    if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        return None
    dims = (dim,) if isinstance(dim, int) else dim
    return tuple(sorted(d % max(x.type.rank, 1) for d in dims))


def _declare_reduction(aten_names: tuple[str, ...], ir_op: str) -> None:
    def convert(ctx, *, self, dim=None, keepdim=False, dtype=None):
        x = self if dtype is None else ctx.emit("cast", self, dtype=dtype_name(dtype))
        out = ctx.emit(ir_op, x, axis=_reduce_axes(self, dim), keepdims=bool(keepdim))
        if dtype is not None and out.type.dtype != dtype_name(dtype):  # sum/prod widen integers to int64
            out = ctx.emit("cast", out, dtype=dtype_name(dtype))
        return out

    convert.__name__ = f"convert_{ir_op}"
    converter(*aten_names)(convert)


_declare_reduction(("aten::sum.dim_IntList", "aten::sum.default"), "sum")
_declare_reduction(("aten::mean.dim", "aten::mean.default"), "mean")
_declare_reduction(("aten::prod.dim_int", "aten::prod.default"), "prod")
_declare_reduction(("aten::amax.default", "aten::max.default"), "max")  # max.default: x.max(), all elements
_declare_reduction(("aten::amin.default", "aten::min.default"), "min")


def _declare_truth_reduction(name: str, reduce_op: str) -> None:
    """any / all: whether some / every element is nonzero, as the max / min of the elements as int32 (the engine
    reduces numbers, not booleans)."""

    def convert(ctx, *, self, dim=None, keepdim=False):
        truth = self if self.type.dtype == "bool" else ctx.graph.call("not_equal", self, ctx.value(0))
        count = ctx.graph.call("cast", truth, dtype="int32")
        reduced = ctx.graph.call(reduce_op, count, axis=_reduce_axes(self, dim), keepdims=bool(keepdim))
        return ctx.emit("cast", reduced, dtype="bool")

    convert.__name__ = f"convert_{name}"
    converter(f"aten::{name}.default", f"aten::{name}.dim", f"aten::{name}.dims")(convert)


_declare_truth_reduction("any", "max")
_declare_truth_reduction("all", "min")


@converter("aten::var.correction")
def var(ctx, *, self, dim=None, correction=None, keepdim=False):
    correction = 1 if correction is None else correction
    if correction not in (0, 1):
        raise Unsupported(f"variance with correction {correction}")
    return ctx.emit("variance", self, axis=_reduce_axes(self, dim), keepdims=bool(keepdim), unbiased=correction == 1)


@converter("aten::cumsum.default")
def cumsum(ctx, *, self, dim, dtype=None):
    """Position ids from an attention mask (RoBERTa, OPT, BLOOM); `dtype` is what the sums accumulate in."""
    return ctx.emit(
        "cumsum", self, axis=dim % max(self.type.rank, 1), dtype=None if dtype is None else dtype_name(dtype)
    )


@converter("aten::argmax.default", "aten::argmin.default")
def argmax(ctx, *, self, dim=None, keepdim=False):
    op = "argmax" if ctx.fx_node.target._schema.name.endswith("argmax") else "argmin"
    return ctx.emit(op, self, axis=None if dim is None else dim % self.type.rank, keepdims=bool(keepdim))


@converter("aten::max.dim", "aten::min.dim")
def max_dim(ctx, *, self, dim, keepdim=False):
    is_max = ctx.fx_node.target._schema.name.endswith("max")
    axis = dim % self.type.rank
    values = ctx.emit("max" if is_max else "min", self, axis=(axis,), keepdims=bool(keepdim))
    indices = ctx.emit("argmax" if is_max else "argmin", self, axis=axis, keepdims=bool(keepdim))
    return values, indices


TOPK_MAX_K = 8  # each pick is a pass over the dimension: beyond a few picks a sort is the tool, and the IR has none


@converter("aten::topk.default")
def topk(ctx, *, self, k, dim=-1, largest=True, sorted=True):
    """The k largest (smallest) along `dim` as k picks, each a max (min) over the positions not yet taken and the
    first position holding it: the 1-8 experts a mixture-of-experts router takes (Mixtral, Qwen2-MoE). The picks
    come out best first, as sorted=True asks and sorted=False allows; equal values in ascending position. A taken
    position is excluded by its mask, not by its value, so values equal to the fill (-inf) are still picked each
    once. NaN is not ranked as torch ranks it (above everything)."""
    if self.type.rank == 0 or self.type.dtype == "bool":
        raise Unsupported(f"topk of a {self.type}")
    axis = dim % self.type.rank
    k, size = _static(k), _static(self.type.shape[axis])
    if not 1 <= k <= TOPK_MAX_K:
        raise Unsupported(f"topk with k={k}: 1 to {TOPK_MAX_K} picks, each a pass over the dimension")
    dtype = self.type.torch_dtype
    if dtype.is_floating_point:
        never = float("-inf") if largest else float("inf")
    else:
        never = torch.iinfo(dtype).min if largest else torch.iinfo(dtype).max
    shape = [1] * self.type.rank
    shape[axis] = size
    positions = ctx.const(torch.arange(size).reshape(shape)) if k > 1 else None
    fill = ctx.const(never, dtype=dtype) if k > 1 else None
    values, indices, taken = [], [], None
    for pick in range(k):
        candidates = self if taken is None else ctx.emit("where", taken, fill, self)
        best = ctx.emit("max" if largest else "min", candidates, axis=(axis,), keepdims=True)
        hit = ctx.emit("equal", candidates, best)
        if taken is not None:
            hit = ctx.emit("logical_and", hit, ctx.emit("logical_not", taken))
        index = ctx.emit("argmax", ctx.emit("cast", hit, dtype="int32"), axis=axis, keepdims=True)
        values.append(best)
        indices.append(index)
        if pick + 1 < k:
            picked = ctx.emit("equal", positions, index)
            taken = picked if taken is None else ctx.emit("logical_or", taken, picked)
    if k == 1:
        return values[0], indices[0]
    return ctx.emit("concatenate", *values, axis=axis), ctx.emit("concatenate", *indices, axis=axis)


# -- creation ---------------------------------------------------------------------------------------


def _default_dtype(value, dtype):
    if dtype is not None:
        return dtype_name(dtype)
    if isinstance(value, bool):
        return "bool"
    return "int64" if isinstance(value, int) else dtype_name(torch.get_default_dtype())


@converter("aten::full.default")
def full(ctx, *, size, fill_value, dtype=None, **_):
    return ctx.emit("full", shape=tuple(size), fill_value=fill_value, dtype=_default_dtype(fill_value, dtype))


@converter("aten::zeros.default", "aten::ones.default")
def zeros(ctx, *, size, dtype=None, **_):
    fill = 0.0 if ctx.fx_node.target._schema.name.endswith("zeros") else 1.0
    return ctx.emit("full", shape=tuple(size), fill_value=fill, dtype=_default_dtype(fill, dtype))


@converter("aten::full_like.default")
def full_like(ctx, *, self, fill_value, dtype=None, **_):
    return ctx.emit("full_like", self, fill_value=fill_value, dtype=dtype_name(dtype) if dtype else None)


@converter("aten::zeros_like.default", "aten::ones_like.default")
def zeros_like(ctx, *, self, dtype=None, **_):
    fill = 0.0 if ctx.fx_node.target._schema.name.endswith("zeros_like") else 1.0
    return ctx.emit("full_like", self, fill_value=fill, dtype=dtype_name(dtype) if dtype else None)


@converter("aten::scalar_tensor.default")
def scalar_tensor(ctx, *, s, dtype=None, **_):
    return ctx.emit("full", shape=(), fill_value=s, dtype=_default_dtype(float(s), dtype))


@converter("aten::arange.default", "aten::arange.start", "aten::arange.start_step")
def arange(ctx, *, end, start=0, step=1, dtype=None, **_):
    if dtype is None:
        integral = all(isinstance(v, (int, SymExpr)) for v in (start, end, step))
        dtype = torch.int64 if integral else torch.get_default_dtype()
    return ctx.emit("arange", start=start, stop=end, step=step, dtype=dtype_name(dtype))


# -- PT2E quantization: quantized_decomposed::{quantize,dequantize}_per_{tensor,channel} ---------------------------
# What `convert_pt2e` leaves and torch.export keeps: (input, scale, zero_point, [axis,] quant_min, quant_max, dtype).
# The IR's `quantize` clamps to the whole range of the quantized type; a narrower quant range ([-127, 127], the
# symmetric range some quantizers use) adds a clip of the quantized values, exact since the ranges nest. Dequantize
# ignores the range, as PT2E does. A zero point of zeros is left out (symmetric, the layout a calibrator makes).
# The scale arrives as a Python float (FP64) or a buffer: the IR holds it in float32 and computes x / scale where PT2E
# computes x * (1 / scale); the quotients differ at most in their last bit, so a value rounds to the other integer
# only when it sits within that bit of a .5 boundary.

_PT2E_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}  # what PT2E quantizes to, and the IR's `quantize` too
_PT2E_DEQUANTIZED = ("int8", "uint8", "int32")  # what the IR's `dequantize` reads; int32 is a quantized bias


def _pt2e_dtype(dtype, known, op: str) -> str:
    name = dtype_name(dtype)
    if name not in known:
        raise Unsupported(f"{op} of {name}: tensorforge imports PT2E quantization of {', '.join(known)} only")
    return name


def _pt2e_param(ctx, param, dtype: str, per_channel: bool, what: str):
    """A scale or zero point as the IR ops take it: of `dtype`, shape [] per tensor or [C] per channel. Python
    numbers and buffers become constants; a tensor computed at run time is reshaped and cast in the graph."""
    if not isinstance(param, Value):
        return ctx.const(param, dtype=torch_dtype(dtype))
    shape = param.type.shape
    if (len(shape) != 1) if per_channel else (shape not in ((), (1,))):
        kind = "per-channel" if per_channel else "per-tensor"
        raise Unsupported(f"a {what} of shape {list(shape)} for {kind} quantization")
    if param.data is not None:
        tensor = param.data if per_channel else param.data.reshape(())
        if tensor is param.data and param.type.dtype == dtype:
            return param
        return ctx.graph.add_constant(tensor.to(torch_dtype(dtype)), param.name)
    shaped = param if per_channel or not shape else ctx.emit("reshape", param, newshape=())
    return shaped if shaped.type.dtype == dtype else ctx.emit("cast", shaped, dtype=dtype)


def _pt2e_params(ctx, scale, zero_point, dtype: str, per_channel: bool) -> list:
    """[scale] or [scale, zero_point]: a zero point known to be all zeros is left out."""
    params = [_pt2e_param(ctx, scale, "float32", per_channel, "scale")]
    if zero_point is None or (not isinstance(zero_point, Value) and zero_point == 0):
        return params
    if isinstance(zero_point, Value) and zero_point.data is not None and not zero_point.data.any():
        return params
    return [*params, _pt2e_param(ctx, zero_point, dtype, per_channel, "zero point")]


def _pt2e_quantize(ctx, data, params: list, axis: int | None, quant_min: int, quant_max: int, dtype: str):
    lo, hi = _PT2E_RANGES[dtype]
    if not lo <= quant_min <= quant_max <= hi:
        raise Unsupported(f"the quant range [{quant_min}, {quant_max}] is not within {dtype}'s [{lo}, {hi}]")
    out = ctx.emit("quantize", data, *params, axis=axis, dtype=dtype)
    if (quant_min, quant_max) == (lo, hi):
        return out
    return ctx.emit("clip", out, a_min=quant_min, a_max=quant_max)


@converter("quantized_decomposed::quantize_per_tensor.default", "quantized_decomposed::quantize_per_tensor.tensor")
def quantize_per_tensor(ctx, *, input, scale, zero_point, quant_min, quant_max, dtype):
    name = _pt2e_dtype(dtype, tuple(_PT2E_RANGES), "quantize_per_tensor")
    params = _pt2e_params(ctx, scale, zero_point, name, per_channel=False)
    return _pt2e_quantize(ctx, input, params, None, quant_min, quant_max, name)


@converter("quantized_decomposed::quantize_per_channel.default")
def quantize_per_channel(ctx, *, input, scales, zero_points, axis, quant_min, quant_max, dtype):
    name = _pt2e_dtype(dtype, tuple(_PT2E_RANGES), "quantize_per_channel")
    params = _pt2e_params(ctx, scales, zero_points, name, per_channel=True)
    return _pt2e_quantize(ctx, input, params, axis, quant_min, quant_max, name)


@converter("quantized_decomposed::dequantize_per_tensor.default", "quantized_decomposed::dequantize_per_tensor.tensor")
def dequantize_per_tensor(ctx, *, input, scale, zero_point, quant_min, quant_max, dtype, out_dtype=None):
    name = _pt2e_dtype(dtype, _PT2E_DEQUANTIZED, "dequantize_per_tensor")
    params = _pt2e_params(ctx, scale, zero_point, name, per_channel=False)
    out = dtype_name(out_dtype) if out_dtype is not None else "float32"
    return ctx.emit("dequantize", input, *params, axis=None, dtype=out)


@converter("quantized_decomposed::dequantize_per_channel.default")
def dequantize_per_channel(ctx, *, input, scales, zero_points, axis, quant_min, quant_max, dtype, out_dtype=None):
    name = _pt2e_dtype(dtype, _PT2E_DEQUANTIZED, "dequantize_per_channel")
    params = _pt2e_params(ctx, scales, zero_points, name, per_channel=True)
    out = dtype_name(out_dtype) if out_dtype is not None else "float32"
    return ctx.emit("dequantize", input, *params, axis=axis, dtype=out)
