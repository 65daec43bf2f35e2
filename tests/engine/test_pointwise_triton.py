"""Generated Triton kernels for engine.pointwise: every case of pointwise_kernel_cases.py under Triton's CPU
interpreter (a subprocess: TRITON_INTERPRET must be set before triton is imported), the same kernels compiled
for sm_90 by Triton's real compiler (no GPU needed), refusals with reasons, the source cache, tactic
registration, and — on a GPU — the cases on CUDA and plans choosing the Triton tactic."""

from __future__ import annotations

import inspect

import pytest
import torch

from engine_helpers import compile_for_sm90, interpreted_cases
from pointwise_kernel_cases import CASES, chain, run_cases
from tensorforge import ir
from tensorforge.engine import Builder, BuilderConfig
from tensorforge.engine.pointwise import FUSED_OPS, POINTWISE_OPS
from tensorforge.engine.tactics import candidates
from tensorforge.engine.tactics import pointwise_triton as pt
from tensorforge.engine.tactics.pointwise_codegen import GENERATED_OPS
from tensorforge.ir import Graph, Sym, TensorType

pytest.importorskip("triton")
CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def interpreted():
    """{case: None or the problem}, from one interpreter run of every case on CPU tensors."""
    return interpreted_cases("pointwise_kernel_cases.py")


@pytest.mark.parametrize("case", list(CASES))
def test_kernel_under_the_interpreter(interpreted, case):
    assert interpreted[case] is None, interpreted[case]


_POINTERS = {
    "float32": "*fp32",
    "float16": "*fp16",
    "bfloat16": "*bf16",
    "int64": "*i64",
    "int32": "*i32",
    "int16": "*i16",
    "int8": "*i8",
    "uint8": "*u8",
    "bool": "*i1",
}


@pytest.mark.parametrize("case", list(CASES))
def test_kernels_compile_for_sm90(case):
    """The interpreter runs Python semantics; the real compiler checks types and lowering too."""
    graph, _ = CASES[case][0]()
    (node,) = graph.nodes
    lay = pt.node_layout(node)
    module = pt.load_module(lay.source)
    types = [v.type.dtype for v in node.inputs] + [v.type.dtype for v in node.outputs]
    for name in ("fast", "strided"):
        kernel = getattr(module, name)
        params = list(inspect.signature(kernel.fn).parameters)
        signature = {p: "constexpr" if p in ("BLOCK", "INDEX_64") else "i32" for p in params}
        signature.update({p: _POINTERS[t] for p, t in zip(params, types)})
        assert compile_for_sm90(kernel, signature, {"BLOCK": 1024, "INDEX_64": False}).asm["cubin"], name


def _node(program, outputs, types):
    g = Graph("p")
    xs = [g.add_input(f"x{i}", t) for i, t in enumerate(types)]
    out = g.call("engine.pointwise", *xs, program=program, outputs=outputs)
    g.set_outputs(list(out) if isinstance(out, tuple) else [out])
    return g.verify().nodes[0]


F32 = TensorType("float32", (Sym("batch"), 4))
REFUSED = [
    pytest.param(
        (("load", 0), ("nn.relu", (0,), ()), ("tanh", (1,), ())),
        (2,),
        [TensorType("float64", (4,))],
        "dtype float64",
        id="float64",
    ),
    pytest.param(
        (("load", 0), ("load", 1), ("sigmoid", (1,), ()), ("nn.bias_add", (0, 2), (("axis", 1),))),
        (3,),
        [F32, TensorType("float32", (4,))],
        "the bias of nn.bias_add is computed inside",
        id="computed-bias",
    ),
    pytest.param(
        (("load", 0), ("load", 1), ("nn.bias_add", (0, 1), (("axis", 1),)), ("add", (2, 1), ())),
        (3,),
        [TensorType("float32", (Sym("batch"), 4, 4)), TensorType("float32", (4,))],
        "read both as a bias and as an ordinary operand",
        id="bias-twice",
    ),
    pytest.param(
        (("load", 0), ("load", 1), ("power", (0, 1), ())),
        (2,),
        [TensorType("int64", (4,)), TensorType("int64", (4,))],
        "power on integers",
        id="int-power",
    ),
    pytest.param(
        (("load", 0), ("load", 1), ("add", (0, 1), ())),
        (2,),
        [TensorType("bool", (4,)), TensorType("bool", (4,))],
        "add with a bool result",
        id="bool-add",
    ),
]


@pytest.mark.parametrize("program, outputs, types, reason", REFUSED)
def test_unsupported_programs_are_refused_with_the_reason(program, outputs, types, reason):
    node = _node(program, outputs, types)
    why = pt.TritonPointwise.supports(node, BuilderConfig())
    assert why is not None and reason in why, why
    torch_out = next(t for t in candidates(node, "cuda", BuilderConfig())[0] if t.name == "torch_out")
    assert torch_out.supports(node, BuilderConfig()) is None, "the torch fallback runs anything the reference runs"


def test_source_is_written_once_under_its_hash_and_imported(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(pt, "_MODULES", {})
    graph, _ = chain()
    lay = pt.node_layout(graph.nodes[0])
    module = pt.load_module(lay.source)
    files = list((tmp_path / "tensorforge" / "kernels").glob("pointwise_*.py"))
    assert len(files) == 1 and files[0].read_text() == lay.source
    assert module.__file__ == str(files[0]) and callable(module.fast.run)
    assert pt.load_module(lay.source) is module
    assert "eval(" not in inspect.getsource(pt) and "exec(" not in inspect.getsource(pt).replace("exec_module", "")


def test_every_program_op_is_elementwise_and_generated():
    assert FUSED_OPS <= POINTWISE_OPS <= GENERATED_OPS
    assert all(ir.get_op(op).family in ("elementwise", "nn") for op in POINTWISE_OPS)


def test_tactics_on_cuda_and_cpu():
    graph, _ = chain()
    node = graph.nodes[0]
    on_cuda = [t.name for t in candidates(node, "cuda", BuilderConfig())[0]]
    assert on_cuda[:3] == ["triton", "triton_block4096", "torch_out"], on_cuda
    assert "triton" not in [t.name for t in candidates(node, "cpu", BuilderConfig())[0]]


# -- on a GPU ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_kernel_cases_on_cuda():
    problems = {case: why for case, why in run_cases("cuda").items() if why}
    assert not problems, problems


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("level", [0, 3])
def test_plans_on_cuda_choose_triton_and_match(level):
    g = Graph("big")  # the same program on a tensor large enough for the kernel to matter
    x = g.add_input("x", TensorType("float32", (Sym("batch"), 128, 768)))
    b = g.add_constant(torch.randn(768), "b")
    y = g.call("nn.gelu", g.call("nn.bias_add", x, b, axis=-1))
    g.set_outputs(
        [g.call("nn.relu", g.call("multiply", y, g.add_constant(torch.tensor(0.5), "h"))), g.call("sigmoid", y)]
    )
    plan = Builder(BuilderConfig(optimization_level=level)).build(g.verify(), max_batch=4, device="cuda")
    (layer,) = [layer for layer in plan.layers if layer.op == "engine.pointwise"]
    if level == 0:
        assert layer.tactic == "triton"
    x = torch.randn(3, 128, 768)
    expected = ir.execute(g, x)
    for a, e in zip(plan.run(x.cuda()), expected):
        torch.testing.assert_close(a.cpu(), e, rtol=2e-5, atol=2e-5)
