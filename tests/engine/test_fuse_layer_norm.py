"""fuse_layer_norm, engine.layer_norm and its Triton kernel: norms with the casts and residual adds around them
become one layer that reads and writes the 16-bit tensors and computes in float32.

The pass on small graphs as `assign_precision` leaves them (FP16, strict FP16, float32 builds), each checked as
every pass is (engine_helpers.check_pass: pure, counted, same results) plus the structure it must leave; pre-LN
and post-LN transformer blocks through the whole builder on CPU against PyTorch eager; the op's own checks;
the Triton kernel's case table under Triton's CPU interpreter (a subprocess: TRITON_INTERPRET must be set
before triton is imported) and compiled for sm_90 by Triton's real compiler (no GPU needed); and, on a GPU, the
cases on CUDA and a BERT block built FP16 whose norms run the Triton kernel.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

from engine_helpers import (
    BATCH,
    FUSED_TOL,
    check_pass,
    compile_for_sm90,
    graph_with_input,
    interpreted_cases,
    ops,
    relative_error,
)
from layer_norm_kernel_cases import CASES, layer, run_cases
from tensorforge import ir
from tensorforge.engine import Builder, BuilderConfig, Plan
from tensorforge.engine.passes import PASSES, PassContext, fuse_layer_norm, run_passes
from tensorforge.engine.tactics import candidates, get_tactic, norm_triton
from tensorforge.ir import Sym, TensorType

CUDA = torch.cuda.is_available()
H = 32
FP16 = dict(fp16=True)
STRICT_FP16 = dict(fp16=True, strict_types=True)
# the fused layer normalizes the float32 sum where the unfused graph normalized the sum rounded to 16 bits
FP16_TOL = {torch.float32: (5e-3, 5e-3)}
BEFORE = PASSES[: PASSES.index(fuse_layer_norm)]


def assigned(graph, **config):
    """`graph` as the builder hands it to fuse_layer_norm: every pass before it (assign_precision among them)."""
    ctx = PassContext(config=BuilderConfig(**config), max_batch=4)
    return run_passes(graph.verify(), ctx, BEFORE, verify_each=True)


def norms(graph):
    return [n for n in graph.nodes if n.op == "engine.layer_norm"]


def _params(g, prefix="ln"):
    return g.add_constant(torch.rand(H) + 0.5, f"{prefix}.gamma"), g.add_constant(torch.randn(H), f"{prefix}.beta")


def _weight(g, name, rows=H):
    return g.add_constant(torch.randn(rows, H) * 0.2, name)


def _two_inputs():
    g, a = graph_with_input((6, H))
    b = g.add_input("b", TensorType("float32", (BATCH, 6, H)))
    return g, a, b, [torch.randn(3, 6, H) * 2, torch.randn(3, 6, H)]


def post_norm():
    """dense(LN(a + b)): the post-LN shape, the add left alone by fuse_bias_activation (no GEMM before it)."""
    g, a, b, inputs = _two_inputs()
    n = g.call("nn.layer_norm", g.call("add", a, b, name="stream"), *_params(g), epsilon=1e-5)
    g.set_outputs([g.call("nn.dense", n, _weight(g, "w", 8))])
    return g, inputs


def pre_norm():
    """dense(LN(h)) + h with h = a + b: the pre-LN residual stream, read by the norm and by the next residual add."""
    g, a, b, inputs = _two_inputs()
    h = g.call("add", a, b, name="stream")
    n = g.call("nn.layer_norm", h, *_params(g), epsilon=1e-5)
    g.set_outputs([g.call("add", g.call("nn.dense", n, _weight(g, "w")), h)])
    return g, inputs


def dense_residual_norm(*, sum_read_elsewhere=False):
    """BERT: LN(dense(x) + bias + x) -> dense, the residual add inside the first engine.dense."""
    g, x = graph_with_input((6, H))
    d = g.call("nn.bias_add", g.call("nn.dense", x, _weight(g, "w1")), g.add_constant(torch.randn(H), "b1"), axis=-1)
    s = g.call("add", d, x)
    n = g.call("nn.layer_norm", s, *_params(g), epsilon=1e-12)
    outputs = [g.call("nn.dense", n, _weight(g, "w2", 8))]
    if sum_read_elsewhere:
        outputs.append(g.call("nn.relu", s))
    g.set_outputs(outputs)
    return g, [torch.randn(3, 6, H)]


def _reads_no_float32_cast(node) -> None:
    for v in node.inputs[: 1 + int(node.attrs["has_residual"])]:
        assert v.type.dtype == "float16", v
        assert v.producer is None or v.producer.op != "cast" or v.producer.attrs["dtype"] != "float32", v


# ---------------------------------------------------------------------------------------------
# The pass
# ---------------------------------------------------------------------------------------------


def test_fp16_post_norm_becomes_one_layer_in_16_bits():
    graph, inputs = post_norm()
    before = assigned(graph, **FP16)
    assert ops(before).count("cast") == 5 and "nn.layer_norm" in ops(before)
    out = check_pass(fuse_layer_norm, before, inputs, count=1, tol=FP16_TOL)
    (norm,) = norms(out)
    assert "nn.layer_norm" not in ops(out) and "add" not in ops(out)
    assert ops(out).count("cast") == 3, "the entry casts of a and b and the region's exit cast remain"
    assert norm.attrs == {
        "epsilon": 1e-5,
        "has_residual": True,
        "emit_sum": False,
        "out_dtype": None,
        "quantize_dtype": None,
        "quantize_scale": None,
    }
    _reads_no_float32_cast(norm)
    assert norm.output.type.dtype == "float16" and norm.output.name == "layer_norm.to_f16"


def test_fp16_pre_norm_returns_the_residual_stream_it_absorbed():
    graph, inputs = pre_norm()
    out = check_pass(fuse_layer_norm, assigned(graph, **FP16), inputs, count=1, tol=FP16_TOL)
    (norm,) = norms(out)
    assert norm.attrs["has_residual"] and norm.attrs["emit_sum"]
    y, total = norm.outputs
    assert total.name == "stream" and total.type.dtype == y.type.dtype == "float16"
    (dense,) = [n for n in out.nodes if n.op == "engine.dense"]
    assert dense.inputs[0] is y and dense.inputs[-1] is total, "the next residual add reads the emitted sum"
    _reads_no_float32_cast(norm)


@pytest.mark.parametrize("config", [FP16, {}], ids=["fp16", "fp32"])
def test_the_residual_of_a_dense_layer_moves_into_the_norm(config):
    graph, inputs = dense_residual_norm()
    before = assigned(graph, **config)
    (residual_dense,) = [n for n in before.nodes if n.op == "engine.dense" and n.attrs["has_residual"]]
    out = check_pass(fuse_layer_norm, before, inputs, count=1, tol=FP16_TOL if config else FUSED_TOL)
    gemm = next(n for n in out.nodes if n.op == "engine.dense")
    assert gemm.name == residual_dense.name and not gemm.attrs["has_residual"] and gemm.attrs["has_bias"]
    (norm,) = norms(out)
    assert norm.inputs[0] is gemm.output and norm.inputs[1].name == residual_dense.inputs[-1].name
    assert norm.attrs["has_residual"] and not norm.attrs["emit_sum"]
    assert out.nodes.index(norm) == out.nodes.index(gemm) + 1
    if config:
        _reads_no_float32_cast(norm)
        assert ops(out).count("cast") == 2, "only the region's entry and exit casts remain"


def test_a_dense_sum_read_elsewhere_stays_in_the_dense_layer():
    """Emitting the sum from the norm would write one tensor more than a GEMM epilogue adding the residual."""
    graph, inputs = dense_residual_norm(sum_read_elsewhere=True)
    out = check_pass(fuse_layer_norm, assigned(graph, **FP16), inputs, count=1, tol=FP16_TOL)
    (norm,) = norms(out)
    assert not norm.attrs["has_residual"] and not norm.attrs["emit_sum"], "only the casts were absorbed"
    dense = norm.inputs[0].producer
    assert dense.op == "engine.dense" and dense.attrs["has_residual"]
    (relu,) = [n for n in out.nodes if n.op == "nn.relu"]
    assert relu.inputs[0] is dense.output
    _reads_no_float32_cast(norm)


def test_float32_build_fuses_the_add():
    graph, inputs = post_norm()
    out = check_pass(fuse_layer_norm, assigned(graph), inputs, count=1, tol=FUSED_TOL)
    assert ops(out) == ["engine.layer_norm", "nn.dense"]
    (norm,) = norms(out)
    assert norm.attrs["has_residual"] and norm.inputs[:2] == out.inputs and norm.output.type.dtype == "float32"


def test_strict_fp16_fuses_the_16_bit_norm():
    graph, inputs = post_norm()
    before = assigned(graph, **STRICT_FP16)
    assert [n.outputs[0].type.dtype for n in before.nodes if n.op == "nn.layer_norm"] == ["float16"]
    out = check_pass(fuse_layer_norm, before, inputs, count=1, tol=FP16_TOL)
    (norm,) = norms(out)
    assert norm.attrs["out_dtype"] is None and norm.output.type.dtype == "float16"
    assert {v.type.dtype for v in norm.inputs} == {"float16"}, "strict mode stores gamma and beta reduced too"


def test_a_float32_reader_keeps_y_in_float32():
    """The norm's result is also a region output: y is stored in float32, the cast for the dense stays."""
    graph, inputs = post_norm()
    n = graph.nodes[1].output
    graph.set_outputs([*graph.outputs, n])
    out = check_pass(fuse_layer_norm, assigned(graph, **FP16), inputs, count=1, tol=FP16_TOL)
    (norm,) = norms(out)
    assert norm.attrs["out_dtype"] == "float32" and norm.inputs[0].type.dtype == "float16"
    assert out.outputs[1] is norm.output and norm.output.name == n.name
    assert any(c.op == "cast" and c.inputs[0] is norm.output for c in out.nodes)


