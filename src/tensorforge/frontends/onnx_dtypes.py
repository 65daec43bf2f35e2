"""The ONNX element types the IR has a dtype for, both ways (TensorProto numbers, IR dtype names).

The IR names dtypes by strings and knows no framework; this table is the ONNX frontend's, shared by the importer,
its converters and the opaque-node runner (`onnx_opaque.py`).
"""

from __future__ import annotations

# IR dtype name -> ONNX TensorProto element type (the IR dtypes ONNX has)
ONNX_ELEMENT_TYPES: dict[str, int] = {
    "float32": 1,
    "uint8": 2,
    "int8": 3,
    "int16": 5,
    "int32": 6,
    "int64": 7,
    "bool": 9,
    "float16": 10,
    "float64": 11,
    "complex64": 14,
    "bfloat16": 16,
    "float8_e4m3fn": 17,  # FLOAT8E4M3FN: quantized tensors (QuantizeLinear / DequantizeLinear since opset 19)
}
IR_DTYPES: dict[int, str] = {v: k for k, v in ONNX_ELEMENT_TYPES.items()}
