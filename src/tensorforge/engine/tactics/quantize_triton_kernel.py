"""The Triton kernel of the quantize tactic (quantize_triton.py), in its own module because it imports Triton at
the top: quantize_triton.py imports it only when the tactic binds."""

import triton
import triton.language as tl

from .quantized_epilogue_kernel import to_output


@triton.jit
def quantize_per_tensor(x_ptr, y_ptr, n, scale, OUT: tl.constexpr, BLOCK: tl.constexpr):
    """y = quantize(x, scale) over n contiguous elements: x / scale in float32, rounded and saturated as the quantize
    op does (`to_output`, OUT 1: int8, 2: float8_e4m3fn)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, to_output(x, scale, OUT), mask=mask)
