"""What a compiled module looks like to Triton Inference Server: its tensors, their types and dims, its batching.

`signature_of(module)` reads the module's graph inputs and outputs and its plans:

- **Names**: the graph's input and output names, each made a plain tensor name (`[A-Za-z0-9_.-]`) and unique (a
  value returned twice gets a suffix), as `tensorforge run` names the arrays it writes.
- **Types**: each IR dtype as a numpy dtype (what PyTriton and tritonclient exchange) and a Triton type (`FP32`;
  `TYPE_FP32` in a config.pbtxt). A dtype numpy lacks (bfloat16, float8, complex) is refused by name: a Triton
  client could not send or read it.
- **Batching**: where every input and every output has the symbol `batch` as its first dimension and nowhere else,
  that dimension is Triton's batch (`max_batch_size > 0`, the dims leave it out) and requests can be concatenated
  along it and split back. Otherwise the model is served unbatched (`max_batch_size: 0`, whole shapes).
- **Dims**: a constant stays itself; any other symbolic size (`seq`, `height`, `seq - 1`) is -1. A tensor with no
  dims left (one value per row, or a scalar) is `[1]` to Triton, which requires at least one dim: requests carry
  it as `[n, 1]` (`[1]`), and the serving code drops and restores that axis (`TensorSpec.unit_dim`).
- **Batch sizes**: the largest batch defaults to the plans' (for each region, its largest plan; the smallest of
  those over the regions). Asking for more than the module can ever run is an error: above its `max_batch_size`
  option, the batch range the model declared, or the plans of a region saved without the weights to build more.
  The preferred batch sizes are the batch sizes the plans were built for (multi-engine mode 1 builds several), so
  the dynamic batcher forms batches that run on a plan made for them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ir.types import BATCH, TensorType, is_monomial, monomial

DEFAULT_MAX_BATCH_SIZE = 8  # a module with no batch-bound plan yet (built at first run) and no max_batch_size option

# IR dtype -> (numpy dtype, Triton's name); the IR dtypes that are missing have no numpy type
TRITON_DTYPES: dict[str, tuple[np.dtype, str]] = {
    "float64": (np.dtype(np.float64), "FP64"),
    "float32": (np.dtype(np.float32), "FP32"),
    "float16": (np.dtype(np.float16), "FP16"),
    "int64": (np.dtype(np.int64), "INT64"),
    "int32": (np.dtype(np.int32), "INT32"),
    "int16": (np.dtype(np.int16), "INT16"),
    "int8": (np.dtype(np.int8), "INT8"),
    "uint8": (np.dtype(np.uint8), "UINT8"),
    "bool": (np.dtype(np.bool_), "BOOL"),
}

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as Triton sees it."""

    name: str  # the Triton tensor name
    graph_name: str  # the graph value's name (the module's own)
    dtype: str  # IR dtype name
    numpy_dtype: np.dtype
    triton_dtype: str  # "FP32" (tritonclient's spelling; config.pbtxt writes TYPE_FP32)
    dims: tuple[int, ...]  # without the batch dimension when batching; -1 for a dynamic size; never empty
    unit_dim: bool  # the module's tensor has no dims past the batch: Triton's trailing dim of 1 is dropped/restored

    @property
    def config_dtype(self) -> str:
        return f"TYPE_{self.triton_dtype}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "graph_name": self.graph_name,
            "datatype": self.triton_dtype,
            "dims": list(self.dims),
        }


