"""The reference tactic: run any op through its registered reference implementation (`OpDef.run`).

It makes every region build and run on CPU, and it is the yardstick every other tactic is checked against.
It never writes into the arena view it is offered: the execution context copies its result there. On CUDA
its twin is the `torch` tactic (tactics/eager.py), which keeps the result where PyTorch put it instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .registry import ANY_OP, reference_kernel, tactic

if TYPE_CHECKING:
    from ...ir import Node
    from ..config import BuilderConfig

# ops that only make sense outside a plan
NOT_IN_PLANS = {"subgraph": "a subgraph call inside an engine region is not supported (regions are flat)"}


# a plan output it returns may be a view of an input (memory.viewed_inputs)
@tactic(ANY_OP, name="reference", devices=("cpu",), priority=-100, runs_reference=True)
class Reference:
    @staticmethod
    def supports(node: Node, config: BuilderConfig) -> str | None:
        return NOT_IN_PLANS.get(node.op)

    bind = staticmethod(reference_kernel)
