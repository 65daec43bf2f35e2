"""One settings object: RuntimeOptions holds the BuilderConfig, so every builder option reaches every entry point
(`build`, `compile`, `convert`, the command line), is validated once, is part of the plan cache key and is saved
with the module — except the machine's resources, which come from whoever loads it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import tensorforge as forge
from tensorforge.cli import build_parser
from tensorforge.cli.sources import _runtime_options
from tensorforge.engine import BuilderConfig
from tensorforge.runtime import RuntimeOptions
from tensorforge.runtime.options import MACHINE_FIELDS, OPTION_NAMES, SAVED_FIELDS

# every builder option -> a value other than its default (the first test keeps this table complete)
CHANGED = {
    "fp16": True,
    "bf16": True,
    "tf32": False,
    "strict_types": True,
    "max_workspace_size": 1 << 20,
    "optimization_level": 0,
    "timing_cache": "TIMING",
    "max_streams": 2,
}
# the same through the command line
CLI_FLAGS = {
    "fp16": ["--fp16"],
    "bf16": ["--bf16"],
    "tf32": ["--no-tf32"],
    "strict_types": ["--strict-types"],
    "max_workspace_size": ["--workspace", "1M"],
    "optimization_level": ["--optimization-level", "0"],
    "timing_cache": ["--timing-cache", "TIMING"],
    "max_streams": ["--max-streams", "2"],
}


def changed(name: str, tmp_path) -> object:
    return str(tmp_path / "timing.json") if CHANGED[name] == "TIMING" else CHANGED[name]


def linear():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)).eval()


def test_the_tables_name_every_builder_option():
    fields = {f.name for f in dataclasses.fields(BuilderConfig)}
    assert set(CHANGED) == set(CLI_FLAGS) == fields
    assert all(getattr(BuilderConfig(), name) != value for name, value in CHANGED.items())
    runtime = {"cache_dir", "multi_engine", "cuda_graph", "max_batch_size"}
    dynamic_shapes = {"profiles", "cuda_graph_cache_size", "build_on_miss", "pad_to_multiple", "pad_values"}
    assert fields | runtime | dynamic_shapes == OPTION_NAMES
    assert set(SAVED_FIELDS) == OPTION_NAMES - MACHINE_FIELDS
    assert {"cache_dir", "max_workspace_size", "timing_cache"} == MACHINE_FIELDS


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_every_builder_option_reaches_every_entry_point(name, tmp_path):
    value = changed(name, tmp_path)
    model, x = linear(), torch.randn(2, 8)
    graph, config = forge.partition_for_tensorforge(forge.frontends.from_torch(model, (x,)))
    modules = {
        "build": forge.build(graph, config, device="cpu", **{name: value}),
        "build(options=)": forge.build(
            graph, config, device="cpu", options=RuntimeOptions(BuilderConfig(**{name: value}))
        ),
        "compile": forge.compile(model, (x,), device="cpu", **{name: value}),
    }
    torch2trt_name = "fp16_mode" if name == "fp16" else name  # convert's own name for it
    modules["convert"] = forge.convert(model, [x], device="cpu", **{torch2trt_name: value})
    args = build_parser().parse_args(
        [
            "build",
            "resnet18",
            "-o",
            "x.tforge",
            *[str(tmp_path / "timing.json") if flag == "TIMING" else flag for flag in CLI_FLAGS[name]],
        ]
    )
    modules["cli"] = forge.build(graph, config, device="cpu", options=_runtime_options(args))
    for entry, module in modules.items():
        assert getattr(module.builder_config, name) == value, entry
        others = {f.name: getattr(module.builder_config, f.name) for f in dataclasses.fields(BuilderConfig)}
        del others[name]
        assert others == {k: v for k, v in BuilderConfig().to_json().items() if k != name}, entry


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_the_plan_cache_key_changes_with_every_builder_option(name, tmp_path):
    model, x = linear(), torch.randn(2, 8)
    graph, config = forge.partition_for_tensorforge(forge.frontends.from_torch(model, (x,)))
    cache = tmp_path / "plans"
    forge.build(graph, config, device="cpu", cache_dir=str(cache)).build_all(2)
    other = forge.build(graph, config, device="cpu", cache_dir=str(cache), **{name: changed(name, tmp_path)})
    other.build_all(2)
    assert (other._cache.builds, other._cache.hits) == (1, 0), f"{name} changed, the old plan was reused"
    assert len(list(cache.glob("*.plan"))) == 2


def test_saved_options_round_trip_and_the_machine_decides_its_resources(tmp_path):
    model, x = linear(), torch.randn(2, 8)
    saved = {
        "bf16": True,
        "tf32": False,
        "strict_types": True,
        "optimization_level": 1,
        "max_streams": 3,
        "multi_engine": 1,
        "cuda_graph": False,
        "max_batch_size": 16,
        "profiles": [{"batch": [1, 4, 8]}, {"input": [[1, 8], [8, 8], [16, 8]]}],
        "cuda_graph_cache_size": 3,
        "build_on_miss": False,
        "pad_to_multiple": {"batch": 2},
        "pad_values": {"input": 0.0},
    }
    assert set(saved) | {"fp16"} == set(SAVED_FIELDS)
    module = forge.compile(
        model,
        (x,),
        device="cpu",
        fp16=True,
        cache_dir=str(tmp_path / "a"),
        max_workspace_size=1 << 20,
        timing_cache=str(tmp_path / "t.json"),
        **saved,
    )
    module.save(tmp_path / "m.tforge")
    loaded = forge.load(tmp_path / "m.tforge", device="cpu")
    assert loaded.options.saved() == module.options.saved() == {"fp16": True, **saved}
    assert (loaded.options.cache_dir, loaded.builder_config.max_workspace_size, loaded.builder_config.timing_cache) == (
        None,
        1 << 30,
        None,
    )
    mine = forge.load(
        tmp_path / "m.tforge",
        device="cpu",
        cache_dir=str(tmp_path / "b"),
        max_workspace_size=1 << 21,
        timing_cache=str(tmp_path / "mine.json"),
    )
    assert (mine.options.cache_dir, mine.builder_config.max_workspace_size, mine.builder_config.timing_cache) == (
        str(tmp_path / "b"),
        1 << 21,
        str(tmp_path / "mine.json"),
    )


@pytest.mark.parametrize(
    "data, message",
    [
        ({"strict_types": 1}, "options.strict_types must be bool, got 1"),
        ({"optimization_level": 3.0}, "options.optimization_level must be int"),
        ({"max_batch_size": "8"}, "options.max_batch_size must be int or null"),
        ({"optimization_level": 9}, "optimization_level must be an int from 0 to 5"),
        ({"multi_engine": 2}, "multi_engine must be 0"),
        ([1, 2], "options must be a JSON object"),
        ({"cuda_graph_cache_size": 0}, "cuda_graph_cache_size must be a positive int"),
        ({"build_on_miss": "yes"}, "options.build_on_miss must be bool"),
        ({"profiles": {"seq": [1, 2, 3]}}, "profiles must be a list of profiles"),
        ({"profiles": [{"seq": [4, 2, 3]}]}, r"profiles\[0\]: the range of 'seq' must satisfy min <= opt <= max"),
        ({"profiles": [{"x": [[1], [2], [3, 4]]}]}, "must have one rank"),
        ({"pad_to_multiple": {"seq": 0}}, r"pad_to_multiple\['seq'\] must be a positive int"),
        ({"pad_to_multiple": [32]}, "pad_to_multiple must be a dict"),
        ({"pad_values": [0]}, "pad_values must map input names to numbers"),
        ({"pad_values": {"attention_mask": "zero"}}, "'attention_mask' must get a number or a bool"),
    ],
)
def test_saved_options_are_checked_as_data(data, message):
    with pytest.raises(ValueError, match=message):
        RuntimeOptions.from_saved(data)


def test_a_file_never_sets_the_machine_resources():
    options = RuntimeOptions.from_saved(
        {"cache_dir": "/x", "max_workspace_size": 1, "timing_cache": "/y", "fp16": True}
    )
    assert options == RuntimeOptions(BuilderConfig(fp16=True))


def test_options_by_name():
    options = RuntimeOptions().replace(fp16=True, optimization_level=1, cache_dir="plans", multi_engine=1)
    assert options == RuntimeOptions(BuilderConfig(fp16=True, optimization_level=1), cache_dir="plans", multi_engine=1)
    assert options.replace(builder_config=BuilderConfig(), bf16=True).builder_config == BuilderConfig(bf16=True)
    with pytest.raises(TypeError, match="unknown option.s. fp61; the options are bf16, build_on_miss, cache_dir"):
        RuntimeOptions().replace(fp61=True)
    with pytest.raises(TypeError, match="fp61"):
        forge.compile(linear(), (torch.randn(2, 8),), device="cpu", fp61=True)
    for bad in (
        {"multi_engine": True},
        {"max_batch_size": 0},
        {"cuda_graph": 1},
        {"max_streams": True},
        {"max_workspace_size": True},
        {"timing_cache": 5},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RuntimeOptions().replace(**bad)


def test_compile_precision_and_options_together():
    model, x = linear(), torch.randn(2, 8)
    module = forge.compile(model, (x,), precision="fp16", optimization_level=0, strict_types=True, device="cpu")
    assert (
        module.builder_config.fp16,
        module.builder_config.optimization_level,
        module.builder_config.strict_types,
    ) == (True, 0, True)
    assert forge.compile(model, (x,), precision="fp32-strict", tf32=False, device="cpu").builder_config.tf32 is False
    with pytest.raises(ValueError, match="precision='fp16' means fp16=True, but fp16=False was passed too"):
        forge.compile(model, (x,), precision="fp16", fp16=False, device="cpu")
    sized = forge.compile(model, (x,), device="cpu", max_workspace_size=1 << 20)
    assert sized.builder_config.max_workspace_size == sized.partition_config.max_workspace_size == 1 << 20
