"""take, gather and adv_index against F.embedding, numpy.take, numpy.take_along_axis and numpy indexing."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import case, check_case, randn

FP32 = torch.float32


def np_take(axis):
    return lambda data, idx: torch.from_numpy(np.take(data.numpy(), idx.numpy(), axis=axis))


def np_take_along(axis):
    return lambda data, idx: torch.from_numpy(np.take_along_axis(data.numpy(), idx.numpy(), axis=axis))


CASES = [
    # take along axis 0 is an embedding lookup
    case(
        "take-embedding-1d-indices",
        "take",
        lambda: [randn(10, 4), torch.tensor([3, 0, 9, 3])],
        lambda table, idx: F.embedding(idx, table),
        dtype=FP32,
        const=(0,),
    ),
    case(
        "take-embedding-2d-indices",
        "take",
        lambda: [randn(10, 4), torch.tensor([[1, 2, 3], [9, 0, 1]])],
        lambda table, idx: F.embedding(idx, table),
        dtype=FP32,
        const=(0,),
    ),
    case(
        "take-negative-indices",
        "take",
        lambda: [randn(6, 3), torch.tensor([[-1, 0], [-6, 2]])],
        lambda table, idx: F.embedding(idx % 6, table),
        dtype=FP32,
    ),
    case(
        "take-int32-indices",
        "take",
        lambda: [randn(6, 3), torch.tensor([5, 1], dtype=torch.int32)],
        lambda table, idx: F.embedding(idx.long(), table),
        dtype=FP32,
    ),
    case(
        "take-axis1-2d-indices",
        "take",
        lambda: [randn(2, 5, 3), torch.tensor([[4, 0], [-1, 2]])],
        np_take(1),
        {"axis": 1},
        dtype=FP32,
    ),
    case(
        "take-axis-negative",
        "take",
        lambda: [randn(2, 3, 5), torch.tensor([0, 4, -2])],
        np_take(-1),
        {"axis": -1},
        dtype=FP32,
    ),
    case("take-scalar-index", "take", lambda: [randn(4, 3), torch.tensor(2)], np_take(0), dtype=FP32),
    case(
        "gather-axis1",
        "gather",
        lambda: [randn(3, 4), torch.tensor([[0, 3], [1, 1], [2, 0]])],
        np_take_along(1),
        {"axis": 1},
        dtype=FP32,
    ),
    case(
        "gather-axis0",
        "gather",
        lambda: [randn(3, 4), torch.tensor([[2, 0, 1, 2]])],
        np_take_along(0),
        {"axis": 0},
        dtype=FP32,
    ),
    case(
        "gather-axis-negative-int32-indices",
        "gather",
        lambda: [
            torch.arange(24).reshape(2, 3, 4),
            torch.tensor([[[3], [0], [1]], [[2], [2], [0]]], dtype=torch.int32),
        ],
        lambda data, idx: torch.from_numpy(np.take_along_axis(data.numpy(), idx.numpy().astype(np.int64), axis=-1)),
        {"axis": -1},
    ),
]


def np_index(key):
    """numpy advanced indexing: `key(data, *indices)` builds the index tuple."""
    return lambda data, *idx: torch.from_numpy(np.ascontiguousarray(data.numpy()[key(*(i.numpy() for i in idx))]))


CASES += [
    case(
        "adv_index-axis0",
        "adv_index",
        lambda: [randn(5, 3), torch.tensor([4, 0, -1])],
        np_index(lambda i: (i,)),
        {"axes": (0,)},
        dtype=FP32,
    ),
    case(
        "adv_index-adjacent-axes-broadcast",
        "adv_index",
        lambda: [randn(2, 4, 5, 3), torch.tensor([[0], [3]]), torch.tensor([1, 4, 2])],
        np_index(lambda i, j: (slice(None), i, j)),
        {"axes": (1, 2)},
        dtype=FP32,
    ),
    # index tensors separated by a slice: numpy puts the broadcast index dimensions first
    case(
        "adv_index-separated-axes",
        "adv_index",
        lambda: [randn(3, 4, 5), torch.tensor([2, 0]), torch.tensor([4, 1])],
        np_index(lambda i, j: (i, slice(None), j)),
        {"axes": (0, 2)},
        dtype=FP32,
    ),
    case(
        "adv_index-2d-index-int32",
        "adv_index",
        lambda: [torch.arange(12).reshape(3, 4), torch.tensor([[0, 3], [1, 1]], dtype=torch.int32)],
        np_index(lambda i: (slice(None), i)),
        {"axes": (1,)},
    ),
]


@pytest.mark.parametrize("c", CASES)
def test_indexing(c):
    check_case(c)