def test_a_shared_widening_cast_stays_for_its_other_reader():
    """softmax reads the same float32 copy of the sum as the norm: that cast stays, reading the emitted sum."""
    g, a, b, inputs = _two_inputs()
    h = g.call("add", a, b, name="stream")
    n = g.call("nn.layer_norm", h, *_params(g), epsilon=1e-5)
    g.set_outputs([g.call("nn.dense", n, _weight(g, "w", 8)), g.call("nn.softmax", h)])
    out = check_pass(fuse_layer_norm, assigned(g, **FP16), inputs, count=1, tol=FP16_TOL)
    (norm,) = norms(out)
    assert norm.attrs["emit_sum"]
    (softmax,) = [n for n in out.nodes if n.op == "nn.softmax"]
    cast = softmax.inputs[0].producer
    assert cast.op == "cast" and cast.inputs[0] is norm.outputs[1]


def test_a_dense_with_an_activation_keeps_its_residual():
    g, x = graph_with_input((6, H))
    d = g.call("nn.gelu", g.call("nn.dense", x, _weight(g, "w1")))
    n = g.call("nn.layer_norm", g.call("add", d, x), *_params(g), epsilon=1e-5)
    g.set_outputs([g.call("nn.dense", n, _weight(g, "w2", 8))])
    out = check_pass(fuse_layer_norm, assigned(g, **FP16), [torch.randn(3, 6, H)], count=1, tol=FP16_TOL)
    (norm,) = norms(out)
    assert not norm.attrs["has_residual"], "only the casts were absorbed"
    assert any(n.op == "engine.dense" and n.attrs["has_residual"] for n in out.nodes)


