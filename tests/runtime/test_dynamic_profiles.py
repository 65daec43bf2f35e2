"""The runtime under dynamic sizes (issue 14): plans kept by optimization profile, one plan running every size inside
its profile, declared profiles (per symbol and TensorRT's per input), build on a miss (or an error naming the
ranges), the plan cache finding a plan by its profile, and profiles in saved modules. CPU: the engine's reference
tactics; every check compares with the graph's own reference execution (ir.execute, i.e. PyTorch eager)."""

from __future__ import annotations

import warnings

import pytest
import torch

import tensorforge as forge
from small_models import TinyEncoder
from tensorforge import ir
from tensorforge.ir import Graph, Profile, SymExpr, TensorType

B, S = SymExpr.symbol("batch"), SymExpr.symbol("seq")
REL_TOL = 1e-4
FEATURES = 8


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12)).item()


def sequence_graph() -> Graph:
    """[batch, seq, 8] -> dense -> layer norm -> gelu -> softmax -> + input: a transformer block's pointwise skeleton,
    whose every op the engine takes."""
    gen = torch.Generator().manual_seed(0)
    g = Graph("main")
    x = g.add_input("x", TensorType("float32", (B, S, FEATURES)))
    w = g.add_constant(torch.randn(FEATURES, FEATURES, generator=gen), "w")
    gamma = g.add_constant(torch.rand(FEATURES, generator=gen) + 0.5, "gamma")
    beta = g.add_constant(torch.randn(FEATURES, generator=gen), "beta")
    y = g.call("nn.dense", x, w)
    y = g.call("nn.layer_norm", y, gamma, beta)
    y = g.call("nn.gelu", y)
    y = g.call("nn.softmax", y, axis=-1)
    g.set_outputs([g.call("add", y, x)])
    return g


def module_of(**options) -> forge.Module:
    graph, config = forge.partition_for_tensorforge(sequence_graph(), use_implicit_batch=False)
    module = forge.build(graph, config, device="cpu", **options)
    assert list(module.regions) == ["tensorforge_0"]
    assert all(n.op == "subgraph" for n in module.graph.nodes), "the whole graph should run in the engine"
    return module


def check(module: forge.Module, batch: int, seq: int) -> None:
    x = torch.randn(batch, seq, FEATURES)
    (expected,) = ir.execute(sequence_graph(), x)
    assert rel_err(module(x), expected) <= REL_TOL, (batch, seq)


def only_plans(module: forge.Module) -> list:
    (plans,) = module.plans().values()
    return plans


def test_one_declared_profile_runs_every_size_inside_it_without_a_rebuild():
    module = module_of(profiles=[{"batch": (1, 2, 4), "seq": (4, 16, 64)}]).build_all()
    (plan,) = only_plans(module)
    assert plan.profile == Profile({"batch": (1, 2, 4), "seq": (4, 16, 64)})
    assert plan.layers and all(not layer.op.startswith("torch.") for layer in plan.layers)
    for batch, seq in [(1, 4), (3, 17), (4, 64), (2, 5)]:
        check(module, batch, seq)
    assert module._cache.builds == 1 and only_plans(module) == [plan]


def test_tensorrt_per_input_spelling_is_read_through_the_input_dims():
    module = module_of(profiles=[{"x": ((1, 4, FEATURES), (2, 16, FEATURES), (4, 64, FEATURES))}]).build_all()
    (plan,) = only_plans(module)
    assert plan.profile == Profile({"batch": (1, 2, 4), "seq": (4, 16, 64)})
    check(module, 2, 33)


def test_several_profiles_the_runtime_picks_the_one_that_fits():
    short, long = {"batch": (1, 1, 2), "seq": (1, 8, 16)}, {"batch": (1, 1, 2), "seq": (17, 128, 256)}
    module = module_of(profiles=[short, long]).build_all()
    assert {p.profile for p in only_plans(module)} == {Profile(short), Profile(long)}
    check(module, 2, 9)
    check(module, 1, 200)
    assert module._cache.builds == 2


def test_a_size_outside_every_profile_builds_with_a_warning_or_fails_naming_the_ranges():
    module = module_of(profiles=[{"batch": (1, 1, 2), "seq": (4, 8, 16)}]).build_all()
    with pytest.warns(RuntimeWarning, match=r"seq = 40 are outside every profile .*seq 4\.\.16 \(opt 8\)"):
        check(module, 1, 40)
    assert module._cache.builds == 2
    strict = module_of(profiles=[{"batch": (1, 1, 2), "seq": (4, 8, 16)}], build_on_miss=False).build_all()
    with pytest.raises(ValueError, match=r"outside every profile it has \(\[batch 1\.\.2 \(opt 1\), seq 4\.\.16"):
        strict(torch.randn(1, 40, FEATURES))
    check(strict, 2, 16)  # inside still runs


