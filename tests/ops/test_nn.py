"""Neural-network layers against torch.nn modules: convolutions, normalizations, pools, softmax, pad, resize.

Weights are graph constants, as the frontends make them. Each expected value comes from the torch.nn
module a model would have used (with its weights copied in), or from numpy for padding.
"""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import case, check_case, randn

FP32, FP16, BF16 = torch.float32, torch.float16, torch.bfloat16

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def conv_module(strides=1, padding=0, dilation=1, groups=1):
    """Expected value of nn.convNd: a torch module built from the weight's shape, the weight copied in."""

    def expected(x, w):
        ndim = w.dim() - 2
        module = _CONV[ndim](
            w.shape[1] * groups,
            w.shape[0],
            tuple(w.shape[2:]),
            stride=strides,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=False,
        ).to(w.dtype)
        module.weight.data.copy_(w)
        return module(x)

    return expected


def conv_transpose_module(strides=1, padding=0, output_padding=0, dilation=1, groups=1):
    def expected(x, w):
        ndim = w.dim() - 2
        module = _CONV_T[ndim](
            w.shape[0],
            w.shape[1] * groups,
            tuple(w.shape[2:]),
            stride=strides,
            padding=padding,
            output_padding=output_padding,
            dilation=dilation,
            groups=groups,
            bias=False,
        ).to(w.dtype)
        module.weight.data.copy_(w)
        return module(x)

    return expected


def _conv_attrs(ndim, strides=1, padding=0, dilation=1, groups=1, output_padding=None):
    tup = lambda v: (v,) * ndim if isinstance(v, int) else tuple(v)  # noqa: E731
    attrs = {"strides": tup(strides), "padding": tup(padding), "dilation": tup(dilation), "groups": groups}
    if output_padding is not None:
        attrs["output_padding"] = tup(output_padding)
    return attrs


def conv_case(name, ndim, x_shape, w_shape, dtype=FP32, **kw):
    return case(
        name,
        f"nn.conv{ndim}d",
        lambda: [randn(*x_shape), randn(*w_shape)],
        conv_module(**kw),
        _conv_attrs(ndim, **kw),
        dtype=dtype,
        const=(1,),
    )


def conv_t_case(name, ndim, x_shape, w_shape, dtype=FP32, **kw):
    return case(
        name,
        f"nn.conv{ndim}d_transpose",
        lambda: [randn(*x_shape), randn(*w_shape)],
        conv_transpose_module(**kw),
        _conv_attrs(ndim, **{"output_padding": 0, **kw}),
        dtype=dtype,
        const=(1,),
    )


