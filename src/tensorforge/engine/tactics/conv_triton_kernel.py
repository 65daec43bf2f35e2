"""The Triton kernel of the depthwise-convolution tactic (conv_triton.py), in its own module because it imports
Triton at the top: conv_triton.py imports it only when a tactic binds."""

import triton
import triton.language as tl

from .gemm_triton_kernel import _epilogue
from .pool_triton_kernel import _window_tap


@triton.jit
def depthwise_conv2d_nhwc(
    x_ptr,
    w_ptr,
    y_ptr,
    bias_ptr,
    r_ptr,
    P,
    C,
    H,
    W,
    OH,
    OW,
    lo,
    hi,
    slope,
    SH: tl.constexpr,
    SW: tl.constexpr,
    PH: tl.constexpr,
    PW: tl.constexpr,
    KH: tl.constexpr,
    KW: tl.constexpr,
    DH: tl.constexpr,
    DW: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    RESIDUAL_PRE: tl.constexpr,
    ACT: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """y[n, oh, ow, c] = epilogue(sum over the window of x[n, ih, iw, c] * w[kh, kw, c] + bias[c]), all
    channels-last, P = N * OH * OW. The weights arrive as [KH * KW, C] in their own type (float32 where the
    build kept them so); products and sums are float32, the epilogue too (the GEMM's: residual, activation),
    and the result is rounded to y's type once, at the store."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    ow = p % OW
    oh = (p // OW) % OH
    n = p // (OW * OH)
    in_c = c < C
    keep = (p < P)[:, None] & in_c[None, :]
    acc = tl.zeros((BLOCK_P, BLOCK_C), tl.float32)
    for kh in tl.static_range(KH):
        for kw in tl.static_range(KW):
            offs, inside = _window_tap(n, oh, ow, c, kh, kw, H, W, C, SH, SW, PH, PW, DH, DW)
            v = tl.load(x_ptr + offs, mask=keep & inside[:, None], other=0.0).to(tl.float32)
            w = tl.load(w_ptr + (kh * KW + kw) * C + c, mask=in_c, other=0.0).to(tl.float32)
            acc += v * w[None, :]
    acc = _epilogue(acc, p, c, P, C, bias_ptr, r_ptr, C, lo, hi, slope, 1.0, HAS_BIAS, HAS_RESIDUAL, RESIDUAL_PRE, ACT)
    tl.store(y_ptr + p[:, None] * C + c[None, :], acc.to(y_ptr.dtype.element_ty), mask=keep)
