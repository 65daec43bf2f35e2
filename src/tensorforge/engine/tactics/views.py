"""View tactics on CUDA: shape ops that only re-describe memory return an alias of their input.

A reshape, transpose or slice costs nothing when its result is a view; copying it into an arena slot
(what a tactic that writes into the arena must do) would add a full read and write of the tensor. These
tactics keep the view (`writes_arena=False`): the consumer kernels handle strided inputs.
"""

from __future__ import annotations

from .registry import reference_kernel, tactic

VIEW_OPS = (
    "reshape",
    "transpose",
    "squeeze",
    "expand_dims",
    "strided_slice",
    "broadcast_to",
    "split",
    "nn.batch_flatten",
    "layout_transform",
    "engine.strided_view",
)


def _declare(op: str) -> None:
    class Alias:
        bind = staticmethod(reference_kernel)

    Alias.__name__ = f"Alias_{op.replace('.', '_')}"
    tactic(op, name="alias", devices=("cuda",), priority=10, writes_arena=False, aliases_input=True)(Alias)


for _op in VIEW_OPS:
    _declare(_op)