CASES = [
    *[conv_case("conv2d-3x3", 2, (2, 3, 8, 8), (4, 3, 3, 3), dtype=dt) for dt in (FP32, FP16, BF16)],
    conv_case("conv2d-stride2", 2, (1, 3, 9, 9), (4, 3, 3, 3), strides=2),
    *[
        conv_case("conv2d-stride2-pad1", 2, (1, 3, 9, 9), (4, 3, 3, 3), strides=2, padding=1, dtype=dt)
        for dt in (FP32, FP16)
    ],
    conv_case("conv2d-stride2x1", 2, (1, 3, 8, 8), (4, 3, 3, 3), strides=(2, 1)),
    conv_case("conv2d-pad-2x1", 2, (1, 3, 6, 6), (4, 3, 3, 3), padding=(2, 1)),
    conv_case("conv2d-dilation2", 2, (1, 3, 10, 10), (4, 3, 3, 3), dilation=2, padding=2),
    conv_case("conv2d-groups2", 2, (1, 4, 7, 7), (6, 2, 3, 3), groups=2, padding=1),
    conv_case("conv2d-depthwise", 2, (2, 4, 7, 7), (4, 1, 3, 3), groups=4, padding=1),
    conv_case("conv2d-depthwise-multiplier2", 2, (1, 3, 6, 6), (6, 1, 3, 3), groups=3),
    conv_case("conv2d-1x1", 2, (2, 8, 5, 5), (3, 8, 1, 1)),
    conv_case("conv2d-5x3-kernel", 2, (1, 2, 9, 7), (3, 2, 5, 3), padding=(2, 1)),
    conv_case("conv1d", 1, (2, 3, 10), (5, 3, 3)),
    conv_case("conv1d-stride2-pad1-dilation2", 1, (2, 3, 11), (5, 3, 3), strides=2, padding=1, dilation=2),
    conv_case("conv1d-groups3", 1, (1, 6, 8), (3, 2, 3), groups=3),
    conv_case("conv3d", 3, (1, 2, 5, 6, 6), (3, 2, 3, 3, 3)),
    conv_case("conv3d-stride2-pad1", 3, (1, 2, 5, 6, 6), (3, 2, 3, 3, 3), strides=2, padding=1),
    *[conv_t_case("conv2d_transpose", 2, (2, 4, 5, 5), (4, 3, 3, 3), dtype=dt) for dt in (FP32, FP16)],
    conv_t_case(
        "conv2d_transpose-stride2-pad1-outpad1", 2, (1, 4, 5, 5), (4, 3, 3, 3), strides=2, padding=1, output_padding=1
    ),
    conv_t_case(
        "conv2d_transpose-stride2x3-outpad1x2", 2, (1, 2, 4, 4), (2, 3, 3, 3), strides=(2, 3), output_padding=(1, 2)
    ),
    conv_t_case("conv2d_transpose-dilation2", 2, (1, 2, 4, 4), (2, 3, 3, 3), dilation=2),
    conv_t_case("conv2d_transpose-groups2", 2, (1, 4, 4, 4), (4, 3, 2, 2), groups=2, strides=2),
    conv_t_case("conv1d_transpose-stride2-outpad1", 1, (2, 3, 6), (3, 4, 3), strides=2, output_padding=1),
    conv_t_case("conv3d_transpose", 3, (1, 2, 3, 3, 3), (2, 3, 2, 2, 2)),
    conv_t_case(
        "conv3d_transpose-stride2-pad1-outpad1",
        3,
        (1, 2, 3, 4, 3),
        (2, 3, 3, 3, 3),
        strides=2,
        padding=1,
        output_padding=1,
    ),
]

# bias, normalization


def _batch_norm(axis, eps=1e-5):
    def expected(x, gamma, beta, mean, var):
        moved = x.movedim(axis, 1)
        return F.batch_norm(moved, mean, var, gamma, beta, training=False, eps=eps).movedim(1, axis)

    return expected


def _bn_inputs(x_shape, channels):
    return lambda: [randn(*x_shape), randn(channels), randn(channels), randn(channels), torch.rand(channels) + 0.5]


def _layer_norm(ndims, eps=1e-5):
    def expected(x, gamma, beta):
        module = nn.LayerNorm(tuple(x.shape[-ndims:]), eps=eps).to(x.dtype)
        module.weight.data.copy_(gamma)
        module.bias.data.copy_(beta)
        return module(x)

    return expected


def _group_norm(groups, eps=1e-5):
    def expected(x, gamma, beta):
        module = nn.GroupNorm(groups, x.shape[1], eps=eps).to(x.dtype)
        module.weight.data.copy_(gamma)
        module.bias.data.copy_(beta)
        return module(x)

    return expected


