"""Plans: the API contract, running (batch range, input checks), serialization round trips, and every way
loading must refuse bytes that are not a plan for this machine — with a message saying what differs."""

from __future__ import annotations

import dataclasses
import json
import struct

import pytest
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from engine_helpers import BATCH, FUSED_TOL, assert_outputs_close, batch_norm_params, graph_with_input, snapshot
from tensorforge import ir
from tensorforge.engine import Builder, BuilderConfig, BuildError, LayerInfo, Plan, PlanCompatibilityError
from tensorforge.engine.fingerprint import PLAN_FORMAT_VERSION
from tensorforge.ir import TensorType
from tensorforge.ir.digest import seal

TORCH_MINOR = ".".join(torch.__version__.split("+")[0].split(".")[:2])
OTHER_MINOR = "2.11" if TORCH_MINOR != "2.11" else "2.12"  # a torch version that is not this one


def small_net():
    """conv-bn-relu -> pool -> flatten -> dense: every pass has something to do, two inputs (one without batch)."""
    g, x = graph_with_input((3, 8, 8), name="small")
    scale = g.add_input("scale", TensorType("float32", (10,)))
    h = g.call("nn.conv2d", x, g.add_constant(torch.randn(6, 3, 3, 3), "w"), padding=(1, 1))
    h = g.call("nn.relu", g.call("nn.batch_norm", h, *batch_norm_params(g, 6)))
    h = g.call("reshape", g.call("nn.global_avg_pool2d", h), newshape=(BATCH, 6))
    y = g.call("nn.dense", h, g.add_constant(torch.randn(10, 6), "fc"))
    g.set_outputs([g.call("multiply", y, scale)])
    return g.verify()


@pytest.fixture(scope="module")
def region():
    torch.manual_seed(0)
    return small_net()


@pytest.fixture(scope="module")
def plan(region):
    return Builder(BuilderConfig()).build(region, max_batch=4, device="cpu")


def inputs(batch):
    return torch.randn(batch, 3, 8, 8), torch.randn(10)


def edit_plan(data: bytes, edit, *, reseal: bool = True) -> bytes:
    """The plan with its JSON description changed by `edit(doc)` (weights kept as they are). With `reseal` the
    digest is recomputed, as a file written that way would carry: the checks behind the digest are then reached."""
    (n,) = struct.unpack("<Q", data[:8])
    doc = json.loads(json.loads(data[8 : 8 + n])["__metadata__"]["tensorforge.plan"])
    edit(doc)
    tensors = load_tensors(data)
    if reseal:
        seal(doc, tensors)
    return save_tensors(tensors, metadata={"tensorforge.plan": json.dumps(doc)})


def _first_activation_to_silu(doc):
    node = next(n for n in doc["graph"]["nodes"] if n["attrs"].get("activation") == "nn.relu")
    node["attrs"]["activation"] = "nn.silu"


# ---------------------------------------------------------------------------------------------
# The contract
# ---------------------------------------------------------------------------------------------


def test_plan_attributes(region, plan):
    assert plan.max_batch == 4 and plan.device == torch.device("cpu")
    assert plan.input_types == [v.type for v in region.inputs]
    assert plan.output_types == [v.type for v in region.outputs]
    assert plan.counters == {
        "constant_folding": 0,
        "fold_batch_norm": 1,
        "dense_from_matmul": 0,
        "fuse_bias_activation": 1,
        "sink_dequantize": 0,
        "fuse_quantized_layers": 0,
        "fuse_horizontal_dense": 0,
        "assign_precision": 0,
        "sink_transposes": 0,
        "reorder_dense_rows": 0,
        "fuse_layer_norm": 0,
        "hoist_attention_masks": 0,
        "fuse_pointwise": 0,
        "fold_view_chains": 0,
        "dead_code": 0,
    }
    assert [(layer.op, layer.tactic, layer.precision) for layer in plan.layers] == [
        ("engine.conv", "reference", "float32"),
        ("nn.global_avg_pool2d", "reference", "float32"),
        ("reshape", "reference", "float32"),
        ("nn.dense", "reference", "float32"),
        ("multiply", "reference", "float32"),
    ]
    assert all(isinstance(layer, LayerInfo) for layer in plan.layers)
    assert plan.layers[0].macs == 4 * 6 * 8 * 8 * 3 * 3 * 3, "MACs at max_batch"
    assert plan.peak_activation_bytes == plan.memory.arena_bytes > 0
    fp = plan.fingerprint
    assert fp["plan_format"] == PLAN_FORMAT_VERSION and fp["device_type"] == "cpu" and fp["device_name"] == "cpu"
    assert fp["torch"] == torch.__version__ and fp["tensorforge"]
    assert fp["capability"] is None and fp["cuda"] is None and fp["cudnn"] is None


