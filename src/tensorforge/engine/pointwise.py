"""engine.pointwise: a fused group of elementwise ops as one layer, its program held as data.

`fuse_pointwise` turns each maximal group of elementwise nodes into one `engine.pointwise` node. The node
keeps what the group computed as a small SSA program in its attributes (JSON-able tuples, so plans stay
plain data and loading one never runs code from it):

    program   instruction k defines SSA value k:
                ("load", i)                              the layer's input i
                ("const", value, dtype, shape)           a literal: a 1-element constant inlined as a number
                (op, (a, b, ...), ((attr, value), ...))  IR op `op` on SSA values a, b, ... with its attributes
    outputs   the SSA values the layer returns, in order

    e.g. relu(x + bias) * 0.5:
        (("load", 0), ("load", 1), ("add", (0, 1), ()), ("nn.relu", (2,), ()),
         ("const", 0.5, "float32", ()), ("multiply", (3, 4), ()))        outputs (5,)

The reference implementation interprets the program with each op's own IR reference (`get_op(op).run`),
so the fused layer computes bit for bit what the unfused nodes computed, and the default meta-tensor shape
inference works unchanged. Kernels for GPUs are generated from the same program
(`tactics/pointwise_triton.py`); the `torch_out` tactic here runs the interpreter writing into the arena views.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..ir import REQUIRED, Node, get_op, register_op
from ..ir.types import GPU_FLOAT_DTYPES, Dim, torch_dtype
from .tactics.registry import BindContext, Env, Inputs, Kernel, OutputViews, tactic

# One instruction of a program, as the module docstring lays them out: ("load", i), ("const", value, dtype,
# shape) or (op, args, attrs). Attribute data, told apart by their first item; `check_program` validates them.
Instruction = tuple[Any, ...]
Program = tuple[Instruction, ...]

# the ops a program may hold: elementwise, one output, broadcasting like PyTorch (nn.bias_add along its axis);
# every one has a Triton generator (a test checks)
POINTWISE_OPS = frozenset(
    {
        "nn.relu",
        "sigmoid",
        "tanh",
        "exp",
        "log",
        "sqrt",
        "rsqrt",
        "abs",
        "negative",
        "sin",
        "cos",
        "erf",
        "reciprocal",
        "floor",
        "ceil",
        "sign",
        "nn.silu",
        "nn.hardswish",
        "nn.hardsigmoid",
        "nn.gelu",
        "nn.leaky_relu",
        "nn.elu",
        "nn.softplus",
        "nn.mish",
        "add",
        "subtract",
        "multiply",
        "divide",
        "power",
        "maximum",
        "minimum",
        "equal",
        "not_equal",
        "less",
        "less_equal",
        "greater",
        "greater_equal",
        "logical_and",
        "logical_or",
        "logical_xor",
        "logical_not",
        "where",
        "clip",
        "cast",
        "nn.bias_add",
    }
)
# what fuse_pointwise puts into programs: the ops real models chain (activations, residual and mask arithmetic,
# casts); the rest join when a model needs them (tests elsewhere use softplus as an op no pass touches)
FUSED_OPS = POINTWISE_OPS - {"floor", "ceil", "sign", "nn.elu", "nn.softplus", "nn.mish"}
# float64 and complex stay out: generated kernels compute in float32 (they would lose precision)
POINTWISE_DTYPES = GPU_FLOAT_DTYPES | {"int64", "int32", "int16", "int8", "uint8", "bool"}


def check_program(program: object, outputs: object, num_inputs: int) -> None:
    """Raise ValueError naming the first malformed instruction (the verifier reports it through inference)."""
    if not isinstance(program, tuple) or not program:
        raise ValueError("engine.pointwise: program must be a non-empty tuple of instructions")
    for k, ins in enumerate(program):
        where = f"engine.pointwise: instruction {k} {ins!r}"
        if not isinstance(ins, tuple) or not ins:
            raise ValueError(f"{where} is not a tuple")
        if ins[0] == "load":
            if len(ins) != 2 or not isinstance(ins[1], int) or not 0 <= ins[1] < num_inputs:
                raise ValueError(f"{where}: a load names one of the {num_inputs} inputs")
        elif ins[0] == "const":
            if len(ins) != 4 or not isinstance(ins[3], tuple) or ins[2] not in POINTWISE_DTYPES:
                raise ValueError(f'{where}: a const is ("const", value, dtype, shape)')
        elif len(ins) != 3 or ins[0] not in POINTWISE_OPS:
            raise ValueError(f"{where}: not a load, a const, or one of the pointwise ops {sorted(POINTWISE_OPS)}")
        elif not all(isinstance(a, int) and 0 <= a < k for a in ins[1]):
            raise ValueError(f"{where}: arguments must be earlier SSA values")
    if (
        not isinstance(outputs, tuple)
        or not outputs
        or not all(isinstance(i, int) and 0 <= i < len(program) for i in outputs)
    ):
        raise ValueError(f"engine.pointwise: outputs {outputs!r} must name SSA values of the program")


def interpret(
    program: Program, inputs: Sequence[torch.Tensor], out: Mapping[int, torch.Tensor] | None = None
) -> list[torch.Tensor]:
    """Every SSA value of `program` on `inputs`. With `out` (SSA index -> tensor), the torch tactic's
    `OUT_FUNCTIONS` write those values straight into the given tensors."""
    device = inputs[0].device
    values: list[torch.Tensor] = []
    for k, ins in enumerate(program):
        if ins[0] == "load":
            values.append(inputs[ins[1]])
        elif ins[0] == "const":
            _, value, dtype, shape = ins
            values.append(torch.full(shape, value, dtype=torch_dtype(dtype), device=device))
        else:
            op, args, attrs = ins
            target = out.get(k) if out else None
            if target is not None and op in OUT_FUNCTIONS and not attrs:
                values.append(OUT_FUNCTIONS[op](*(values[a] for a in args), out=target))
            else:
                (result,) = get_op(op).run([values[a] for a in args], dict(attrs), {})
                values.append(result)
    return values


@register_op("engine.pointwise", inputs=(1, None), attrs={"program": REQUIRED, "outputs": REQUIRED})
def pointwise(*inputs: torch.Tensor, program: Program, outputs: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """engine.pointwise: a fused group of elementwise ops, interpreted with each op's own reference."""
    check_program(program, outputs, len(inputs))
    values = interpret(program, inputs)
    return tuple(values[i] for i in outputs)


