"""The op tables must keep up with the registry: every registered op has a case, fp32 where it takes floats,
and the main ops also run in fp16 and bf16. A new op without a test fails here, by name."""

import importlib
from pathlib import Path

import torch

from tensorforge.ir import registered_ops

TABLES = [
    "test_quantize",
    "test_elementwise",
    "test_nn",
    "test_linalg",
    "test_attention",
    "test_reduce",
    "test_shape",
    "test_indexing",
    "test_creation",
]

# ops that cannot be a one-node table row, and the test file that covers them instead
TESTED_ELSEWHERE = {"subgraph": "tests/ir/test_subgraph.py"}

# ops that take no float data at all
NO_FLOAT_CASE = {"logical_not", "logical_and", "logical_or", "logical_xor"}

MAIN_OPS = [
    "nn.conv2d",
    "nn.dense",
    "matmul",
    "nn.softmax",
    "nn.layer_norm",
    "nn.gelu",
    "add",
    "nn.scaled_dot_product_attention",
]


def _ir_ops() -> set[str]:
    """The IR's own op set: ops declared in tensorforge.ir (engine-internal fused ops are tested by the engine's
    tests; ops that tests or plugins register are not part of the IR)."""
    return {name for name, d in registered_ops().items() if d.compute.__module__.startswith("tensorforge.ir.")}


def _cases():
    for name in TABLES:
        for param in importlib.import_module(name).CASES:
            yield param.values[0]


def _float_dtypes(case) -> set[torch.dtype]:
    """The dtypes of a case's float data: its inputs, or its result for ops without inputs."""
    tensors = case.inputs() or [torch.as_tensor(case.expected())]
    return {t.dtype for t in tensors if t.is_floating_point()}


def test_every_registered_op_has_a_case():
    covered = {c.op for c in _cases()}
    missing = sorted(_ir_ops() - covered - set(TESTED_ELSEWHERE))
    assert not missing, f"registered IR ops without a test case: {missing}"


def test_ops_tested_elsewhere_really_are():
    root = Path(__file__).resolve().parents[2]
    for op, path in TESTED_ELSEWHERE.items():
        assert op in registered_ops(), f"{op} is no longer registered; drop it from TESTED_ELSEWHERE"
        assert f'"{op}"' in (root / path).read_text(), f"{path} does not build a {op!r} node"


def test_cases_name_only_registered_ops():
    unknown = sorted({c.op for c in _cases()} - set(registered_ops()))
    assert not unknown, f"cases for ops the registry does not know: {unknown}"


def test_every_float_op_has_an_fp32_case():
    fp32 = {c.op for c in _cases() if torch.float32 in _float_dtypes(c)}
    missing = sorted(_ir_ops() - fp32 - NO_FLOAT_CASE - set(TESTED_ELSEWHERE))
    assert not missing, f"ops without a float32 case: {missing}"


def test_main_ops_run_in_reduced_precision():
    seen = {(c.op, dt) for c in _cases() for dt in _float_dtypes(c)}
    missing = [f"{op} {dt}" for op in MAIN_OPS for dt in (torch.float16, torch.bfloat16) if (op, dt) not in seen]
    assert not missing, f"main ops without a reduced-precision case: {missing}"
