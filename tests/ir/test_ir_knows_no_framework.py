"""The IR knows no source framework: onnx and onnxruntime belong to the ONNX frontend, which registers the `onnx.`
opaque namespace with the IR (frontends/onnx_opaque.py) the way the IR registers `torch.` itself."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import textwrap

import tensorforge

IR_DIR = pathlib.Path(tensorforge.__file__).parent / "ir"
FRAMEWORKS = ("onnx", "onnxruntime")


def _imported_modules(path: pathlib.Path) -> set[str]:
    """Every module a file imports, at any depth (an import inside a function counts too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_ir_file_imports_onnx_or_onnxruntime():
    offenders = {
        str(path.relative_to(IR_DIR)): sorted(m for m in _imported_modules(path) if m.split(".")[0] in FRAMEWORKS)
        for path in sorted(IR_DIR.rglob("*.py"))
    }
    assert not {k: v for k, v in offenders.items() if v}, "the IR imports a framework"


def test_the_ir_imports_and_runs_with_onnx_blocked():
    """With onnx and onnxruntime unimportable, tensorforge.ir imports, builds and runs a graph, and the `onnx.`
    namespace is still known (its resolver needs onnx only when such a node is read)."""
    code = textwrap.dedent("""
        import sys
        for name in ("onnx", "onnxruntime"):
            sys.modules[name] = None  # any import of them raises ImportError
        import torch
        import tensorforge.ir as ir
        from tensorforge.ir.registry import is_opaque

        graph = ir.Graph("g")
        x = graph.add_input("x", ir.TensorType("float32", (ir.Sym("batch"), 4)))
        graph.set_outputs(graph.add_node("nn.relu", [x]).outputs)
        print("ran", ir.execute(graph, -torch.ones(2, 4))[0].sum().item())
        print("onnx namespace", is_opaque("onnx.Hardmax"))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ran 0.0" in result.stdout and "onnx namespace True" in result.stdout
