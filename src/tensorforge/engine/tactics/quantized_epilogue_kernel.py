"""The epilogue every Triton kernel of a quantized layer (engine.qconv / engine.qdense, engine/quantized_ops.py)
ends with, in its own module because it imports Triton at the top.

`quantized_epilogue` turns the accumulator tile (int32 sums of int8 products, or float32 sums of fp8 ones) into
the layer's float32 result: times the per-channel scale, plus bias, plus the residual (dequantized by its scale
where it is 8-bit), the activation in the source's order. `to_output` (its OUT code: `quantized_layers.OUT_CODES`)
then makes the value the kernel stores: the float result itself (the store rounds it to the output's type), or
its quantization, rounded as `ir/ops/quantize.py` rounds (x / scale, half to even, saturated), so a fused layer
writes the same bytes as the unfused quantize.
"""

import triton
import triton.language as tl

from .gemm_triton_kernel import _epilogue


@triton.jit
def round_half_even(v):
    """v rounded to the nearest integer, ties to even (torch.round); v a float32 tile."""
    r = tl.floor(v + 0.5)
    tie_to_odd = ((r - v) == 0.5) & ((r - 2.0 * tl.floor(r * 0.5)) != 0.0)
    return tl.where(tie_to_odd, r - 1.0, r)


@triton.jit
def round_to_e4m3(q):
    """q (float32, |q| <= 448) rounded to the nearest float8_e4m3fn value, ties to even, still in float32: the
    conversion after it is then exact. Rounded here rather than by the conversion because Triton's CPU interpreter
    converts wrongly where rounding carries into the next power of two (-127.3 became -64), and the kernels
    must compute the same bytes there as on the GPU."""
    magnitude = tl.abs(q)
    exponent = tl.floor(tl.log2(tl.maximum(magnitude, 2.0**-6)))
    # log2 may be an ulp off at a power of two: put the exponent right by comparing with the power itself
    exponent = tl.where(tl.exp2(exponent) > magnitude, exponent - 1.0, exponent)
    exponent = tl.where(tl.exp2(exponent + 1.0) <= magnitude, exponent + 1.0, exponent)
    step = tl.exp2(tl.maximum(exponent, -6.0) - 3.0)  # 3 mantissa bits; below 2^-6 the subnormal step 2^-9
    rounded = round_half_even(magnitude / step) * step
    return tl.where(q < 0, -rounded, rounded)  # a negative value rounding to zero is -0, as the conversion makes it


@triton.jit
def quantized_epilogue(
    acc,
    rm,
    rn,
    M,
    N,
    scale_ptr,
    bias_ptr,
    r_ptr,
    stride_rm,
    r_scale,
    lo,
    hi,
    slope,
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    RESIDUAL_PRE: tl.constexpr,
    ACT: tl.constexpr,
):
    """The layer's float32 result at rows `rm` (output pixels or tokens), columns `rn` (output channels) from the
    accumulator tile. `r_scale` multiplies the residual as loaded: its scale when it is 8-bit, else 1.0."""
    scale = tl.load(scale_ptr + rn, mask=rn < N, other=0.0)
    acc = acc.to(tl.float32) * scale[None, :]
    return _epilogue(
        acc, rm, rn, M, N, bias_ptr, r_ptr, stride_rm, lo, hi, slope, r_scale, HAS_BIAS, HAS_RESIDUAL, RESIDUAL_PRE, ACT
    )


@triton.jit
def to_output(y, out_scale, OUT: tl.constexpr):
    """What the kernel stores for the float32 result `y`: y itself (OUT 0), or y quantized by `out_scale` to
    int8 (OUT 1) or float8_e4m3fn (OUT 2), saturated as the quantize op saturates."""
    if OUT == 1:
        q = round_half_even(y / out_scale)
        return tl.where(q < -128.0, -128.0, tl.where(q > 127.0, 127.0, q)).to(tl.int8)
    elif OUT == 2:
        q = y / out_scale
        q = tl.where(q < -448.0, -448.0, tl.where(q > 448.0, 448.0, q))
        return round_to_e4m3(q).to(tl.float8e4nv)
    else:
        return y


@triton.jit
def store_layer_output(
    acc,
    rm,
    rn,
    M,
    N,
    c_ptr,
    stride_cm,
    scale_ptr,
    bias_ptr,
    r_ptr,
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
):
    """The accumulator tile through `quantized_epilogue` and `to_output`, stored in the output's type at rows `rm`
    (row stride `stride_cm`) and columns `rn`, within [M, N]: how every quantized layer's kernel ends."""
    y = quantized_epilogue(
        acc, rm, rn, M, N, scale_ptr, bias_ptr, r_ptr, stride_rm, r_scale, lo, hi, slope, HAS_BIAS, HAS_RESIDUAL,
        RESIDUAL_PRE, ACT,
    )  # fmt: skip
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    tl.store(
        c_ptr + rm[:, None] * stride_cm + rn[None, :], to_output(y, out_scale, OUT).to(c_ptr.dtype.element_ty), mask
    )
