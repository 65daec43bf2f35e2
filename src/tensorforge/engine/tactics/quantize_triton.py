"""A Triton tactic for the `quantize` op that stays on its own in a quantized plan: one pass over the tensor.

Most quantizes end inside a layer (`fuse_quantized_layers` takes the one after a conv or GEMM into its epilogue,
`fuse_layer_norm` the one after a norm); the rest quantize a tensor no layer made: BERT's attention output before
its out-projection, a pooled vector before a classifier, a max pool's output. Run as the op's reference, each is a
division, a rounding, a clamp and a conversion: four passes over the tensor in float32, measured at 13 of BERT-base's
layers on an H100 (bench/results/quant_speed). This kernel reads the tensor once in its own type and writes the
8-bit result once, with the reference's arithmetic (x / scale in float32, ties to even, saturation).

Taken: a per-tensor quantize to int8 or float8_e4m3fn with a constant scale and no zero point (or a zero one) of
float data. A view is read as a contiguous copy first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ...ir.types import GPU_FLOAT_DTYPES
from .quantized_layers import OUT_CODES
from .registry import BindContext, Env, Inputs, Kernel, OutputViews, tactic

if TYPE_CHECKING:
    from ...ir import Node
    from ..config import BuilderConfig

BLOCK = 2048  # elements per program: 16 per thread with 4 warps


@tactic("quantize", name="triton_per_tensor", devices=("cuda",), priority=10, compiles=True, requires_triton=True)
class QuantizePerTensor:
    @staticmethod
    def supports(node: Node, config: BuilderConfig) -> str | None:
        if node.attrs["dtype"] not in OUT_CODES:
            return f"the kernel writes {sorted(OUT_CODES)}, not {node.attrs['dtype']}"
        if node.attrs["axis"] is not None:
            return "the kernel quantizes per tensor (one scale)"
        if node.inputs[0].type.dtype not in GPU_FLOAT_DTYPES:
            return f"the kernel reads float data, not {node.inputs[0].type.dtype}"
        scale = node.inputs[1].data
        if scale is None or scale.numel() != 1:
            return "the scale must be one constant"
        if len(node.inputs) == 3 and (node.inputs[2].data is None or bool((node.inputs[2].data.float() != 0).any())):
            return "the kernel has no zero point"
        return None

    @staticmethod
    def bind(node: Node, ctx: BindContext) -> Kernel:
        from .quantize_triton_kernel import quantize_per_tensor

        scale = node.inputs[1].data
        assert scale is not None  # `supports` refuses a scale computed in the plan
        out_scale, code = float(scale.reshape(())), OUT_CODES[node.attrs["dtype"]]
        dtype = node.output.type.torch_dtype

        def run(inputs: Inputs, outputs: OutputViews, env: Env) -> tuple[torch.Tensor]:
            x = inputs[0].contiguous()
            out = outputs[0]
            if out is None or not out.is_contiguous():
                out = torch.empty(x.shape, dtype=dtype, device=x.device)
            n = x.numel()
            if n:
                quantize_per_tensor[(-(-n // BLOCK),)](x, out, n, out_scale, OUT=code, BLOCK=BLOCK, num_warps=4)
            return (out,)

        return run
