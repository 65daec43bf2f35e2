"""Layers: Conv, ConvTranspose, MaxPool, AveragePool, global pools, the normalizations, Softmax, LogSoftmax.

ONNX pads are `[x1_begin, x2_begin, ..., x1_end, x2_end, ...]` and may be asymmetric (or come from
`auto_pad`); the IR's layers take one symmetric pad per spatial axis, so an asymmetric pad becomes an
explicit `nn.pad` in front of the layer (with -inf for max pooling, and an exact divisor for average
pooling that does not count the padding).
"""

from __future__ import annotations

import math

import torch

from ...ir import SymExpr
from .context import normalize_axis, product
from .registry import Unsupported, onnx_converter

_AUTO_PADS = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")


def _static_spatial(x, what: str) -> tuple[int, ...]:
    dims = x.shape[2:]
    if any(isinstance(d, SymExpr) for d in dims):
        raise Unsupported(f"{what} needs static spatial sizes, got {x.type}")
    return tuple(dims)


def _pad_pairs(x, kernel, strides, dilations, auto_pad, pads) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial axis, from `pads` or computed for auto_pad SAME_*."""
    n = len(kernel)
    if auto_pad not in _AUTO_PADS:
        raise Unsupported(f"auto_pad {auto_pad!r}")
    if auto_pad == "VALID":
        return [(0, 0)] * n
    if auto_pad == "NOTSET":
        pads = tuple(pads) if pads else (0,) * (2 * n)
        return [(pads[i], pads[i + n]) for i in range(n)]
    pairs = []
    for size, k, s, d in zip(_static_spatial(x, f"auto_pad={auto_pad}"), kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        pairs.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
    return pairs


def _explicit_pad(ctx, x, pairs, value: float = 0.0):
    """Pad the spatial axes of x by `pairs` with an nn.pad; the layer then pads nothing."""
    width = ((0, 0),) * (x.rank - len(pairs)) + tuple(tuple(p) for p in pairs)
    return ctx.emit("nn.pad", x, pad_width=width, pad_value=value, pad_mode="constant")


def _defaults(values, n: int, fill: int = 1) -> tuple[int, ...]:
    return tuple(values) if values else (fill,) * n


# -- convolutions --------------------------------------------------------------------------------


def _conv_check(*, auto_pad, W=None, **_):
    """1-d, 2-d and 3-d convolutions."""
    if auto_pad not in _AUTO_PADS:
        return f"auto_pad {auto_pad!r}"
    if W is not None and W.type is not None and W.type.rank not in (3, 4, 5):
        return f"{W.type.rank - 2}-d convolution"
    return None


@onnx_converter("Conv", since=(11, 22), check=_conv_check)
def conv(ctx, *, X, W, B=None, auto_pad, dilations, group, kernel_shape, pads, strides):
    nd = W.rank - 2
    if nd not in (1, 2, 3):
        raise Unsupported(f"{nd}-d convolution")
    kernel = tuple(W.shape[2:])
    strides, dilations = _defaults(strides, nd), _defaults(dilations, nd)
    pairs = _pad_pairs(X, kernel, strides, dilations, auto_pad, pads)
    x, padding = X, tuple(b for b, _ in pairs)
    if any(b != e for b, e in pairs):
        x, padding = _explicit_pad(ctx, X, pairs), (0,) * nd
    out = ctx.emit(f"nn.conv{nd}d", x, W, strides=strides, padding=padding, dilation=dilations, groups=group)
    return out if B is None else ctx.emit("nn.bias_add", out, B, axis=1)


@onnx_converter("ConvTranspose", since=(11, 22), check=_conv_check)
def conv_transpose(
    ctx, *, X, W, B=None, auto_pad, dilations, group, kernel_shape, output_padding, output_shape, pads, strides
):
    nd = W.rank - 2
    if nd not in (1, 2, 3):
        raise Unsupported(f"{nd}-d transposed convolution")
    kernel = tuple(W.shape[2:])
    strides, dilations = _defaults(strides, nd), _defaults(dilations, nd)
    extra = _defaults(output_padding, nd, fill=0)
    if auto_pad not in _AUTO_PADS:
        raise Unsupported(f"auto_pad {auto_pad!r}")
    sizes = tuple(X.shape[2:])  # symbolic sizes too: the arithmetic below is exact on size expressions
    # length of the result with no padding at all; output_padding adds zeros (then bias) at the end
    full = [s * (n - 1) + (k - 1) * d + 1 for n, k, s, d in zip(sizes, kernel, strides, dilations)]
    wanted = tuple(output_shape)[-nd:] if output_shape is not None else None
    if pads is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        sizes = _static_spatial(X, f"ConvTranspose with auto_pad={auto_pad}")  # its pads depend on the sizes
        wanted = wanted or tuple(n * s for n, s in zip(sizes, strides))
        pairs = []
        for f, op, out in zip(full, extra, wanted):
            total = f + op - out
            half = total // 2
            pairs.append((half, total - half) if auto_pad == "SAME_UPPER" else (total - half, half))
    else:
        p = _defaults(pads, 2 * nd, fill=0) if auto_pad != "VALID" else (0,) * (2 * nd)
        pairs = [(p[i], p[i + nd]) for i in range(nd)]
    if wanted is None:
        wanted = tuple(f + op - b - e for f, op, (b, e) in zip(full, extra, pairs))
    direct = all(
        b == e and b >= 0 and out == f + op - 2 * b and op < max(s, d)
        for (b, e), f, op, out, s, d in zip(pairs, full, extra, wanted, strides, dilations)
    )
    if direct:
        out = ctx.emit(
            f"nn.conv{nd}d_transpose",
            X,
            W,
            strides=strides,
            padding=tuple(b for b, _ in pairs),
            output_padding=extra,
            dilation=dilations,
            groups=group,
        )
    else:
        # the whole result, then keep [begin, begin + wanted) of it, zero-extended past its end
        out = ctx.emit(
            f"nn.conv{nd}d_transpose",
            X,
            W,
            strides=strides,
            padding=(0,) * nd,
            output_padding=(0,) * nd,
            dilation=dilations,
            groups=group,
        )
        out = _explicit_pad(ctx, out, [(-b, b + w - f) for (b, _), w, f in zip(pairs, wanted, full)])
    return out if B is None else ctx.emit("nn.bias_add", out, B, axis=1)


# -- pooling ---------------------------------------------------------------------------------------


def _max_pool_check(*, auto_pad, storage_order=0, used_outputs=(True,), **_):
    """No Indices output; auto_pad NOTSET, VALID or SAME_*."""
    if len(used_outputs) > 1 and used_outputs[1]:
        return "the Indices output"
    if auto_pad not in _AUTO_PADS:
        return f"auto_pad {auto_pad!r}"
    return None


def _fits_layer(pairs, kernel, dilations=None) -> bool:
    """PyTorch pooling pads symmetrically, at most half the (dilated) window."""
    dilations = dilations or (1,) * len(kernel)
    return all(b == e and 2 * b <= (k - 1) * d + 1 for (b, e), k, d in zip(pairs, kernel, dilations))


@onnx_converter("MaxPool", since=(11, 12, 22), check=_max_pool_check)
def max_pool(ctx, *, X, auto_pad, ceil_mode, dilations, kernel_shape, pads, storage_order, strides):
    if len(ctx.outputs_used) > 1 and ctx.outputs_used[1]:
        raise Unsupported("the Indices output")
    nd = len(kernel_shape)
    if nd not in (1, 2, 3):
        raise Unsupported(f"{nd}-d max pooling")
    kernel, strides, dilations = tuple(kernel_shape), _defaults(strides, nd), _defaults(dilations, nd)
    pairs = _pad_pairs(X, kernel, strides, dilations, auto_pad, pads)
    x, padding = X, tuple(b for b, _ in pairs)
    if not _fits_layer(pairs, kernel, dilations):
        x, padding = _explicit_pad(ctx, X, pairs, value=float("-inf")), (0,) * nd
    return ctx.emit(
        f"nn.max_pool{nd}d",
        x,
        pool_size=kernel,
        strides=strides,
        padding=padding,
        dilation=dilations,
        ceil_mode=bool(ceil_mode),
    )


def _avg_pool_check(*, auto_pad, dilations=None, **_):
    """No dilation; auto_pad NOTSET, VALID or SAME_*."""
    if dilations and any(d != 1 for d in dilations):
        return "dilated average pooling"
    if auto_pad not in _AUTO_PADS:
        return f"auto_pad {auto_pad!r}"
    return None


@onnx_converter("AveragePool", since=(11, 19, 22), check=_avg_pool_check)
def average_pool(ctx, *, X, auto_pad, ceil_mode, count_include_pad, kernel_shape, pads, strides, dilations=None):
    reason = _avg_pool_check(auto_pad=auto_pad, dilations=dilations)
    if reason:
        raise Unsupported(reason)
    nd = len(kernel_shape)
    if nd not in (1, 2, 3):
        raise Unsupported(f"{nd}-d average pooling")
    kernel, strides = tuple(kernel_shape), _defaults(strides, nd)
    pairs = _pad_pairs(X, kernel, strides, (1,) * nd, auto_pad, pads)
    # SAME_* padding never counts, whatever count_include_pad says (the padding is implicit)
    include = bool(count_include_pad) and auto_pad == "NOTSET"
    op = f"nn.avg_pool{nd}d"
    if _fits_layer(pairs, kernel):
        return ctx.emit(
            op,
            X,
            pool_size=kernel,
            strides=strides,
            padding=tuple(b for b, _ in pairs),
            ceil_mode=bool(ceil_mode),
            count_include_pad=include,
        )
    padded = ctx.emit(
        op,
        _explicit_pad(ctx, X, pairs),
        pool_size=kernel,
        strides=strides,
        padding=(0,) * nd,
        ceil_mode=bool(ceil_mode),
        count_include_pad=True,
    )
    if include:
        return padded
    # divide by the share of each window that is real input: the same pooling over a padded mask of ones
    ones = ctx.const(torch.ones((1, 1) + _static_spatial(X, "average pooling with asymmetric padding")), dtype=X.dtype)
    share = ctx.emit(
        op,
        _explicit_pad(ctx, ones, pairs),
        pool_size=kernel,
        strides=strides,
        padding=(0,) * nd,
        ceil_mode=bool(ceil_mode),
        count_include_pad=True,
    )
    return ctx.emit("divide", padded, share)


def _global_pool(ir_2d: str, ir_reduce: str):
    def convert(ctx, *, X):
        if X.rank == 4:
            return ctx.emit(ir_2d, X)
        return ctx.emit(ir_reduce, X, axis=tuple(range(2, X.rank)), keepdims=True)

    return convert


onnx_converter("GlobalAveragePool", since=(1, 22))(_global_pool("nn.global_avg_pool2d", "mean"))
onnx_converter("GlobalMaxPool", since=(1, 22))(_global_pool("nn.global_max_pool2d", "max"))


# -- normalization -------------------------------------------------------------------------------


def _only_first_output(*, used_outputs=(True,), training_mode=0, **_):
    """Inference only: the normalized output alone (no running or saved statistics)."""
    if training_mode:
        return "training mode"
    if any(used_outputs[1:]):
        return "statistics outputs (mean / variance)"
    return None


@onnx_converter("BatchNormalization", since=(9, 14, 15), check=_only_first_output)
def batch_norm(ctx, *, X, scale, B, input_mean, input_var, epsilon, momentum=None, training_mode=0):
    reason = _only_first_output(used_outputs=tuple(ctx.outputs_used), training_mode=training_mode)
    if reason:
        raise Unsupported(reason)
    return ctx.emit("nn.batch_norm", X, scale, B, input_mean, input_var, axis=1, epsilon=float(epsilon))


def _channels(x) -> int:
    if x.rank < 2 or not isinstance(x.shape[1], int):
        raise Unsupported(f"needs a static channel axis, got {x.type}")
    return x.shape[1]


@onnx_converter("InstanceNormalization", since=(6, 22), note="a static channel count")
def instance_norm(ctx, *, input, scale, B, epsilon):
    # instance norm is group norm with one channel per group
    return ctx.emit("nn.group_norm", input, scale, B, num_groups=_channels(input), epsilon=float(epsilon))


@onnx_converter("LayerNormalization", since=17, note="static normalized axes")
def layer_norm(ctx, *, X, Scale, B=None, axis, epsilon, stash_type):
    axis = normalize_axis(axis, X.rank)
    normalized = tuple(X.shape[axis:])
    if any(isinstance(d, SymExpr) for d in normalized):
        raise Unsupported("normalizing over the batch axis")
    # the IR wants gamma and beta shaped like the normalized dimensions; ONNX lets them broadcast
    gamma = Scale if tuple(Scale.shape) == normalized else ctx.emit("broadcast_to", Scale, shape=normalized)
    if B is None:
        beta = ctx.const(torch.zeros(normalized), dtype=X.dtype)
    else:
        beta = B if tuple(B.shape) == normalized else ctx.emit("broadcast_to", B, shape=normalized)
    out = ctx.emit("nn.layer_norm", X, gamma, beta, axis=axis, epsilon=float(epsilon))
    if not any(ctx.outputs_used[1:]):
        return out
    # the statistics outputs: mean and 1 / sqrt(variance + epsilon) over the normalized axes, kept as size 1
    axes = tuple(range(axis, X.rank))
    mean = ctx.emit("mean", X, axis=axes, keepdims=True)
    variance = ctx.emit("variance", X, axis=axes, keepdims=True)
    inv_std = ctx.emit("rsqrt", ctx.emit("add", variance, ctx.const(float(epsilon), dtype=X.dtype)))
    return out, mean, inv_std


@onnx_converter("GroupNormalization", since=(18, 21), note="a static channel count")
def group_norm(ctx, *, X, scale, bias, epsilon, num_groups, stash_type=1):
    channels = _channels(X)
    if ctx.since < 21 and channels != num_groups:
        # GroupNormalization-18 has one scale and bias per group: repeat them for the channels of each group
        owner = ctx.const(torch.arange(channels) // (channels // num_groups))
        scale, bias = ctx.emit("take", scale, owner, axis=0), ctx.emit("take", bias, owner, axis=0)
    return ctx.emit("nn.group_norm", X, scale, bias, num_groups=num_groups, epsilon=float(epsilon))


# -- softmax ---------------------------------------------------------------------------------------


def _declare_softmax(op_type: str, ir_op: str) -> None:
    def convert_11(ctx, *, input, axis):
        # before opset 13 the input is flattened to 2-d at `axis` and normalized over the whole second part
        axis = normalize_axis(axis, input.rank)
        if axis == input.rank - 1:
            return ctx.emit(ir_op, input, axis=axis)
        inner = product(input.shape[axis:])
        if isinstance(inner, SymExpr):
            raise Unsupported("normalizing over the batch axis")
        flat = ctx.emit("reshape", input, newshape=(-1, inner))
        return ctx.emit("reshape", ctx.emit(ir_op, flat, axis=1), newshape=tuple(input.shape))

    def convert_13(ctx, *, input, axis):
        return ctx.emit(ir_op, input, axis=normalize_axis(axis, input.rank))

    convert_11.__name__ = f"convert_{op_type.lower()}_11"
    convert_13.__name__ = f"convert_{op_type.lower()}_13"
    onnx_converter(op_type, since=11, note="static sizes from axis on (it flattens them)")(convert_11)
    onnx_converter(op_type, since=13)(convert_13)


_declare_softmax("Softmax", "nn.softmax")
_declare_softmax("LogSoftmax", "nn.log_softmax")
