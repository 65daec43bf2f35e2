"""The `torch` tactic on CUDA: any op through its PyTorch reference, its result kept where PyTorch put it.

On a GPU, copying every result into an arena slot (what the CPU reference does) would add a full read
and write per layer. This tactic instead leaves the result in PyTorch's allocator — inside a captured
plan that is the CUDA graph's private pool, where the execution context frees each value at its last use
so its memory is reused — and takes no arena slot (`writes_arena=False`). It is the candidate of last
resort on CUDA; specialised tactics (cuDNN, cuBLASLt, Triton) are preferred where they apply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .reference import NOT_IN_PLANS
from .registry import ANY_OP, reference_kernel, tactic

if TYPE_CHECKING:
    from ...ir import Node
    from ..config import BuilderConfig


# its result may be a view of an input, whose memory must outlive it (memory.py)
@tactic(ANY_OP, name="torch", devices=("cuda",), priority=-50, writes_arena=False, runs_reference=True)
class Torch:
    @staticmethod
    def supports(node: Node, config: BuilderConfig) -> str | None:
        return NOT_IN_PLANS.get(node.op)

    bind = staticmethod(reference_kernel)
