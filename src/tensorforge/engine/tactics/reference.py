"""The reference tactic: run any op through its registered reference implementation (`OpDef.run`).

It makes every region build and run on CPU, and it is the yardstick every other tactic is checked against.
It never writes into the arena view it is offered: the execution context copies its result there. On CUDA
its twin is the `torch` tactic (tactics/eager.py), which keeps the result where PyTorch put it instead.
"""

from __future__ import annotations

from .registry import ANY_OP, tactic

# ops that only make sense outside a plan
_UNSUPPORTED = {"subgraph": "a subgraph call inside an engine region is not supported (regions are flat)"}


@tactic(ANY_OP, name="reference", devices=("cpu",), priority=-100)
class Reference:
    @staticmethod
    def supports(node, config) -> str | None:
        return _UNSUPPORTED.get(node.op)

    @staticmethod
    def bind(node, ctx):
        opdef, attrs, device = node.opdef, node.attrs, ctx.device

        def run(inputs, outputs, env):
            return opdef.run(inputs, attrs, env, device)

        return run