def test_without_a_profile_the_first_sizes_build_one_that_widens_by_powers_of_two():
    module = module_of()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the first build is no miss: no warning
        check(module, 2, 5)
    (plan,) = only_plans(module)
    assert plan.profile == Profile({"batch": (1, 2, 2), "seq": (1, 5, 8)})
    check(module, 1, 8)  # inside: no rebuild
    assert module._cache.builds == 1
    with pytest.warns(RuntimeWarning, match="building a plan for batch 1..2 \\(opt 2\\), seq 1..16 \\(opt 5\\)"):
        check(module, 2, 11)
    (wider,) = only_plans(module)  # mode 0: the wider plan replaced the narrower one
    assert wider.profile == Profile({"batch": (1, 2, 2), "seq": (1, 5, 16)})
    check(module, 1, 3)
    assert module._cache.builds == 2


def test_multi_engine_1_keeps_a_plan_per_shape():
    module = module_of(multi_engine=1)
    check(module, 2, 5)
    with pytest.warns(RuntimeWarning):
        check(module, 2, 7)
    check(module, 2, 5)
    assert sorted(p.profile.key() for p in only_plans(module)) == [
        Profile({"batch": (1, 2, 2), "seq": (5, 5, 5)}).key(),
        Profile({"batch": (1, 2, 2), "seq": (7, 7, 7)}).key(),
    ]
    assert module._cache.builds == 2


def test_the_plan_cache_finds_a_plan_by_its_profile_in_another_module(tmp_path):
    first = module_of(cache_dir=str(tmp_path))
    check(first, 2, 12)  # builds seq 1..16 (opt 12)
    assert first._cache.builds == 1
    second = module_of(cache_dir=str(tmp_path))  # a fresh module (another process): no plans in memory
    check(second, 1, 9)  # inside the cached profile: loaded, not built
    assert second._cache.builds == 0 and second._cache.hits == 1
    (plan,) = only_plans(second)
    assert plan.profile == Profile({"batch": (1, 2, 2), "seq": (1, 12, 16)})
    index = list(tmp_path.glob("*.profiles.json"))
    assert len(index) == 1
    index[0].write_text('[{"seq": [5, 1, 2]}, "junk", {"batch": [1, 2, 2], "seq": [1, 12, 16]}]')
    third = module_of(cache_dir=str(tmp_path))
    check(third, 2, 16)  # a hostile index entry is skipped, the sound one still found
    assert third._cache.builds == 0


def test_saved_module_keeps_each_plans_profile(tmp_path):
    module = module_of(profiles=[{"batch": (1, 2, 4), "seq": (4, 16, 64)}]).build_all()
    module.save(tmp_path / "m.tforge")
    loaded = forge.load(tmp_path / "m.tforge", device="cpu")
    (plan,) = only_plans(loaded)
    assert plan.profile == Profile({"batch": (1, 2, 4), "seq": (4, 16, 64)})
    for batch, seq in [(1, 4), (4, 64), (3, 30)]:
        check(loaded, batch, seq)
    assert loaded._cache.builds == 0


