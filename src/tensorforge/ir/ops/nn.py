"""Neural-network layers: convolutions, normalizations, pooling, softmax, padding, resize, bias.

Layouts are PyTorch's: data NC[D]HW, convolution weights O(I/groups)[K...] and transposed-convolution
weights I(O/groups)[K...]. Padding attributes are symmetric, one entry per spatial dimension; an
asymmetric pad is an explicit `nn.pad` before the layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import REQUIRED, ShapeInferenceError, register_op
from ..symbolic import SymExpr
from ..types import Dim, TensorType, as_dim


def _prod(xs: Iterable[int]) -> int:
    return math.prod(int(x) for x in xs)


def _conv_macs(inputs: Sequence[TensorType], outputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> int:
    weight = inputs[1].concrete_shape()  # O, I/groups, k... (count_macs has bound every symbol)
    return _prod(outputs[0].concrete_shape()) * _prod(weight[1:])


def _conv_transpose_macs(inputs: Sequence[TensorType], outputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> int:
    weight = inputs[1].concrete_shape()  # I, O/groups, k... (count_macs has bound every symbol)
    return _prod(inputs[0].concrete_shape()) * _prod(weight[1:])


def _window_out(size: Dim, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool = False) -> Dim:
    """Output length of a sliding window.

    Floor mode: (size + 2p - d*(k-1) - 1) // s + 1. Ceil mode rounds the division up, ceil(L / s) + 1 with
    L = size + 2p - d*(k-1) - 1, but drops a last window that would start in the right padding, so the count is
    also at most ceil((size + p) / s). Both are (size + c) // s for a constant c, so the smaller is the one with
    the smaller c, for every size: min(L + 2s - 1 - size, p + s - 1) is that c."""
    if not ceil_mode:
        return as_dim((SymExpr.from_dim(size) + (2 * pad - dilation * (kernel - 1) - 1)) // stride + 1)
    offset = min(2 * pad - dilation * (kernel - 1) + 2 * stride - 2, pad + stride - 1)
    return as_dim((SymExpr.from_dim(size) + offset) // stride)


def _windowed_shape(
    data: TensorType, channels: Dim, kernel: Sequence[Dim], attrs: Mapping[str, Any]
) -> list[tuple[Dim, ...]] | None:
    ndim = len(kernel)
    dilation = attrs.get("dilation", (1,) * ndim)
    ints = [k for k in kernel if isinstance(k, int)]
    if data.rank != ndim + 2 or len(ints) != ndim:
        return None
    ceil_mode = bool(attrs.get("ceil_mode", False))
    spatial = tuple(
        _window_out(size, k, s, p, d, ceil_mode)
        for size, k, s, p, d in zip(data.shape[2:], ints, attrs["strides"], attrs["padding"], dilation)
    )
    return [(data.shape[0], channels, *spatial)]


def _conv_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    data, weight = inputs
    return _windowed_shape(data, weight.shape[0], weight.shape[2:], attrs)


def _pool_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    data = inputs[0]
    return _windowed_shape(data, data.shape[1], attrs["pool_size"], attrs)


def _conv_transpose_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    """(size - 1)*s - 2p + d*(k - 1) + output_padding + 1 per spatial axis; channels = weight's O/groups * groups."""
    data, weight = inputs
    kernel = weight.shape[2:]
    if data.rank != len(kernel) + 2 or not all(isinstance(k, int) for k in kernel):
        return None
    spatial = tuple(
        as_dim((SymExpr.from_dim(size) - 1) * s - 2 * p + d * (int(k) - 1) + op + 1)
        for size, k, s, p, op, d in zip(
            data.shape[2:], kernel, attrs["strides"], attrs["padding"], attrs["output_padding"], attrs["dilation"]
        )
    )
    channels = as_dim(SymExpr.from_dim(weight.shape[1]) * attrs["groups"])
    return [(data.shape[0], channels, *spatial)]


