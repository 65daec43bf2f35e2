"""The `torch` tactic on CUDA: any op through its PyTorch reference, its result kept where PyTorch put it.

On a GPU, copying every result into an arena slot (what the CPU reference does) would add a full read
and write per layer. This tactic instead leaves the result in PyTorch's allocator — inside a captured
plan that is the CUDA graph's private pool, where the execution context frees each value at its last use
so its memory is reused — and takes no arena slot (`writes_arena = False`). It is the candidate of last
resort on CUDA; specialised tactics (cuDNN, cuBLASLt, Triton) are preferred where they apply.
"""

from __future__ import annotations

from .registry import ANY_OP, tactic

_UNSUPPORTED = {"subgraph": "a subgraph call inside an engine region is not supported (regions are flat)"}


@tactic(ANY_OP, name="torch", devices=("cuda",), priority=-50)
class Torch:
    writes_arena = False

    @staticmethod
    def supports(node, config) -> str | None:
        return _UNSUPPORTED.get(node.op)

    @staticmethod
    def bind(node, ctx):
        opdef, attrs, device = node.opdef, node.attrs, ctx.device

        def run(inputs, outputs, env):
            return opdef.run(inputs, attrs, env, device)

        return run