CASES += [
    case(
        "bias_add-nchw",
        "nn.bias_add",
        lambda: [randn(2, 3, 4, 4), randn(3)],
        lambda x, b: x + b[None, :, None, None],
        dtype=FP32,
        const=(1,),
    ),
    case(
        "bias_add-axis-last",
        "nn.bias_add",
        lambda: [randn(2, 5, 3), randn(3)],
        lambda x, b: x + b,
        {"axis": -1},
        dtype=FP32,
        const=(1,),
    ),
    case(
        "bias_add-axis1-3d",
        "nn.bias_add",
        lambda: [randn(2, 5, 3), randn(5)],
        lambda x, b: x + b[:, None],
        {"axis": 1},
        dtype=FP32,
        const=(1,),
    ),
    case(
        "batch_norm-nchw", "nn.batch_norm", _bn_inputs((2, 3, 4, 4), 3), _batch_norm(1), dtype=FP32, const=(1, 2, 3, 4)
    ),
    case("batch_norm-nc", "nn.batch_norm", _bn_inputs((4, 3), 3), _batch_norm(1), dtype=FP32, const=(1, 2, 3, 4)),
    case(
        "batch_norm-nhwc-axis3-eps1e-3",
        "nn.batch_norm",
        _bn_inputs((2, 4, 4, 3), 3),
        _batch_norm(3, 1e-3),
        {"axis": 3, "epsilon": 1e-3},
        dtype=FP32,
        const=(1, 2, 3, 4),
    ),
    *[
        case(
            "layer_norm-last",
            "nn.layer_norm",
            lambda: [randn(2, 5, 8), randn(8), randn(8)],
            _layer_norm(1),
            dtype=dt,
            const=(1, 2),
        )
        for dt in (FP32, FP16, BF16)
    ],
    case(
        "layer_norm-last2-eps1e-3",
        "nn.layer_norm",
        lambda: [randn(2, 5, 8), randn(5, 8), randn(5, 8)],
        _layer_norm(2, 1e-3),
        {"axis": -2, "epsilon": 1e-3},
        dtype=FP32,
        const=(1, 2),
    ),
    case(
        "layer_norm-axis1-of-3d",
        "nn.layer_norm",
        lambda: [randn(2, 5, 8), randn(5, 8), randn(5, 8)],
        _layer_norm(2),
        {"axis": 1},
        dtype=FP32,
        const=(1, 2),
    ),
    case(
        "group_norm-2groups",
        "nn.group_norm",
        lambda: [randn(2, 6, 3, 3), randn(6), randn(6)],
        _group_norm(2),
        {"num_groups": 2},
        dtype=FP32,
        const=(1, 2),
    ),
    case(
        "group_norm-instance",
        "nn.group_norm",
        lambda: [randn(2, 4, 5), randn(4), randn(4)],
        _group_norm(4, 1e-3),
        {"num_groups": 4, "epsilon": 1e-3},
        dtype=FP32,
        const=(1, 2),
    ),
]

# softmax
CASES += [
    *[
        case("softmax-axis1", "nn.softmax", lambda: [randn(2, 5, 3) * 3], nn.Softmax(dim=1), {"axis": 1}, dtype=dt)
        for dt in (FP32, FP16, BF16)
    ],
    *[
        case("softmax-axis-last", "nn.softmax", lambda: [randn(2, 3, 7) * 3], nn.Softmax(dim=-1), dtype=dt)
        for dt in (FP32, FP16, BF16)
    ],
    case(
        "softmax-large-logits",
        "nn.softmax",
        lambda: [torch.tensor([[1000.0, 1001.0, 999.0]])],
        lambda x: torch.exp(x - x.max()) / torch.exp(x - x.max()).sum(),
        dtype=FP32,
    ),
    case("log_softmax-axis-last", "nn.log_softmax", lambda: [randn(2, 3, 7) * 3], nn.LogSoftmax(dim=-1), dtype=FP32),
    case(
        "log_softmax-axis0",
        "nn.log_softmax",
        lambda: [randn(4, 3)],
        lambda x: x - torch.logsumexp(x, 0),
        {"axis": 0},
        dtype=FP32,
    ),
]

# pooling


def _pool_attrs(ndim, pool_size, strides=None, padding=0, **extra):
    tup = lambda v: (v,) * ndim if isinstance(v, int) else tuple(v)  # noqa: E731
    return {
        "pool_size": tup(pool_size),
        "strides": tup(pool_size if strides is None else strides),
        "padding": tup(padding),
        **extra,
    }


def pool_case(name, kind, ndim, x_shape, pool_size, strides=None, padding=0, dtype=FP32, **extra):
    module_cls = {
        "max": {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d},
        "avg": {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d},
    }[kind][ndim]
    module = module_cls(pool_size, stride=pool_size if strides is None else strides, padding=padding, **extra)
    attrs = _pool_attrs(
        ndim,
        pool_size,
        strides,
        padding,
        **{k: (v,) * ndim if k == "dilation" and isinstance(v, int) else v for k, v in extra.items()},
    )
    return case(name, f"nn.{kind}_pool{ndim}d", lambda: [randn(*x_shape)], module, attrs, dtype=dtype)


