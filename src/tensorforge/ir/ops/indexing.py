"""Gathering by index: take (numpy.take, e.g. embeddings) and gather (torch.gather)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..registry import REQUIRED, register_op


@register_op("take", inputs=2, attrs={"axis": 0})
def take(data: Tensor, indices: Tensor, axis: int) -> Tensor:
    """take: pick entries along `axis` by integer indices of any shape (negative indices count from the end)."""
    axis = axis % data.dim()
    size = data.shape[axis]
    flat = indices.reshape(-1).long()
    flat = torch.where(flat < 0, flat + size, flat)
    picked = torch.index_select(data, axis, flat)
    return picked.reshape(tuple(data.shape[:axis]) + tuple(indices.shape) + tuple(data.shape[axis + 1 :]))


@register_op("gather", inputs=2, attrs={"axis": REQUIRED})
def gather(data: Tensor, indices: Tensor, axis: int) -> Tensor:
    """gather: out[i][j] = data[indices[i][j]][j] along `axis` (indices have the output's shape)."""
    return torch.gather(data, axis, indices.long())


@register_op("adv_index", inputs=(2, None), attrs={"axes": REQUIRED})
def adv_index(data: Tensor, *indices: Tensor, axes: Sequence[int]) -> Tensor:
    """adv_index: numpy advanced indexing, data[..., i0, i1, ...] with one integer index tensor per axis in `axes`
    (index tensors broadcast together; placement of the result dimensions follows numpy/PyTorch)."""
    if len(indices) != len(axes):
        raise ValueError(f"adv_index: {len(indices)} index tensors for {len(axes)} axes")
    key: list[slice | Tensor] = [slice(None)] * data.dim()
    for axis, idx in zip(axes, indices):
        key[axis] = idx.long()
    return data[tuple(key)]
