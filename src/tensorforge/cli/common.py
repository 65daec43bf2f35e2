"""What the command-line modules share: the program name, tolerances, exit codes and the error type."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

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


Number = TypeVar("Number", int, float)


def bounded(
    convert: Callable[[str], Number], expected: str, low: Number, high: Number | None = None
) -> Callable[[str], Number]:
    """An argparse type: `convert(text)` from `low` to `high` (no upper bound when None); otherwise an error that
    says what was expected (`expected`: "an integer", "a port number") or which range the value must be in."""

    def parse(text: str) -> Number:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            within = f"from {low} to {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {within}, got {value}")
        return value

    return parse
