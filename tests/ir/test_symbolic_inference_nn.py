"""Symbolic shape inference of the nn family (issue 14, step 3): transposed convolutions, ceil-mode and adaptive
pools, padding, resizing and flattening keep `h`, `w`, `seq` as size expressions, and each graph runs like PyTorch
at three sizes. Ends with a small U-Net-like conv net typed end to end."""

import itertools
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from symbolic_checks import OPEN, B, H, S, W, cases, check
from tensorforge import ir
from tensorforge.ir import Graph, ShapeInferenceError, SymExpr, TensorType
from tensorforge.ir.ops.nn import scaled_size
from tensorforge.ir.types import as_dim


def _weight(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))


def _img(g: Graph, channels: int = 3) -> ir.Value:
    return g.add_input("x", TensorType("float32", (B, channels, H, W)))


CT_W = _weight(3, 2, 3, 3)  # I, O/groups, kh, kw


def case_conv_transpose2d(g):
    y = g.call("nn.conv2d_transpose", _img(g), g.add_constant(CT_W, "w"), strides=(2, 3), padding=(1, 0))
    return [y], [(B, 2, 2 * H - 1, 3 * W)], lambda x: F.conv_transpose2d(x, CT_W, None, (2, 3), (1, 0))


def case_conv_transpose2d_output_padding_dilation_groups(g):
    w = _weight(4, 2, 3, 2)
    y = g.call(
        "nn.conv2d_transpose",
        _img(g, 4),
        g.add_constant(w, "w"),
        strides=(2, 2),
        padding=(1, 1),
        output_padding=(1, 0),
        dilation=(2, 1),
        groups=2,
    )
    shape = (B, 4, 2 * H + 2, 2 * W - 2)  # (h-1)*2 - 2*1 + 2*(3-1) + 1 + 1 and (w-1)*2 - 2*1 + (2-1) + 0 + 1
    return [y], [shape], lambda x: F.conv_transpose2d(x, w, None, (2, 2), (1, 1), (1, 0), 2, (2, 1))


def case_conv_transpose1d_on_seq(g):
    w = _weight(6, 4, 4)
    x = g.add_input("x", TensorType("float32", (B, 6, S)))
    y = g.call("nn.conv1d_transpose", x, g.add_constant(w, "w"), strides=(2,), padding=(1,))
    return [y], [(B, 4, 2 * S)], lambda x: F.conv_transpose1d(x, w, None, 2, 1)


