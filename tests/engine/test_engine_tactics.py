"""Tactic selection: candidates by priority and device, level 0 takes the first, higher levels time and keep the
fastest, the timing cache spares re-timing, kernels may write into the arena, and a layer no tactic supports is
a BuildError naming every such layer.

The test tactics below register for nn.softplus but only accept nodes whose name starts with "tt_", so they
never touch other tests' plans.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time

import pytest
import torch
import torch.nn.functional as F

from engine_helpers import graph_with_input
from tensorforge.engine import Builder, BuilderConfig, BuildError
from tensorforge.engine.tactics import candidates, get_tactic, tactic
from tensorforge.ir import Graph, TensorType
from tensorforge.ir.ops.opaque import encode_output_type

CALLS: collections.Counter = collections.Counter()


def _only(prefixes):
    def supports(node, config):
        return None if node.name.startswith(prefixes) else f"test tactic, only for nodes named {prefixes}"

    return staticmethod(supports)


@tactic("nn.softplus", name="tt_slow", priority=10)
class SlowSoftplus:
    supports = _only(("tt_timed",))

    @staticmethod
    def bind(node, ctx):
        def run(inputs, outputs, env):
            CALLS["slow"] += 1
            time.sleep(0.004)
            return (F.softplus(inputs[0]),)

        return run


@tactic("nn.softplus", name="tt_inplace", priority=5, devices=("cpu",))
class InPlaceSoftplus:
    supports = _only(("tt_timed", "tt_inplace"))

    @staticmethod
    def bind(node, ctx):
        def run(inputs, outputs, env):
            out = outputs[0] if outputs[0] is not None else torch.empty_like(inputs[0])
            CALLS["inplace.offered" if outputs[0] is not None else "inplace.allocated"] += 1
            torch.exp(inputs[0], out=out)
            torch.log1p(out, out=out)
            return (out,)

        return run


@tactic("nn.softplus", name="tt_fails", priority=15)
class FailingSoftplus:
    supports = _only(("tt_timed",))

    @staticmethod
    def bind(node, ctx):
        def run(inputs, outputs, env):
            raise RuntimeError("this kernel always fails")

        return run


@tactic("nn.softplus", name="tt_wrong_shape", priority=20)
class WrongShape:
    supports = _only(("tt_broken",))

    @staticmethod
    def bind(node, ctx):
        return lambda inputs, outputs, env: (inputs[0][:1],)


@tactic("nn.softplus", name="tt_gpu_only", priority=30, devices=("cuda",))
class GpuOnly:
    supports = _only(("tt_",))

    @staticmethod
    def bind(node, ctx):
        raise AssertionError("never bound on CPU")


@tactic("reshape", name="tt_alias", priority=50, devices=("cpu",), writes_arena=False, aliases_input=True)
class AliasReshape:
    supports = _only(("tt_view",))

    @staticmethod
    def bind(node, ctx):
        def run(inputs, outputs, env):
            CALLS["alias"] += 1
            return (inputs[0].reshape(node.outputs[0].type.concrete_shape(env)),)

        return run


def softplus_graph(node_name: str) -> Graph:
    g, x = graph_with_input((16,))
    g.set_outputs([g.call("tanh", g.call("nn.softplus", x, name=node_name))])  # softplus's output is in the arena
    return g.verify()


def chosen(plan, op="nn.softplus"):
    return next(layer.tactic for layer in plan.layers if layer.op == op)


def test_candidates_by_priority_device_and_support():
    node = softplus_graph("tt_timed").nodes[0]
    supported, refused = candidates(node, "cpu", BuilderConfig())
    assert [t.name for t in supported] == ["tt_fails", "tt_slow", "tt_inplace", "reference"]
    assert "tt_gpu_only" not in {t.name for t in supported} | {t.name for t, _ in refused}
    assert [t.name for t in candidates(node, "cuda", BuilderConfig())[0]][0] == "tt_gpu_only"
    other = softplus_graph("plain").nodes[0]
    supported, refused = candidates(other, "cpu", BuilderConfig())
    assert [t.name for t in supported] == ["reference"]
    assert dict((t.name, why) for t, why in refused)["tt_slow"] == "test tactic, only for nodes named ('tt_timed',)"


def test_level_0_takes_the_first_supported_without_timing():
    CALLS.clear()
    plan = Builder(BuilderConfig(optimization_level=0)).build(softplus_graph("tt_timed"), max_batch=2)
    assert chosen(plan) == "tt_fails" and CALLS["slow"] == 0


def test_timing_keeps_the_fastest_and_drops_failures(tmp_path):
    cache = tmp_path / "timing.json"
    CALLS.clear()
    config = BuilderConfig(optimization_level=1, timing_cache=str(cache))
    plan = Builder(config).build(softplus_graph("tt_timed"), max_batch=2)
    assert chosen(plan) in ("tt_inplace", "reference") and CALLS["slow"] > 0
    assert chosen(plan, "tanh") == "reference", "a single candidate is not timed"
    entries = json.loads(cache.read_text())["entries"]
    assert sorted(json.loads(key)[-1] for key in entries) == ["reference", "tt_inplace", "tt_slow"]

    CALLS.clear()
    again = Builder(config).build(softplus_graph("tt_timed"), max_batch=2)
    assert CALLS["slow"] == 0, "a cached timing is not measured again"
    assert chosen(again) == chosen(plan)


def test_a_view_takes_its_alias_without_timing():
    """Timing a view against the arena-writing reference measures noise; the reference's arena copy is real."""
    g, x = graph_with_input((16,))
    g.set_outputs([g.call("tanh", g.call("reshape", g.call("tanh", x), newshape=(-1, 4, 4), name="tt_view"))])
    CALLS.clear()
    plan = Builder(BuilderConfig(optimization_level=3)).build(g.verify(), max_batch=2)
    assert chosen(plan, "reshape") == "tt_alias" and CALLS["alias"] == 0