CASES += [
    pool_case("max_pool2d-2x2", "max", 2, (2, 3, 8, 8), 2),
    pool_case("max_pool2d-3x3-stride2-pad1", "max", 2, (1, 2, 9, 9), 3, strides=2, padding=1),
    pool_case("max_pool2d-ceil_mode", "max", 2, (1, 2, 8, 8), 3, strides=2, ceil_mode=True),
    pool_case("max_pool2d-floor_mode", "max", 2, (1, 2, 8, 8), 3, strides=2, ceil_mode=False),
    pool_case("max_pool2d-dilation2", "max", 2, (1, 2, 9, 9), 2, strides=1, dilation=2),
    pool_case("max_pool2d-3x2-stride1x2", "max", 2, (1, 2, 7, 8), (3, 2), strides=(1, 2)),
    pool_case("avg_pool2d-2x2", "avg", 2, (2, 3, 8, 8), 2),
    pool_case(
        "avg_pool2d-pad1-count_include_pad", "avg", 2, (1, 2, 7, 7), 3, strides=2, padding=1, count_include_pad=True
    ),
    pool_case("avg_pool2d-pad1-exclude_pad", "avg", 2, (1, 2, 7, 7), 3, strides=2, padding=1, count_include_pad=False),
    pool_case("avg_pool2d-ceil_mode", "avg", 2, (1, 2, 8, 8), 3, strides=2, ceil_mode=True),
    pool_case(
        "avg_pool2d-ceil_mode-exclude_pad",
        "avg",
        2,
        (1, 2, 8, 8),
        3,
        strides=2,
        padding=1,
        ceil_mode=True,
        count_include_pad=False,
    ),
    pool_case("max_pool1d-3-stride2-pad1", "max", 1, (2, 3, 10), 3, strides=2, padding=1),
    pool_case("max_pool1d-ceil_mode", "max", 1, (2, 3, 10), 3, strides=2, ceil_mode=True),
    pool_case("avg_pool1d-3-stride2", "avg", 1, (2, 3, 10), 3, strides=2),
    pool_case("avg_pool1d-pad1-exclude_pad", "avg", 1, (2, 3, 10), 3, strides=2, padding=1, count_include_pad=False),
    pool_case("max_pool3d-2", "max", 3, (1, 2, 4, 6, 6), 2),
    pool_case("max_pool3d-ceil_mode", "max", 3, (1, 2, 5, 5, 5), 2, ceil_mode=True),
    pool_case("avg_pool3d-2", "avg", 3, (1, 2, 4, 6, 6), 2),
    pool_case(
        "avg_pool3d-pad1-exclude_pad", "avg", 3, (1, 2, 4, 4, 4), 3, strides=2, padding=1, count_include_pad=False
    ),
    case("global_max_pool2d", "nn.global_max_pool2d", lambda: [randn(2, 3, 5, 7)], nn.AdaptiveMaxPool2d(1), dtype=FP32),
    case("global_avg_pool2d", "nn.global_avg_pool2d", lambda: [randn(2, 3, 5, 7)], nn.AdaptiveAvgPool2d(1), dtype=FP32),
    case(
        "adaptive_avg_pool2d-uneven-2x3",
        "nn.adaptive_avg_pool2d",
        lambda: [randn(2, 3, 7, 9)],
        nn.AdaptiveAvgPool2d((2, 3)),
        {"output_size": (2, 3)},
        dtype=FP32,
    ),
    case(
        "adaptive_avg_pool2d-7x7-from-14",
        "nn.adaptive_avg_pool2d",
        lambda: [randn(1, 2, 14, 14)],
        lambda x: F.avg_pool2d(x, 2),
        {"output_size": (7, 7)},
        dtype=FP32,
    ),
    case(
        "adaptive_max_pool2d-uneven-3x2",
        "nn.adaptive_max_pool2d",
        lambda: [randn(2, 3, 7, 9)],
        nn.AdaptiveMaxPool2d((3, 2)),
        {"output_size": (3, 2)},
        dtype=FP32,
    ),
    case(
        "adaptive_max_pool2d-1x1",
        "nn.adaptive_max_pool2d",
        lambda: [randn(2, 3, 5, 4)],
        lambda x: x.amax(dim=(2, 3), keepdim=True),
        {"output_size": (1, 1)},
        dtype=FP32,
    ),
    case("batch_flatten", "nn.batch_flatten", lambda: [randn(2, 3, 4, 5)], nn.Flatten(), dtype=FP32),
]

