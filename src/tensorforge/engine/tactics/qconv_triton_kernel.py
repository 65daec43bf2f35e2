"""The Triton kernels of the quantized-convolution tactics (qconv_triton.py), in their own module because it imports
Triton at the top: qconv_triton.py imports it only when a tactic binds.

Both read channels-last 8-bit data (int8 or float8_e4m3fn, zero point 0), sum products exactly as the tensor cores
do (int32 for int8, float32 for fp8) and end with the quantized layers' shared epilogue
(`quantized_epilogue_kernel.py`), so a fused layer reads 8 bits and writes its output, 8-bit or float, once.

- `qconv2d_implicit_gemm_nhwc`: an ungrouped convolution as the GEMM [N*OH*OW, KH*KW*C_in] x [KH*KW*C_in, C_out]
  without ever forming the im2col matrix: each K step loads its [BLOCK_M, BLOCK_K] tile of A straight from the
  input, masked where the window falls in the padding (a zero, the quantized zero).
- `qdepthwise_conv2d_nhwc`: one filter per channel, memory-bound: BLOCK_P pixels x BLOCK_C channels per program.
"""

import triton
import triton.language as tl

from .gemm_triton_kernel import _tile_of
from .pool_triton_kernel import _window_tap
from .quantized_epilogue_kernel import store_layer_output


