"""The Triton kernel of the layer-norm tactics (norm_triton.py), in its own module because it imports Triton at the
top: norm_triton.py imports it only when a tactic binds, so tensorforge imports without Triton.

One program normalizes ROWS rows, each whole in registers (BLOCK >= hidden): the rows of every tensor are
addressed through two strides over their leading axes (`norm_triton.row_strides`). X, R, W, B, Y, S, Q point to
x, the residual, gamma, beta, the output, the sum and the output quantized (QUANT: `to_output`'s code, 0 for none).
"""

import triton
import triton.language as tl

from .quantized_epilogue_kernel import to_output


@triton.jit
def layer_norm_rows(
    X,
    R,
    W,
    B,
    Y,
    S,
    Q,
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
    q_outer,
    q_inner,
    hidden,
    eps,
    q_scale,
    HAS_RESIDUAL: tl.constexpr,
    EMIT_SUM: tl.constexpr,
    QUANT: tl.constexpr,
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
    if QUANT != 0:
        tl.store(Q + outer * q_outer + within * q_inner + cols, to_output(y, q_scale, QUANT), mask=mask)
