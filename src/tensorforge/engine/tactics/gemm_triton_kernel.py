"""The Triton kernels of the GEMM-with-epilogue tactics (gemm_triton.py), in their own module because it imports
Triton at the top: gemm_triton.py imports it only when a tactic binds, so tensorforge imports without Triton.

Two kernels share one epilogue (bias, residual, activation in float32 registers, then one store):
- `gemm_epilogue`: one program per output tile, pointer loads pipelined through shared memory by cp.async.
  Small tiles of it win the small GEMMs (batch 1 transformers, MobileNet's 1x1 convolutions).
- `gemm_epilogue_tma`: persistent (one program per SM walking the tiles) with Hopper's tensor-memory
  accelerator loading A and B and storing C. The tile loop and the K loop are flattened into one pipelined
  loop, so the next tile's loads run while this tile's epilogue computes: the large GEMMs of BERT and ViT at
  batch 32, where the GELU epilogue has to hide under the matrix multiply to beat cuBLAS plus a GELU pass.
"""

import triton
import triton.language as tl


@triton.jit
def _tanh(x):  # from exp: the interpreter has no libdevice tanh
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _tile_of(pid, grid_m, grid_n, GROUP: tl.constexpr):
    """(row, column) tile of program `pid`: GROUP row tiles walk a column of B together, so B stays in L2."""
    width = GROUP * grid_n
    first_m = (pid // width) * GROUP
    group_m = tl.minimum(grid_m - first_m, GROUP)
    return first_m + (pid % width) % group_m, (pid % width) // group_m


@triton.jit
def _activation(acc, lo, hi, slope, ACT: tl.constexpr):
    """The fused activation (gemm_triton.ACTIVATION_CODES) on a float32 tile; clip's bounds, leaky relu's slope."""
    if ACT == 1:
        acc = tl.where(acc < 0, 0.0, acc)
    elif ACT == 2:
        acc = tl.where(acc < lo, lo, tl.where(acc > hi, hi, acc))
    elif ACT == 3:
        acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
    elif ACT == 4:
        acc = 0.5 * acc * (1.0 + _tanh(0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)))
    elif ACT == 5:
        acc = acc / (1.0 + tl.exp(-acc))
    elif ACT == 6:
        acc = acc * tl.where(acc + 3.0 < 0.0, 0.0, tl.where(acc + 3.0 > 6.0, 6.0, acc + 3.0)) / 6.0
    elif ACT == 7:
        acc = 1.0 / (1.0 + tl.exp(-acc))
    elif ACT == 8:
        acc = _tanh(acc)
    elif ACT == 9:
        acc = tl.where(acc > 0, acc, acc * slope)
    return acc


@triton.jit
def _epilogue(
    acc,
    rm,
    rn,
    M,
    N,
    bias_ptr,
    r_ptr,
    stride_rm,
    lo,
    hi,
    slope,
    r_scale,
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    RESIDUAL_PRE: tl.constexpr,
    ACT: tl.constexpr,
):
    """The layer's tail on the float32 accumulator tile at rows `rm`, columns `rn`; the residual is multiplied by
    `r_scale` as loaded (an 8-bit residual's scale: quantized_epilogue_kernel.py; 1.0, exactly, for a float one)."""
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    if HAS_RESIDUAL:
        mask = (rm[:, None] < M) & (rn[None, :] < N)
        r = tl.load(r_ptr + rm[:, None] * stride_rm + rn[None, :], mask=mask, other=0.0).to(tl.float32) * r_scale
        if RESIDUAL_PRE:
            acc += r
    acc = _activation(acc, lo, hi, slope, ACT)
    if HAS_RESIDUAL and not RESIDUAL_PRE:
        acc += r
    return acc


@triton.jit
def gemm_epilogue(
    a_ptr,
    b_ptr,
    c_ptr,
    bias_ptr,
    r_ptr,
    M,
    N,
    K,
    stride_am,
    stride_bk,
    stride_cm,
    stride_rm,
    lo,
    hi,
    slope,
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    RESIDUAL_PRE: tl.constexpr,
    ACT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP: tl.constexpr,
    EVEN_K: tl.constexpr,
):
    pid_m, pid_n = _tile_of(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    # Loads wrap around the edges (rows past M read row rm % M, columns past N column rn % N) instead of being
    # masked: their results are never stored, and unmasked, aligned loads are what lets Triton's pipeliner
    # stage A and B through shared memory asynchronously (NUM_STAGES deep) while the tensor cores work.
    ra = tl.max_contiguous(tl.multiple_of(rm % M, BLOCK_M), BLOCK_M)
    rb = tl.max_contiguous(tl.multiple_of(rn % N, BLOCK_N), BLOCK_N)
    a_ptrs = a_ptr + ra[:, None] * stride_am + rk[None, :]
    b_ptrs = b_ptr + rk[:, None] * stride_bk + rb[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:  # K is a multiple of BLOCK_K: no mask at all
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            left = K - k * BLOCK_K
            a = tl.load(a_ptrs, mask=rk[None, :] < left, other=0.0)
            b = tl.load(b_ptrs, mask=rk[:, None] < left, other=0.0)
        acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K * stride_bk
    acc = _epilogue(
        acc, rm, rn, M, N, bias_ptr, r_ptr, stride_rm, lo, hi, slope, 1.0, HAS_BIAS, HAS_RESIDUAL, RESIDUAL_PRE, ACT
    )
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    tl.store(c_ptr + rm[:, None] * stride_cm + rn[None, :], acc.to(c_ptr.dtype.element_ty), mask=mask)


@triton.jit
def gemm_epilogue_tma(
    a_desc,
    b_desc,
    c_desc,
    bias_ptr,
    r_ptr,
    M,
    N,
    K,
    stride_rm,
    lo,
    hi,
    slope,
    programs,
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    RESIDUAL_PRE: tl.constexpr,
    ACT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP: tl.constexpr,
):
    """A [M, K] x B [K, N] -> C [M, N] through TMA descriptors (out-of-bounds loads read zeros, stores clip)."""
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    for tile in tl.range(tl.program_id(0), grid_m * grid_n, programs, flatten=True):
        pid_m, pid_n = _tile_of(tile, grid_m, grid_n, GROUP)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(k_tiles):
            a = a_desc.load([pid_m * BLOCK_M, k * BLOCK_K])
            b = b_desc.load([k * BLOCK_K, pid_n * BLOCK_N])
            acc = tl.dot(a, b, acc)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        acc = _epilogue(
            acc, rm, rn, M, N, bias_ptr, r_ptr, stride_rm, lo, hi, slope, 1.0, HAS_BIAS, HAS_RESIDUAL, RESIDUAL_PRE, ACT
        )
        c_desc.store([pid_m * BLOCK_M, pid_n * BLOCK_N], acc.to(c_desc.dtype))
