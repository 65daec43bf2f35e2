"""The Triton kernels of the quantized GEMM tactics (qgemm_triton.py, qgemm_library.py), in their own module because
it imports Triton at the top: the tactics import it only when they bind, so tensorforge imports without Triton.

- `qgemm_epilogue`: A [M, K] x B [K, N] in 8 bits (int8 summed exactly in int32, float8_e4m3fn in float32) with
  the quantized layer's whole epilogue before its one store: a layer that reads and writes int8 moves a quarter
  of the bytes of its float32 twin and launches one kernel.
- `qgemm_epilogue_tma`: the same layer persistent (one program per SM walking the output tiles) with Hopper's
  tensor-memory-accelerator loads of A and B into shared memory, which leave the warps free for the tensor cores.
- `qepilogue`: only that epilogue, over a product a library computed (cuBLASLt's int32 or float32 result):
  what the library tactics launch after `torch._int_mm` / `torch._scaled_mm`.
"""

import triton
import triton.language as tl

from .gemm_triton_kernel import _tile_of
from .quantized_epilogue_kernel import store_layer_output


@triton.jit
def qgemm_epilogue(
    a_ptr,
    b_ptr,
    c_ptr,
    scale_ptr,
    bias_ptr,
    r_ptr,
    M,
    N,
    K,
    stride_am,
    stride_bn,
    stride_cm,
    stride_rm,
    r_scale,
    lo,
    hi,
    slope,
    out_scale,
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    RESIDUAL_PRE: tl.constexpr,
    ACT: tl.constexpr,
    OUT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP: tl.constexpr,
    EVEN_K: tl.constexpr,
):
    """C = epilogue(A @ B) with A row-major and B stored as the layer's weight, [N, K] with K contiguous: Hopper's
    8-bit wgmma reads both operands K-major from shared memory, so that layout needs no transpose on the way."""
    pid_m, pid_n = _tile_of(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    # As in gemm_triton_kernel.gemm_epilogue: rows past M and columns past N wrap around (row rm % M) instead of
    # being masked. Every such address is inside A or B and its results are never stored, and the unmasked loads
    # are what Triton's pipeliner streams through shared memory asynchronously.
    ra = tl.max_contiguous(tl.multiple_of(rm % M, BLOCK_M), BLOCK_M)
    rb = tl.max_contiguous(tl.multiple_of(rn % N, BLOCK_N), BLOCK_N)
    a_ptrs = a_ptr + ra[:, None] * stride_am + rk[None, :]
    b_ptrs = b_ptr + rb[None, :] * stride_bn + rk[:, None]
    if a_ptr.dtype.element_ty == tl.int8:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)  # exact: |sum| <= K * 128 * 128 stays within int32
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:  # K is a multiple of BLOCK_K: no mask at all
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            left = K - k * BLOCK_K
            a = tl.load(a_ptrs, mask=rk[None, :] < left, other=0.0)
            b = tl.load(b_ptrs, mask=rk[:, None] < left, other=0.0)
        if a_ptr.dtype.element_ty == tl.int8:
            acc = tl.dot(a, b, acc, out_dtype=tl.int32)  # named: Triton before 3.7 assumes float32 otherwise
        else:
            # Hopper's fp8 wgmma accumulates in less than float32 (about 14 bits kept); promoting the sum into
            # a float32 accumulator every BLOCK_K products, as cuBLASLt does without its fast-accumulation flag,
            # took a K = 4096 layer's error from 1.0e-3 to 9.5e-5 (cuBLASLt's: 1.3e-4) for 12-16% of its time
            # (H100, Triton 3.6)
            acc = tl.dot(a, b, acc, max_num_imprecise_acc=BLOCK_K)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K
    store_layer_output(
        acc, rm, rn, M, N, c_ptr, stride_cm, scale_ptr, bias_ptr, r_ptr, stride_rm, r_scale, lo, hi, slope, out_scale,
        HAS_BIAS, HAS_RESIDUAL, RESIDUAL_PRE, ACT, OUT,
    )  # fmt: skip


@triton.jit
def qgemm_epilogue_tma(
    a_desc,
    b_desc,
    c_ptr,
    scale_ptr,
    bias_ptr,
    r_ptr,
    M,
    N,
    K,
    stride_cm,
    stride_rm,
    r_scale,
    lo,
    hi,
    slope,
    out_scale,
    programs,
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
    """qgemm_epilogue through TMA descriptors of A [M, K] and the weight B [N, K] (loads past the edges read
    zeros), `programs` persistent programs taking every programs-th output tile. The store stays a masked pointer
    store: the output may be a strided view and its type (8-bit or float) is the layer's."""
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    for tile in tl.range(tl.program_id(0), grid_m * grid_n, programs, flatten=True):
        pid_m, pid_n = _tile_of(tile, grid_m, grid_n, GROUP)
        if a_desc.dtype == tl.int8:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(k_tiles):
            a = a_desc.load([pid_m * BLOCK_M, k * BLOCK_K])
            b = b_desc.load([pid_n * BLOCK_N, k * BLOCK_K])
            if a_desc.dtype == tl.int8:
                acc = tl.dot(a, b.T, acc, out_dtype=tl.int32)
            else:
                acc = tl.dot(a, b.T, acc, max_num_imprecise_acc=BLOCK_K)  # as in qgemm_epilogue
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        store_layer_output(
            acc, rm, rn, M, N, c_ptr, stride_cm, scale_ptr, bias_ptr, r_ptr, stride_rm, r_scale, lo, hi, slope,
            out_scale, HAS_BIAS, HAS_RESIDUAL, RESIDUAL_PRE, ACT, OUT,
        )  # fmt: skip


@triton.jit
def qepilogue(
    p_ptr,
    c_ptr,
    scale_ptr,
    bias_ptr,
    r_ptr,
    M,
    N,
    stride_pm,
    stride_cm,
    stride_rm,
    r_scale,
    lo,
    hi,
    slope,
    out_scale,
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    RESIDUAL_PRE: tl.constexpr,
    ACT: tl.constexpr,
    OUT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """C = epilogue(P) for a product P [M, N] (int32 or float32 sums) a library computed: one read of P, one
    store of C, the same epilogue as the fused kernel."""
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    acc = tl.load(p_ptr + rm[:, None] * stride_pm + rn[None, :], mask=mask, other=0)
    store_layer_output(
        acc, rm, rn, M, N, c_ptr, stride_cm, scale_ptr, bias_ptr, r_ptr, stride_rm, r_scale, lo, hi, slope, out_scale,
        HAS_BIAS, HAS_RESIDUAL, RESIDUAL_PRE, ACT, OUT,
    )  # fmt: skip
