"""The GPU engine on a real GPU: every GPU tactic against the reference, plans in FP16 on real models, and
CUDA-graph replay of plans and of whole partitioned modules. Skipped without CUDA (see tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch

import tensorforge as forge
from tensorforge import ir
from tensorforge.engine import BuilderConfig
from tensorforge.engine.tactics import BindContext, get_tactic
from tensorforge.ir import Sym, TensorType

pytestmark = pytest.mark.gpu
TOL = {torch.float32: (1e-2, 1e-2), torch.float16: (1e-2, 1e-2)}  # cuDNN/cuBLAS may use TF32 for float32


def _fused_conv_graph(dtype: str, activation, residual: bool, position="pre_activation"):
    g = ir.Graph()
    x = g.add_input("x", TensorType(dtype, (Sym("batch"), 16, 14, 14)))
    torch_dtype = TensorType(dtype, ()).torch_dtype
    w = g.add_constant(torch.randn(32, 16, 3, 3, dtype=torch_dtype) * 0.1, "w")
    b = g.add_constant(torch.randn(32, dtype=torch_dtype) * 0.1, "b")
    inputs = [x, w, b]
    if residual:
        inputs.append(g.add_input("r", TensorType(dtype, (Sym("batch"), 32, 14, 14))))
    y = g.call(
        "engine.conv",
        *inputs,
        ndim=2,
        strides=(1, 1),
        padding=(1, 1),
        dilation=(1, 1),
        groups=1,
        has_bias=True,
        activation=activation,
        has_residual=residual,
        residual_position=position,
    )
    g.set_outputs([y])
    return g.verify()


@pytest.mark.parametrize("tactic_name", ["cudnn_nhwc", "cudnn_nchw", "cudnn_fused_nhwc"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_conv_tactics_match_the_reference(tactic_name, dtype, residual):
    graph = _fused_conv_graph(dtype, "nn.relu", residual)
    node = graph.nodes[0]
    t = get_tactic("engine.conv", tactic_name)
    assert t.supports(node, BuilderConfig()) is None
    kernel = t.bind(node, BindContext(torch.device("cuda"), BuilderConfig(), 4))
    inputs = [
        torch.randn(v.type.concrete_shape({"batch": 3}), dtype=v.type.torch_dtype, device="cuda") for v in graph.inputs
    ]
    (actual,) = kernel(
        [inputs[0], node.inputs[1].data.cuda(), node.inputs[2].data.cuda(), *inputs[1:]], [None], {"batch": 3}
    )
    (expected,) = ir.execute(graph, *inputs)
    torch.testing.assert_close(actual, expected, rtol=TOL[actual.dtype][0], atol=TOL[actual.dtype][1])


@pytest.mark.parametrize(
    "tactic_name, activation, approximate",
    [
        ("cublas_addmm", "nn.gelu", "none"),
        ("cublas_addmm", None, "none"),
        ("cublaslt_epilogue", "nn.relu", "none"),
        ("cublaslt_epilogue", "nn.gelu", "tanh"),
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_dense_tactics_match_the_reference(tactic_name, activation, approximate, dtype):
    g = ir.Graph()
    x = g.add_input("x", TensorType(dtype, (Sym("batch"), 8, 64)))
    torch_dtype = TensorType(dtype, ()).torch_dtype
    w = g.add_constant(torch.randn(96, 64, dtype=torch_dtype) * 0.1, "w")
    b = g.add_constant(torch.randn(96, dtype=torch_dtype) * 0.1, "b")
    attrs = {"activation_attrs": (("approximate", approximate),)} if activation == "nn.gelu" else {}
    y = g.call("engine.dense", x, w, b, has_bias=True, activation=activation, **attrs)
    g.set_outputs([y])
    node = g.verify().nodes[0]
    t = get_tactic("engine.dense", tactic_name)
    assert t.supports(node, BuilderConfig()) is None
    kernel = t.bind(node, BindContext(torch.device("cuda"), BuilderConfig(), 4))
    xs = torch.randn(3, 8, 64, dtype=torch_dtype, device="cuda")
    out = torch.empty(3, 8, 96, dtype=torch_dtype, device="cuda")
    (actual,) = kernel([xs, w.data.cuda(), b.data.cuda()], [out], {"batch": 3})
    assert actual.data_ptr() == out.data_ptr(), "the GEMM writes straight into its arena view"
    (expected,) = ir.execute(g, xs)
    torch.testing.assert_close(actual, expected, rtol=TOL[actual.dtype][0], atol=TOL[actual.dtype][1])


def _fp16_plan_matching_eager(model, x):
    """(module, its one plan): `model` compiled in FP16, its output within 2% of FP32 eager's, replayed as one graph."""
    module = forge.compile(model, (x,), precision="fp16", device="cuda")
    with torch.no_grad():
        expected = model(x)
        actual = module(x)
    rel = ((actual.float() - expected).abs().max() / expected.abs().max()).item()
    assert rel < 2e-2, rel
    assert module._graph_runner is not None and module._graph_runner.captured == 1
    (plan,) = module.plans()["tensorforge_0"]
    return module, plan