def _declare_conv(ndim: int) -> None:
    conv: Callable[..., Tensor] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[ndim]
    conv_t: Callable[..., Tensor] = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[ndim]
    ones, zeros = (1,) * ndim, (0,) * ndim

    def convolution(
        data: Tensor,
        weight: Tensor,
        strides: tuple[int, ...],
        padding: tuple[int, ...],
        dilation: tuple[int, ...],
        groups: int,
    ) -> Tensor:
        return conv(data, weight, None, strides, padding, dilation, groups)

    def convolution_transpose(
        data: Tensor,
        weight: Tensor,
        strides: tuple[int, ...],
        padding: tuple[int, ...],
        output_padding: tuple[int, ...],
        dilation: tuple[int, ...],
        groups: int,
    ) -> Tensor:
        return conv_t(data, weight, None, strides, padding, output_padding, groups, dilation)

    for fn, name in ((convolution, f"nn.conv{ndim}d"), (convolution_transpose, f"nn.conv{ndim}d_transpose")):
        fn.__name__ = name.replace(".", "_")
        fn.__doc__ = f"{name}: {ndim}-d {'transposed ' if 'transpose' in name else ''}convolution (no bias)"
        fn.__module__ = __name__
    register_op(
        f"nn.conv{ndim}d",
        inputs=2,
        macs=_conv_macs,
        attrs={"strides": ones, "padding": zeros, "dilation": ones, "groups": 1},
        infer_shape=_conv_shape,
    )(convolution)
    register_op(
        f"nn.conv{ndim}d_transpose",
        inputs=2,
        macs=_conv_transpose_macs,
        attrs={"strides": ones, "padding": zeros, "output_padding": zeros, "dilation": ones, "groups": 1},
        infer_shape=_conv_transpose_shape,
    )(convolution_transpose)


for _n in (1, 2, 3):
    _declare_conv(_n)


@register_op("nn.bias_add", inputs=2, attrs={"axis": 1})
def bias_add(data: Tensor, bias: Tensor, axis: int) -> Tensor:
    """nn.bias_add: add a 1-d bias along `axis`."""
    axis = axis % data.dim()
    return data + bias.reshape((-1,) + (1,) * (data.dim() - axis - 1))


@register_op("nn.batch_norm", inputs=5, attrs={"axis": 1, "epsilon": 1e-5})
def batch_norm(
    data: Tensor, gamma: Tensor, beta: Tensor, moving_mean: Tensor, moving_var: Tensor, axis: int, epsilon: float
) -> Tensor:
    """nn.batch_norm: inference-mode batch normalization with running statistics."""
    axis = axis % data.dim()
    shape = (-1,) + (1,) * (data.dim() - axis - 1)
    scale = gamma * torch.rsqrt(moving_var + epsilon)
    return (data - moving_mean.reshape(shape)) * scale.reshape(shape) + beta.reshape(shape)


@register_op("nn.layer_norm", inputs=3, attrs={"axis": -1, "epsilon": 1e-5})
def layer_norm(data: Tensor, gamma: Tensor, beta: Tensor, axis: int, epsilon: float) -> Tensor:
    """nn.layer_norm: normalize over the dimensions from `axis` to the last (gamma/beta have their shape)."""
    axis = axis % data.dim()
    return F.layer_norm(data, data.shape[axis:], gamma, beta, epsilon)


@register_op("nn.group_norm", inputs=3, attrs={"num_groups": REQUIRED, "epsilon": 1e-5})
def group_norm(data: Tensor, gamma: Tensor, beta: Tensor, num_groups: int, epsilon: float) -> Tensor:
    """nn.group_norm: normalize over groups of channels (axis 1)."""
    return F.group_norm(data, num_groups, gamma, beta, epsilon)


@register_op("nn.softmax", attrs={"axis": -1})
def softmax(data: Tensor, axis: int) -> Tensor:
    """nn.softmax: exp(x) / sum(exp(x)) along `axis`."""
    return torch.softmax(data, axis)


@register_op("nn.log_softmax", attrs={"axis": -1})
def log_softmax(data: Tensor, axis: int) -> Tensor:
    """nn.log_softmax: log of softmax along `axis`."""
    return torch.log_softmax(data, axis)