@triton.jit
def qconv2d_implicit_gemm_nhwc(
    x_ptr,
    w_ptr,
    y_ptr,
    scale_ptr,
    bias_ptr,
    r_ptr,
    M,
    H,
    W,
    OH,
    OW,
    C_OUT,
    KP,
    r_scale,
    lo,
    hi,
    slope,
    out_scale,
    C_IN: tl.constexpr,
    KH: tl.constexpr,
    KW: tl.constexpr,
    SH: tl.constexpr,
    SW: tl.constexpr,
    PH: tl.constexpr,
    PW: tl.constexpr,
    DH: tl.constexpr,
    DW: tl.constexpr,
    INT8: tl.constexpr,
    GATHER: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    RESIDUAL_PRE: tl.constexpr,
    ACT: tl.constexpr,
    OUT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP: tl.constexpr,
):
    """y[m, co] = epilogue(sum over (kh, kw, ci) of x[n, ih, iw, ci] * w[co, kh, kw, ci]), M = N * OH * OW rows of
    channels-last output (row stride C_OUT), the residual laid out the same. C_IN is a compile-time constant (a
    network has few distinct ones): the divisions by it that the gathered K does per element become multiplies.

    The weights arrive packed (qconv_triton.pack_weights) as [C_OUT, KP], each output channel's K contiguous,
    which is the layout Hopper's 8-bit wgmma wants for B, and zero-padded so that every K step reads a whole
    [BLOCK_K, BLOCK_N] tile without a mask. K step s covers rows s * BLOCK_K ... of that matrix:
    - GATHER=False: each (kh, kw) tap owns cdiv(C_IN, BLOCK_K) steps (C_IN padded with zero weights), so a step's
      A tile is a run of channels of one input pixel per row: one window tap, contiguous, vectorized loads;
    - GATHER=True (small C_IN, a network's stem of 3 channels): K is KH*KW*C_IN dense, padded once at the end, and
      every element of A works out its own (kh, kw, ci): gathered loads, but no step of mostly zero channels.
    """
    pid_m, pid_n = _tile_of(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(C_OUT, BLOCK_N), GROUP)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    ow = rm % OW
    oh = (rm // OW) % OH
    n = rm // (OW * OH)
    in_m = rm < M
    # B's columns past C_OUT wrap around instead of being masked (their results are never stored): unmasked loads
    # of whole padded tiles are what Triton's pipeliner streams through shared memory asynchronously
    rb = tl.max_contiguous(tl.multiple_of(rn % C_OUT, BLOCK_N), BLOCK_N)
    b_ptrs = w_ptr + rb[None, :] * KP + rk[:, None]
    # out_dtype=acc.dtype in the dots below: Triton 3.6 takes float32 unless told, even with an int32 accumulator
    if INT8:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if GATHER:
        for s in range(0, tl.cdiv(KH * KW * C_IN, BLOCK_K)):
            k = s * BLOCK_K + rk
            ci = k % C_IN
            tap = k // C_IN
            ih = (oh * SH - PH)[:, None] + ((tap // KW) * DH)[None, :]
            iw = (ow * SW - PW)[:, None] + ((tap % KW) * DW)[None, :]
            inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W) & in_m[:, None] & (tap < KH * KW)[None, :]
            a = tl.load(x_ptr + ((n[:, None] * H + ih) * W + iw) * C_IN + ci[None, :], mask=inside, other=0.0)
            acc = tl.dot(a, tl.load(b_ptrs), acc, out_dtype=acc.dtype)
            b_ptrs += BLOCK_K
    else:
        c_blocks = tl.cdiv(C_IN, BLOCK_K)
        for s in range(0, KH * KW * c_blocks):
            tap = s // c_blocks
            c = (s - tap * c_blocks) * BLOCK_K + rk
            offs, inside = _window_tap(n, oh, ow, c, tap // KW, tap % KW, H, W, C_IN, SH, SW, PH, PW, DH, DW)
            mask = (inside & in_m)[:, None]
            if C_IN % BLOCK_K != 0:  # channels past C_IN: the padded tap's zero weights would meet other data
                mask = mask & (c < C_IN)[None, :]
            a = tl.load(x_ptr + offs, mask=mask, other=0.0)
            acc = tl.dot(a, tl.load(b_ptrs), acc, out_dtype=acc.dtype)
            b_ptrs += BLOCK_K
    store_layer_output(
        acc, rm, rn, M, C_OUT, y_ptr, C_OUT, scale_ptr, bias_ptr, r_ptr, C_OUT, r_scale, lo, hi, slope, out_scale,
        HAS_BIAS, HAS_RESIDUAL, RESIDUAL_PRE, ACT, OUT,
    )  # fmt: skip


@triton.jit
def qdepthwise_conv2d_nhwc(
    x_ptr,
    w_ptr,
    y_ptr,
    scale_ptr,
    bias_ptr,
    r_ptr,
    P,
    C,
    H,
    W,
    OH,
    OW,
    r_scale,
    lo,
    hi,
    slope,
    out_scale,
    KH: tl.constexpr,
    KW: tl.constexpr,
    SH: tl.constexpr,
    SW: tl.constexpr,
    PH: tl.constexpr,
    PW: tl.constexpr,
    DH: tl.constexpr,
    DW: tl.constexpr,
    INT8: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    RESIDUAL_PRE: tl.constexpr,
    ACT: tl.constexpr,
    OUT: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """y[p, c] = epilogue(sum over the window of x[n, ih, iw, c] * w[kh, kw, c]), P = N * OH * OW pixels, all
    channels-last; the weights arrive as [KH * KW, C] in the data's type. int8 products are summed in int32 (exact,
    as the reference's float32 sums of small integers are), fp8 ones in float32."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    ow = p % OW
    oh = (p // OW) % OH
    n = p // (OW * OH)
    in_c = c < C
    keep = (p < P)[:, None] & in_c[None, :]
    if INT8:
        acc = tl.zeros((BLOCK_P, BLOCK_C), tl.int32)
    else:
        acc = tl.zeros((BLOCK_P, BLOCK_C), tl.float32)
    for kh in tl.static_range(KH):
        for kw in tl.static_range(KW):
            offs, inside = _window_tap(n, oh, ow, c, kh, kw, H, W, C, SH, SW, PH, PW, DH, DW)
            v = tl.load(x_ptr + offs, mask=keep & inside[:, None], other=0.0).to(acc.dtype)
            w = tl.load(w_ptr + (kh * KW + kw) * C + c, mask=in_c, other=0.0).to(acc.dtype)
            acc += v * w[None, :]
    store_layer_output(
        acc, p, c, P, C, y_ptr, C, scale_ptr, bias_ptr, r_ptr, C, r_scale, lo, hi, slope, out_scale, HAS_BIAS,
        HAS_RESIDUAL, RESIDUAL_PRE, ACT, OUT,
    )  # fmt: skip