def test_a_weightless_module_runs_its_saved_profiles_and_names_them_when_it_cannot():
    module = module_of(profiles=[{"batch": (1, 2, 4), "seq": (4, 16, 64)}]).build_all()
    loaded = forge.Module()
    loaded.load_state_dict(module.state_dict())
    check(loaded, 2, 40)
    x = torch.randn(2, 100, FEATURES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the miss warns before the build finds it has no weights
        with pytest.raises(ValueError, match=r"saved plans are for \[batch 1\.\.4 \(opt 2\), seq 4\.\.64 \(opt 16\)\]"):
            loaded(x)


@pytest.mark.parametrize(
    "profiles, message",
    [
        ([{"seq": (8, 4, 16)}], "min <= opt <= max"),
        ([{"x": ((1, 4), (2, 16), (4, 64))}], "must have 3 dims"),
        ([{"y": ((1, 4, 8), (2, 16, 8), (4, 64, 8))}], "lacks"),
        ([{"x": ((1, 4, 9), (2, 16, 9), (4, 64, 9))}], "constant 8"),
    ],
)
def test_malformed_profiles_are_refused_when_the_module_is_made(profiles, message):
    with pytest.raises(ValueError, match=message):
        module_of(profiles=profiles)


def test_padding_buckets_run_the_module_at_bucket_sizes_and_slice_back():
    from test_padding import inputs, masked_attention  # the masked-attention graph and its inputs (same folder)

    graph, config = forge.partition_for_tensorforge(masked_attention(), use_implicit_batch=False)
    module = forge.build(
        graph, config, device="cpu", pad_to_multiple={"seq": 8}, pad_values={"x": 0.0, "attention_mask": False}
    )
    assert all(n.op == "subgraph" for n in module.graph.nodes)
    for n in (3, 5, 8):  # one bucket (8): one plan, built once
        x, mask = inputs(n, lengths=(None, max(1, n - 2)))
        (expected,) = ir.execute(masked_attention(), x, mask)
        out = module(x, mask)
        assert out.shape == expected.shape == (2, 1, n, 8)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    (plan,) = only_plans(module)
    assert plan.profile.ranges["seq"][1] == 8 and module._cache.builds == 1
    with pytest.raises(ValueError, match="no pad value"):
        forge.build(graph, config, device="cpu", pad_to_multiple={"seq": 8}, pad_values={"x": 0.0})


def test_compile_with_a_torch_export_dim_and_a_profile_runs_every_length_in_one_plan():
    model = TinyEncoder().eval()
    seq = torch.export.Dim("seq", min=2, max=64)
    ids = torch.randint(0, 50, (2, 8))
    module = forge.compile(
        model, (ids,), dynamic_shapes={"input_ids": {1: seq}}, profiles=[{"seq": (2, 16, 64)}], device="cpu"
    )
    assert module.graph.inputs[0].type.shape == (2, SymExpr.symbol("seq"))
    assert module.graph.symbol_ranges == {"seq": (2, 64)}
    assert all(n.op == "subgraph" for n in module.graph.nodes), "the whole encoder should run in the engine"
    for length in (2, 9, 16, 64):
        x = torch.randint(0, 50, (2, length))
        with torch.no_grad():
            expected = model(x)
        assert rel_err(module(x), expected) <= REL_TOL, length
    (plan,) = only_plans(module)
    assert plan.profile == Profile({"seq": (2, 16, 64)}) and module._cache.builds == 1


def test_compile_with_a_dim_and_no_profile_widens_within_the_dims_range():
    model = TinyEncoder().eval()
    ids = torch.randint(0, 50, (1, 8))
    module = forge.compile(
        model, (ids,), dynamic_shapes={"input_ids": {1: torch.export.Dim("seq", min=4, max=40)}}, device="cpu"
    )
    for length in (5, 7):  # the first builds seq 4..8 (the Dim's min, up to a power of two), the second fits
        x = torch.randint(0, 50, (1, length))
        with torch.no_grad():
            assert rel_err(module(x), model(x)) <= REL_TOL
    assert [p.profile for p in only_plans(module)] == [Profile({"seq": (4, 5, 8)})]
    with pytest.warns(RuntimeWarning, match="seq 4..40"):  # 33 rounds up to 64, capped at the Dim's max
        module(torch.randint(0, 50, (1, 33)))


@pytest.mark.slow
def test_mobilenet_over_any_image_size_runs_in_one_plan():
    """A real conv net over h x w: chains of stride-2 windows ((h + 3) // 4 ... (h + 31) // 32), depthwise
    convolutions, the adaptive pool; odd and non-square sizes, one plan."""
    import torchvision

    model = torchvision.models.mobilenet_v2(num_classes=10).eval()
    h, w = torch.export.Dim("h", min=64, max=160), torch.export.Dim("w", min=64, max=160)
    module = forge.compile(
        model,
        (torch.randn(1, 3, 96, 96),),
        dynamic_shapes={"x": {2: h, 3: w}},
        profiles=[{"h": (64, 96, 160), "w": (64, 96, 160)}],
        device="cpu",
    )
    assert all(n.op == "subgraph" for n in module.graph.nodes)
    for size in [(96, 96), (64, 160), (131, 77), (160, 160)]:
        image = torch.randn(1, 3, *size)
        with torch.no_grad():
            assert rel_err(module(image), model(image)) <= REL_TOL, size
    assert module._cache.builds == 1
