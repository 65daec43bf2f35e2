"""The three ways in (TVM-style, torch2trt-style, one call) and the two extension points."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import tensorforge as forge


def rel_err(a, b) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12)).item()


def test_tvm_style_partition_build_save_load(small_net, tmp_path):
    x = torch.randn(2, 3, 16, 16)
    graph = forge.frontends.from_torch(small_net, (x,))
    graph, config = forge.partition_for_tensorforge(
        graph, min_block_size=1, remove_no_mac_subgraphs=False, use_implicit_batch=True, max_workspace_size=1 << 30
    )
    module = forge.build(graph, config, device="cpu")
    y = module(x)
    module.save(tmp_path / "model.tforge")
    loaded = forge.load(tmp_path / "model.tforge", device="cpu")
    assert torch.equal(loaded(x), y)
    assert loaded.partition_config.min_block_size == 1


def test_convert_returns_a_working_engine_module(small_net):
    x = torch.randn(1, 3, 16, 16)
    trt_model = forge.convert(
        small_net, [x], fp16_mode=False, max_batch_size=4, device="cpu", input_names=["image"], output_names=["logits"]
    )
    assert isinstance(trt_model, forge.EngineModule) and isinstance(trt_model, torch.nn.Module)
    assert [p.max_batch for p in trt_model.plans()["tensorforge_0"]] == [4]  # built ahead for max_batch_size
    assert [v.name for v in trt_model.graph.inputs] == ["image"]
    assert [v.name for v in trt_model.graph.outputs] == ["logits"]
    for batch in (1, 4):
        xb = torch.randn(batch, 3, 16, 16)
        with torch.no_grad():
            assert rel_err(trt_model(xb), small_net(xb)) <= 1e-4


class TwoConvNet(torch.nn.Module):
    """conv -> relu -> conv -> pool -> linear: the first conv and the classifier stay in floating point under int8,
    the second conv is quantized."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.conv2(torch.relu(self.conv1(x))).mean(dim=(2, 3)))


def test_convert_int8_mode_quantizes_with_calibration():
    model = TwoConvNet().eval()
    calibration = [torch.randn(4, 3, 16, 16) for _ in range(3)]
    trt_model = forge.convert(
        model,
        [torch.randn(1, 3, 16, 16)],
        int8_mode=True,
        int8_calib_dataset=calibration,
        max_batch_size=2,
        device="cpu",
    )
    graphs = [trt_model.graph, *trt_model.graph.subgraphs.values()]
    ops = sum((g.op_counts() for g in graphs), start=Counter())
    # every quantized activation has its pair; the weights' dequantizes stay too (8-bit constants the engine's
    # 8-bit layers take as they are)
    activations = sum(n.op == "dequantize" and n.inputs[0].data is None for g in graphs for n in g.nodes)
    assert ops["quantize"] > 0 and ops["quantize"] == activations < ops["dequantize"]
    xb = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert 0 < rel_err(trt_model(xb), model(xb)) <= 0.05
    with pytest.raises(ValueError, match="int8_mode is False"):
        forge.convert(model, [torch.randn(1, 3, 16, 16)], int8_calib_dataset=calibration, device="cpu")


def test_compile_one_call(fallback_net):
    x = torch.randn(2, 16)
    fast = forge.compile(fallback_net, (x,), precision="fp32", device="cpu")
    with torch.no_grad():
        assert rel_err(fast(x), fallback_net(x)) <= 1e-4
    with pytest.raises(ValueError, match="precision must be one of"):
        forge.compile(fallback_net, (x,), precision="fp13")


def test_compile_passes_partition_options(fallback_net):
    x = torch.randn(2, 16)
    fast = forge.compile(fallback_net, (x,), device="cpu", torch_executed_ops=("nn.dense",))
    assert not any("nn.dense" in {n.op for n in r.nodes} for r in fast.regions.values())
    with torch.no_grad():
        assert rel_err(fast(x), fallback_net(x)) <= 1e-4


# -- extension points ---------------------------------------------------------------------------------


@torch.library.custom_op("tftest_api::scale_shift", mutates_args=())
def scale_shift(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return x * alpha + 1


@scale_shift.register_fake
def _(x, alpha):
    return torch.empty_like(x)


@torch.library.custom_op("tftest_api::twice", mutates_args=())
def twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@twice.register_fake
def _(x):
    return torch.empty_like(x)


class UsesCustomOps(torch.nn.Module):
    def __init__(self, op):
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)
        self.op = op

    def forward(self, x):
        return torch.relu(self.op(self.fc(x)))


KERNEL_CALLS = []


@forge.plugin("tftest_api::scale_shift")
def scale_shift_kernel(x, *, alpha):
    if x.device.type != "meta":  # shape inference runs kernels on meta tensors; count real runs only
        KERNEL_CALLS.append(tuple(x.shape))
    return x * alpha + 1


def test_plugin_runs_inside_a_plan_as_one_layer():
    torch.manual_seed(0)
    model = UsesCustomOps(lambda x: torch.ops.tftest_api.scale_shift(x, 0.5)).eval()
    x = torch.randn(3, 8)
    module = forge.compile(model, (x,), device="cpu")
    assert [n.op for n in module.graph.nodes] == ["subgraph"], "the plugin must not break the region"
    KERNEL_CALLS.clear()
    with torch.no_grad():
        assert rel_err(module(x), model(x)) <= 1e-4
    assert KERNEL_CALLS == [(3, 8)], "the plugin kernel ran inside the plan"
    (plan,) = module.plans()["tensorforge_0"]
    assert "plugin.tftest_api.scale_shift" in [layer.op for layer in plan.layers]


def test_plugin_names_are_checked():
    with pytest.raises(ValueError, match="namespace::op"):
        forge.plugin("no_namespace")


def test_without_a_converter_a_custom_op_is_opaque_and_with_one_it_is_offloaded():
    torch.manual_seed(0)
    model = UsesCustomOps(torch.ops.tftest_api.twice).eval()
    x = torch.randn(2, 8)
    before = forge.compile(model, (x,), device="cpu")
    assert "torch.tftest_api.twice.default" in [n.op for n in before.graph.nodes]

    from tensorforge.frontends import converters

    @forge.converter("tftest_api::twice")
    def lower_twice(ctx, *, x):
        return ctx.emit("multiply", x, ctx.value(2.0))

    try:
        after = forge.compile(model, (x,), device="cpu")
        assert [n.op for n in after.graph.nodes] == ["subgraph"]
        with torch.no_grad():
            assert rel_err(after(x), model(x)) <= 1e-4
    finally:
        del converters._CONVERTERS["tftest_api::twice"]
