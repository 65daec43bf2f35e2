"""What the command-line modules share: the program name, tolerances, exit codes and the error type."""

from __future__ import annotations

PROG = "tensorforge"
# Error allowed between a tensorforge module and its source framework, relative to the largest reference
# magnitude (max |actual - expected| / max |expected|), by the precision the module was built for. "tf32":
# float32 on a CUDA device with TF32 matrix products allowed (10-bit mantissa, float32 accumulation).
TOLERANCES = {"fp32": 1e-4, "tf32": 5e-3, "fp16": 2e-2, "bf16": 5e-2}
COMPARE_METHODS = ("eager", "compile", "onnxruntime")
EXIT_ERROR, EXIT_USAGE, EXIT_MISMATCH = 1, 2, 3
DEFAULT_SEQ_LEN = 128  # other symbolic dimensions than the batch (ONNX inputs, synthetic inputs)


class CLIError(Exception):
    """A mistake the user can fix: printed as one line, no traceback."""