def case_max_pool2d_ceil_mode(g):
    y = g.call("nn.max_pool2d", _img(g), pool_size=(3, 2), strides=(2, 2), ceil_mode=True)
    return [y], [(B, 3, H // 2, (W + 1) // 2)], lambda x: F.max_pool2d(x, (3, 2), (2, 2), ceil_mode=True)


def case_max_pool2d_ceil_mode_padding_dilation(g):
    attrs = dict(pool_size=(3, 3), strides=(2, 3), padding=(1, 1), dilation=(2, 1), ceil_mode=True)
    y = g.call("nn.max_pool2d", _img(g), **attrs)
    eager = lambda x: F.max_pool2d(x, 3, (2, 3), 1, (2, 1), ceil_mode=True)  # noqa: E731
    return [y], [(B, 3, H // 2, W // 3 + 1)], eager


def case_avg_pool1d_ceil_mode_on_seq(g):
    x = g.add_input("x", TensorType("float32", (B, 4, S)))
    y = g.call("nn.avg_pool1d", x, pool_size=(2,), strides=(2,), ceil_mode=True, count_include_pad=False)
    return [y], [(B, 4, (S + 1) // 2)], lambda x: F.avg_pool1d(x, 2, 2, ceil_mode=True, count_include_pad=False)


def case_adaptive_pools(g):
    x = _img(g)
    a = g.call("nn.adaptive_avg_pool2d", x, output_size=(3, 2))
    m = g.call("nn.adaptive_max_pool2d", x, output_size=(1, 4))
    eager = lambda x: (F.adaptive_avg_pool2d(x, (3, 2)), F.adaptive_max_pool2d(x, (1, 4)))  # noqa: E731
    return [a, m], [(B, 3, 3, 2), (B, 3, 1, 4)], eager


def case_global_pools(g):
    x = _img(g)
    return (
        [g.call("nn.global_avg_pool2d", x), g.call("nn.global_max_pool2d", x)],
        [(B, 3, 1, 1), (B, 3, 1, 1)],
        lambda x: (x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)),
    )


def case_pad_constant(g):
    y = g.call("nn.pad", _img(g), pad_width=((0, 0), (1, 0), (2, 3), (0, 1)), pad_value=0.5)
    return [y], [(B, 4, H + 5, W + 1)], lambda x: F.pad(x, (0, 1, 2, 3, 1, 0), value=0.5)


def case_pad_reflect_on_seq(g):
    x = g.add_input("x", TensorType("float32", (B, 4, S)))
    y = g.call("nn.pad", x, pad_width=((0, 0), (0, 0), (2, 1)), pad_mode="reflect")
    return [y], [(B, 4, S + 3)], lambda x: F.pad(x, (2, 1), mode="reflect")


def case_pad_of_a_slice(g):
    x = g.add_input("x", TensorType("float32", (B, 4, S)))
    y = g.call("strided_slice", x, begin=(1,), end=(OPEN,), axes=(2,))
    z = g.call("nn.pad", y, pad_width=((0, 0), (0, 0), (0, 1)), pad_mode="edge")
    return [z], [(B, 4, S)], lambda x: F.pad(x[:, :, 1:], (0, 1), mode="replicate")


def case_resize_integer_scale(g):
    x = _img(g)
    y = g.call("image.resize2d", x, size=(scaled_size(H, 2), scaled_size(W, 3)))
    return [y], [(B, 3, 2 * H, 3 * W)], lambda x: F.interpolate(x, scale_factor=(2, 3), mode="nearest")


def case_resize_rational_scale(g):
    x = _img(g)
    size = (scaled_size(H, 1.5), scaled_size(W, Fraction(2, 3)))
    y = g.call("image.resize2d", x, size=size, method="linear")
    want = (B, 3, H + H // 2, (2 * W) // 3)

    def eager(x):
        out = F.interpolate(x, size=(x.shape[2] * 3 // 2, x.shape[3] * 2 // 3), mode="bilinear", align_corners=False)
        assert F.interpolate(x, scale_factor=(1.5, 2 / 3), mode="bilinear").shape == out.shape  # torch's floor(h*s)
        return out

    return [y], [want], eager


def case_resize_to_explicit_size(g):
    x = _img(g)
    y = g.call("image.resize2d", x, size=(5, W - 1), method="cubic", align_corners=True)
    eager = lambda x: F.interpolate(x, size=(5, x.shape[3] - 1), mode="bicubic", align_corners=True)  # noqa: E731
    return [y], [(B, 3, 5, W - 1)], eager


def case_batch_flatten(g):
    y = g.call("nn.batch_flatten", g.call("nn.relu", _img(g)))
    return [y], [(B, 3 * H * W)], lambda x: torch.relu(x).flatten(1)


def case_norms_and_softmax_keep_the_sizes(g):
    x = g.add_input("x", TensorType("float32", (B, S, 4)))
    gamma, beta = g.add_constant(_weight(4), "gamma"), g.add_constant(_weight(4) * 0.1, "beta")
    ln = g.call("nn.layer_norm", x, gamma, beta)
    sm = g.call("nn.log_softmax", ln, axis=1)

    def eager(x):
        return torch.log_softmax(F.layer_norm(x, (4,), _weight(4), _weight(4) * 0.1), 1)

    return [sm], [(B, S, 4)], eager


CASES, CASE_IDS = cases(globals())


@pytest.mark.parametrize("build", CASES, ids=CASE_IDS)
def test_nn_op_types_and_numerics(build):
    graph = Graph(build.__name__)
    outs, expected, eager = build(graph)
    check(graph, outs, expected, eager)


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_window_arithmetic_matches_torch_at_every_small_size(ceil_mode):
    """The pool's expression against PyTorch at every length 1..40 and many kernels, strides, pads, dilations
    (the probes check only large primes, and the run at 1 only size 1)."""
    checked = 0
    for k, s, p, d in itertools.product(range(1, 6), range(1, 5), range(3), range(1, 3)):
        if p > k // 2:
            continue
        graph = Graph("pool")
        x = graph.add_input("x", TensorType("float32", (1, 1, S)))
        attrs = dict(pool_size=(k,), strides=(s,), padding=(p,), dilation=(d,), ceil_mode=ceil_mode)
        try:
            (size,) = graph.call("nn.max_pool1d", x, **attrs).type.shape[2:]
        except ShapeInferenceError:  # too small at a probe or at 1: then the reference refuses that size too
            continue
        for n in range(1, 41):
            try:
                want = F.max_pool1d(torch.zeros(1, 1, n), k, s, p, d, ceil_mode=ceil_mode).shape[2]
            except RuntimeError:
                continue
            assert SymExpr.from_dim(size).bind({"seq": n}) == want, (k, s, p, d, n, size)
            checked += 1
    assert checked > 2000


def test_float_scales_that_do_not_reduce_are_refused_with_the_fix():
    assert scaled_size(H, 2.0) == 2 * H
    assert scaled_size(H, 0.5) == H // 2
    assert scaled_size(7, 1.5) == 10
    with pytest.raises(ShapeInferenceError, match=r"0\.3 is not a fraction.*give the output size"):
        scaled_size(H, 0.3)
    with pytest.raises(ShapeInferenceError, match="must be positive"):
        scaled_size(H, 0.0)


def test_conv_net_with_h_and_w():
    """Stride-2 conv, ceil-mode max pool, x2 upsample cropped to the skip (as U-Net does), channel concat with the
    skip, adaptive average pool, dense: typed end to end in h and w, and equal to PyTorch at three sizes."""
    w1, w2, w3 = _weight(8, 3, 3, 3), _weight(8, 8, 3, 3), _weight(5, 16 * 2 * 2)
    g = Graph("unet_like")
    x = _img(g)
    skip = g.call("nn.relu", g.call("nn.conv2d", x, g.add_constant(w1, "w1"), strides=(2, 2), padding=(1, 1)))
    eh, ew = (H - 1) // 2 + 1, (W - 1) // 2 + 1
    assert skip.type.shape == (B, 8, eh, ew)
    pooled = g.call("nn.max_pool2d", skip, pool_size=(2, 2), strides=(2, 2), ceil_mode=True)
    ph, pw = (eh + 1) // 2, (ew + 1) // 2
    assert pooled.type.shape == (B, 8, as_dim(ph), as_dim(pw))
    deep = g.call("nn.relu", g.call("nn.conv2d", pooled, g.add_constant(w2, "w2"), padding=(1, 1)))
    up = g.call("image.resize2d", deep, size=(scaled_size(ph, 2), scaled_size(pw, 2)))
    cropped = g.call("strided_slice", up, begin=(0, 0), end=(eh, ew), axes=(2, 3))
    assert cropped.type.shape == skip.type.shape
    joined = g.call("concatenate", skip, cropped, axis=1)
    assert joined.type.shape == (B, 16, eh, ew)
    feat = g.call("nn.batch_flatten", g.call("nn.adaptive_avg_pool2d", joined, output_size=(2, 2)))
    y = g.call("nn.dense", feat, g.add_constant(w3, "w3"))

    def eager(x):
        s = torch.relu(F.conv2d(x, w1, None, 2, 1))
        d = torch.relu(F.conv2d(F.max_pool2d(s, 2, 2, ceil_mode=True), w2, None, 1, 1))
        u = F.interpolate(d, scale_factor=2, mode="nearest")[:, :, : s.shape[2], : s.shape[3]]
        j = torch.cat([s, u], 1)
        return F.linear(F.adaptive_avg_pool2d(j, (2, 2)).flatten(1), w3)

    check(g, [y], [(B, 5)], eager)
