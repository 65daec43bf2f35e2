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

import functools

import torch

from ...ir.types import Sym
from .. import norm  # noqa: F401  (registers engine.layer_norm)
from .registry import tactic

MAX_HIDDEN = 8192


@functools.cache
def row_kernel():
    """The @triton.jit kernel, defined on first use (importing triton is the cost tensorforge defers)."""
    import triton
    import triton.language as tl

    @triton.jit
    def layer_norm_rows(
        X,
        R,
        W,
        B,
        Y,
        S,
        rows,
        inner,
        x_outer,
        x_inner,
        r_outer,
        r_inner,
        y_outer,
        y_inner,
        s_outer,
        s_inner,
        hidden,
        eps,
        HAS_RESIDUAL: tl.constexpr,
        EMIT_SUM: tl.constexpr,
        BLOCK: tl.constexpr,
        ROWS: tl.constexpr,
    ):
        row = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)[:, None]  # [ROWS, 1]
        outer, within = row // inner, row % inner
        cols = tl.arange(0, BLOCK)[None, :]
        mask = (cols < hidden) & (row < rows)
        x = tl.load(X + outer * x_outer + within * x_inner + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_RESIDUAL:
            x += tl.load(R + outer * r_outer + within * r_inner + cols, mask=mask, other=0.0).to(tl.float32)
            if EMIT_SUM:
                tl.store(S + outer * s_outer + within * s_inner + cols, x.to(S.dtype.element_ty), mask=mask)
        mean = tl.sum(x, axis=1)[:, None] / hidden
        centered = tl.where(mask, x - mean, 0.0)
        rstd = 1.0 / tl.sqrt_rn(tl.sum(centered * centered, axis=1)[:, None] / hidden + eps)
        gamma = tl.load(W + cols, mask=cols < hidden, other=0.0).to(tl.float32)
        beta = tl.load(B + cols, mask=cols < hidden, other=0.0).to(tl.float32)
        y = centered * rstd * gamma + beta
        tl.store(Y + outer * y_outer + within * y_inner + cols, y.to(Y.dtype.element_ty), mask=mask)

    return layer_norm_rows


def row_strides(shape, tensors) -> tuple[int, list[tuple[int, int]]] | None:
    """(inner, [(outer_stride, inner_stride) per tensor]) addressing row r of every tensor (all of `shape`,
    last axis contiguous) at (r // inner) * outer_stride + (r % inner) * inner_stride; None when some tensor's
    leading axes do not fold into two strides."""
    groups: list[list] = []  # [size, strides of its innermost axis] per run of axes that fold into one
    for axis, size in enumerate(shape[:-1]):
        if size == 1:
            continue
        strides = [t.stride(axis) for t in tensors]
        if groups and all(before == stride * size for before, stride in zip(groups[-1][1], strides)):
            groups[-1][0] *= size
            groups[-1][1] = strides
        else:
            groups.append([size, strides])
    if len(groups) > 2:
        return None
    while len(groups) < 2:
        groups.insert(0, [1, [0] * len(tensors)])
    (_, outer), (inner, within) = groups
    return inner, list(zip(outer, within))


class LayerNormKernel:
    """The bound kernel: the launch constants are fixed by the node; strides are read per call."""

    def __init__(self, node, rows_per_program: int = 1):
        attrs = node.attrs
        self.has_residual, self.emit_sum = attrs.get("has_residual", False), attrs.get("emit_sum", False)
        self.eps = attrs["epsilon"]
        self.hidden = node.inputs[0].type.shape[-1]
        self.block = _block(node)
        self.rows = rows_per_program
        self.num_warps = min(max(self.block * rows_per_program // 256, 1), 8)
        self.out_dtypes = [v.type.torch_dtype for v in node.outputs]
        self.kernel = row_kernel()

    def __call__(self, inputs, offered, env):
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
        inner, strides = layout
        residual, residual_strides = (reads[1], strides[1]) if self.has_residual else (reads[0], (0, 0))
        total, total_strides = (outs[1], strides[-1]) if self.emit_sum else (outs[0], (0, 0))
        rows = x.numel() // self.hidden
        self.kernel[(-(-rows // self.rows),)](
            reads[0],
            residual,
            gamma,
            beta,
            outs[0],
            total,
            rows,
            inner,
            *strides[0],
            *residual_strides,
            *strides[len(reads)],
            *total_strides,
            self.hidden,
            self.eps,
            HAS_RESIDUAL=self.has_residual,
            EMIT_SUM=self.emit_sum,
            BLOCK=self.block,
            ROWS=self.rows,
            num_warps=self.num_warps,
        )
        return outs


def _plain_norm(node) -> str | None:
    """What nn.layer_norm must be for the kernel: over the last axis, with 1-d gamma and beta, floating point."""
    data, gamma, beta = node.inputs
    rank = data.type.rank
    if rank == 0 or node.attrs["axis"] % rank != rank - 1:
        return "the kernel normalizes the last axis"
    if any(p.type.shape != data.type.shape[-1:] for p in (gamma, beta)):
        return "gamma and beta must be 1-d over the normalized axis"
    if data.type.dtype not in ("float16", "bfloat16", "float32"):
        return f"{data.type.dtype} layer norms are not in the kernel"
    return None


ROW_TILES = {"triton": 1, "triton_rows4": 4}  # rows per program; the builder times both on the real shape
MAX_TILE = 4096  # elements one program holds, over its rows


def _register() -> None:
    """One tactic per (op, rows per program). The kernel is hand-written, not generated: the op fixes what it
    computes, only dtypes and flags vary."""
    for op, check in (("engine.layer_norm", None), ("nn.layer_norm", _plain_norm)):
        for name, rows in ROW_TILES.items():

            def supports(node, config, check=check, rows=rows) -> str | None:
                reason = (check(node) if check is not None else None) or _supports_rows(node)
                if reason is None and rows > 1 and _block(node) * rows > MAX_TILE:
                    return f"rows of {node.inputs[0].type.shape[-1]} elements: {rows} do not fit one program"
                return reason

            impl = type(
                f"TritonLayerNorm_{op.replace('.', '_')}_{name}",
                (),
                {
                    "supports": staticmethod(supports),
                    "bind": staticmethod(lambda node, ctx, rows=rows: LayerNormKernel(node, rows)),
                },
            )
            tactic(op, name=name, devices=("cuda",), priority=11 - rows, compiles=True, requires_triton=True)(impl)


def _block(node) -> int:
    return 1 << (node.inputs[0].type.shape[-1] - 1).bit_length()


def _supports_rows(node) -> str | None:
    hidden = node.inputs[0].type.shape[-1]
    if isinstance(hidden, Sym):
        return "the normalized axis has a symbolic size"
    if hidden > MAX_HIDDEN:
        return f"rows of {hidden} elements do not fit in registers (at most {MAX_HIDDEN})"
    return None


_register()