def test_resnet18_fp16_plan_uses_gpu_tactics_and_matches_eager():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18().eval().cuda()
    _, plan = _fp16_plan_matching_eager(model, torch.randn(4, 3, 112, 112, device="cuda"))
    conv_tactics = [layer.tactic for layer in plan.layers if layer.op == "engine.conv"]
    cudnn = [t for t in conv_tactics if t.startswith("cudnn")]
    assert len(cudnn) >= len(conv_tactics) - 2, conv_tactics  # the timing may pick the plain path for a few
    assert {layer.precision for layer in plan.layers if layer.op == "engine.conv"} == {"float16"}


def test_mobilenet_v2_fp16_depthwise_layers_keep_float32_weights_on_the_triton_kernel():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2()
    model.train()
    with torch.no_grad():  # realistic batch-norm statistics, so the folded depthwise scales vary per channel
        for _ in range(3):
            model(torch.randn(8, 3, 160, 160))
    _, plan = _fp16_plan_matching_eager(model.eval().cuda(), torch.randn(4, 3, 160, 160, device="cuda"))
    assert plan.counters["assign_precision.float32_weights"] == 17, "MobileNetV2 has 17 depthwise convolutions"
    tactics = [layer.tactic for layer in plan.layers if layer.op == "engine.conv"]
    assert tactics.count("triton_depthwise_nhwc") == 17, tactics


def test_cuda_graph_replay_sees_new_inputs_each_time():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.mobilenet_v2().eval().cuda()
    module = forge.compile(model, (torch.randn(2, 3, 64, 64, device="cuda"),), device="cuda")
    with torch.no_grad():
        for batch in (3, 3, 2, 3):  # the plan for batch 3 serves batch 2 too: one capture per batch size
            x = torch.randn(batch, 3, 64, 64, device="cuda")
            torch.testing.assert_close(module(x), model(x), rtol=1e-3, atol=1e-3)
    assert module._graph_runner.captured == 2


def test_partitioned_module_with_fallback_replays_as_one_graph():
    class WithFallbackOp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(32, 32), torch.nn.Linear(32, 8)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)).logcumsumexp(dim=1))

    model = WithFallbackOp().eval().cuda()
    x = torch.randn(4, 32, device="cuda")
    module = forge.compile(model, (x,), device="cuda")
    assert any(n.op == "torch.aten.logcumsumexp.default" for n in module.graph.nodes)
    with torch.no_grad():
        for _ in range(3):
            x = torch.randn(4, 32, device="cuda")
            torch.testing.assert_close(module(x), model(x), rtol=1e-3, atol=1e-3)
    assert module._graph_runner.captured == 1 and not module._graph_runner.failures()


def test_plan_built_on_gpu_is_cached_and_reloaded(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18().eval().cuda()
    x = torch.randn(2, 3, 64, 64, device="cuda")
    first = forge.compile(model, (x,), precision="fp16", device="cuda", cache_dir=str(tmp_path)).build_all(2)
    second = forge.compile(model, (x,), precision="fp16", device="cuda", cache_dir=str(tmp_path)).build_all(2)
    assert (second._cache.builds, second._cache.hits) == (0, 1)
    with torch.no_grad():
        torch.testing.assert_close(first(x), second(x))


def test_captures_share_one_stream_so_cublas_keeps_one_workspace():
    """cuBLAS and cuBLASLt keep a workspace (tens of MiB) per stream they have run on. Every warm-up and capture
    runs on `capture_stream`, so a second runner capturing the same signatures must not add workspaces."""
    from tensorforge.engine.cuda_graphs import GraphRunner, capture_stream

    weight = torch.randn(256, 256, device="cuda", dtype=torch.float16)
    runners = [GraphRunner(lambda x: (x @ weight,)) for _ in range(2)]
    grown = []
    for runner in runners:
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        for rows in (8, 16, 32, 64, 8):
            x = torch.randn(rows, 256, device="cuda", dtype=torch.float16)
            torch.testing.assert_close(runner(x)[0], x @ weight)
            del x
        grown.append(torch.cuda.memory_allocated() - before)
    assert [r.captured for r in runners] == [4, 4]
    assert grown[1] < 2**20, f"the second runner's captures took {grown[1] / 2**20:.1f} MiB: a workspace per stream"
    assert capture_stream("cuda") is capture_stream(torch.device("cuda", torch.cuda.current_device()))
