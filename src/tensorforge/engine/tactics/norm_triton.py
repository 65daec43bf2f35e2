"""Triton tactics for `engine.layer_norm` (the residual add and the normalization of a row in one program) and
for a plain last-axis `nn.layer_norm` that fuse_layer_norm left alone (nothing to absorb: ViT's first norm of
each block reads a residual sum a GEMM epilogue made), where it is timed against ATen's kernel.

One program per row (or per four rows: the `triton_rows4` tactics, timed against the first), the whole row in
registers (BLOCK = the hidden size rounded up to a power of two): load
x (and the residual) in their own type, add in float32, store the sum if the layer returns it, then the mean
and the mean of squared deviations from it (two passes over registers, no E[x²] - E[x]² cancellation), and
store y once in its type. That is one read of each input and one write of each output, where the unfused
FP16 graph read and wrote the activation four times, twice in float32.

The kernel writes into the arena views it is offered. Inputs may be views: each tensor's rows are addressed
through two strides over the leading axes (row r at (r // inner) * outer_stride + (r % inner) * inner_stride),
which covers any view whose last axis is contiguous and whose leading axes fold into two — e.g. ViT's residual,
a transpose of [tokens, batch, hidden] to [batch, tokens, hidden]. Views beyond that are copied first.

Triton is imported when a kernel is first bound, so tensorforge imports, and builds CPU plans, without it;
`supports` says so when it is missing. Rows wider than `MAX_HIDDEN` are left to the `torch` tactic (a row must
fit in registers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from ...ir.symbolic import SymExpr
from ...ir.types import GPU_FLOAT_DTYPES
from .. import norm  # noqa: F401  (registers engine.layer_norm)
from .quantized_layers import OUT_CODES
from .registry import BindContext, Env, Inputs, Kernel, OutputViews, static_sizes, tactic

if TYPE_CHECKING:
    from triton import JITFunction

    from ...ir import Node
    from ..config import BuilderConfig

MAX_HIDDEN = 8192


def row_kernel() -> JITFunction:
    """The @triton.jit kernel (norm_triton_kernel.py), imported on first use (importing triton is the cost
    tensorforge defers)."""
    from .norm_triton_kernel import layer_norm_rows

    return layer_norm_rows


def row_strides(shape: Sequence[int], tensors: Sequence[torch.Tensor]) -> tuple[int, list[tuple[int, int]]] | None:
    """(inner, [(outer_stride, inner_stride) per tensor]) addressing row r of every tensor (all of `shape`,
    last axis contiguous) at (r // inner) * outer_stride + (r % inner) * inner_stride; None when some tensor's
    leading axes do not fold into two strides."""
    groups: list[tuple[int, list[int]]] = []  # (size, strides of its innermost axis) per run of axes that fold
    for axis, size in enumerate(shape[:-1]):
        if size == 1:
            continue
        strides = [t.stride(axis) for t in tensors]
        if groups and all(before == stride * size for before, stride in zip(groups[-1][1], strides)):
            groups[-1] = (groups[-1][0] * size, strides)
        else:
            groups.append((size, strides))
    if len(groups) > 2:
        return None
    while len(groups) < 2:
        groups.insert(0, (1, [0] * len(tensors)))
    (_, outer), (inner, within) = groups
    return inner, list(zip(outer, within))


class LayerNormKernel:
    """The bound kernel: the launch constants are fixed by the node; strides are read per call."""

    def __init__(self, node: Node, rows_per_program: int = 1):
        attrs = node.attrs
        self.has_residual: bool = attrs.get("has_residual", False)
        self.emit_sum: bool = attrs.get("emit_sum", False)
        self.eps: float = attrs["epsilon"]
        self.quantize: int = OUT_CODES.get(attrs.get("quantize_dtype") or "", 0)  # a quantized output: its code
        self.quantize_scale = float(attrs.get("quantize_scale") or 1.0)
        self.hidden = _hidden(node)
        self.block = _block(node)
        self.rows = rows_per_program
        self.num_warps = min(max(self.block * rows_per_program // 256, 1), 8)
        self.out_dtypes = [v.type.torch_dtype for v in node.outputs]
        self.kernel = row_kernel()

    def __call__(self, inputs: Inputs, offered: OutputViews, env: Env) -> list[torch.Tensor]:
        x = inputs[0]
        gamma, beta = (t.contiguous() for t in inputs[-2:])
        # a view that moves the normalized axis is copied (what any layer_norm kernel would have to do)
        reads = [
            t if t.shape[-1] == 1 or t.stride(-1) == 1 else t.contiguous() for t in inputs[: 1 + int(self.has_residual)]
        ]
        outs = [
            view if view is not None and view.is_contiguous() else torch.empty(x.shape, dtype=dtype, device=x.device)
            for view, dtype in zip(offered, self.out_dtypes)
        ]
        if x.numel() == 0:
            return outs
        layout = row_strides(x.shape, reads + outs)
        if layout is None:  # leading axes no two strides can address: copy the views (outputs are contiguous)
            reads = [t.contiguous() for t in reads]
            layout = row_strides(x.shape, reads + outs)
            assert layout is not None, "contiguous tensors' leading axes fold into one"
        inner, strides = layout
        residual, residual_strides = (reads[1], strides[1]) if self.has_residual else (reads[0], (0, 0))
        first_out = len(reads)  # outputs: y, then the sum, then the quantized y, where the layer has them
        total, total_strides = (outs[1], strides[first_out + 1]) if self.emit_sum else (outs[0], (0, 0))
        quantized, quantized_strides = (outs[-1], strides[-1]) if self.quantize else (outs[0], (0, 0))
        rows = x.numel() // self.hidden
        self.kernel[(-(-rows // self.rows),)](
            reads[0],
            residual,
            gamma,
            beta,
            outs[0],
            total,
            quantized,
            rows,
            inner,
            *strides[0],
            *residual_strides,
            *strides[first_out],
            *total_strides,
            *quantized_strides,
            self.hidden,
            self.eps,
            self.quantize_scale,
            HAS_RESIDUAL=self.has_residual,
            EMIT_SUM=self.emit_sum,
            QUANT=self.quantize,
            BLOCK=self.block,
            ROWS=self.rows,
            num_warps=self.num_warps,
        )
        return outs


def _plain_norm(node: Node) -> str | None:
    """What nn.layer_norm must be for the kernel: over the last axis, with 1-d gamma and beta, floating point."""
    data, gamma, beta = node.inputs
    rank = data.type.rank
    if rank == 0 or node.attrs["axis"] % rank != rank - 1:
        return "the kernel normalizes the last axis"
    if any(p.type.shape != data.type.shape[-1:] for p in (gamma, beta)):
        return "gamma and beta must be 1-d over the normalized axis"
    if data.type.dtype not in GPU_FLOAT_DTYPES:
        return f"{data.type.dtype} layer norms are not in the kernel"
    return None


ROW_TILES = {"triton": 1, "triton_rows4": 4}  # rows per program; the builder times both on the real shape
MAX_TILE = 4096  # elements one program holds, over its rows


def _register() -> None:
    """One tactic per (op, rows per program). The kernel is hand-written, not generated: the op fixes what it
    computes, only dtypes and flags vary."""
    checks: tuple[tuple[str, Callable[[Node], str | None] | None], ...] = (
        ("engine.layer_norm", None),
        ("nn.layer_norm", _plain_norm),
    )
    for op, check in checks:
        for name, rows in ROW_TILES.items():

            def supports(
                node: Node,
                config: BuilderConfig,
                check: Callable[[Node], str | None] | None = check,
                rows: int = rows,
            ) -> str | None:
                reason = (check(node) if check is not None else None) or _supports_rows(node)
                if reason is None and rows > 1 and _block(node) * rows > MAX_TILE:
                    return f"rows of {node.inputs[0].type.shape[-1]} elements: {rows} do not fit one program"
                return reason

            def bind(node: Node, ctx: BindContext, rows: int = rows) -> Kernel:
                return LayerNormKernel(node, rows)

            impl = type(
                f"TritonLayerNorm_{op.replace('.', '_')}_{name}",
                (),
                {"supports": staticmethod(supports), "bind": staticmethod(bind)},
            )
            tactic(op, name=name, devices=("cuda",), priority=11 - rows, compiles=True, requires_triton=True)(impl)


def _hidden(node: Node) -> int:
    """The size of the normalized axis (`supports` refuses a symbolic one)."""
    (hidden,) = static_sizes(node.inputs[0].type.shape[-1:])
    return hidden


def _block(node: Node) -> int:
    return 1 << (_hidden(node) - 1).bit_length()


def _supports_rows(node: Node) -> str | None:
    hidden = node.inputs[0].type.shape[-1]
    if isinstance(hidden, SymExpr):
        return "the normalized axis has a symbolic size"
    if hidden > MAX_HIDDEN:
        return f"rows of {hidden} elements do not fit in registers (at most {MAX_HIDDEN})"
    return None


_register()
