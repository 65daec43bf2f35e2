"""Where a model comes from (a zoo name, an .onnx file, a saved .tforge) and the arrays fed to it and read
from it."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from .common import DEFAULT_SEQ_LEN, PROG, CLIError

# -- where a model comes from ----------------------------------------------------------------------


@dataclass
class Source:
    """What the MODEL / PLAN argument named: a zoo model, an ONNX file or a saved module."""

    kind: str  # "zoo", "onnx" or "plan"
    name: str  # the zoo name or the path
    zoo: Any = None  # models.ZooModel for kind "zoo"


def _resolve(arg: str, *, plan: bool, model: bool, image_size=None, seq_len=None) -> Source:
    """Classify a MODEL / PLAN argument. Paths are recognized by suffix or existence; others are zoo names."""
    from .. import models

    suffix = os.path.splitext(arg)[1].lower()
    looks_like_path = suffix in (".onnx", ".tforge") or os.sep in arg or os.path.exists(arg)
    if looks_like_path:
        if not os.path.exists(arg):
            raise CLIError(f"{arg}: no such file")
        if os.path.isdir(arg):
            raise CLIError(f"{arg}: is a directory, not a model file")
        kind = {".onnx": "onnx", ".tforge": "plan"}.get(suffix) or _sniff(arg)
        if kind == "plan" and not plan:
            raise CLIError(
                f"{arg}: this command needs the source model (a zoo name or an .onnx file), not a saved .tforge module"
            )
        if kind == "onnx" and not model:
            raise CLIError(f"{arg}: this command needs a saved .tforge module (build one with `tensorforge build`)")
        return Source(kind, arg)
    if not model:
        raise CLIError(f"{arg}: no such file (this command takes a .tforge module)")
    return Source("zoo", arg, models.get(arg, image_size=image_size, seq_len=seq_len))


def _sniff(path: str) -> str:
    """ "plan" for a safetensors file (8-byte header length, then JSON), else "onnx" (a protobuf)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return "plan" if len(head) == 9 and head[8:9] == b"{" else "onnx"


def _to_graph(source: Source, seq_len: int | None):
    from ..frontends import from_torch

    if source.kind == "zoo":
        zoo = source.zoo
        return from_torch(
            zoo.model, zoo.inputs(2), input_names=list(zoo.input_names), output_names=list(zoo.output_names)
        )
    try:
        from ..frontends import from_onnx
    except ImportError as exc:
        raise CLIError(
            f"{source.name}: ONNX models need tensorforge's ONNX frontend and the onnx package "
            f"(pip install 'tensorforge[onnx]'): {exc}"
        ) from exc
    return from_onnx(source.name, input_shapes=_onnx_input_shapes(source.name, seq_len))


def _onnx_input_shapes(path: str, seq_len: int | None) -> dict[str, tuple[int, ...]]:
    """Sizes for the symbolic dimensions of ONNX inputs other than the leading (batch) one: `seq_len`."""
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # noqa: BLE001  (whatever onnx raises, the file is at fault: one line says so)
        raise CLIError(f"{path}: not a readable ONNX model ({exc})") from None
    initializers = {t.name for t in model.graph.initializer}
    shapes = {}
    for v in model.graph.input:
        if v.name in initializers or not v.type.tensor_type.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        if any(d is None for d in dims[1:]):
            other = seq_len or DEFAULT_SEQ_LEN
            shapes[v.name] = tuple(d if d is not None else -1 if i == 0 else other for i, d in enumerate(dims))
    return shapes


