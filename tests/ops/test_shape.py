"""Shape and layout ops against numpy and Python slicing: reshape, transpose, layout_transform, expand_dims,
squeeze, concatenate, stack, split, strided_slice, slice_scatter, broadcast_to, tile, reverse, roll, copy."""

import numpy as np
import pytest
import torch

from engine_cases import check_case_in_engine
from helpers import case, check_case, randn

FP32 = torch.float32


def _np(fn):
    """Expected value from numpy; a tuple of arrays becomes a tuple of tensors."""

    def expected(*xs):
        out = fn(*(x.numpy() for x in xs))
        if isinstance(out, (list, tuple)):
            return tuple(torch.from_numpy(np.ascontiguousarray(o)) for o in out)
        return torch.from_numpy(np.ascontiguousarray(out))

    return expected


def _iota(*shape):
    """Distinct values, so any permutation or misplaced slice changes the result."""
    return lambda: [torch.arange(float(np.prod(shape))).reshape(shape)]


def slice_case(name, shape, index, begin, end, strides=None, axes=None):
    """strided_slice against numpy basic indexing `x[index]` (index: a tuple of Python slices)."""
    attrs = {"begin": begin, "end": end}
    if strides is not None:
        attrs["strides"] = strides
    if axes is not None:
        attrs["axes"] = axes
    return case(name, "strided_slice", _iota(*shape), _np(lambda x: x[index]), attrs)


