"""Tensor types of the IR: a dtype name and a shape whose dimensions are ints or symbols.

Dtypes are named by strings ("float32", "int64", ...) so graphs serialize to plain JSON.
A symbolic dimension is a `Sym`: a named size (usually `BATCH`, "batch") times an integer scale, which is
enough for the shapes real models produce from a dynamic batch (batch, 12*batch for the heads of
attention, 128*batch once tokens are flattened).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch

DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
    "complex64": torch.complex64,
}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_SHORT = {
    "float64": "f64",
    "float32": "f32",
    "float16": "f16",
    "bfloat16": "bf16",
    "int64": "i64",
    "int32": "i32",
    "int16": "i16",
    "int8": "i8",
    "uint8": "u8",
    "bool": "bool",
    "complex64": "c64",
}
# The IR's shared vocabulary: test a dtype name or a symbol against these, never against a literal set of its own.
FLOAT_DTYPES = frozenset({"float64", "float32", "float16", "bfloat16"})
HALF_DTYPES = frozenset({"float16", "bfloat16"})  # the 16-bit floats reduced precision (fp16 / bf16) runs in
# the floats GPU kernels (cuDNN, cuBLAS, Triton) take; float64 layers run through their reference implementation
GPU_FLOAT_DTYPES = frozenset({"float32"}) | HALF_DTYPES
BATCH = "batch"  # the symbol of the batch dimension: the one symbol a plan binds (to its max_batch) and runs over


def dtype_name(dtype: torch.dtype | str) -> str:
    """Canonical IR name of a torch dtype (or check an IR name)."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; known: {sorted(DTYPES)}")
        return dtype
    try:
        return _DTYPE_NAMES[dtype]
    except KeyError:
        raise ValueError(f"tensorforge has no IR dtype for {dtype}") from None


def torch_dtype(name: str) -> torch.dtype:
    return DTYPES[dtype_name(name)]


@dataclass(frozen=True, order=True)
class Sym:
    """A symbolic dimension: `scale * <symbol>`, e.g. Sym("batch") or Sym("batch", 12)."""

    symbol: str
    scale: int = 1

    def __post_init__(self) -> None:
        if not self.symbol.isidentifier():
            raise ValueError(f"symbol name must be an identifier, got {self.symbol!r}")
        if self.scale < 1:
            raise ValueError(f"symbolic dimension scale must be >= 1, got {self.scale}")

    def __str__(self) -> str:
        return self.symbol if self.scale == 1 else f"{self.scale}*{self.symbol}"

    def bind(self, env: Mapping[str, int]) -> int:
        try:
            return self.scale * env[self.symbol]
        except KeyError:
            raise ValueError(f"symbolic dimension {self} is not bound; bound: {env}") from None


Dim: TypeAlias = int | Sym
# What a node attribute holds once canonical (`registry.canonical_attr`): JSON-able scalars and strings, symbolic
# sizes, dtype names, and tuples and string-keyed dicts of these.
AttrValue: TypeAlias = None | bool | int | float | str | Sym | tuple["AttrValue", ...] | dict[str, "AttrValue"]


def bind_dim(dim: Dim, env: Mapping[str, int]) -> int:
    return dim.bind(env) if isinstance(dim, Sym) else dim


def bind_value(value: Any, env: Mapping[str, int]) -> Any:
    """Replace every Sym inside an attribute value (nested tuples too) by its bound size."""
    if isinstance(value, Sym):
        return value.bind(env)
    if isinstance(value, tuple):
        return tuple(bind_value(v, env) for v in value)
    if isinstance(value, dict):
        return {k: bind_value(v, env) for k, v in value.items()}
    return value


def contains_sym(value: object) -> bool:
    if isinstance(value, Sym):
        return True
    if isinstance(value, tuple):
        return any(contains_sym(v) for v in value)
    return False


@dataclass(frozen=True)
class TensorType:
    """dtype (an IR dtype name) and shape (ints and `Sym`s)."""

    dtype: str
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        shape = tuple(self.shape)
        for d in shape:
            if not isinstance(d, Sym) and not (isinstance(d, int) and not isinstance(d, bool) and d >= 0):
                raise ValueError(f"dimension must be a non-negative int or Sym, got {d!r} in {shape}")
        object.__setattr__(self, "shape", shape)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return not any(isinstance(d, Sym) for d in self.shape)

    @property
    def symbols(self) -> set[str]:
        return {d.symbol for d in self.shape if isinstance(d, Sym)}

    def concrete_shape(self, env: Mapping[str, int] | None = None) -> tuple[int, ...]:
        return tuple(bind_dim(d, env or {}) for d in self.shape)

    def numel(self, env: Mapping[str, int] | None = None) -> int:
        n = 1
        for d in self.concrete_shape(env):
            n *= d
        return n

    def nbytes(self, env: Mapping[str, int] | None = None) -> int:
        return self.numel(env) * torch.empty((), dtype=torch_dtype(self.dtype)).element_size()

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch_dtype(self.dtype)

    @staticmethod
    def of(tensor: torch.Tensor) -> TensorType:
        return TensorType(dtype_name(tensor.dtype), tuple(int(s) for s in tensor.shape))

    def __str__(self) -> str:
        return f"{_SHORT[self.dtype]}[{','.join(str(d) for d in self.shape)}]"