def _declare_pools(ndim: int) -> None:
    max_pool_fn: Callable[..., Tensor] = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[ndim]
    avg_pool_fn: Callable[..., Tensor] = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[ndim]
    ones, zeros = (1,) * ndim, (0,) * ndim

    def max_pool(
        data: Tensor,
        pool_size: tuple[int, ...],
        strides: tuple[int, ...],
        padding: tuple[int, ...],
        dilation: tuple[int, ...],
        ceil_mode: bool,
    ) -> Tensor:
        if data.element_size() == 1 and data.dtype != torch.bool:  # 8-bit data (a quantized graph's int8 / fp8):
            # pooled in float32 and converted back, exactly (a maximum is one of its inputs); torch has no fp8 pool
            wide = max_pool_fn(data.float(), pool_size, strides, padding, dilation, ceil_mode=ceil_mode)
            return wide.to(data.dtype)
        return max_pool_fn(data, pool_size, strides, padding, dilation, ceil_mode=ceil_mode)

    def avg_pool(
        data: Tensor,
        pool_size: tuple[int, ...],
        strides: tuple[int, ...],
        padding: tuple[int, ...],
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> Tensor:
        return avg_pool_fn(data, pool_size, strides, padding, ceil_mode, count_include_pad)

    for fn, name, what in ((max_pool, f"nn.max_pool{ndim}d", "maximum"), (avg_pool, f"nn.avg_pool{ndim}d", "average")):
        fn.__name__ = name.replace(".", "_")
        fn.__doc__ = f"{name}: {ndim}-d sliding-window {what}"
        fn.__module__ = __name__
    register_op(
        f"nn.max_pool{ndim}d",
        attrs={"pool_size": REQUIRED, "strides": ones, "padding": zeros, "dilation": ones, "ceil_mode": False},
        infer_shape=_pool_shape,
    )(max_pool)
    register_op(
        f"nn.avg_pool{ndim}d",
        attrs={"pool_size": REQUIRED, "strides": ones, "padding": zeros, "ceil_mode": False, "count_include_pad": True},
        infer_shape=_pool_shape,
    )(avg_pool)


for _n in (1, 2, 3):
    _declare_pools(_n)


@register_op("nn.global_max_pool2d")
def global_max_pool2d(data: Tensor) -> Tensor:
    """nn.global_max_pool2d: maximum over H and W, keeping them as size 1."""
    return torch.amax(data, dim=(-2, -1), keepdim=True)


@register_op("nn.global_avg_pool2d")
def global_avg_pool2d(data: Tensor) -> Tensor:
    """nn.global_avg_pool2d: mean over H and W, keeping them as size 1."""
    return torch.mean(data, dim=(-2, -1), keepdim=True)


@register_op("nn.adaptive_max_pool2d", attrs={"output_size": REQUIRED})
def adaptive_max_pool2d(data: Tensor, output_size: tuple[int, int]) -> Tensor:
    """nn.adaptive_max_pool2d: max pooling to a fixed output size."""
    return F.adaptive_max_pool2d(data, output_size)


@register_op("nn.adaptive_avg_pool2d", attrs={"output_size": REQUIRED})
def adaptive_avg_pool2d(data: Tensor, output_size: tuple[int, int]) -> Tensor:
    """nn.adaptive_avg_pool2d: average pooling to a fixed output size."""
    return F.adaptive_avg_pool2d(data, output_size)


def _batch_flatten_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    shape = inputs[0].shape
    if not shape:
        return None
    rest = SymExpr.const(1)
    for d in shape[1:]:
        rest = rest * SymExpr.from_dim(d)
    return [(shape[0], as_dim(rest))]


@register_op("nn.batch_flatten", infer_shape=_batch_flatten_shape)
def batch_flatten(data: Tensor) -> Tensor:
    """nn.batch_flatten: keep the batch dimension, flatten the rest."""
    return data.reshape(data.shape[0], -1)


_PAD_MODES = {"constant": "constant", "edge": "replicate", "reflect": "reflect", "circular": "circular"}


def _pad_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    """size + before + after on each axis (every mode pads by the same amounts)."""
    shape, widths = inputs[0].shape, attrs["pad_width"]
    if len(widths) != len(shape) or not all(len(pair) == 2 for pair in widths):
        return None
    return [tuple(as_dim(SymExpr.from_dim(d) + before + after) for d, (before, after) in zip(shape, widths))]


@register_op("nn.pad", attrs={"pad_width": REQUIRED, "pad_value": 0.0, "pad_mode": "constant"}, infer_shape=_pad_shape)
def pad(data: Tensor, pad_width: Sequence[Sequence[int]], pad_value: float, pad_mode: str) -> Tensor:
    """nn.pad: pad each dimension by (before, after); modes constant, edge, reflect, circular."""
    if pad_mode not in _PAD_MODES:
        raise ValueError(f"nn.pad: pad_mode must be one of {sorted(_PAD_MODES)}, got {pad_mode!r}")
    if len(pad_width) != data.dim():
        raise ValueError(f"nn.pad: pad_width needs one (before, after) pair per dimension ({data.dim()})")
    flat = [int(x) for pair in reversed(pad_width) for x in pair]  # torch wants last dimension first
    if pad_mode == "constant":
        return F.pad(data, flat, value=pad_value)
    # non-constant modes pad only the trailing dimensions that need it
    while flat[-2:] == [0, 0] and len(flat) > 2:
        flat = flat[:-2]
    if len(flat) // 2 == data.dim():  # torch wants an unpadded leading dimension for these modes: lend one
        return F.pad(data.unsqueeze(0), flat, mode=_PAD_MODES[pad_mode]).squeeze(0)
    return F.pad(data, flat, mode=_PAD_MODES[pad_mode])


_RESIZE_MODES = {"nearest": "nearest", "nearest_exact": "nearest-exact", "linear": "bilinear", "cubic": "bicubic"}

# A float scale whose binary value is num/den with den at most this is exact for every size a tensor can have
# (h*scale has no rounding in a double), so floor(h*scale) is (h*num)//den; 1/1024 steps cover every scale models use.
_MAX_SCALE_DENOMINATOR = 1024


def scaled_size(size: Dim, scale: float | Fraction) -> Dim:
    """The length PyTorch's interpolate gives `size` scaled by `scale`, floor(size*scale), as a size expression:
    `size*scale` for an integer scale, `(size*num)//den` for a rational one (a `Fraction`, or a float that is
    exactly one with a small denominator, such as 1.5). A float such as 0.3 or 1/3 is refused: its product with a
    symbolic size rounds differently at different sizes, so no expression types it; give the output size instead."""
    ratio = Fraction(scale)
    if ratio <= 0:
        raise ShapeInferenceError(f"image.resize2d: a scale must be positive, got {scale!r}")
    if isinstance(scale, float) and ratio.denominator > _MAX_SCALE_DENOMINATOR:
        raise ShapeInferenceError(
            f"image.resize2d: the scale {scale!r} is not a fraction with a small denominator in floating point, so "
            f"floor({size}*{scale!r}) has no exact size expression; give the output size (an expression such as "
            f"(h*2)//3) instead of the scale"
        )
    return as_dim((SymExpr.from_dim(size) * ratio.numerator) // ratio.denominator)


def _resize2d_shape(inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[tuple[Dim, ...]] | None:
    shape, size = inputs[0].shape, attrs["size"]
    if len(shape) != 4 or len(size) != 2:
        return None
    return [(shape[0], shape[1], *size)]


@register_op(
    "image.resize2d",
    attrs={"size": REQUIRED, "method": "nearest", "align_corners": False},
    infer_shape=_resize2d_shape,
)
def resize2d(data: Tensor, size: Sequence[int], method: str, align_corners: bool) -> Tensor:
    """image.resize2d: resize H and W of NCHW data to `size` (nearest, nearest_exact, linear, cubic)."""
    if method not in _RESIZE_MODES:
        raise ValueError(f"image.resize2d: method must be one of {sorted(_RESIZE_MODES)}, got {method!r}")
    mode = _RESIZE_MODES[method]
    corners = align_corners if mode in ("bilinear", "bicubic") else None
    return F.interpolate(data, size=tuple(size), mode=mode, align_corners=corners)