@dataclass(frozen=True)
class TritonSignature:
    """A module's tensors and batching, as served by Triton (see the module docstring)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batching: bool  # the first dimension of every tensor is the batch, which Triton may batch over
    max_batch_size: int  # Triton's max_batch_size: 0 when not batching
    preferred_batch_sizes: tuple[int, ...]  # the batch sizes of the plans, up to max_batch_size

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": [s.to_json() for s in self.outputs],
            "batching": self.batching,
            "max_batch_size": self.max_batch_size,
            "preferred_batch_sizes": list(self.preferred_batch_sizes),
        }

    def describe(self) -> str:
        def one(s: TensorSpec) -> str:
            dims = ",".join(str(d) for d in s.dims)
            return f"{s.name} {s.triton_dtype}[{'-1,' if self.batching else ''}{dims}]"

        batching = (
            f"max_batch_size {self.max_batch_size}, preferred {list(self.preferred_batch_sizes) or 'none'}"
            if self.batching
            else "no batching (the batch is not the first dimension of every tensor)"
        )
        return (
            f"inputs {', '.join(one(s) for s in self.inputs)}; outputs {', '.join(one(s) for s in self.outputs)}; "
            f"{batching}"
        )


def tensor_names(names: list[str], prefix: str) -> list[str]:
    """Plain (`[A-Za-z0-9_.-]`, no leading dot) and unique tensor names, in order."""
    out: list[str] = []
    for i, name in enumerate(names):
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or f"{prefix}_{i}"
        if safe in out:
            safe = f"{safe}_{i}"
        out.append(safe)
    return out


def model_name_of(path: str | os.PathLike) -> str:
    """The Triton model name a `.tforge` file is served under by default: its file name without `.tforge`, made
    plain (`tensor_names`' rule), "model" where nothing is left."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(path).removesuffix(".tforge")).strip(".") or "model"


def check_model_name(name: str) -> str:
    """A Triton model name: a repository directory name too, so plain characters only and not `.`/`..`."""
    if not _NAME.match(name) or name in (".", ".."):
        raise ValueError(f"model name {name!r}: use letters, digits, '_', '.' and '-' only")
    return name


def _is_batch(dim: object) -> bool:
    return is_monomial(dim) and monomial(dim, "") == (BATCH, 1)


def _mentions_batch(dim: object) -> bool:
    return not isinstance(dim, int) and BATCH in getattr(dim, "free_symbols", ())


def _batched(types: list[TensorType]) -> bool:
    return all(
        t.rank >= 1 and _is_batch(t.shape[0]) and not any(_mentions_batch(d) for d in t.shape[1:]) for t in types
    )


def _spec(name: str, graph_name: str, t: TensorType, batching: bool, role: str) -> TensorSpec:
    if t.dtype not in TRITON_DTYPES:
        raise ValueError(
            f"{role} {graph_name!r} is {t.dtype}, which Triton clients cannot exchange as numpy arrays (served "
            f"dtypes: {', '.join(TRITON_DTYPES)}); cast it in the model (e.g. return the output as float32)"
        )
    np_dtype, triton = TRITON_DTYPES[t.dtype]
    rest = t.shape[1:] if batching else t.shape
    dims = tuple(d if isinstance(d, int) else -1 for d in rest)
    return TensorSpec(name, graph_name, t.dtype, np_dtype, triton, dims or (1,), unit_dim=not dims)


def plan_batch_sizes(module) -> tuple[dict[str, list[int]], frozenset[str]]:
    """Per region, the largest batch of each of its plans (regions whose plans do not bind `batch` left out), and
    the regions the module holds no weights for (they cannot build a plan for a larger batch)."""
    sizes: dict[str, list[int]] = {}
    for region, plans in module.plans().items():
        batches = sorted({p.profile.max_env[BATCH] for p in plans if BATCH in p.profile.symbols})
        if batches:
            sizes[region] = batches
    return sizes, frozenset(getattr(module, "_weightless", frozenset()))


def signature_of(module, max_batch_size: int | None = None) -> TritonSignature:
    """The Triton signature of a tensorforge `Module` (see the module docstring). `max_batch_size` overrides the
    largest batch the plans give; it must fit the module's `max_batch_size` option and, for regions saved without
    their weights, their plans."""
    graph = module.graph
    if graph is None:
        raise ValueError("this module is empty: load a saved module (tensorforge.load) first")
    in_types = [v.type for v in graph.inputs]
    out_types = [v.type for v in graph.outputs]
    batching = bool(in_types) and _batched(in_types + out_types)
    in_names = tensor_names([v.name for v in graph.inputs], "input")
    out_names = tensor_names([v.name for v in graph.outputs], "output")
    inputs = tuple(_spec(n, v.name, v.type, batching, "input") for n, v in zip(in_names, graph.inputs))
    outputs = tuple(_spec(n, v.name, v.type, batching, "output") for n, v in zip(out_names, graph.outputs))
    if not batching:
        if max_batch_size not in (None, 0):
            raise ValueError(
                f"max_batch_size {max_batch_size}: this model cannot be batched by Triton, because not every input "
                f"and output has the batch as its first dimension ({_shapes(graph)})"
            )
        return TritonSignature(inputs, outputs, False, 0, ())

    sizes, weightless = plan_batch_sizes(module)
    option = module.options.max_batch_size
    # the largest batch every region runs without building: its largest plan (regions that build at first run
    # do not bound it)
    planned = min((max(b) for b in sizes.values()), default=None)
    # what the module can never run above: its max_batch_size option, the batch range the model declared
    # (torch.export's Dim), and the plans of regions saved without the weights to build larger ones
    limits: dict[str, int] = {}
    if option is not None:
        limits["option"] = option
    declared = graph.symbol_ranges.get(BATCH, (1, None))[1]
    if declared is not None:
        limits["declared"] = declared
    fixed = [max(sizes[r]) for r in weightless if r in sizes]
    if fixed:
        limits["plans"] = min(fixed)
    if max_batch_size is None:
        bounds = [x for x in (planned, *limits.values()) if x is not None]
        chosen = min(bounds) if bounds else DEFAULT_MAX_BATCH_SIZE
    else:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if limits and max_batch_size > min(limits.values()):
            why = {
                "option": f"the module's max_batch_size option is {limits.get('option')}",
                "declared": f"the model declares batch sizes up to {limits.get('declared')}",
                "plans": f"its plans run batches up to {limits.get('plans')} and the file has no weights to build "
                "larger ones (save it with module.save(path, rebuildable=True), or build its plans for the larger "
                "batch)",
            }[min(limits, key=lambda k: limits[k])]
            raise ValueError(f"max_batch_size {max_batch_size} is above what this module can run: {why}")
        chosen = max_batch_size
    preferred = tuple(sorted({b for bs in sizes.values() for b in bs if b <= chosen}))
    return TritonSignature(inputs, outputs, True, chosen, preferred)


def _shapes(graph) -> str:
    ins = ", ".join(f"{v.name}: {v.type}" for v in graph.inputs)
    outs = ", ".join(f"{v.name}: {v.type}" for v in graph.outputs)
    return f"inputs {ins}; outputs {outs}"
