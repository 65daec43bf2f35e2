"""fuse_layer_norm: a layer norm over the last axis, the casts around it and the residual add before it become
one `engine.layer_norm` (16-bit loads and stores, float32 math in between).

Why: `assign_precision` keeps nn.layer_norm in float32, so in an FP16 transformer every norm is

    add (f16) -> cast f32 -> nn.layer_norm (f32) -> cast f16        (BERT: the add sits in the dense before it)

four kernels, each a full pass over the activation, two of them over float32 copies: profiling FP16 BERT-base
and ViT-B on an H100 put them at about twice the time of torch.compile's single add + layer_norm kernel. One
kernel that loads the 16-bit operands, adds and normalizes in float32 registers and stores the 16-bit result
does the same work with one read of each input and one write of each output.

Matched at each nn.layer_norm over the last axis (gamma and beta 1-d); a norm with nothing to absorb stays:
- its input `cast(x -> float32)` of a 16-bit x: the layer reads x (widening is exact); the cast goes when
  the norm was its only reader, else it stays for the others;
- its output read only by `cast(float32 -> 16-bit)`: the layer stores y in that type (`out_dtype`), rounded
  once as the cast rounded it; the fused layer takes the cast's output name;
- x made by `add(a, b)` of two tensors of x's exact type (no broadcasting): the add goes, b is the residual;
- x made by an `engine.dense` with a residual and no activation, read by nothing else: the residual add moves
  out of the dense layer into the norm, which reads its operands in the same pass (cuBLAS tactics add a
  residual in a separate pass over the output; a GEMM with the add in its epilogue moves as many bytes).
- a symmetric per-tensor quantize of its float32 output (a quantized transformer's next 8-bit layers read it):
  the layer writes the quantized rows too (`quantize_dtype`, `quantize_scale`), from the float32 y it holds, and
  the cast to 16 bits is then the output's only other reader;
When something else reads an absorbed add's sum (the residual stream of a pre-LN transformer) or it is a graph
output, the layer returns it as a second output (`emit_sum`), rounded to x's type as the add rounded it. A
dense layer's sum read elsewhere stays in the dense layer: emitting it from the norm would cost a write more
than a GEMM epilogue that adds the residual.
float32 builds (no casts: add -> norm) and strict mode (16-bit norms) fuse the add the same way.

Numerics: the unfused graph normalized the sum after rounding it to x's type; the fused layer normalizes the
float32 sum (then rounds y once), so it is at least as accurate. The counter counts fused norms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from ...ir import Graph, Node, Value, copy_graph
from ...ir.types import GPU_FLOAT_DTYPES, HALF_DTYPES
from ..epilogue import Epilogue
from ._edit import erase_and_rename
from ._qdq import per_tensor_quantize_scale

if TYPE_CHECKING:
    from . import PassContext

NAME = "fuse_layer_norm"


class _Sum(NamedTuple):
    producer: Node  # the add or residual dense whose sum the layer computes itself
    addends: tuple[Value, Value]


@dataclass
class _Match:
    norm: Node
    x: Value  # what the fused layer normalizes (or the first addend): the norm's input, uncast
    cast_in: Node | None  # cast(x -> float32) read only by the norm: removed
    cast_out: Node | None  # the cast of y to 16 bits: removed, its output is the fused layer's y
    sum: _Sum | None
    emit_sum: bool  # the sum is read beyond the nodes the fusion removes: the layer returns it
    quantize: Node | None = None  # the quantize of the float32 output: removed, the layer's last output instead


def _widening_cast(value: Value) -> Node | None:
    node = value.producer
    if (
        node is not None
        and node.op == "cast"
        and value.type.dtype == "float32"
        and node.inputs[0].type.dtype in HALF_DTYPES
    ):
        return node
    return None


def _narrowing_cast(node: Node | None) -> Node | None:
    if (
        node is not None
        and node.op == "cast"
        and node.inputs[0].type.dtype == "float32"
        and node.output.type.dtype in HALF_DTYPES
    ):
        return node
    return None


def _sum_of(x: Value) -> _Sum | None:
    """(the node, its two addends) when `x` is a sum the fused layer can compute: an add without broadcasting
    or a dense layer whose epilogue is only the residual add."""
    node = x.producer
    if node is None:
        return None
    if node.op == "add" and len(node.inputs) == 2 and all(v.type == x.type for v in node.inputs):
        return _Sum(node, (node.inputs[0], node.inputs[1]))
    if node.op == "engine.dense":
        epilogue = Epilogue.of(node)
        if epilogue.residual_index is not None and epilogue.activation is None:
            # x stands for the GEMM's result until the dense is split
            return _Sum(node, (x, node.inputs[epilogue.residual_index]))
    return None


def _read_beyond(graph: Graph, value: Value, leaving: Node | None) -> bool:
    """Whether anything but `leaving` reads `value` (a graph output counts)."""
    return graph.is_output(value) or any(n is not leaving for n in graph.users_of(value))


def _match(graph: Graph, norm: Node) -> _Match | None:
    data, gamma, beta = norm.inputs
    rank = data.type.rank
    if rank == 0 or norm.attrs["axis"] % rank != rank - 1 or data.type.dtype not in GPU_FLOAT_DTYPES:
        return None
    if any(p.type.shape != data.type.shape[-1:] or p.type.dtype not in GPU_FLOAT_DTYPES for p in (gamma, beta)):
        return None
    widening = _widening_cast(data)
    x = widening.inputs[0] if widening is not None else data
    cast_in = widening if widening is not None and graph.sole_user(data) is norm else None
    quantize = next((n for n in graph.users_of(norm.output) if per_tensor_quantize_scale(n) is not None), None)
    others = [n for n in graph.users_of(norm.output) if n is not quantize]
    cast_out = _narrowing_cast(others[0]) if len(others) == 1 and not graph.is_output(norm.output) else None
    # the reader of x that goes away: the norm, or the widening cast when the norm was its only reader
    leaving = norm if widening is None else cast_in
    read_elsewhere = _read_beyond(graph, x, leaving)
    found = _sum_of(x)
    if found is not None and found.producer.op == "engine.dense" and read_elsewhere:
        found = None
    if widening is None and cast_out is None and found is None and quantize is None:
        return None  # nothing to absorb: the norm alone is what nn.layer_norm's tactics already run
    return _Match(norm, x, cast_in, cast_out, found, found is not None and read_elsewhere, quantize)


def _rewrite(graph: Graph, m: _Match) -> bool:
    """Replace the matched nodes with the fused layer (and a residual-free dense); False if the order forbids it."""
    norm = m.norm
    gamma, beta = norm.inputs[1:]
    producer = m.sum.producer if m.sum is not None else None
    gone = [n for n in (norm, m.cast_in, m.cast_out, producer, m.quantize) if n is not None]
    y = m.cast_out.output if m.cast_out is not None else norm.output
    # the fused layer sits where the sum was made, so every reader of the sum still comes after it
    position = producer if producer is not None else norm
    if not all(graph.defined_before(p, position) for p in (gamma, beta)):
        return False
    renames: list[tuple[Node | Value, str]] = []
    inputs = [m.x]
    if m.sum is not None and m.sum.producer.op == "engine.dense":
        dense = m.sum.producer
        epilogue = Epilogue.of(dense)
        gemm = graph.add_node(
            "engine.dense",
            [v for i, v in enumerate(dense.inputs) if i != epilogue.residual_index],
            {**dense.attrs, **epilogue.without_residual().to_attrs()},
            name=dense.name,
            output_names=[f"{m.x.name}.gemm"],
            before=position,
        )
        renames.append((gemm, dense.name))
        inputs = [gemm.output, m.sum.addends[1]]
    elif m.sum is not None:
        inputs = list(m.sum.addends)
    attrs = {
        "epsilon": norm.attrs["epsilon"],
        "has_residual": m.sum is not None,
        "emit_sum": m.emit_sum,
        "out_dtype": None if y.type.dtype == m.x.type.dtype else y.type.dtype,
    }
    if m.quantize is not None:
        attrs.update(quantize_dtype=m.quantize.attrs["dtype"], quantize_scale=per_tensor_quantize_scale(m.quantize))
    fused = graph.add_node("engine.layer_norm", [*inputs, gamma, beta], attrs, name=norm.name, before=position)
    graph.replace_all_uses(y, fused.outputs[0])
    renames += [(fused, norm.name), (fused.outputs[0], y.name)]
    if m.emit_sum:
        graph.replace_all_uses(m.x, fused.outputs[1], skip=gone)
        renames.append((fused.outputs[1], m.x.name))
    if m.quantize is not None:
        graph.replace_all_uses(m.quantize.output, fused.outputs[-1])
        renames.append((fused.outputs[-1], m.quantize.output.name))
    erase_and_rename(graph, gone, renames)
    return True


def fuse_layer_norm(graph: Graph, ctx: PassContext) -> Graph:
    graph = copy_graph(graph)
    fused = 0
    for norm in [n for n in graph.nodes if n.op == "nn.layer_norm"]:
        m = _match(graph, norm)
        if m is not None and _rewrite(graph, m):
            fused += 1
    ctx.count(NAME, fused)
    return graph
