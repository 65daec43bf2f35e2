"""The public entry points: TVM-style (`partition_for_tensorforge`, `build`, `load`), torch2trt-style
(`convert`, `EngineModule`), the one call (`compile`), the extension points (`converter`, `plugin`) and serving
behind Triton Inference Server (`serve`, `export_triton`: tensorforge.serving, imported when called)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from . import ir
from .frontends import from_torch
from .frontends.converters import converter
from .partition import PartitionConfig, partition_for_tensorforge, register_supported_op
from .quantization import quantize
from .runtime import EngineModule, Module, RuntimeOptions
from .runtime import load as _load_module
from .runtime.options import OPTION_NAMES

logger = logging.getLogger("tensorforge")

# int8 and fp8 quantize the layers the calibration places Q/DQ pairs on; the layers kept out of it (sensitive ones,
# and those without a quantized kernel) run in fp16, as TensorRT's int8 builds with the fp16 flag
PRECISIONS = {
    "fp32": {},
    "tf32": {},
    "fp32-strict": {"tf32": False},
    "fp16": {"fp16": True},
    "bf16": {"bf16": True},
    "int8": {"fp16": True},
    "fp8": {"fp16": True},
}
QUANTIZED_PRECISIONS = ("int8", "fp8")
LOG_LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO, "verbose": logging.DEBUG}


def build(
    graph: ir.Graph,
    config: PartitionConfig | None = None,
    device=None,
    fp16: bool | None = None,
    *,
    options: RuntimeOptions | None = None,
    module_class: type[Module] = Module,
    **option_values: Any,
) -> Module:
    """A runtime module for a partitioned graph (partitioned here with defaults if `config` is None).

    Options: a `RuntimeOptions` (`options`), and any option by name, which takes precedence over it — each field of
    `BuilderConfig` (fp16, bf16, tf32, strict_types, max_workspace_size, optimization_level, timing_cache,
    max_streams) and of `RuntimeOptions` (cache_dir, multi_engine, cuda_graph, max_batch_size). Without `options`,
    max_workspace_size defaults to the partition config's (so does None). Plans are built at first run (or with
    `module.build_all(batch_size)`), cached in memory and, with `cache_dir`, on disk.
    TENSORFORGE_USE_FP16 / _CACHE_DIR / _MAX_WORKSPACE_SIZE / _MULTI_ENGINE override.
    """
    if config is None:
        if any(n.op == "subgraph" for n in graph.nodes):
            raise ValueError("this graph is already partitioned: pass the config partition_for_tensorforge returned")
        graph, config = partition_for_tensorforge(graph)
    if fp16 is not None:
        option_values["fp16"] = fp16
    if option_values.get("max_workspace_size", 0) is None:
        del option_values["max_workspace_size"]
    base = options if options is not None else RuntimeOptions().replace(max_workspace_size=config.max_workspace_size)
    return module_class(graph, config, device=device, options=base.replace(**option_values))


def load(
    path,
    device=None,
    *,
    cache_dir: str | None = None,
    max_workspace_size: int | None = None,
    timing_cache: str | None = None,
) -> Module:
    """Load a `.tforge` file (written by `module.save`) into a working module on `device`. Loading runs no code from
    the file; where plans are cached, the workspace of a rebuild and the timing cache it reads come from these
    arguments (and TENSORFORGE_* variables), never from the file."""
    return _load_module(
        path, device=device, cache_dir=cache_dir, max_workspace_size=max_workspace_size, timing_cache=timing_cache
    )


def _example_tuple(inputs: Any) -> tuple[Any, ...]:
    """The example inputs as a tuple: given as a list or tuple, or one alone."""
    return tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)


def _example_device(inputs) -> torch.device | None:
    for t in inputs:
        if isinstance(t, torch.Tensor):
            return t.device
    return None


def convert(
    model: torch.nn.Module,
    inputs: Sequence[torch.Tensor],
    fp16_mode: bool = False,
    int8_mode: bool = False,
    int8_calib_dataset=None,
    int8_calib_algorithm: str = "entropy",
    int8_error_budget: float | None = None,
    max_batch_size: int = 1,
    max_workspace_size: int = 1 << 30,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    log_level: str = "warning",
    *,
    dynamic_shapes: Any = None,
    device=None,
    min_block_size: int = 1,
    torch_executed_ops: Sequence[str] = (),
    options: RuntimeOptions | None = None,
    **option_values: Any,
) -> EngineModule:
    """torch2trt-style: convert `model` given example `inputs`; plans are built now for `max_batch_size`, which
    also bounds the batch the module accepts (torch2trt's contract).

    The result is an `EngineModule` (an nn.Module); `torch.save(m.state_dict(), f)` and
    `EngineModule().load_state_dict(torch.load(f))` restore it without pickled code. Partitioning uses
    explicit batch (`use_implicit_batch=False`): plans bind the batch size at run time, so ops that move
    the batch axis (attention's head reshapes) stay in the engine. `dynamic_shapes` (torch.export's form, with
    `torch.export.Dim`s) makes any dimension a named symbol (see `frontends.from_torch`). Every other option
    (cache_dir, strict_types, optimization_level, timing_cache, ...: see `build`) passes by name, or in `options`.

    `int8_mode=True` quantizes the model (`tensorforge.quantize`: Q/DQ pairs where TensorRT places them) with
    activation scales calibrated over `int8_calib_dataset` (an iterable of input batches; as in torch2trt, the
    example `inputs` when None) by `int8_calib_algorithm` ("entropy", "minmax" or "percentile"). `int8_error_budget`
    (e.g. 0.05) keeps the most sensitive layers in floating point until the relative output error on the
    calibration data is within it (`quantize`'s `error_budget`).
    """
    if log_level not in LOG_LEVELS:
        raise ValueError(f"log_level must be one of {sorted(LOG_LEVELS)}, got {log_level!r}")
    logger.setLevel(LOG_LEVELS[log_level])
    if (int8_calib_dataset is not None or int8_error_budget is not None) and not int8_mode:
        raise ValueError(
            "int8_calib_dataset / int8_error_budget is given but int8_mode is False: pass int8_mode=True to quantize"
        )
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    inputs = _example_tuple(inputs)
    device = device if device is not None else _example_device(inputs)
    graph = from_torch(model, inputs, dynamic_shapes=dynamic_shapes, input_names=input_names, output_names=output_names)
    if int8_mode:
        if int8_calib_dataset is None:
            logger.warning("int8_mode without int8_calib_dataset: calibrating on the example inputs alone")
            int8_calib_dataset = [inputs]
        graph = quantize(
            graph,
            int8_calib_dataset,
            precision="int8",
            method=int8_calib_algorithm,
            error_budget=int8_error_budget,
        )
    graph, config = partition_for_tensorforge(
        graph,
        min_block_size=min_block_size,
        use_implicit_batch=False,
        max_workspace_size=max_workspace_size,
        torch_executed_ops=tuple(torch_executed_ops),
    )
    logger.info("%s", config.report)
    module = build(
        graph,
        config,
        device=device,
        fp16=True if fp16_mode else None,
        options=options,
        max_workspace_size=max_workspace_size,
        max_batch_size=max_batch_size,
        module_class=EngineModule,
        **option_values,
    )
    assert isinstance(module, EngineModule)  # build makes the module_class it is given
    return module.build_all(max_batch_size)


def compile(  # noqa: A001  (the public API's name, as torch.compile: tensorforge.compile never shadows the builtin)
    model: torch.nn.Module,
    example_inputs: Sequence[torch.Tensor],
    precision: str = "fp32",
    *,
    dynamic_shapes: Any = None,
    device=None,
    options: RuntimeOptions | None = None,
    calib_data: Any = None,
    calib_method: str | None = None,
    calib_cache: str | None = None,
    error_budget: float | None = None,
    **keywords: Any,
) -> Module:
    """The one call: convert, partition and build `model` for `precision` ("fp32", "tf32", "fp32-strict",
    "fp16", "bf16", "int8", "fp8"). Plans build at first run, for the batch sizes the module meets.

    "int8" and "fp8" quantize the model first (`tensorforge.quantize`) with scales calibrated over `calib_data` (an
    iterable of input batches) by `calib_method` (default "auto": the calibrator measured best on `calib_data`),
    reusing or writing the calibration cache `calib_cache`; layers left unquantized run in fp16. `error_budget` (e.g.
    0.05) keeps the most sensitive layers in floating point until the relative output error on `calib_data` is
    within it.

    `keywords` are options (any name `build` takes: cache_dir, multi_engine, optimization_level, strict_types, ...)
    and partition options (`partition_for_tensorforge`'s: min_block_size, torch_executed_ops, ...);
    `max_workspace_size` goes to both. `use_implicit_batch` defaults to False here (see `convert`). An option that
    contradicts `precision` (precision="fp16" with fp16=False) is a ValueError. `dynamic_shapes` (torch.export's
    form, with `torch.export.Dim`s) makes any dimension a named symbol (see `frontends.from_torch`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if precision not in QUANTIZED_PRECISIONS and (
        calib_data is not None or calib_cache is not None or error_budget is not None
    ):
        raise ValueError(f"calibration data quantizes a model: pass precision='int8' or 'fp8', not {precision!r}")
    option_values = {name: keywords.pop(name) for name in list(keywords) if name in OPTION_NAMES}
    for name, value in PRECISIONS[precision].items():
        if option_values.setdefault(name, value) != value:
            raise ValueError(
                f"precision={precision!r} means {name}={value}, but {name}={option_values[name]!r} was passed too"
            )
    if "max_workspace_size" in option_values:
        keywords["max_workspace_size"] = option_values["max_workspace_size"]
    example_inputs = _example_tuple(example_inputs)
    device = device if device is not None else _example_device(example_inputs)
    graph = from_torch(model, example_inputs, dynamic_shapes=dynamic_shapes)
    if precision in QUANTIZED_PRECISIONS:
        graph = quantize(
            graph, calib_data, precision=precision, method=calib_method, cache=calib_cache, error_budget=error_budget
        )
    keywords.setdefault("use_implicit_batch", False)  # the engine binds the batch at run time
    graph, config = partition_for_tensorforge(graph, **keywords)
    return build(graph, config, device=device, options=options, **option_values)


def serve(model: Any, **keywords: Any) -> Any:
    """Serve a compiled model (a `Module` or a `.tforge` path) behind NVIDIA Triton Inference Server through
    PyTriton, with Triton's dynamic batcher and one execution context per instance: `tensorforge.serving.serve`,
    whose keywords it takes (name, max_batch_size, max_queue_delay_us, instances, http_port, grpc_port,
    metrics_port, block, ...). Needs the `serve` extra (nvidia-pytriton)."""
    from .serving import serve as serve_model

    return serve_model(model, **keywords)


def export_triton(model: Any, repo_dir: Any, **keywords: Any) -> Any:
    """Write a Triton model repository entry (config.pbtxt, model.py for the Python backend, the .tforge) that a
    stock `tritonserver --model-repository repo_dir` serves: `tensorforge.serving.export_triton`, whose keywords
    it takes (name, max_batch_size, instances, kind, max_queue_delay_us, overwrite). Returns the model's
    directory."""
    from .serving import export_triton as export

    return export(model, repo_dir, **keywords)


def plugin(
    torch_op: str,
    *,
    attrs: Mapping[str, Any] | None = None,
    infer: Callable | None = None,
    macs: Callable | None = None,
) -> Callable:
    """Decorator: a custom kernel for the torch op `torch_op` ("mylib::myop"), run inside plans as one layer.

    The kernel takes the op's tensors positionally and its other arguments as keywords, and returns a
    tensor (or a tuple). It becomes the IR op `plugin.<ns>.<op>` (kernel = reference implementation, shapes
    inferred by running it on meta tensors unless `infer` is given), the frontend converts `torch_op` to it,
    and the partitioner offloads it. `attrs` (name -> default) defaults to the op's non-tensor arguments.
    """
    if "::" not in torch_op:
        raise ValueError(f"plugin names look like 'namespace::op', got {torch_op!r}")
    namespace, op = torch_op.split("::", 1)
    ir_name = f"plugin.{namespace}.{op}"

    def decorate(kernel: Callable) -> Callable:
        declared = dict(attrs) if attrs is not None else _schema_attrs(namespace, op)
        ir.register_op(ir_name, inputs=(0, None), attrs=declared, infer=infer, macs=macs)(kernel)
        register_supported_op(ir_name)

        @converter(torch_op)
        def convert_to_plugin(ctx, **arguments):
            tensors = [v for v in arguments.values() if isinstance(v, ir.Value)]
            rest = {k: v for k, v in arguments.items() if not isinstance(v, ir.Value) and k in declared}
            return ctx.emit(ir_name, *tensors, **rest)

        return kernel

    return decorate


def _schema_attrs(namespace: str, op: str) -> dict[str, Any]:
    """The non-tensor arguments of a registered torch op, with their defaults (REQUIRED without one)."""
    try:
        schema = getattr(getattr(torch.ops, namespace), op).default._schema
    except (AttributeError, RuntimeError):
        return {}
    out = {}
    for arg in schema.arguments:
        if isinstance(arg.type, torch.TensorType):
            continue
        out[arg.name] = arg.default_value if arg.has_default_value() else ir.REQUIRED
    return out