def test_kernel_writing_into_the_arena_is_not_copied():
    CALLS.clear()
    plan = Builder(BuilderConfig(optimization_level=0)).build(softplus_graph("tt_inplace"), max_batch=3)
    assert chosen(plan) == "tt_inplace"
    x = torch.randn(3, 16)
    torch.testing.assert_close(plan.run(x)[0], torch.tanh(F.softplus(x)))
    assert CALLS["inplace.offered"] == 1 and CALLS["inplace.allocated"] == 0


def test_kernel_with_a_wrong_result_is_caught_naming_the_layer():
    plan = Builder(BuilderConfig(optimization_level=0)).build(softplus_graph("tt_broken"), max_batch=2)
    with pytest.raises(
        RuntimeError,
        match=r"layer 'tt_broken' \(nn.softplus, tactic tt_wrong_shape\) produced "
        r"torch.float32 \(1, 16\), the plan expects torch.float32 \(2, 16\)",
    ):
        plan.run(torch.randn(2, 16))


def test_layers_without_a_tactic_are_all_reported():
    t = TensorType("float32", (2, 4))
    inner = Graph("inner")
    inner.set_outputs([inner.call("nn.relu", inner.add_input("a", t))])
    g = Graph("outer")
    g.subgraphs["inner"] = inner
    y = g.call("subgraph", g.add_input("x", t), callee="inner", output_types=(encode_output_type(t),), name="first")
    g.set_outputs([g.call("subgraph", y, callee="inner", output_types=(encode_output_type(t),), name="second")])
    with pytest.raises(BuildError) as info:
        Builder().build(g.verify())
    message = str(info.value)
    assert message.startswith("2 layer(s) have no tactic")
    assert (
        "layer 'first' (subgraph) on cpu: reference: a subgraph call inside an engine region is not supported"
        in message
        and "layer 'second'" in message
    )


def test_registry_refuses_duplicates_unknown_devices_and_classes_without_bind():
    with pytest.raises(ValueError, match="tactic 'tt_slow' for nn.softplus is already registered"):
        tactic("nn.softplus", name="tt_slow")(SlowSoftplus)
    with pytest.raises(ValueError, match=r"unknown device type\(s\) \['tpu'\]"):
        tactic("nn.softplus", name="tt_tpu", devices=("tpu",))
    with pytest.raises(TypeError, match="needs a bind"):
        tactic("nn.softplus", name="tt_nobind")(type("NoBind", (), {}))
    assert get_tactic("nn.softplus", "tt_nobind") is None
    assert get_tactic("nn.conv2d", "reference").op == "*"


# ---------------------------------------------------------------------------------------------
# BuilderConfig
# ---------------------------------------------------------------------------------------------


def test_config_defaults_json_and_validation():
    config = BuilderConfig()
    assert (
        config.fp16,
        config.bf16,
        config.tf32,
        config.strict_types,
        config.max_workspace_size,
        config.optimization_level,
        config.timing_cache,
    ) == (False, False, True, False, 1 << 30, 3, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.fp16 = True
    custom = BuilderConfig(fp16=True, optimization_level=0, timing_cache="/tmp/t.json")
    assert BuilderConfig.from_json(custom.to_json()) == custom
    assert BuilderConfig.from_json(json.dumps(custom.to_json())) == custom
    assert hash(custom) == hash(BuilderConfig.from_json(custom.to_json()))
    with pytest.raises(ValueError, match=r"BuilderConfig has no option\(s\) \['fp8'\]"):
        BuilderConfig.from_json({"fp8": True})
    with pytest.raises(ValueError, match="optimization_level must be an int from 0 to 5"):
        BuilderConfig(optimization_level=9)
    with pytest.raises(ValueError, match="max_workspace_size must be a non-negative int"):
        BuilderConfig(max_workspace_size=-1)
    with pytest.raises(TypeError, match="fp16 must be a bool"):
        BuilderConfig(fp16=1)


def test_reduced_precision_reaches_the_layers_and_strict_types_builds():
    graph = softplus_graph("plain")  # more in tests/engine/test_precision.py
    for config in (BuilderConfig(fp16=True), BuilderConfig(fp16=True, strict_types=True)):
        plan = Builder(config).build(graph, max_batch=2)
        assert plan.counters["assign_precision"] == 2  # softplus and tanh (fused or not afterwards)
        assert plan.output_types == [v.type for v in graph.outputs]