def test_build_leaves_the_region_alone():
    region = small_net()
    before = snapshot(region)
    Builder().build(region, max_batch=2)
    assert snapshot(region) == before


def test_run_any_batch_up_to_max(region, plan):
    for batch in (1, 4, 3):
        args = inputs(batch)
        (out,) = plan.run(*args)
        assert out.shape == (batch, 10)
        assert_outputs_close((out,), ir.execute(region, *args), FUSED_TOL)


def test_describe_shows_layers_tactics_arena_and_counters(plan):
    text = plan.describe()
    for piece in (
        "engine.conv",
        "reference",
        "float32",
        str(plan.peak_activation_bytes),
        "fold_batch_norm 1",
        "fuse_bias_activation 1",
        "max_batch 4",
        str(plan.layers[0].macs),
    ):
        assert piece in text, piece


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def test_batch_above_max_batch_names_the_input_and_limit(plan):
    with pytest.raises(ValueError, match=r"input 'x': batch size 5 \(dimension 0\) is outside the plan's range 1\.\.4"):
        plan.run(*inputs(5))


def test_wrong_dtype_rank_count_and_device_name_the_input(plan):
    x, scale = inputs(2)
    with pytest.raises(TypeError, match="input 'x': expected dtype float32, got float16"):
        plan.run(x.half(), scale)
    with pytest.raises(ValueError, match="input 'scale': expected shape"):
        plan.run(x, scale[None])
    with pytest.raises(ValueError, match="input 'x': expected shape .* got \\(2, 4, 8, 8\\)"):
        plan.run(torch.randn(2, 4, 8, 8), scale)
    with pytest.raises(ValueError, match="takes 2 inputs"):
        plan.run(x)
    with pytest.raises(ValueError, match="input 'x' is on meta, the plan runs on cpu"):
        plan.run(x.to("meta"), scale)


def test_region_with_a_symbol_the_profile_lacks_is_refused():
    g = ir.Graph("seq")
    x = g.add_input("x", TensorType("float32", (BATCH, ir.Sym("seq"), 4)))
    g.set_outputs([g.call("nn.relu", x)])
    with pytest.raises(BuildError, match=r"no range to symbol 'seq' \(input %x.*pass profile=Profile\(\{'seq'"):
        Builder().build(g, max_batch=2)


@pytest.mark.parametrize("max_batch", [0, -1, 1.5, True])
def test_bad_max_batch_is_refused(region, max_batch):
    with pytest.raises(BuildError, match="max_batch must be a positive int"):
        Builder().build(region, max_batch=max_batch)


def test_static_region_ignores_max_batch():
    g = ir.Graph("static")
    x = g.add_input("x", TensorType("float32", (3, 4)))
    g.set_outputs([g.call("tanh", g.call("sigmoid", x))])
    plan = Builder().build(g, max_batch=8)
    data = torch.randn(3, 4)
    assert torch.allclose(plan.run(data)[0], torch.tanh(torch.sigmoid(data)))


# ---------------------------------------------------------------------------------------------
# Serialization
# ---------------------------------------------------------------------------------------------


def test_bytes_round_trip_gives_identical_outputs(plan):
    data = plan.to_bytes()
    loaded = Plan.from_bytes(data, device="cpu")
    args = inputs(3)
    assert all(torch.equal(a, b) for a, b in zip(loaded.run(*args), plan.run(*args)))
    assert loaded.layers == plan.layers and loaded.counters == plan.counters
    assert loaded.memory == plan.memory and loaded.config == plan.config and loaded.max_batch == plan.max_batch
    assert loaded.fingerprint == plan.fingerprint and loaded.input_types == plan.input_types
    assert loaded.to_bytes() == data, "serialization is deterministic"
    assert b"pickle" not in data[:64] and data[8:9] == b"{", "safetensors: a JSON header, no pickle"


def test_save_and_load_a_file(plan, tmp_path):
    path = tmp_path / "small.plan"
    plan.save(path)
    loaded = Plan.load(path, device="cpu")
    args = inputs(2)
    assert torch.equal(loaded.run(*args)[0], plan.run(*args)[0])
    assert [p.name for p in tmp_path.iterdir()] == ["small.plan"], "no temporary file is left behind"


def test_config_travels_with_the_plan(region):
    config = BuilderConfig(tf32=False, optimization_level=0, max_workspace_size=1 << 20)
    plan = Builder(config).build(region, max_batch=2)
    assert Plan.from_bytes(plan.to_bytes()).config == config


