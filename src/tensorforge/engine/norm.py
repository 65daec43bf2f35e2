"""engine.layer_norm: residual add + layer normalization over the last axis as one layer, in float32 math.

`fuse_layer_norm` makes it from an `nn.layer_norm`, the casts `assign_precision` put around it and the residual
add before it. Inputs (x, [residual], gamma, beta), all rows of the last axis normalized independently:

    s   = float32(x) + float32(residual)                  (float32(x) without a residual)
    y   = (s - mean(s)) / sqrt(var(s) + epsilon) * gamma + beta       stored in `out_dtype` (None: x's type)
    sum = s                                               stored in x's type; a second output with `emit_sum`

Everything between the loads and the stores is float32 and each output is rounded once, at its store: this
is what lets an FP16 plan read and write 16-bit tensors while the statistics (the reason `assign_precision`
keeps layer norms in float32) are float32. `emit_sum` returns the sum for the layers that read it too (the
residual stream of a pre-LN transformer); rounded to x's type it is exactly what a 16-bit `add` made.
x and residual share one type (float32, float16 or bfloat16); gamma and beta are 1-d over the last axis in
any of those types.

The reference below is the definition (upcast, add, layer_norm, cast), so the CPU engine runs it and GPU
tactics (`tactics/norm_triton.py`) are checked against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ir import REQUIRED, register_op
from ..ir.types import GPU_FLOAT_DTYPES, dtype_name, torch_dtype

Tensor = torch.Tensor


def _check(
    data: Tensor, residual: Tensor | None, gamma: Tensor, beta: Tensor, emit_sum: bool, out_dtype: str | None
) -> None:
    if dtype_name(data.dtype) not in GPU_FLOAT_DTYPES:
        raise ValueError(f"engine.layer_norm: x is {dtype_name(data.dtype)}; it reads {sorted(GPU_FLOAT_DTYPES)}")
    if out_dtype is not None and out_dtype not in GPU_FLOAT_DTYPES:
        raise ValueError(f"engine.layer_norm: out_dtype {out_dtype!r} is not one of {sorted(GPU_FLOAT_DTYPES)}")
    if data.dim() == 0:
        raise ValueError("engine.layer_norm: x needs an axis to normalize over")
    if residual is None and emit_sum:
        raise ValueError("engine.layer_norm: emit_sum returns x + residual, so it needs has_residual=True")
    if residual is not None and (residual.shape != data.shape or residual.dtype != data.dtype):
        raise ValueError(
            f"engine.layer_norm: the residual is {residual.dtype} {tuple(residual.shape)}, "
            f"x is {data.dtype} {tuple(data.shape)}: they must be alike"
        )
    for name, param in (("gamma", gamma), ("beta", beta)):
        if tuple(param.shape) != tuple(data.shape[-1:]) or dtype_name(param.dtype) not in GPU_FLOAT_DTYPES:
            raise ValueError(
                f"engine.layer_norm: {name} is {param.dtype} {tuple(param.shape)}, it must be a "
                f"float vector over x's last axis ({data.shape[-1]})"
            )


@register_op(
    "engine.layer_norm",
    inputs=(3, 4),
    attrs={"epsilon": REQUIRED, "has_residual": False, "emit_sum": False, "out_dtype": None},
)
def layer_norm(
    data: Tensor, *rest: Tensor, epsilon: float, has_residual: bool, emit_sum: bool, out_dtype: str | None
) -> Tensor | tuple[Tensor, Tensor]:
    """engine.layer_norm: (x [+ residual]) layer-normalized over the last axis in float32, rounded once."""
    if len(rest) != 2 + int(has_residual):
        raise ValueError(
            f"engine.layer_norm: has_residual={has_residual} needs {3 + int(has_residual)} inputs, got {1 + len(rest)}"
        )
    residual = rest[0] if has_residual else None
    gamma, beta = rest[-2:]
    _check(data, residual, gamma, beta, emit_sum, out_dtype)
    total = data.float() if residual is None else data.float() + residual.float()
    y = F.layer_norm(total, total.shape[-1:], gamma.float(), beta.float(), epsilon)
    y = y.to(data.dtype if out_dtype is None else torch_dtype(out_dtype))
    return (y, total.to(data.dtype)) if emit_sum else y