CASES = [
    case(
        "reshape-flatten",
        "reshape",
        lambda: [randn(2, 3, 4)],
        _np(lambda x: x.reshape(6, 4)),
        {"newshape": (6, 4)},
        dtype=FP32,
    ),
    case(
        "reshape-infer-minus1",
        "reshape",
        lambda: [randn(2, 3, 4)],
        _np(lambda x: x.reshape(2, -1)),
        {"newshape": (2, -1)},
        dtype=FP32,
    ),
    case("reshape-add-axes", "reshape", _iota(6), _np(lambda x: x.reshape(1, 2, 1, 3)), {"newshape": (1, 2, 1, 3)}),
    case("transpose-reverse-default", "transpose", lambda: [randn(2, 3, 4)], _np(lambda x: x.T), dtype=FP32),
    case(
        "transpose-0-2-1",
        "transpose",
        lambda: [randn(2, 3, 4)],
        _np(lambda x: np.transpose(x, (0, 2, 1))),
        {"axes": (0, 2, 1)},
        dtype=FP32,
    ),
    case(
        "transpose-negative-axes",
        "transpose",
        _iota(2, 3, 4),
        _np(lambda x: np.transpose(x, (2, 0, 1))),
        {"axes": (-1, 0, 1)},
    ),
    case(
        "layout_transform-NCHW-to-NHWC",
        "layout_transform",
        _iota(2, 3, 4, 5),
        _np(lambda x: np.transpose(x, (0, 2, 3, 1))),
        {"src_layout": "NCHW", "dst_layout": "NHWC"},
    ),
    case(
        "layout_transform-NHWC-to-NCHW",
        "layout_transform",
        _iota(2, 4, 5, 3),
        _np(lambda x: np.transpose(x, (0, 3, 1, 2))),
        {"src_layout": "NHWC", "dst_layout": "NCHW"},
    ),
    case(
        "layout_transform-NCDHW-to-NDHWC",
        "layout_transform",
        _iota(1, 2, 3, 4, 5),
        _np(lambda x: np.transpose(x, (0, 2, 3, 4, 1))),
        {"src_layout": "NCDHW", "dst_layout": "NDHWC"},
    ),
    case("expand_dims-axis1", "expand_dims", _iota(2, 3), _np(lambda x: x[:, None]), {"axis": 1}),
    case(
        "expand_dims-axis-last-2new",
        "expand_dims",
        _iota(2, 3),
        _np(lambda x: x[:, :, None, None]),
        {"axis": -1, "num_newaxis": 2},
    ),
    case("expand_dims-axis0", "expand_dims", _iota(2, 3), _np(lambda x: x[None]), {"axis": 0}),
    case("squeeze-all", "squeeze", _iota(1, 3, 1, 2), _np(np.squeeze)),
    case("squeeze-axis2", "squeeze", _iota(1, 3, 1, 2), _np(lambda x: np.squeeze(x, axis=2)), {"axis": (2,)}),
    case(
        "squeeze-negative-axes",
        "squeeze",
        _iota(1, 3, 1, 2),
        _np(lambda x: np.squeeze(x, axis=(0, -2))),
        {"axis": (0, -2)},
    ),
    case(
        "concatenate-axis1-3-inputs",
        "concatenate",
        lambda: [randn(2, 1, 3), randn(2, 4, 3), randn(2, 2, 3)],
        _np(lambda *xs: np.concatenate(xs, axis=1)),
        {"axis": 1},
        dtype=FP32,
    ),
    case(
        "concatenate-axis-negative",
        "concatenate",
        lambda: [randn(2, 3), randn(2, 1)],
        _np(lambda *xs: np.concatenate(xs, axis=-1)),
        {"axis": -1},
        dtype=FP32,
    ),
    case("concatenate-one-input", "concatenate", lambda: [randn(2, 3)], _np(lambda x: x), dtype=FP32),
    case(
        "concatenate-with-constant",
        "concatenate",
        lambda: [randn(2, 3), randn(1, 3)],
        _np(lambda *xs: np.concatenate(xs, axis=0)),
        dtype=FP32,
        const=(1,),
    ),
    case("stack-axis0", "stack", lambda: [randn(2, 3), randn(2, 3)], _np(lambda *xs: np.stack(xs)), dtype=FP32),
    case(
        "stack-axis-last-3-inputs",
        "stack",
        lambda: [randn(2, 3), randn(2, 3), randn(2, 3)],
        _np(lambda *xs: np.stack(xs, axis=-1)),
        {"axis": -1},
        dtype=FP32,
    ),
    case(
        "split-sections3-axis1",
        "split",
        lambda: [randn(2, 6, 2)],
        _np(lambda x: np.split(x, 3, axis=1)),
        {"indices_or_sections": 3, "axis": 1},
        dtype=FP32,
    ),
    case("split-sections-uneven", "split", _iota(7), _np(lambda x: np.array_split(x, 3)), {"indices_or_sections": 3}),
    case(
        "split-indices-1-3",
        "split",
        lambda: [randn(5, 2)],
        _np(lambda x: np.split(x, [1, 3])),
        {"indices_or_sections": (1, 3)},
        dtype=FP32,
    ),
    case(
        "split-indices-axis-negative",
        "split",
        _iota(2, 3, 6),
        _np(lambda x: np.split(x, [2, 5], axis=-1)),
        {"indices_or_sections": (2, 5), "axis": -1},
    ),
    case(
        "split-one-index", "split", _iota(4, 3), _np(lambda x: np.split(x, [1], axis=0)), {"indices_or_sections": (1,)}
    ),
    slice_case("strided_slice-basic", (4, 5, 3), np.s_[1:3, 0:2], (1, 0), (3, 2)),
    slice_case("strided_slice-stride2", (6, 5), np.s_[0:6:2, 1:5:2], (0, 1), (6, 5), strides=(2, 2)),
    slice_case("strided_slice-negative-indices", (6, 5), np.s_[-4:-1, -3:], (-4, -3), (-1, 5)),
    slice_case("strided_slice-negative-step", (6, 5), np.s_[::-1], (-1,), (-7,), strides=(-1,)),
    slice_case(
        "strided_slice-negative-step2-axis2", (2, 3, 7), np.s_[:, :, 6:0:-2], (6,), (0,), strides=(-2,), axes=(2,)
    ),
    slice_case("strided_slice-mixed-steps", (5, 6), np.s_[4:0:-1, 1:6:2], (4, 1), (0, 6), strides=(-1, 2)),
    slice_case("strided_slice-end-clamped", (4, 5), np.s_[1:100, 2:1000], (1, 2), (100, 1000)),
    slice_case("strided_slice-axes-last", (3, 4, 5), np.s_[:, :, 1:4], (1,), (4,), axes=(2,)),
    slice_case("strided_slice-axes-negative", (3, 4, 5), np.s_[:, :, -2:], (-2,), (5,), axes=(-1,)),
    slice_case("strided_slice-end-none", (3, 4), np.s_[:, 1:], (1,), (None,), axes=(1,)),
    slice_case("strided_slice-empty", (3, 4), np.s_[2:1], (2,), (1,)),
    case(
        "broadcast_to-leading",
        "broadcast_to",
        lambda: [randn(3, 1)],
        _np(lambda x: np.broadcast_to(x, (2, 3, 4))),
        {"shape": (2, 3, 4)},
        dtype=FP32,
    ),
    case(
        "broadcast_to-minus1-keeps",
        "broadcast_to",
        lambda: [randn(1, 3)],
        _np(lambda x: np.broadcast_to(x, (4, 3))),
        {"shape": (4, -1)},
        dtype=FP32,
    ),
    case("tile-same-rank", "tile", _iota(2, 3), _np(lambda x: np.tile(x, (2, 3))), {"reps": (2, 3)}),
    case("tile-more-reps", "tile", _iota(2, 3), _np(lambda x: np.tile(x, (2, 1, 2))), {"reps": (2, 1, 2)}),
    case("tile-fewer-reps", "tile", _iota(2, 3), _np(lambda x: np.tile(x, (3,))), {"reps": (3,)}),
    case("reverse-axis1", "reverse", _iota(2, 3, 4), _np(lambda x: x[:, ::-1]), {"axis": 1}),
    case("reverse-axis-negative", "reverse", _iota(2, 3, 4), _np(lambda x: x[..., ::-1]), {"axis": -1}),
    case("copy", "copy", lambda: [randn(2, 3)], _np(lambda x: x.copy()), dtype=FP32),
    case("copy-bool", "copy", lambda: [torch.tensor([True, False])], lambda x: torch.tensor([True, False])),
]