def _stored_config(data: bytes) -> dict:
    found = {}
    edit_plan(data, lambda doc: found.update(doc["config"]))
    return found


def test_a_plan_never_stores_the_timing_cache_path(region, tmp_path):
    """The timing cache is a file of the machine that builds: a plan (copied elsewhere) neither holds its path nor
    needs it to load, and the cache key it was stored under is checked as before."""
    path = str(tmp_path / "machine-local-timings.json")
    config = BuilderConfig(optimization_level=1, timing_cache=path)
    data = Builder(config).build(region, max_batch=2).to_bytes(cache_key="key-1")
    assert path.encode() not in data and "timing_cache" not in _stored_config(data)
    loaded = Plan.from_bytes(data, cache_key="key-1")
    assert loaded.config == config.replace(timing_cache=None)
    assert loaded.to_bytes(cache_key="key-1") == data
    with pytest.raises(PlanCompatibilityError, match="stored under cache key key-2"):
        Plan.from_bytes(data, cache_key="key-2")


def test_a_timing_cache_path_in_an_older_plan_is_dropped(plan):
    data = edit_plan(plan.to_bytes(), lambda doc: doc["config"].update(timing_cache="/elsewhere/timings.json"))
    assert Plan.from_bytes(data).config == plan.config and plan.config.timing_cache is None


def test_the_runtime_keys_its_plan_cache_on_every_option():
    """`to_json` (what runtime/cache.py's `plan_key` hashes) keeps every option, the timing cache's path included:
    leaving it out of plans changes no cache key."""
    config = BuilderConfig(timing_cache="/some/timings.json")
    assert config.to_json() == {f.name: getattr(config, f.name) for f in dataclasses.fields(BuilderConfig)}
    assert config.to_plan_json() == {k: v for k, v in config.to_json().items() if k != "timing_cache"}


