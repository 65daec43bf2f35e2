"""cuDNN tactics for `engine.conv` (2-d) on CUDA: channels-last (NHWC, tensor cores) and NCHW.

- `cudnn_fused_nhwc`: conv + bias + relu, and conv + bias + residual + relu (ResNet's block ending), as ONE
  cuDNN kernel through `torch.cudnn_convolution_relu` / `torch.cudnn_convolution_add_relu`.
- `cudnn_nhwc_triton`: the convolution alone in channels-last, then bias + residual + activation as ONE
  generated Triton kernel (engine/tactics/pointwise_codegen.py) over the output, in place. cuDNN's own bias
  add on a channels-last output is a slow broadcast kernel (on an H100, MobileNetV2 at batch 32 spends
  as long adding biases as convolving), and each in-place activation or residual add is one more pass.
- `cudnn_nhwc`: `F.conv2d` in channels-last with the rest of the epilogue applied in place.
- `cudnn_nchw`: the same in NCHW, for the shapes where cuDNN's NCHW kernels win.

The builder times the supported ones on the layer's real shapes and keeps the fastest. Weights are laid out
(and pre-cast by the precision pass) once, at bind time. Each tactic returns its own output (cuDNN allocates
it, in the memory format of its input), so these layers' activations come from the CUDA graph's pool rather
than the arena (`writes_arena=False`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ...ir import TensorType
from ...ir.types import GPU_FLOAT_DTYPES
from ..epilogue import Epilogue
from ..pointwise import Instruction
from .pointwise_codegen import Layout, Unsupported, layout
from .pointwise_triton import PointwiseKernel
from .registry import BindContext, Env, Inputs, Kernel, OutputViews, constant_on, tactic

if TYPE_CHECKING:
    from ...ir import Node
    from ..config import BuilderConfig

CHANNELS_LAST = torch.channels_last


def _supports_conv2d(node: Node, config: BuilderConfig) -> str | None:
    a = node.attrs
    if a.get("ndim") != 2:
        return "cuDNN tactics here cover 2-d convolutions"
    if node.inputs[1].data is None:
        return "the weight must be a constant"
    if node.inputs[0].type.dtype not in GPU_FLOAT_DTYPES:
        return f"dtype {node.inputs[0].type.dtype}"
    if any(v.type.dtype != node.inputs[0].type.dtype for v in node.inputs[1:] if v.data is not None):
        return (
            "float32 weights beside reduced-precision data (a depthwise layer kept accurate by "
            "assign_precision): cuDNN computes in the data's type only"
        )
    return None


@contextlib.contextmanager
def cudnn_flags(config: BuilderConfig) -> Iterator[None]:
    """cuDNN picks its fastest algorithm for each shape once (benchmark mode), in the warm-up before a
    CUDA graph is captured. (TF32 follows the build's `tf32` option through `tf32_mode`, set by the plan.)"""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


class _Conv2d:
    layout = CHANNELS_LAST  # the memory format it convolves in (its input, weights and output)

    @classmethod
    def supports(cls, node: Node, config: BuilderConfig) -> str | None:
        return _supports_conv2d(node, config)

    @classmethod
    def bind(cls, node: Node, ctx: BindContext) -> Kernel:
        a = node.attrs
        fmt = cls.layout
        weight = constant_on(node.inputs[1], ctx.device).contiguous(memory_format=fmt)
        epilogue = Epilogue.of(node)
        bias_value, _ = epilogue.split(node.inputs)
        bias = bias_value.data.to(ctx.device) if bias_value is not None and bias_value.data is not None else None
        bias_index = epilogue.bias_index if bias is None else None  # a bias computed in the plan is read per call
        residual_index = epilogue.residual_index
        tail = epilogue.in_place()  # the residual add and the activation, in the layer's order, on cuDNN's output
        stride, padding, dilation, groups = a["strides"], a["padding"], a["dilation"], a["groups"]
        config = ctx.config

        def run(inputs: Inputs, outputs: OutputViews, env: Env) -> tuple[torch.Tensor]:
            x = inputs[0].contiguous(memory_format=fmt)
            b = bias if bias_index is None else inputs[bias_index]
            with cudnn_flags(config):
                y = F.conv2d(x, weight, b, stride, padding, dilation, groups)
            return (tail(y, inputs[residual_index] if residual_index is not None else None),)

        return run


# every cuDNN tactic returns the output cuDNN allocated (writes_arena=False) and lays out its own weights at bind
# time (packs_weights=True: the plan keeps no device copy of them)
@tactic(
    "engine.conv",
    name="cudnn_nhwc",
    devices=("cuda",),
    priority=20,
    writes_arena=False,
    packs_weights=True,
    input_memory_format=CHANNELS_LAST,
)
class Conv2dNHWC(_Conv2d):
    layout = CHANNELS_LAST


@tactic("engine.conv", name="cudnn_nchw", devices=("cuda",), priority=15, writes_arena=False, packs_weights=True)
class Conv2dNCHW(_Conv2d):
    """Only for a region's first layer (its input arrives NCHW): everywhere else the plan stays channels-last,
    since a layer timed alone might win in NCHW but would pay two layout conversions around it in the plan."""

    layout = torch.contiguous_format

    @classmethod
    def supports(cls, node: Node, config: BuilderConfig) -> str | None:
        if node.inputs[0].producer is not None:
            return "inside the plan activations are channels-last; NCHW only for the region's input layer"
        return super().supports(node, config)


def epilogue_layout(node: Node) -> Layout | None:
    """The generated kernel computing a conv layer's epilogue over its channels-last output, seen as
    [N, H, W, C] (contiguous, so the bias is a plain broadcast along the last axis); None when there is
    nothing to do after the convolution. Raises Unsupported when the generator cannot express it.

    Its inputs: the conv output, then the bias, then the residual (permuted alike), as present."""
    epilogue = Epilogue.of(node)
    bias, residual = epilogue.split(node.inputs)
    out = node.outputs[0].type
    n, c, h, w = out.shape
    nhwc = TensorType(out.dtype, (n, h, w, c))
    program: list[Instruction] = [("load", 0)]
    in_types = [nhwc]
    last = 0

    def apply(op: str, *args: int, attrs: tuple[tuple[str, Any], ...] = ()) -> None:
        nonlocal last
        program.append((op, (last, *args), tuple(attrs)))
        last = len(program) - 1

    def load(t: TensorType) -> int:
        program.append(("load", len(in_types)))
        in_types.append(t)
        return len(program) - 1

    if bias is not None:
        apply("add", load(TensorType(bias.type.dtype, (c,))))
    if residual is not None and epilogue.residual_before_activation:
        apply("add", load(TensorType(residual.type.dtype, (n, h, w, c))))
    if epilogue.activation is not None:
        apply(epilogue.activation, attrs=epilogue.activation_attrs)
    if residual is not None and not epilogue.residual_before_activation:
        apply("add", load(TensorType(residual.type.dtype, (n, h, w, c))))
    if last == 0:
        return None
    return layout(tuple(program), (last,), tuple(in_types), (nhwc,))


@tactic(
    "engine.conv",
    name="cudnn_nhwc_triton",
    devices=("cuda",),
    priority=22,
    writes_arena=False,
    packs_weights=True,
    input_memory_format=CHANNELS_LAST,
    requires_triton=True,
)
class Conv2dTritonEpilogue:
    """cuDNN convolution without bias (channels-last), then one generated kernel for the whole epilogue. Its
    epilogue kernel compiles at its first call, but it is not `compiles`: cuDNN's benchmark-mode search must not
    run beside other work (compile_ahead.py)."""

    @staticmethod
    def supports(node: Node, config: BuilderConfig) -> str | None:
        reason = _supports_conv2d(node, config)
        if reason:
            return reason
        try:
            if epilogue_layout(node) is None:
                return "no epilogue to fuse (the plain convolution is cudnn_nhwc)"
        except Unsupported as exc:
            return f"the epilogue cannot be generated: {exc}"
        return None

    @staticmethod
    def bind(node: Node, ctx: BindContext) -> Kernel:
        a = node.attrs
        weight = constant_on(node.inputs[1], ctx.device).contiguous(memory_format=CHANNELS_LAST)
        layer = Epilogue.of(node)
        # the epilogue kernel's inputs after the conv output: bias (a constant, or the input index of one computed in
        # the plan), residual (its input index)
        extra: list[torch.Tensor | int] = []
        if layer.bias_index is not None:
            data = node.inputs[layer.bias_index].data
            extra.append(data.to(ctx.device) if data is not None else layer.bias_index)
        if layer.residual_index is not None:
            extra.append(layer.residual_index)
        kernel_layout = epilogue_layout(node)
        if kernel_layout is None:  # `supports` refuses such layers
            raise ValueError("no epilogue to fuse (the plain convolution is cudnn_nhwc)")
        epilogue = PointwiseKernel(kernel_layout, block=1024, num_warps=4)
        stride, padding, dilation, groups = a["strides"], a["padding"], a["dilation"], a["groups"]
        config = ctx.config

        def nhwc(t: torch.Tensor) -> torch.Tensor:  # the physical order of a channels-last tensor, as a contiguous view
            return t.contiguous(memory_format=CHANNELS_LAST).permute(0, 2, 3, 1) if t.dim() == 4 else t

        def run(inputs: Inputs, outputs: OutputViews, env: Env) -> tuple[torch.Tensor]:
            x = inputs[0].contiguous(memory_format=CHANNELS_LAST)
            with cudnn_flags(config):
                # cuDNN may answer a tiny channels-last problem in NCHW: then this is the one copy
                y = F.conv2d(x, weight, None, stride, padding, dilation, groups).contiguous(memory_format=CHANNELS_LAST)
            y_nhwc = y.permute(0, 2, 3, 1)
            operands = [y_nhwc] + [nhwc(inputs[e]) if isinstance(e, int) else e for e in extra]
            epilogue(operands, [y_nhwc], env)  # in place: every element is read, then written, by one thread
            return (y,)

        return run


@tactic(
    "engine.conv",
    name="cudnn_fused_nhwc",
    devices=("cuda",),
    priority=25,
    writes_arena=False,
    packs_weights=True,
    input_memory_format=CHANNELS_LAST,
)
class Conv2dFusedReLU:
    """One cuDNN call for conv + bias + (residual) + relu."""

    @staticmethod
    def supports(node: Node, config: BuilderConfig) -> str | None:
        reason = _supports_conv2d(node, config)
        if reason:
            return reason
        epilogue = Epilogue.of(node)
        bias, _ = epilogue.split(node.inputs)
        if epilogue.activation != "nn.relu":
            return "the fused cuDNN kernels end in relu"
        if epilogue.has_residual and not epilogue.residual_before_activation:
            return "the residual must be added before the relu"
        if bias is not None and bias.data is None:
            return "the bias must be a constant"
        if node.inputs[0].type.dtype == "bfloat16":
            return "cuDNN's fused conv+relu path takes float16/float32"
        return None

    @staticmethod
    def bind(node: Node, ctx: BindContext) -> Kernel:
        a = node.attrs
        weight = constant_on(node.inputs[1], ctx.device).contiguous(memory_format=CHANNELS_LAST)
        epilogue = Epilogue.of(node)
        bias_value, _ = epilogue.split(node.inputs)
        bias = constant_on(bias_value, ctx.device) if bias_value is not None else None
        residual_index = epilogue.residual_index
        stride, padding, dilation, groups = list(a["strides"]), list(a["padding"]), list(a["dilation"]), a["groups"]
        config = ctx.config

        def run(inputs: Inputs, outputs: OutputViews, env: Env) -> tuple[torch.Tensor]:
            x = inputs[0].contiguous(memory_format=CHANNELS_LAST)
            with cudnn_flags(config):
                if residual_index is None:
                    return (torch.cudnn_convolution_relu(x, weight, bias, stride, padding, dilation, groups),)
                z = inputs[residual_index].contiguous(memory_format=CHANNELS_LAST)
                return (torch.cudnn_convolution_add_relu(x, weight, z, 1.0, bias, stride, padding, dilation, groups),)

        return run
