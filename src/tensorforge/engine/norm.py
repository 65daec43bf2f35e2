"""engine.layer_norm: residual add + layer normalization over the last axis as one layer, in float32 math.

`fuse_layer_norm` makes it from an `nn.layer_norm`, the casts `assign_precision` put around it and the residual
add before it. Inputs (x, [residual], gamma, beta), all rows of the last axis normalized independently:

    s   = float32(x) + float32(residual)                  (float32(x) without a residual)
    y   = (s - mean(s)) / sqrt(var(s) + epsilon) * gamma + beta       stored in `out_dtype` (None: x's type)
    sum = s                                               stored in x's type; a second output with `emit_sum`
    q   = quantize(y, quantize_scale)                     the last output with `quantize_dtype` (int8, fp8)

Everything between the loads and the stores is float32 and each output is rounded once, at its store: this
is what lets an FP16 plan read and write 16-bit tensors while the statistics (the reason `assign_precision`
keeps layer norms in float32) are float32. `emit_sum` returns the sum for the layers that read it too (the
residual stream of a pre-LN transformer); rounded to x's type it is exactly what a 16-bit `add` made.
x and residual share one type (float32, float16 or bfloat16); gamma and beta are 1-d over the last axis in
any of those types. `q` is the quantize of the float32 y that the next 8-bit layers read (ir/ops/quantize.py's
rounding, symmetric, per tensor): a quantized transformer's norm writes it in the same pass instead of a quantize
kernel reading y again (`fuse_layer_norm`).

The reference below is the definition (upcast, add, layer_norm, cast), so the CPU engine runs it and GPU
tactics (`tactics/norm_triton.py`) are checked against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ir import REQUIRED, get_op, register_op
from ..ir.types import GPU_FLOAT_DTYPES, dtype_name, torch_dtype
from .quantized_ops import LAYER_DTYPES

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
    attrs={
        "epsilon": REQUIRED,
        "has_residual": False,
        "emit_sum": False,
        "out_dtype": None,
        "quantize_dtype": None,
        "quantize_scale": None,
    },
)
def layer_norm(
    data: Tensor,
    *rest: Tensor,
    epsilon: float,
    has_residual: bool,
    emit_sum: bool,
    out_dtype: str | None,
    quantize_dtype: str | None,
    quantize_scale: float | None,
) -> Tensor | tuple[Tensor, ...]:
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
    outputs = [y.to(data.dtype if out_dtype is None else torch_dtype(out_dtype))]
    if emit_sum:
        outputs.append(total.to(data.dtype))
    if quantize_dtype is not None:
        if quantize_dtype not in LAYER_DTYPES or not isinstance(quantize_scale, float):
            raise ValueError(
                f"engine.layer_norm: quantize_dtype must be one of {LAYER_DTYPES} with a float quantize_scale, got "
                f"{quantize_dtype!r} and {quantize_scale!r}"
            )
        scale = torch.tensor(quantize_scale, device=y.device)
        outputs += get_op("quantize").run([y, scale], {"axis": None, "dtype": quantize_dtype}, {})
    return tuple(outputs) if len(outputs) > 1 else outputs[0]