def _device(name: str | None):
    import torch

    from ..runtime.module import default_device

    if name is None:
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise CLIError(f"--device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if device.type not in ("cpu", "cuda"):
        raise CLIError(f"--device {name}: tensorforge runs on cpu or cuda")
    return device


def _precision(fp16: bool, bf16: bool, tf32: bool, device) -> str:
    """The precision a module runs in, by name: TF32 only counts on a CUDA device."""
    return "fp16" if fp16 else "bf16" if bf16 else ("tf32" if tf32 and device.type == "cuda" else "fp32")


def _requested_precision(args, device) -> str:
    return _precision(args.fp16, args.bf16, not args.no_tf32, device)


def _runtime_options(args):
    """The options the model options on the command line ask for (each checked by RuntimeOptions/BuilderConfig)."""
    from ..runtime import RuntimeOptions

    return RuntimeOptions().replace(
        fp16=args.fp16,
        bf16=args.bf16,
        tf32=not args.no_tf32,
        strict_types=args.strict_types,
        optimization_level=args.optimization_level,
        timing_cache=args.timing_cache,
        max_streams=args.max_streams,
        max_workspace_size=args.workspace,
        cache_dir=args.cache_dir,
    )


def _load_module(path: str, args, device):
    """A saved module; the machine's resources (cache directory, workspace, timing cache of a rebuild) from the
    command line, as `tensorforge.load` takes them."""
    import tensorforge as forge

    return forge.load(
        path, device=device, cache_dir=args.cache_dir, max_workspace_size=args.workspace, timing_cache=args.timing_cache
    )


def _build_module(source: Source, args, device, batch: int, *, quiet: bool):
    """Convert, partition (explicit batch unless --implicit-batch), build every plan for `batch`.
    Returns (module, seconds per stage). A progress bar on stderr follows the stages and regions."""
    from tqdm import tqdm

    import tensorforge as forge

    stages: dict[str, float] = {}
    bar = tqdm(
        total=3,
        desc=f"{PROG}: converting {os.path.basename(source.name)}",
        unit="step",
        file=sys.stderr,
        disable=quiet,
        leave=False,
        bar_format="{desc} |{bar}| {n_fmt}/{total_fmt} [{elapsed}]",
    )
    try:
        start = time.perf_counter()
        graph = _to_graph(source, args.seq_len)
        stages["convert_s"] = time.perf_counter() - start
        bar.update()
        bar.set_description_str(f"{PROG}: partitioning")
        start = time.perf_counter()
        graph, config = forge.partition_for_tensorforge(
            graph,
            min_block_size=args.min_block_size,
            use_implicit_batch=args.implicit_batch,
            max_workspace_size=args.workspace,
        )
        module = forge.build(graph, config, device=device, options=_runtime_options(args))
        stages["partition_s"] = time.perf_counter() - start
        bar.update()
        regions = list(module.regions)
        bar.total = 2 + len(regions)
        start = time.perf_counter()
        for i, name in enumerate(regions, 1):
            bar.set_description_str(f"{PROG}: building plan {i}/{len(regions)} ({name})")
            # one region at a time (build_all does the same) so the bar can follow the build
            module.build_region(name, batch)
            bar.update()
        stages["build_s"] = time.perf_counter() - start
    finally:
        bar.close()
    return module, stages


# -- inputs and outputs ------------------------------------------------------------------------------


def _sizes(value, batch: int, seq_len: int) -> tuple[int, ...]:
    from ..ir.symbolic import SymExpr
    from ..ir.types import BATCH

    return tuple(
        d.bind({s: batch if s == BATCH else seq_len for s in d.free_symbols}) if isinstance(d, SymExpr) else d
        for d in value.type.shape
    )


def _synthetic_inputs(graph, batch: int, seq_len: int, device, seed: int = 0) -> tuple:
    """Inputs for a graph from its input types: floats from a normal distribution, integers and booleans 1
    (a valid token id and an all-ones attention mask). The batch symbol is `batch`; any other symbol `seq_len`."""
    import torch

    from ..ir.types import torch_dtype

    gen = torch.Generator().manual_seed(seed)
    out = []
    for v in graph.inputs:
        dtype = torch_dtype(v.type.dtype)
        shape = _sizes(v, batch, seq_len)
        t = torch.randn(shape, generator=gen).to(dtype) if dtype.is_floating_point else torch.ones(shape, dtype=dtype)
        out.append(t.to(device))
    return tuple(out)


def _source_inputs(source: Source, graph, batch: int, seq_len: int, device) -> tuple:
    if source.kind == "zoo":
        return tuple(t.to(device) for t in source.zoo.inputs(batch))
    return _synthetic_inputs(graph, batch, seq_len, device)


def _describe_inputs(graph) -> str:
    return ", ".join(f"{v.name} ({v.type})" for v in graph.inputs)


def _read_inputs(path: str, graph, device) -> tuple:
    """Arrays from a .npy (one-input models) or .npz (keys = input names) file, as the graph's dtypes."""
    import numpy as np
    import torch

    from ..ir.types import torch_dtype

    if not os.path.isfile(path):
        raise CLIError(f"{path}: no such file")
    names = [v.name for v in graph.inputs]
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001  (whatever numpy raises, the file is at fault: one line says so)
        raise CLIError(f"{path}: not a readable .npy/.npz file ({exc})") from None
    if isinstance(loaded, np.ndarray):
        if len(names) != 1:
            raise CLIError(
                f"{path}: a single .npy array feeds a one-input model; this one takes {len(names)} "
                f"inputs ({_describe_inputs(graph)}): pass an .npz with those keys"
            )
        arrays = {names[0]: loaded}
    else:
        with loaded:
            arrays = {k: loaded[k] for k in loaded.files}
        problems = [
            f"{what} {', '.join(map(repr, keys))}"
            for what, keys in (
                ("unknown input" + "s" * (len(arrays.keys() - set(names)) > 1), [k for k in arrays if k not in names]),
                ("missing", [n for n in names if n not in arrays]),
            )
            if keys
        ]
        if problems:
            raise CLIError(f"{path}: {'; '.join(problems)}; this model takes: {_describe_inputs(graph)}")
    tensors = []
    for v in graph.inputs:
        array = arrays[v.name]
        want = torch_dtype(v.type.dtype)
        try:
            t = torch.from_numpy(np.asarray(array, order="C"))  # ascontiguousarray would make a scalar [1]
        except TypeError:
            raise CLIError(f"input {v.name!r}: numpy dtype {array.dtype} is not supported") from None
        same_kind = t.dtype.is_floating_point == want.is_floating_point and (t.dtype == torch.bool) == (
            want == torch.bool
        )
        if t.dtype != want and not same_kind:
            raise CLIError(f"input {v.name!r}: expected {v.type.dtype} ({v.type}), got {array.dtype}")
        tensors.append(t.to(device=device, dtype=want))  # within a kind (float64 -> float32, int32 -> int64)
    return tuple(tensors)


def _as_tuple(outputs) -> tuple:
    import torch

    return (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)


def _flatten(result) -> list:
    """A model's output tensors in order: tensors, tuples/lists and dicts (a Hugging Face ModelOutput too)."""
    import torch

    if isinstance(result, torch.Tensor):
        return [result]
    if hasattr(result, "values") and callable(result.values):
        return [t for v in result.values() if v is not None for t in _flatten(v)]
    if isinstance(result, (list, tuple)):
        return [t for v in result for t in _flatten(v)]
    return []


def _stats(t) -> dict:
    x = t.detach().double()
    if x.numel() == 0:
        return {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
    return {
        "shape": list(t.shape),
        "dtype": str(t.dtype).removeprefix("torch."),
        "min": x.min().item(),
        "max": x.max().item(),
        "mean": x.mean().item(),
        "std": x.std().item() if x.numel() > 1 else 0.0,
    }
