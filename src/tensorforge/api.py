"""The public entry points: TVM-style (`partition_for_tensorforge`, `build`, `load`), torch2trt-style
(`convert`, `EngineModule`), the one call (`compile`) and the extension points (`converter`, `plugin`)."""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import torch

from . import ir
from .frontends import from_torch
from .frontends.converters import converter
from .partition import PartitionConfig, partition_for_tensorforge, register_supported_op
from .runtime import EngineModule, Module, RuntimeOptions
from .runtime import load as _load_module

logger = logging.getLogger("tensorforge")

PRECISIONS = {"fp32": {}, "tf32": {}, "fp32-strict": {"tf32": False}, "fp16": {"fp16": True}, "bf16": {"bf16": True}}
LOG_LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO, "verbose": logging.DEBUG}


def build(graph: ir.Graph, config: PartitionConfig | None = None, device=None, fp16: bool = False, *,
          bf16: bool = False, tf32: bool = True, cache_dir: str | None = None, max_workspace_size: int | None = None,
          multi_engine: int = 0, max_streams: int = 4, max_batch_size: int | None = None,
          module_class: type[Module] = Module) -> Module:
    """A runtime module for a partitioned graph (partitioned here with defaults if `config` is None).

    Plans are built at first run (or with `module.build_all(batch_size)`), cached in memory and, with
    `cache_dir`, on disk. `max_streams` caps the CUDA streams a plan runs independent branches on (1: none).
    `max_batch_size` makes a larger batch an error (default: plans grow to the largest batch seen).
    TENSORFORGE_USE_FP16 / _CACHE_DIR / _MAX_WORKSPACE_SIZE / _MULTI_ENGINE override.
    """
    if config is None:
        if any(n.op == "subgraph" for n in graph.nodes):
            raise ValueError("this graph is already partitioned: pass the config partition_for_tensorforge returned")
        graph, config = partition_for_tensorforge(graph)
    options = RuntimeOptions(fp16=fp16, bf16=bf16, tf32=tf32, cache_dir=cache_dir,
                             max_workspace_size=max_workspace_size or config.max_workspace_size,
                             multi_engine=multi_engine, max_streams=max_streams, max_batch_size=max_batch_size)
    return module_class(graph, config, device=device, options=options)


def load(path, device=None, *, cache_dir: str | None = None, max_workspace_size: int | None = None) -> Module:
    """Load a `.tforge` file (written by `module.save`) into a working module on `device`. Loading runs no code from
    the file; where plans are cached and the workspace of a rebuild come from these arguments (and TENSORFORGE_*
    variables), never from the file."""
    return _load_module(path, device=device, cache_dir=cache_dir, max_workspace_size=max_workspace_size)


def _example_device(inputs) -> torch.device | None:
    for t in inputs:
        if isinstance(t, torch.Tensor):
            return t.device
    return None


def convert(model: torch.nn.Module, inputs: Sequence[torch.Tensor], fp16_mode: bool = False, int8_mode: bool = False,
            int8_calib_dataset=None, max_batch_size: int = 1, max_workspace_size: int = 1 << 30,
            input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None,
            log_level: str = "warning", *, device=None, min_block_size: int = 1, cache_dir: str | None = None,
            torch_executed_ops: Sequence[str] = ()) -> EngineModule:
    """torch2trt-style: convert `model` given example `inputs`; plans are built now for `max_batch_size`.

    The result is an `EngineModule` (an nn.Module); `torch.save(m.state_dict(), f)` and
    `EngineModule().load_state_dict(torch.load(f))` restore it without pickled code. Partitioning uses
    explicit batch (`use_implicit_batch=False`): plans bind the batch size at run time, so ops that move
    the batch axis (attention's head reshapes) stay in the engine.
    """
    if log_level not in LOG_LEVELS:
        raise ValueError(f"log_level must be one of {sorted(LOG_LEVELS)}, got {log_level!r}")
    logger.setLevel(LOG_LEVELS[log_level])
    if int8_mode or int8_calib_dataset is not None:
        raise NotImplementedError("INT8 plans (int8_mode / int8_calib_dataset) are not implemented yet; "
                                  "use fp16_mode=True, or FP32")
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    inputs = tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)
    device = device if device is not None else _example_device(inputs)
    graph = from_torch(model, inputs, input_names=input_names, output_names=output_names)
    graph, config = partition_for_tensorforge(graph, min_block_size=min_block_size, use_implicit_batch=False,
                                              max_workspace_size=max_workspace_size,
                                              torch_executed_ops=tuple(torch_executed_ops))
    logger.info("%s", config.report)
    module = build(graph, config, device=device, fp16=fp16_mode, cache_dir=cache_dir,
                   max_workspace_size=max_workspace_size, max_batch_size=max_batch_size, module_class=EngineModule)
    return module.build_all(max_batch_size)


def compile(model: torch.nn.Module, example_inputs: Sequence[torch.Tensor], precision: str = "fp32", *,  # noqa: A001
            device=None, cache_dir: str | None = None, min_block_size: int = 1, multi_engine: int = 0,
            max_streams: int = 4, **partition_options: Any) -> Module:
    """The one call: convert, partition and build `model` for `precision` ("fp32", "tf32", "fp32-strict",
    "fp16", "bf16"). Plans build at first run, for the batch sizes the module meets. Partition options pass
    through; `use_implicit_batch` defaults to False here (see `convert`)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    example_inputs = tuple(example_inputs) if isinstance(example_inputs, (list, tuple)) else (example_inputs,)
    device = device if device is not None else _example_device(example_inputs)
    graph = from_torch(model, example_inputs)
    partition_options.setdefault("use_implicit_batch", False)  # the engine binds the batch at run time
    graph, config = partition_for_tensorforge(graph, min_block_size=min_block_size, **partition_options)
    return build(graph, config, device=device, cache_dir=cache_dir, multi_engine=multi_engine,
                 max_streams=max_streams, **PRECISIONS[precision])


def plugin(torch_op: str, *, attrs: Mapping[str, Any] | None = None,
           infer: Callable | None = None, macs: Callable | None = None) -> Callable:
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
