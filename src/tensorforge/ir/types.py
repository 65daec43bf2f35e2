"""Tensor types of the IR: a dtype name and a shape whose dimensions are ints or symbolic sizes.

Dtypes are named by strings ("float32", "int64", ...) so graphs serialize to plain JSON.
A symbolic dimension is a `SymExpr` (symbolic.py): an integer expression over named sizes (`batch`,
`12*batch`, `seq - 1`, `batch*seq`). A dimension that is constant is always a plain int, so static shapes
are exactly what they were before symbolic sizes existed. `Sym(symbol, scale)` builds `scale*symbol`, the
only form earlier versions had (and still the one every frontend and engine path produces).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, TypeGuard

import torch

from .symbolic import SymExpr

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
    "float8_e4m3fn": torch.float8_e4m3fn,  # a storage type of quantized tensors (no arithmetic): see ops/quantize.py
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
    "float8_e4m3fn": "f8e4m3",
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


def _sym(symbol: str, scale: int = 1) -> SymExpr:
    if not isinstance(symbol, str) or not symbol.isidentifier():
        raise ValueError(f"symbol name must be an identifier, got {symbol!r}")
    if type(scale) is not int or scale < 1:
        raise ValueError(f"symbolic dimension scale must be an int >= 1, got {scale!r}")
    return scale * SymExpr.symbol(symbol)


if TYPE_CHECKING:

    def Sym(symbol: str, scale: int = 1) -> SymExpr:  # noqa: N802 - kept with its class-era name
        """`scale * symbol` as a `SymExpr`, e.g. Sym("batch") or Sym("batch", 12)."""
        ...

else:

    class _SymMeta(type):
        # `isinstance(d, Sym)`, as user code wrote it when Sym was a class, still asks "is d a symbolic size?"
        def __instancecheck__(cls, instance: object) -> bool:
            return isinstance(instance, SymExpr)

    class Sym(metaclass=_SymMeta):
        """`scale * symbol` as a `SymExpr`, e.g. Sym("batch") or Sym("batch", 12): the constructor kept from when
        a symbolic dimension could only be that (issue 14); `isinstance(x, Sym)` means `isinstance(x, SymExpr)`."""

        def __new__(cls, symbol: str, scale: int = 1) -> SymExpr:
            return _sym(symbol, scale)


def monomial(dim: SymExpr, where: str) -> tuple[str, int]:
    """(symbol, scale) of a size `scale*symbol` (scale >= 1), the only symbolic form `where` handles so far;
    any other expression is a ValueError naming `where` and the expression."""
    if len(dim.terms) == 1:
        (mono, coeff) = dim.terms[0]
        if coeff >= 1 and len(mono) == 1 and mono[0][1] == 1 and isinstance(mono[0][0], str):
            return mono[0][0], coeff
    raise ValueError(
        f"{where}: the symbolic size {dim} is not a multiple of one symbol (k*symbol), the only symbolic "
        f"form handled here so far (dynamic shapes, issue 14)"
    )


def is_monomial(dim: object) -> TypeGuard[SymExpr]:
    """Whether `dim` is a symbolic size `scale*symbol` with scale >= 1 (what `Sym(symbol, scale)` builds)."""
    if not isinstance(dim, SymExpr) or len(dim.terms) != 1:
        return False
    (mono, coeff) = dim.terms[0]
    return coeff >= 1 and len(mono) == 1 and mono[0][1] == 1 and isinstance(mono[0][0], str)


def as_dim(value: int | SymExpr) -> int | SymExpr:
    """A dimension in its normal form: a constant expression becomes its int."""
    return value.constant if isinstance(value, SymExpr) and value.is_constant else value


Dim: TypeAlias = int | SymExpr
# What a node attribute holds once canonical (`registry.canonical_attr`): JSON-able scalars and strings, symbolic
# sizes, dtype names, and tuples and string-keyed dicts of these.
AttrValue: TypeAlias = None | bool | int | float | str | SymExpr | tuple["AttrValue", ...] | dict[str, "AttrValue"]


def bind_dim(dim: Dim, env: Mapping[str, int]) -> int:
    return dim.bind(env) if isinstance(dim, SymExpr) else dim


def bind_value(value: Any, env: Mapping[str, int]) -> Any:
    """Replace every symbolic size inside an attribute value (nested tuples too) by its bound size."""
    if isinstance(value, SymExpr):
        return value.bind(env)
    if isinstance(value, tuple):
        return tuple(bind_value(v, env) for v in value)
    if isinstance(value, dict):
        return {k: bind_value(v, env) for k, v in value.items()}
    return value


def contains_sym(value: object) -> bool:
    if isinstance(value, SymExpr):
        return True
    if isinstance(value, tuple):
        return any(contains_sym(v) for v in value)
    return False


@dataclass(frozen=True)
class TensorType:
    """dtype (an IR dtype name) and shape (ints and symbolic sizes; a constant size is always stored as an int)."""

    dtype: str
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        shape = tuple(as_dim(d) if isinstance(d, SymExpr) else d for d in self.shape)
        for d in shape:
            if not isinstance(d, SymExpr) and not (isinstance(d, int) and not isinstance(d, bool) and d >= 0):
                raise ValueError(f"dimension must be a non-negative int or Sym (a SymExpr), got {d!r} in {shape}")
        object.__setattr__(self, "shape", shape)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return not any(isinstance(d, SymExpr) for d in self.shape)

    @property
    def symbols(self) -> set[str]:
        return {s for d in self.shape if isinstance(d, SymExpr) for s in d.free_symbols}

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