def test_a_broadcast_add_stays_outside():
    g, x = graph_with_input((6, H))
    n = g.call("nn.layer_norm", g.call("add", x, g.add_constant(torch.randn(H), "c")), *_params(g), epsilon=1e-5)
    g.set_outputs([g.call("nn.dense", n, _weight(g, "w", 8))])
    inputs = [torch.randn(3, 6, H)]
    check_pass(fuse_layer_norm, assigned(g), inputs, count=0)
    out = check_pass(fuse_layer_norm, assigned(g, **FP16), inputs, count=1, tol=FP16_TOL)
    (norm,) = norms(out)
    assert not norm.attrs["has_residual"] and norm.inputs[0].producer.op == "add"


def test_what_is_left_alone():
    """A float32 norm with nothing around it, a norm over an axis that is not the last, and a norm whose gamma
    is computed after its sum (the fused layer could not sit where the sum was made)."""
    g, a, b, inputs = _two_inputs()
    lone = g.call("nn.layer_norm", a, *_params(g, "lone"), epsilon=1e-5)
    middle = g.call(
        "nn.layer_norm",
        g.call("add", a, b),
        g.add_constant(torch.rand(6, H), "g2"),
        g.add_constant(torch.randn(6, H), "b2"),
        axis=1,
        epsilon=1e-5,
    )
    s = g.call("add", b, a)
    gamma = g.add_input("gamma", TensorType("float32", (H,)))
    late = g.call("nn.layer_norm", s, g.call("nn.relu", gamma), g.add_constant(torch.randn(H), "b3"), epsilon=1e-5)
    g.set_outputs([lone, middle, late])
    out = check_pass(fuse_layer_norm, assigned(g), [*inputs, torch.rand(H)], count=0)
    assert ops(out).count("nn.layer_norm") == 3