def _scattered(index):
    """numpy: a copy of data with data[index] = src."""

    def expected(data, src):
        out = data.copy()
        out[index] = src
        return out

    return _np(expected)


# ops added for Swin (shifted windows and their masks), each also run through an engine plan below
ENGINE_CASES = [
    case(
        "roll-two-axes",
        "roll",
        _iota(3, 4, 5),
        _np(lambda x: np.roll(x, (1, -2), axis=(1, 2))),
        {"shift": (1, -2), "axis": (1, 2)},
    ),
    case(
        "roll-shift-past-size-negative-axis",
        "roll",
        _iota(3, 4, 5),
        _np(lambda x: np.roll(x, 7, axis=-1)),
        {"shift": (7,), "axis": (-1,)},
    ),
    case("roll-flattened", "roll", _iota(3, 4), _np(lambda x: np.roll(x, -5)), {"shift": (-5,)}),
    case(
        "roll-same-axis-twice",
        "roll",
        _iota(3, 4),
        _np(lambda x: np.roll(x, (1, 2), axis=(1, 1))),
        {"shift": (1, 2), "axis": (1, 1)},
    ),
    case(
        "roll-int64",
        "roll",
        lambda: [torch.arange(12).reshape(3, 4)],
        _np(lambda x: np.roll(x, 1, axis=0)),
        {"shift": (1,), "axis": (0,)},
    ),
    case(
        "roll-fp16",
        "roll",
        lambda: [randn(2, 5)],
        lambda x: torch.cat([x[:, -2:], x[:, :-2]], 1),
        {"shift": (2,), "axis": (1,)},
        dtype=torch.float16,
    ),
    case(
        "slice_scatter-middle",
        "slice_scatter",
        lambda: [randn(4, 6), randn(4, 2)],
        _scattered(np.s_[:, 2:4]),
        {"axis": 1, "begin": 2, "end": 4},
        dtype=FP32,
    ),
    case(
        "slice_scatter-stride2-negative-begin",
        "slice_scatter",
        lambda: [randn(6, 5), randn(3, 5)],
        _scattered(np.s_[-6::2]),
        {"axis": 0, "begin": -6, "end": 2**63 - 1, "stride": 2},
        dtype=FP32,
    ),
    case(
        "slice_scatter-end-clamped-last-axis",
        "slice_scatter",
        lambda: [randn(2, 3, 4), randn(2, 3, 3)],
        _scattered(np.s_[..., 1:]),
        {"axis": -1, "begin": 1, "end": 100},
        dtype=FP32,
    ),
    case(
        "slice_scatter-bool",
        "slice_scatter",
        lambda: [torch.zeros(2, 4, dtype=torch.bool), torch.ones(2, 1, dtype=torch.bool)],
        _scattered(np.s_[:, 3:]),
        {"axis": 1, "begin": 3, "end": 4},
    ),
]
CASES += ENGINE_CASES


@pytest.mark.parametrize("c", CASES)
def test_shape(c):
    check_case(c)


@pytest.mark.parametrize("c", ENGINE_CASES)
def test_shape_in_engine(c):
    check_case_in_engine(c)


def test_copy_is_a_new_tensor():
    """copy materializes: the output must not alias the input (a pass may write into it in place)."""
    from helpers import run_single_op

    x = torch.randn(3)
    (y,) = run_single_op("copy", [x])
    assert y.data_ptr() != x.data_ptr()
