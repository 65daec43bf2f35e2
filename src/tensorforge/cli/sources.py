"""Where a model comes from (a zoo name, an .onnx file, a saved .tforge), the shapes it is built for (--batch, or
trtexec's --shapes / --min-shapes --opt-shapes --max-shapes) and the arrays fed to it and read from it."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, TypeAlias

from .common import DEFAULT_SEQ_LEN, PROG, CLIError

Shape: TypeAlias = tuple[int, ...]
# TensorRT's per-input profile: input name -> (min shape, opt shape, max shape)
InputProfile: TypeAlias = dict[str, tuple[Shape, Shape, Shape]]

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


def _to_graph(source: Source, seq_len: int | None, spec: InputProfile | None = None):
    """The source model as a graph. An ONNX model's symbolic sizes: without shape flags, --seq-len sizes every one
    but the leading (batch) dimension; with --shapes the named inputs are pinned to their shape; with
    --min/--opt/--max-shapes nothing is pinned (the profile gives the symbols their ranges)."""
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
    if spec is None:
        pins = _onnx_input_shapes(source.name, seq_len)
    else:
        pins = {name: opt for name, (lo, opt, hi) in spec.items() if lo == opt == hi}
        pins = pins if len(pins) == len(spec) else {}  # a range: leave every size to the profile
    return from_onnx(source.name, input_shapes=pins)


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
    quantized = "int8" if args.int8 else "fp8" if args.fp8 else None
    return quantized or _precision(args.fp16, args.bf16, not args.no_tf32, device)


def _quantized_graph(graph, args):
    """`graph` with Q/DQ pairs when --int8/--fp8 asks (scales from --calib, or from a fitting --calib-cache)."""
    from ..quantization import CalibrationCacheError, CalibrationDataError, load_calibration_files, quantize

    precision = "int8" if args.int8 else "fp8" if args.fp8 else None
    if precision is None:
        if any(v is not None for v in (args.calib, args.calib_cache, args.calib_method, args.error_budget)):
            raise CLIError("--calib, --calib-method, --calib-cache and --error-budget go with --int8 or --fp8")
        return graph
    cached = args.calib_cache is not None and os.path.exists(args.calib_cache)
    if args.calib is None and not cached:
        raise CLIError(
            f"--{precision} needs calibration inputs: --calib DIR_OR_NPZ (an .npz keyed by input name, or a "
            f"directory of them), or a --calib-cache file that exists"
        )
    try:
        batches = load_calibration_files(args.calib) if args.calib is not None else None
        return quantize(
            graph,
            batches,
            precision=precision,
            method=args.calib_method,
            cache=args.calib_cache,
            error_budget=args.error_budget,
        )
    except (CalibrationDataError, CalibrationCacheError, ValueError) as exc:
        raise CLIError(str(exc)) from None


def _runtime_options(args):
    """The options the model options on the command line ask for (each checked by RuntimeOptions/BuilderConfig)."""
    from ..runtime import RuntimeOptions

    spec = shape_profile(args)
    return RuntimeOptions().replace(
        profiles=None if spec is None else [spec],
        fp16=args.fp16 or args.int8 or args.fp8,  # what quantization leaves out runs in fp16, as compile() does
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
    """Convert, partition (explicit batch unless --implicit-batch), build every plan for `batch` (with shape flags:
    for the profile's largest batch). Returns (module, seconds per stage). A progress bar on stderr follows the
    stages and regions."""
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
        graph = _to_graph(source, args.seq_len, shape_profile(args))
        batch = _build_batch(graph, source, args, batch)  # the shape flags are checked before anything is built
        graph = _quantized_graph(graph, args)
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
            # one region at a time (build_all does the same) so the bar can follow the build; with shape flags it
            # builds the declared profile
            module.build_region(name, batch)
            bar.update()
        stages["build_s"] = time.perf_counter() - start
    finally:
        bar.close()
    return module, stages


# -- shapes (trtexec's flags) -------------------------------------------------------------------------

RANGE_FLAGS = ("--min-shapes", "--opt-shapes", "--max-shapes")
SHAPE_EXAMPLE = "input_ids:1x128,attention_mask:1x128"


def parse_shapes(text: str) -> dict[str, Shape]:
    """`name:1x3x224x224,other:1x128` (trtexec's spelling) -> {name: (1, 3, 224, 224), other: (1, 128)}. A name
    may hold ':' itself (`input:0:1x3`): the sizes follow the last one. A ValueError names the bad token, its
    input and what is expected."""
    shapes: dict[str, Shape] = {}
    if not text.strip():
        raise ValueError(f"expected NAME:SIZES for each input, comma-separated, e.g. {SHAPE_EXAMPLE}; got nothing")
    for token in text.split(","):
        token = token.strip()
        name, colon, sizes = token.rpartition(":")
        if not colon or not name:
            raise ValueError(
                f"token {token!r}: expected NAME:SIZES, an input name and its sizes joined by 'x' (e.g. x:1x3x224x224)"
            )
        dims = []
        for size in sizes.split("x"):
            if not (size.strip().isascii() and size.strip().isdigit()):
                raise ValueError(
                    f"token {token!r}: input {name!r} has {size.strip()!r} where a size (a non-negative integer) "
                    f"is expected; write the sizes joined by 'x', e.g. {name}:1x3x224x224"
                )
            dims.append(int(size))
        if name in shapes:
            raise ValueError(f"token {token!r}: input {name!r} is given twice")
        shapes[name] = tuple(dims)
    return shapes


def _shapes_arg(text: str) -> dict[str, Shape]:
    """argparse type of the shape flags: a bad token is a usage error naming it."""
    import argparse

    try:
        return parse_shapes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def shape_profile(args) -> InputProfile | None:
    """The profile the shape flags ask for, in TensorRT's per-input spelling `{name: (min, opt, max)}`; None
    without shape flags (--batch then decides, as before). --shapes is one fixed shape (min = opt = max);
    --min-shapes, --opt-shapes and --max-shapes come together and name the same inputs. Neither goes with
    --batch: a shape's leading size is the batch."""
    from ..ir.profile import ProfileError
    from ..runtime.options import InputShapes

    fixed = getattr(args, "shapes", None)
    ranged: dict[str, dict[str, Shape] | None] = {
        flag: getattr(args, flag[2:].replace("-", "_"), None) for flag in RANGE_FLAGS
    }
    given = [flag for flag, value in ranged.items() if value is not None]
    if fixed is None and not given:
        return None
    if fixed is not None and given:
        raise CLIError(
            f"--shapes gives one fixed shape and {'/'.join(given)} a range: use --shapes alone, or all of "
            f"{', '.join(RANGE_FLAGS)}"
        )
    used = "--shapes" if fixed is not None else "/".join(RANGE_FLAGS)
    if getattr(args, "batch_given", False):
        raise CLIError(
            f"--batch and {used} both size the batch: drop --batch (the leading size of each shape is its batch), "
            f"or drop {used} for a batch-only profile"
        )
    if fixed is not None:
        spec: InputProfile = {name: (shape, shape, shape) for name, shape in fixed.items()}
    else:
        missing = [flag for flag in RANGE_FLAGS if ranged[flag] is None]
        if missing:
            raise CLIError(
                f"{', '.join(given)} without {', '.join(missing)}: give all three of {', '.join(RANGE_FLAGS)} "
                f"(or --shapes for one fixed shape)"
            )
        lo, opt, hi = (ranged[flag] or {} for flag in RANGE_FLAGS)  # all three given
        for flag, shapes in zip(RANGE_FLAGS, (lo, opt, hi)):
            for name in opt:
                if name not in shapes:
                    raise CLIError(f"input {name!r} has no shape in {flag}: name every input in all three flags")
            for name in shapes:
                if name not in opt:
                    raise CLIError(f"input {name!r} of {flag} has no shape in --opt-shapes: name it in all three")
        spec = {name: (lo[name], opt[name], hi[name]) for name in opt}
    try:
        InputShapes.of(spec)  # ranks agree and min <= opt <= max on every axis
    except ProfileError as exc:
        raise CLIError(f"{used}: {exc}") from None
    return spec


def _describe_profile(spec: InputProfile) -> str:
    """`x 1x3x224x224`, or `ids 1x8..32x512 (opt 8x128)` for a range, per input."""
    from ..runtime.options import InputShapes

    if all(lo == hi for lo, _, hi in spec.values()):
        return ", ".join(f"{name} {'x'.join(map(str, opt))}" for name, (_, opt, _) in spec.items())
    return InputShapes.of(spec).describe()


def _profile_of(graph, source: Source, spec: InputProfile):
    """The ranges per symbol the shape flags give this graph's inputs; a CLIError says what disagrees."""
    from ..ir.profile import ProfileError
    from ..runtime import RuntimeOptions
    from ..runtime.options import InputShapes, resolve_profiles

    try:
        options = RuntimeOptions(profiles=(InputShapes.of(spec),))
        (profile,) = resolve_profiles(options, {v.name: v.type.shape for v in graph.inputs})
    except ProfileError as exc:
        hint = " (a zoo model's other sizes follow --image-size and --seq-len)" if source.kind == "zoo" else ""
        raise CLIError(
            f"the shape flags do not fit {source.name}: {exc}{hint}; its inputs: {_describe_inputs(graph)}"
        ) from None
    return profile


# -- inputs and outputs ------------------------------------------------------------------------------


def _input_symbols(graph) -> set[str]:
    from ..ir.symbolic import SymExpr

    return {s for v in graph.inputs for d in v.type.shape if isinstance(d, SymExpr) for s in d.free_symbols}


def _example_env(graph, source: Source, args, batch: int | None = None) -> dict[str, int]:
    """The size of every symbol of the graph's inputs, for example inputs: the profile's opt with shape flags;
    else `batch` (default --batch) for the batch symbol and --seq-len (default 128) for any other."""
    from ..ir.types import BATCH

    spec = shape_profile(args)
    if spec is not None:
        return _profile_of(graph, source, spec).opt_env
    batch = batch if batch is not None else args.batch or 1
    seq_len = args.seq_len or DEFAULT_SEQ_LEN
    return {s: batch if s == BATCH else seq_len for s in _input_symbols(graph)}


def _sizes(value, env: dict[str, int]) -> tuple[int, ...]:
    from ..ir.symbolic import SymExpr

    return tuple(d.bind(env) if isinstance(d, SymExpr) else d for d in value.type.shape)


def _synthetic_inputs(graph, env: dict[str, int], device, seed: int = 0) -> tuple:
    """Inputs for a graph from its input types, every symbol sized by `env`: floats from a normal distribution,
    integers and booleans 1 (a valid token id and an all-ones attention mask)."""
    import torch

    from ..ir.types import torch_dtype

    gen = torch.Generator().manual_seed(seed)
    out = []
    for v in graph.inputs:
        dtype = torch_dtype(v.type.dtype)
        shape = _sizes(v, env)
        t = torch.randn(shape, generator=gen).to(dtype) if dtype.is_floating_point else torch.ones(shape, dtype=dtype)
        out.append(t.to(device))
    return tuple(out)


def _build_batch(graph, source: Source, args, batch: int | None = None) -> int:
    """The batch plans are built for: the shape flags' largest, else `batch` (default --batch, else 1)."""
    from ..ir.types import BATCH

    spec = shape_profile(args)
    if spec is not None:
        return _profile_of(graph, source, spec).max_env.get(BATCH, 1)
    return batch if batch is not None else args.batch or 1


def _run_batch(env: dict[str, int], args) -> int:
    """The batch of one call at `env` (items per call, for throughput): its batch symbol; for a graph without one,
    the leading opt size of the first shape given by the flags, else --batch."""
    from ..ir.types import BATCH

    if BATCH in env:
        return env[BATCH]
    spec = shape_profile(args)
    if spec is not None:
        _, opt, _ = next(iter(spec.values()))
        return opt[0] if opt else 1
    return args.batch or 1


def _shapes_summary(args) -> dict[str, list[list[int]]] | None:
    """The shape flags' profile as JSON for a command's report (None without them)."""
    spec = shape_profile(args)
    return None if spec is None else {name: [list(shape) for shape in three] for name, three in spec.items()}


def _source_inputs(source: Source, graph, env: dict[str, int], device) -> tuple:
    """Example inputs at the sizes of `env` (`_example_env`): a zoo model's own (its other sizes were checked
    against the profile), else synthetic ones."""
    from ..ir.types import BATCH

    if source.kind == "zoo":
        return tuple(t.to(device) for t in source.zoo.inputs(env.get(BATCH, 1)))
    return _synthetic_inputs(graph, env, device)


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