# ---------------------------------------------------------------------------------------------
# Whole blocks through the builder, against PyTorch eager
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-LN", "post-LN"])
def test_transformer_block_plan_matches_eager(norm_first, precision):
    import tensorforge as forge

    torch.manual_seed(0)
    block = torch.nn.TransformerEncoderLayer(48, 4, 96, dropout=0.0, norm_first=norm_first, batch_first=True).eval()
    x = torch.randn(3, 7, 48)
    module = forge.compile(block, (x,), precision=precision, device="cpu").build_all(3)
    (plan,) = [p for ps in module.plans().values() for p in ps]
    # pre-LN's first norm reads the block's float32 input: in a float32 build there is nothing to absorb
    lone = norm_first and precision == "fp32"
    assert plan.counters["fuse_layer_norm"] == 2 - lone
    layers = [(layer.op, layer.tactic) for layer in plan.layers]
    assert layers.count(("engine.layer_norm", "reference")) == 2 - lone
    assert layers.count(("nn.layer_norm", "reference")) == lone
    fused = norms(plan.graph)
    assert [n.attrs["has_residual"] for n in fused] == [not norm_first] * (not lone) + [True]
    if precision == "fp16":
        assert all(n.inputs[1].type.dtype == "float16" for n in fused if n.attrs["has_residual"]), "16-bit sums"
        assert all(n.output.type.dtype == "float16" for n in fused[:-1]), "16-bit results (the last one: the output)"
    with torch.no_grad():
        expected = block(x)
    for batch in (1, 3):
        actual = module(x[:batch])
        if precision == "fp32":
            torch.testing.assert_close(actual, expected[:batch], rtol=1e-4, atol=1e-5)
        else:
            assert actual.dtype == torch.float32 and relative_error(actual, expected[:batch]) <= 1e-2


def test_plans_with_fused_norms_save_and_load():
    graph, inputs = pre_norm()
    plan = Builder(BuilderConfig(fp16=True)).build(graph, max_batch=3)
    assert [layer.op for layer in plan.layers].count("engine.layer_norm") == 1
    loaded = Plan.from_bytes(plan.to_bytes())
    assert loaded.layers == plan.layers
    assert torch.equal(loaded.run(*inputs)[0], plan.run(*inputs)[0])