def broadcast_dims(shapes: Sequence[Sequence[Dim]]) -> tuple[Dim, ...] | None:
    """The shape every one of `shapes` broadcasts to (ints and Syms, right-aligned), or None if there is none."""
    rank = max((len(s) for s in shapes), default=0)
    result: list[Dim] = []
    for axis in range(rank):
        sizes = {s[len(s) - rank + axis] for s in shapes if len(s) - rank + axis >= 0} - {1}
        if len(sizes) > 1:
            return None
        result.append(sizes.pop() if sizes else 1)
    return tuple(result)


# -- the torch tactic ----------------------------------------------------------------------------------

# torch functions that compute exactly what the IR op's reference computes and accept out=
OUT_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "add": torch.add,
    "subtract": torch.sub,
    "multiply": torch.mul,
    "divide": torch.div,
    "power": torch.pow,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "equal": torch.eq,
    "not_equal": torch.ne,
    "less": torch.lt,
    "less_equal": torch.le,
    "greater": torch.gt,
    "greater_equal": torch.ge,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "exp": torch.exp,
    "log": torch.log,
    "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt,
    "abs": torch.abs,
    "negative": torch.neg,
    "sin": torch.sin,
    "cos": torch.cos,
    "erf": torch.erf,
    "where": torch.where,
}


# runs_reference: offered no view (a plan output), it returns what the interpreter made, maybe an input
@tactic("engine.pointwise", name="torch_out", devices=("cuda",), priority=5, runs_reference=True)
class TorchPointwise:
    """One PyTorch kernel per op (what eager runs), writing each layer output into its arena view where the op
    has an out= form: the candidate generated kernels are timed against. (The any-op `torch` tactic runs the
    same interpreter but leaves results in PyTorch's allocator.)"""

    @staticmethod
    def bind(node: Node, ctx: BindContext) -> Kernel:
        program, outputs = node.attrs["program"], node.attrs["outputs"]
        types = [v.type for v in node.outputs]

        def run(inputs: Inputs, offered: OutputViews, env: Env) -> tuple[torch.Tensor, ...]:
            out: dict[int, torch.Tensor] = {}
            for ssa, view, t in zip(outputs, offered, types):
                # out= only where the view is exactly what the op produces (a second output of one SSA value, or
                # a view of another shape, goes through the copy in the execution context instead)
                if view is not None and ssa not in out and tuple(view.shape) == t.concrete_shape(env):
                    out[ssa] = view
            values = interpret(program, inputs, out)
            return tuple(values[i] for i in outputs)

        return run
