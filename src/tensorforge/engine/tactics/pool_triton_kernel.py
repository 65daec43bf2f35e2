"""The Triton kernel of the channels-last max-pool tactic (pool_triton.py), and the window arithmetic it shares
with the depthwise convolution (conv_triton_kernel.py), in its own module because it imports Triton at the
top: pool_triton.py imports it only when a tactic binds."""

import triton
import triton.language as tl


@triton.jit
def _window_tap(
    n,
    oh,
    ow,
    c,
    kh,
    kw,
    H,
    W,
    C,
    SH: tl.constexpr,
    SW: tl.constexpr,
    PH: tl.constexpr,
    PW: tl.constexpr,
    DH: tl.constexpr,
    DW: tl.constexpr,
):
    """(offsets, inside) of window tap (kh, kw) for output pixels (n, oh, ow) and channels c of a channels-last
    [N, H, W, C] input: where the tap reads, and which pixels' taps fall inside it (the rest is padding)."""
    ih = oh * SH - PH + kh * DH
    iw = ow * SW - PW + kw * DW
    inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    return ((n * H + ih) * W + iw)[:, None] * C + c[None, :], inside


@triton.jit
def max_pool2d_nhwc(
    x_ptr,
    y_ptr,
    P,
    C,
    H,
    W,
    OH,
    OW,
    SH: tl.constexpr,
    SW: tl.constexpr,
    PH: tl.constexpr,
    PW: tl.constexpr,
    KH: tl.constexpr,
    KW: tl.constexpr,
    DH: tl.constexpr,
    DW: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """y[n, oh, ow, c] = max over the window of x[n, ih, iw, c]; both channels-last. P = N * OH * OW. Compared in
    float32, which holds every float16, bfloat16, int8 and fp8 value exactly: the maximum is stored unchanged."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    ow = p % OW
    oh = (p // OW) % OH
    n = p // (OW * OH)
    keep = (p < P)[:, None] & (c < C)[None, :]
    acc = tl.full((BLOCK_P, BLOCK_C), float("-inf"), tl.float32)
    for kh in tl.static_range(KH):
        for kw in tl.static_range(KW):
            offs, inside = _window_tap(n, oh, ow, c, kh, kw, H, W, C, SH, SW, PH, PW, DH, DW)
            taken = keep & inside[:, None]
            # masked lanes become -inf after the load: an int8 or fp8 load has no -inf to fill them with
            v = tl.where(taken, tl.load(x_ptr + offs, mask=taken).to(tl.float32), float("-inf"))
            acc = tl.where((v > acc) | (v != v), v, acc)  # NaN wins, as in torch.max_pool2d
    tl.store(y_ptr + p[:, None] * C + c[None, :], acc.to(y_ptr.dtype.element_ty), mask=keep)