# ---------------------------------------------------------------------------------------------
# The op
# ---------------------------------------------------------------------------------------------


def _call(*types, **attrs):
    g = ir.Graph()
    values = [g.add_input(f"v{i}", t) for i, t in enumerate(types)]
    return g.call("engine.layer_norm", *values, epsilon=1e-5, **attrs)


X16 = TensorType("float16", (BATCH, 4, 8))
P = TensorType("float32", (8,))


@pytest.mark.parametrize(
    "types, attrs, problem",
    [
        ((X16, P, P), {"emit_sum": True}, "needs has_residual"),
        ((X16, TensorType("float32", (BATCH, 4, 8)), P, P), {"has_residual": True}, "must be alike"),
        ((X16, P, TensorType("float32", (4,))), {}, "beta"),
        ((TensorType("int32", (BATCH, 8)), TensorType("float32", (8,)), P), {}, "x is int32"),
        ((X16, P, P), {"out_dtype": "float64"}, "out_dtype"),
        ((X16, P, P), {"has_residual": True}, "needs 4 inputs"),
    ],
)
def test_the_op_refuses_what_it_does_not_compute(types, attrs, problem):
    with pytest.raises(Exception, match=problem):
        _call(*types, **attrs)


def test_the_op_types_its_outputs():
    y, total = _call(X16, X16, P, P, has_residual=True, emit_sum=True, out_dtype="float32")
    assert y.type == TensorType("float32", X16.shape) and total.type == X16


# ---------------------------------------------------------------------------------------------
# The Triton tactic
# ---------------------------------------------------------------------------------------------


def test_the_tactic_is_offered_on_cuda_only():
    (node,) = layer(CASES["fp16-residual-sum-768"]).nodes
    assert [t.name for t in candidates(node, "cuda", BuilderConfig())[0]][0] == "triton"
    assert "triton" not in [t.name for t in candidates(node, "cpu", BuilderConfig())[0]]
    assert get_tactic("engine.layer_norm", "triton").writes_arena


def test_refusals_say_why(monkeypatch):
    tactic = get_tactic("engine.layer_norm", "triton")
    wide = _call(
        TensorType("float16", (BATCH, norm_triton.MAX_HIDDEN * 2)),
        *[TensorType("float32", (norm_triton.MAX_HIDDEN * 2,))] * 2,
    ).producer
    assert "do not fit in registers" in tactic.supports(wide, BuilderConfig())
    symbolic = _call(TensorType("float16", (4, Sym("batch"))), *[TensorType("float32", (Sym("batch"),))] * 2).producer
    assert "symbolic" in tactic.supports(symbolic, BuilderConfig())
    rows4 = get_tactic("engine.layer_norm", "triton_rows4")
    wide_rows = _call(TensorType("float16", (BATCH, 2048)), *[TensorType("float32", (2048,))] * 2).producer
    assert "4 do not fit one program" in rows4.supports(wide_rows, BuilderConfig())
    assert tactic.supports(wide_rows, BuilderConfig()) is None
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real_find_spec(name, *a)
    )
    (node,) = layer(CASES["fp16-plain-768"]).nodes
    assert tactic.supports(node, BuilderConfig()) == "Triton is not installed"


def test_a_plain_norm_gets_the_kernel_over_its_last_axis_only():
    tactic = get_tactic("nn.layer_norm", "triton")
    (node,) = layer(CASES["plain-fp16-768"]).nodes
    assert tactic.supports(node, BuilderConfig()) is None
    assert "triton" in [t.name for t in candidates(node, "cuda", BuilderConfig())[0]]
    node.attrs = {**node.attrs, "axis": 0}
    assert tactic.supports(node, BuilderConfig()) == "the kernel normalizes the last axis"


def test_importing_tensorforge_does_not_import_triton():
    code = "import sys, tensorforge.engine; print('triton' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "False", done.stderr[-2000:]