def _truncated(data):
    return data[: len(data) // 2]


def _flipped_weight(data):
    corrupt = bytearray(data)
    corrupt[-5] ^= 0xFF
    return bytes(corrupt)


def _garbled_header(data):
    corrupt = bytearray(data)
    corrupt[9:20] = b"\x00" * 11
    return bytes(corrupt)


def _version(v):
    return lambda data: edit_plan(data, lambda doc: doc.update(version=v))


def _fingerprint(**changes):
    return lambda data: edit_plan(data, lambda doc: doc["fingerprint"].update(changes))


def _unknown_tactic(data):
    return edit_plan(data, lambda doc: doc["tactics"].update({next(iter(doc["tactics"])): "warp_speed"}))


H100 = {"device_type": "cuda", "device_name": "NVIDIA H100", "capability": [9, 0]}

REFUSED = [  # (make bad bytes from good plan bytes, a piece of the message)
    pytest.param(lambda data: b"hello", "too short to be one", id="garbage"),
    pytest.param(lambda data: b"\x10" * 64, "truncated", id="random-bytes"),
    pytest.param(_truncated, "a truncated one: the header is cut off", id="truncated-header"),
    pytest.param(lambda data: data[:-16], "corrupt plan: its weights cannot be read", id="truncated-weights"),
    pytest.param(_flipped_weight, "corrupt plan: its contents do not match its sha256 digest", id="flipped-weight-bit"),
    pytest.param(
        lambda data: edit_plan(data, _first_activation_to_silu, reseal=False),
        "corrupt plan: its contents do not match its sha256 digest",
        id="edited-activation",
    ),
    pytest.param(
        lambda data: edit_plan(data, lambda doc: doc["memory"].update(arena_bytes=1 << 40)),
        "memory.arena_bytes is 1099511627776, but its activations need at most",
        id="arena-too-large",
    ),
    pytest.param(
        lambda data: edit_plan(data, lambda doc: doc["memory"].update(alignment=0)),
        "memory.alignment is 0",
        id="arena-alignment-zero",
    ),
    pytest.param(
        lambda data: edit_plan(data, lambda doc: [slot.__setitem__(0, 0) for slot in doc["memory"]["slots"].values()]),
        "the same bytes while both are live",
        id="arena-slots-overlap",
    ),
    pytest.param(_garbled_header, "not valid JSON", id="garbled-header"),
    pytest.param(
        lambda data: save_tensors({"w": torch.ones(3)}),
        "a safetensors file, but not a tensorforge plan",
        id="foreign-safetensors",
    ),
    pytest.param(
        lambda data: save_tensors({"w": torch.ones(3)}, metadata={"tensorforge.plan": "[1, 2"}),
        "corrupt plan: its description is not valid JSON",
        id="broken-description",
    ),
    pytest.param(
        _version(PLAN_FORMAT_VERSION + 1),
        f"plan format version {PLAN_FORMAT_VERSION + 1}, this tensorforge reads version {PLAN_FORMAT_VERSION}",
        id="format-version",
    ),
    pytest.param(
        _version(PLAN_FORMAT_VERSION - 1),
        f"plan format version {PLAN_FORMAT_VERSION - 1}, this tensorforge reads version {PLAN_FORMAT_VERSION}",
        id="older-format-version",
    ),
    pytest.param(
        lambda data: edit_plan(data, lambda doc: doc["config"].pop("max_streams")),
        "corrupt plan: ValueError: the build options lack ['max_streams']",
        id="config-option-missing",
    ),
    pytest.param(_fingerprint(**H100), "built for device cuda NVIDIA H100 (sm90), this is cpu", id="built-for-cuda"),
    pytest.param(
        _fingerprint(torch=f"{OTHER_MINOR}.0+cu128"),
        f"built with torch {OTHER_MINOR}, this is {TORCH_MINOR}",
        id="other-torch",
    ),
    pytest.param(
        _fingerprint(plan_format=7),
        f"plan format version 7, this tensorforge reads version {PLAN_FORMAT_VERSION}",
        id="fingerprint-format",
    ),
    pytest.param(_unknown_tactic, "uses tactic 'warp_speed', which this tensorforge lacks", id="unknown-tactic"),
    pytest.param(
        lambda data: edit_plan(data, lambda doc: doc["memory"]["slots"].clear()),
        "the arena plan has no valid slot",
        id="memory-plan-missing",
    ),
    pytest.param(
        lambda data: edit_plan(data, lambda doc: doc["graph"]["nodes"][0].update(op="nn.conv9d")),
        "corrupt plan: .*unknown IR op 'nn.conv9d'",
        id="unknown-op",
    ),
]


@pytest.mark.parametrize("corrupt, message", REFUSED)
def test_loading_refuses_with_the_reason(plan, corrupt, message):
    with pytest.raises(PlanCompatibilityError, match=message if "*" in message else None) as info:
        Plan.from_bytes(corrupt(plan.to_bytes()), device="cpu")
    if "*" not in message:
        assert message in str(info.value)


def test_every_difference_is_listed(plan):
    data = _fingerprint(torch=f"{OTHER_MINOR}.1", **H100)(plan.to_bytes())
    with pytest.raises(PlanCompatibilityError) as info:
        Plan.from_bytes(data, device="cpu")
    message = str(info.value)
    assert "built for device cuda NVIDIA H100 (sm90), this is cpu" in message
    assert f"built with torch {OTHER_MINOR}, this is {TORCH_MINOR}" in message


def test_differences_that_do_not_matter_are_accepted(plan):
    data = _fingerprint(tensorforge="0.0.1", torch=torch.__version__.split("+")[0] + ".post9")(plan.to_bytes())
    Plan.from_bytes(data, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_loading_for_cuda_without_a_gpu_is_refused(plan):
    with pytest.raises(PlanCompatibilityError):
        Plan.from_bytes(plan.to_bytes(), device="cuda")


# ---------------------------------------------------------------------------------------------
# GPU: the same plan with reference tactics runs on CUDA (GPU tactics come with issue 4)
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_reference_plan_on_cuda(region, plan):
    gpu_plan = Builder(BuilderConfig(tf32=False)).build(region, max_batch=4, device="cuda")  # exact float32
    assert gpu_plan.device.type == "cuda" and gpu_plan.fingerprint["capability"] is not None
    assert gpu_plan.fingerprint["cuda"] and gpu_plan.fingerprint["device_name"] == torch.cuda.get_device_name()
    x, scale = inputs(3)
    out = gpu_plan.run(x.cuda(), scale.cuda())[0]
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), plan.run(x, scale)[0], rtol=1e-3, atol=1e-4)  # TF32 may be on
    loaded = Plan.from_bytes(gpu_plan.to_bytes(), device="cuda")
    assert torch.equal(loaded.run(x.cuda(), scale.cuda())[0], gpu_plan.run(x.cuda(), scale.cuda())[0])
    with pytest.raises(PlanCompatibilityError, match="built for device cuda .*, this is cpu"):
        Plan.from_bytes(gpu_plan.to_bytes(), device="cpu")
    with pytest.raises(PlanCompatibilityError, match="built for device cpu, this is cuda"):
        Plan.from_bytes(plan.to_bytes(), device="cuda")
