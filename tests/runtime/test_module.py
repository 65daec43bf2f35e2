"""The runtime module on CPU: regions run through plans, the rest through PyTorch, and it all matches eager."""

from __future__ import annotations

import pytest
import torch

import tensorforge as forge
from tensorforge.engine import BuilderConfig, BuildError
from tensorforge.runtime import RuntimeOptions

REL_TOL = 1e-4


def rel_err(a, b) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12)).item()


def compiled(model, x, **build_options):
    graph = forge.frontends.from_torch(model, (x,))
    graph, config = forge.partition_for_tensorforge(graph)
    return forge.build(graph, config, device="cpu", **build_options)


def test_one_region_runs_through_a_plan(small_net):
    x = torch.randn(2, 3, 16, 16)
    module = compiled(small_net, x)
    assert len(module.regions) == 1
    assert all(n.op == "subgraph" for n in module.graph.nodes), "everything should be offloaded"
    with torch.no_grad():
        expected = small_net(x)
    assert rel_err(module(x), expected) <= REL_TOL
    (plan,) = module.plans()["tensorforge_0"]
    assert plan.max_batch == 2
    assert plan.counters["fold_batch_norm"] == 1  # the engine really optimized the region
    assert not any(layer.op == "nn.batch_norm" for layer in plan.layers)


def test_unsupported_op_splits_into_regions_and_fallback(fallback_net):
    x = torch.randn(3, 16)
    module = compiled(fallback_net, x)
    fallback = [n.op for n in module.graph.nodes if n.op != "subgraph"]
    assert fallback == ["torch.aten.logcumsumexp.default"]
    assert len(module.regions) == 2
    with torch.no_grad():
        assert rel_err(module(x), fallback_net(x)) <= REL_TOL
    assert "torch.aten.logcumsumexp.default" in str(module.report)


def test_multi_engine_mode_0_keeps_one_plan_for_the_largest_batch(small_net):
    module = compiled(small_net, torch.randn(2, 3, 16, 16))
    for batch in (2, 4, 1, 3):
        x = torch.randn(batch, 3, 16, 16)
        with torch.no_grad():
            assert rel_err(module(x), small_net(x)) <= REL_TOL
    plans = module.plans()["tensorforge_0"]
    assert [p.max_batch for p in plans] == [4]


def test_multi_engine_mode_1_keeps_one_plan_per_batch(small_net):
    module = compiled(small_net, torch.randn(2, 3, 16, 16), multi_engine=1)
    for batch in (2, 4, 1, 2):
        module(torch.randn(batch, 3, 16, 16))
    assert sorted(p.max_batch for p in module.plans()["tensorforge_0"]) == [1, 2, 4]


def test_build_all_builds_ahead(small_net):
    module = compiled(small_net, torch.randn(2, 3, 16, 16))
    assert module.plans()["tensorforge_0"] == []
    module.build_all(8)
    assert [p.max_batch for p in module.plans()["tensorforge_0"]] == [8]


def test_workspace_too_small_is_a_clear_build_error(small_net):
    module = compiled(small_net, torch.randn(2, 3, 16, 16), max_workspace_size=1024)
    with pytest.raises(BuildError, match="max_workspace_size"):
        module(torch.randn(2, 3, 16, 16))


def test_environment_variables_override_options(monkeypatch, tmp_path):
    monkeypatch.setenv("TENSORFORGE_USE_FP16", "1")
    monkeypatch.setenv("TENSORFORGE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TENSORFORGE_MAX_WORKSPACE_SIZE", "4096")
    monkeypatch.setenv("TENSORFORGE_MULTI_ENGINE", "1")
    options = RuntimeOptions().with_env()
    assert options == RuntimeOptions(
        BuilderConfig(fp16=True, max_workspace_size=4096), cache_dir=str(tmp_path), multi_engine=1
    )
    monkeypatch.setenv("TENSORFORGE_MULTI_ENGINE", "2")
    with pytest.raises(ValueError, match="multi_engine"):
        RuntimeOptions().with_env()
    monkeypatch.setenv("TENSORFORGE_USE_FP16", "maybe")
    with pytest.raises(ValueError, match="TENSORFORGE_USE_FP16"):
        RuntimeOptions().with_env()


def test_environment_cache_dir_expands_the_home_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TENSORFORGE_CACHE_DIR", "~/plans")
    assert RuntimeOptions().with_env().cache_dir == str(tmp_path / "plans"), "not a directory named '~'"


def test_environment_cache_dir_reaches_the_module(monkeypatch, tmp_path, small_net):
    monkeypatch.setenv("TENSORFORGE_CACHE_DIR", str(tmp_path))
    module = compiled(small_net, torch.randn(2, 3, 16, 16))
    module.build_all(2)
    assert len(list(tmp_path.glob("*.plan"))) == 1


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda: (torch.randn(2, 3, 16, 16), torch.randn(1)), "takes 1 inputs"),
        (lambda: (torch.randn(2, 3, 15, 16),), "dimension 2 must be 16"),
        (lambda: (torch.randn(2, 3, 16),), "rank 4"),
        (lambda: (torch.randn(2, 3, 16, 16, dtype=torch.float64),), "expected dtype float32"),
        (lambda: ([[1.0]],), "must be a torch.Tensor"),
    ],
)
def test_wrong_inputs_are_clear_errors(small_net, bad, message):
    module = compiled(small_net, torch.randn(2, 3, 16, 16))
    with pytest.raises((ValueError, TypeError), match=message):
        module(*bad())


def test_input_on_the_wrong_device_is_a_clear_error(small_net):
    module = compiled(small_net, torch.randn(2, 3, 16, 16))
    module.device = torch.device("meta")  # pretend the module runs elsewhere
    with pytest.raises(ValueError, match="is on cpu, but this module runs on meta"):
        module(torch.randn(2, 3, 16, 16))


def test_empty_module_says_how_to_fill_it():
    with pytest.raises(RuntimeError, match="empty"):
        forge.EngineModule()(torch.randn(1))


def test_max_streams_reaches_the_builder_and_is_checked():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4)).eval()
    module = forge.compile(model, (torch.randn(2, 4),), device="cpu", max_streams=1)
    assert module.builder_config.max_streams == 1
    assert forge.compile(model, (torch.randn(2, 4),), device="cpu").builder_config.max_streams == 4
    with pytest.raises(ValueError, match="max_streams"):
        forge.compile(model, (torch.randn(2, 4),), device="cpu", max_streams=0)
