"""ONNX op converters, one module per op family. Importing this package registers every converter.

`registry.py` holds the registry (`onnx_converter`), `context.py` what converters work with
(`Operand`, `OnnxContext`); the driver is `tensorforge/frontends/onnx.py`.
"""

from . import control, creation, elementwise, indexing, linalg, nn, quantize, recurrent, reduce, resize, shape  # noqa: F401
from .context import OnnxContext, Operand
from .registry import (
    OnnxConverter,
    Unsupported,
    lookup,
    mapped_versions,
    onnx_converter,
    onnx_op_table,
    registered_converters,
)

__all__ = [
    "onnx_converter",
    "Unsupported",
    "Operand",
    "OnnxContext",
    "OnnxConverter",
    "lookup",
    "mapped_versions",
    "registered_converters",
    "onnx_op_table",
]