@pytest.fixture(scope="module")
def interpreted():
    """{case: None or the problem}, from one interpreter run of every case on CPU tensors."""
    pytest.importorskip("triton")
    return interpreted_cases("layer_norm_kernel_cases.py")


@pytest.mark.parametrize("case", list(CASES))
def test_kernel_under_the_interpreter(interpreted, case):
    results = {k: v for k, v in interpreted.items() if k.startswith(f"{case}[")}
    assert len(results) == len(norm_triton.ROW_TILES) and all(v is None for v in results.values()), results


_POINTERS = {"float32": "*fp32", "float16": "*fp16", "bfloat16": "*bf16", "int8": "*i8", "float8_e4m3fn": "*fp8e4nv"}
_QUANT = {None: 0, "int8": 1, "float8_e4m3fn": 2}  # to_output's codes


@pytest.mark.parametrize(
    "x, y, params, residual, emit_sum, quantized",
    [
        ("float16", "float16", "float32", True, True, None),
        ("float16", "float32", "float32", True, False, None),
        ("float32", "float32", "float32", False, False, None),
        ("bfloat16", "bfloat16", "bfloat16", True, True, None),
        ("float16", "float16", "float32", False, False, "int8"),
        ("float16", "float16", "float32", True, True, "float8_e4m3fn"),
    ],
)
def test_kernel_compiles_for_sm90(x, y, params, residual, emit_sum, quantized):
    """The interpreter runs Python semantics; the real compiler checks types and lowering too."""
    pytest.importorskip("triton")
    kernel = norm_triton.row_kernel()
    pointers = {"X": x, "R": x, "W": params, "B": params, "Y": y, "S": x, "Q": quantized or "int8"}
    signature = {p: "i64" if p.endswith(("_outer", "_inner")) else "i32" for p in kernel.arg_names}
    signature.update({p: _POINTERS[t] for p, t in pointers.items()})
    signature.update(eps="fp32", q_scale="fp32", HAS_RESIDUAL="constexpr", EMIT_SUM="constexpr", QUANT="constexpr")
    signature.update(BLOCK="constexpr", ROWS="constexpr")
    constexprs = {"HAS_RESIDUAL": residual, "EMIT_SUM": emit_sum, "QUANT": _QUANT[quantized], "BLOCK": 1024, "ROWS": 4}
    assert compile_for_sm90(kernel, signature, constexprs).asm["cubin"]


# ---------------------------------------------------------------------------------------------
# On a GPU
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_kernel_cases_on_cuda():
    problems = {case: why for case, why in run_cases("cuda").items() if why}
    assert not problems, problems


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_bert_fp16_on_cuda_runs_its_norms_in_the_triton_kernel():
    import tensorforge as forge

    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=768,
        num_hidden_layers=2,
        num_attention_heads=12,
        intermediate_size=3072,
        vocab_size=1000,
        max_position_embeddings=128,
    )
    model = transformers.BertModel(config).eval()
    ids = torch.randint(0, 1000, (8, 128))
    partitioned, _ = forge.partition_for_tensorforge(forge.frontends.from_torch(model, (ids,)))
    (region,) = partitioned.subgraphs.values()
    plan = Builder(BuilderConfig(fp16=True, optimization_level=0)).build(region, max_batch=8, device="cuda")
    fused = [layer for layer in plan.layers if layer.op == "engine.layer_norm"]
    assert len(fused) == 2 * config.num_hidden_layers + 1 and {layer.tactic for layer in fused} == {"triton"}
    assert "nn.layer_norm" not in {layer.op for layer in plan.layers}
    with torch.no_grad():
        expected = model(ids)
    actual = plan.run(ids.cuda())
    for a, e in zip(actual, (expected.last_hidden_state, expected.pooler_output)):
        assert a.dtype == torch.float32 and relative_error(a.cpu(), e) <= 1e-2, relative_error(a.cpu(), e)