# padding: (before, after) per dimension; modes compared with numpy.pad
_NP_MODE = {"constant": "constant", "edge": "edge", "reflect": "reflect", "circular": "wrap"}


def pad_case(name, x_shape, pad_width, mode="constant", value=0.0, dtype=FP32):
    def expected(x):
        extra = {"constant_values": value} if mode == "constant" else {}
        return torch.from_numpy(np.pad(x.numpy(), pad_width, mode=_NP_MODE[mode], **extra))

    attrs = {"pad_width": pad_width, "pad_mode": mode}
    if mode == "constant":
        attrs["pad_value"] = value
    return case(name, "nn.pad", lambda: [randn(*x_shape)], expected, attrs, dtype=dtype)


CASES += [
    pad_case("pad-constant-zero-spatial", (1, 2, 3, 4), ((0, 0), (0, 0), (1, 2), (2, 1))),
    pad_case("pad-constant-value1.5-all-dims", (2, 3, 4), ((1, 0), (0, 2), (3, 1)), value=1.5),
    pad_case("pad-edge-spatial", (1, 2, 3, 4), ((0, 0), (0, 0), (1, 2), (2, 1)), mode="edge"),
    pad_case("pad-edge-last-dim", (2, 3, 4), ((0, 0), (0, 0), (2, 3)), mode="edge"),
    pad_case("pad-edge-no-batch-dim", (3, 4), ((1, 1), (2, 0)), mode="edge"),
    pad_case("pad-reflect-spatial", (1, 2, 4, 5), ((0, 0), (0, 0), (1, 2), (3, 1)), mode="reflect"),
    pad_case("pad-reflect-1d", (6,), ((2, 3),), mode="reflect"),
    pad_case("pad-reflect-channels-and-width", (2, 3, 5), ((0, 0), (1, 1), (2, 2)), mode="reflect"),
    pad_case("pad-circular-spatial", (1, 2, 4, 5), ((0, 0), (0, 0), (1, 2), (3, 1)), mode="circular"),
]

# resize: nn.Upsample with the same size and mode


def resize_case(name, x_shape, size, method, torch_mode, align_corners=False, dtype=FP32):
    corners = align_corners if torch_mode in ("bilinear", "bicubic") else None
    return case(
        name,
        "image.resize2d",
        lambda: [randn(*x_shape)],
        nn.Upsample(size=size, mode=torch_mode, align_corners=corners),
        {"size": size, "method": method, "align_corners": align_corners},
        dtype=dtype,
    )


CASES += [
    resize_case("resize2d-nearest-up2x", (1, 2, 3, 4), (6, 8), "nearest", "nearest"),
    resize_case("resize2d-nearest-down", (1, 2, 8, 9), (3, 4), "nearest", "nearest"),
    resize_case("resize2d-nearest_exact-down", (1, 2, 8, 9), (3, 4), "nearest_exact", "nearest-exact"),
    resize_case("resize2d-linear", (2, 2, 3, 4), (5, 7), "linear", "bilinear"),
    resize_case("resize2d-linear-align_corners", (2, 2, 3, 4), (5, 7), "linear", "bilinear", align_corners=True),
    resize_case("resize2d-cubic", (1, 2, 4, 4), (7, 6), "cubic", "bicubic"),
    resize_case("resize2d-cubic-align_corners", (1, 2, 4, 4), (7, 6), "cubic", "bicubic", align_corners=True),
    case(
        "resize2d-nearest-up2x-exact-values",
        "image.resize2d",
        lambda: [torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])],
        lambda x: torch.tensor([[[[1.0, 1.0, 2.0, 2.0]] * 2 + [[3.0, 3.0, 4.0, 4.0]] * 2]]),
        {"size": (4, 4)},
        dtype=FP32,
    ),
]


@pytest.mark.parametrize("c", CASES)
def test_nn(c):
    check_case(c)
