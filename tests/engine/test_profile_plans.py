"""Plans built for a profile (issue 14, steps 4-5): one plan runs every size inside its profile's ranges, of any
symbol, without a rebuild; sizes outside are refused by name; the profile survives serialization and a hostile one
in a file is refused; the arena is sized for the profile's largest sizes. A batch-only plan is written as before.

Every run is compared with PyTorch eager on the same weights and with `ir.execute` of the region."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from engine_helpers import FUSED_TOL, assert_outputs_close
from tensorforge import ir
from tensorforge.engine import Builder, BuildError, Plan, PlanCompatibilityError
from tensorforge.engine.memory import align, arena_exemptions, plan_memory, slot_bytes
from tensorforge.ir import Graph, Profile, Sym, SymExpr, TensorType
from tensorforge.ir.digest import seal

B, S, H, W = (SymExpr.symbol(n) for n in ("batch", "seq", "h", "w"))
HID, HEADS = 16, 2
HEAD_DIM = HID // HEADS

SEQ_PROFILE = Profile({"batch": (1, 4, 4), "seq": (4, 16, 64)})
SEQ_SIZES = [(1, 4), (3, 16), (4, 64), (2, 37)]  # (batch, seq): the ends, opt, and a size between
IMAGE_PROFILE = Profile({"batch": (1, 2, 2), "h": (16, 32, 64), "w": (16, 32, 64)})
IMAGE_SIZES = [(1, 16, 16), (2, 32, 32), (2, 64, 48), (1, 23, 61)]  # (batch, h, w): odd sides too


def _weights(seed: int, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(*shape, generator=gen) * 0.3 for name, shape in shapes.items()}


# ---------------------------------------------------------------------------------------------
# A transformer block over [batch, seq, hidden]
# ---------------------------------------------------------------------------------------------

BLOCK_WEIGHTS = _weights(
    0,
    {
        "ln1.g": (HID,),
        "ln1.b": (HID,),
        **{f"w{p}": (HID, HID) for p in "qkvo"},
        **{f"b{p}": (HID,) for p in "qkvo"},
        "ln2.g": (HID,),
        "ln2.b": (HID,),
        "w1": (4 * HID, HID),
        "b1": (4 * HID,),
        "w2": (HID, 4 * HID),
        "b2": (HID,),
    },
)


def transformer_block() -> Graph:
    """Pre-norm attention + MLP: layer norm, dense, heads by reshape/transpose, matmul, softmax with an additive
    mask, gelu, residual adds; every dynamic size is `batch` or `seq`."""
    g = Graph("block")
    x = g.add_input("x", TensorType("float32", (B, S, HID)))
    mask = g.add_input("mask", TensorType("float32", (B, 1, 1, S)))
    c = {name: g.add_constant(t.clone(), name) for name, t in BLOCK_WEIGHTS.items()}

    def dense(t: ir.Value, p: str) -> ir.Value:
        return g.call("nn.bias_add", g.call("nn.dense", t, c[f"w{p}"]), c[f"b{p}"], axis=-1)

    def heads(t: ir.Value) -> ir.Value:
        return g.call("transpose", g.call("reshape", t, newshape=(B, S, HEADS, HEAD_DIM)), axes=(0, 2, 1, 3))

    h = g.call("nn.layer_norm", x, c["ln1.g"], c["ln1.b"], axis=-1, epsilon=1e-5)
    q, k, v = (heads(dense(h, p)) for p in "qkv")
    scores = g.call("matmul", q, g.call("transpose", k, axes=(0, 1, 3, 2)))
    scores = g.call("multiply", scores, g.add_constant(torch.tensor(HEAD_DIM**-0.5), "scale"))
    probs = g.call("nn.softmax", g.call("add", scores, mask), axis=-1)
    ctx = g.call("transpose", g.call("matmul", probs, v), axes=(0, 2, 1, 3))
    x = g.call("add", x, dense(g.call("reshape", ctx, newshape=(B, S, HID)), "o"))
    h = g.call("nn.layer_norm", x, c["ln2.g"], c["ln2.b"], axis=-1, epsilon=1e-5)
    h = g.call("nn.gelu", dense(h, "1"))
    g.set_outputs([g.call("add", x, dense(h, "2"))])
    return g.verify()


def transformer_eager(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    w = BLOCK_WEIGHTS
    batch, seq, _ = x.shape

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(batch, seq, HEADS, HEAD_DIM).transpose(1, 2)

    h = F.layer_norm(x, (HID,), w["ln1.g"], w["ln1.b"], 1e-5)
    q, k, v = (heads(F.linear(h, w[f"w{p}"], w[f"b{p}"])) for p in "qkv")
    probs = torch.softmax(q @ k.transpose(-1, -2) * HEAD_DIM**-0.5 + mask, dim=-1)
    x = x + F.linear((probs @ v).transpose(1, 2).reshape(batch, seq, HID), w["wo"], w["bo"])
    h = F.gelu(F.linear(F.layer_norm(x, (HID,), w["ln2.g"], w["ln2.b"], 1e-5), w["w1"], w["b1"]))
    return x + F.linear(h, w["w2"], w["b2"])


def seq_inputs(batch: int, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(batch * 1000 + seq)
    x = torch.randn(batch, seq, HID, generator=gen)
    mask = torch.where(torch.rand(batch, 1, 1, seq, generator=gen) < 0.2, -1e4, 0.0)
    return x, mask


@pytest.fixture(scope="module")
def block() -> Graph:
    return transformer_block()


@pytest.fixture(scope="module")
def block_plan(block: Graph) -> Plan:
    return Builder().build(block, profile=SEQ_PROFILE)


def test_one_plan_runs_every_size_of_its_profile(block, block_plan):
    arena = block_plan._thread_context().arena
    for batch, seq in SEQ_SIZES:
        args = seq_inputs(batch, seq)
        out = block_plan.run(*args)
        assert out[0].shape == (batch, seq, HID)
        assert_outputs_close(out, (transformer_eager(*args),), FUSED_TOL)
        assert_outputs_close(out, ir.execute(block, *args), FUSED_TOL)
    assert block_plan._thread_context().arena is arena, "every size ran in the one arena the plan was built with"


def test_the_block_ran_as_engine_layers(block_plan):
    ops = [layer.op for layer in block_plan.layers]
    # every dense fused with its bias (and the gelu), Q, K and V into one wide GEMM, the mask's add and scale into
    # one pointwise kernel, and the split of the wide GEMM's output into Q, K, V three views of it: the passes work on
    # [batch, seq, hidden] as on [batch, hidden]
    assert ops.count("engine.dense") == 4 and ops.count("engine.pointwise") == 1, ops
    assert ops.count("split") == 0 and ops.count("engine.strided_view") == 3, ops
    assert not {"nn.dense", "nn.bias_add", "nn.gelu", "add", "multiply"} & set(ops), ops
    assert block_plan.counters["fuse_bias_activation"] == 6 and block_plan.counters["fuse_horizontal_dense"] == 3
    assert block_plan.profile == SEQ_PROFILE and block_plan.max_batch == 4
    at_opt = sum(layer.macs for layer in block_plan.layers if layer.op == "engine.dense")
    assert at_opt == 4 * 16 * (4 * HID * HID + 2 * 4 * HID * HID), "MACs are counted at the profile's opt"


@pytest.mark.parametrize(
    "batch, seq, outside",
    [(1, 65, "seq = 65"), (2, 3, "seq = 3"), (5, 16, "batch = 5"), (5, 80, "batch = 5, seq = 80")],
    ids=["seq-above", "seq-below", "batch-above", "both"],
)
def test_sizes_outside_the_profile_are_refused_by_name(block_plan, batch, seq, outside):
    with pytest.raises(ValueError, match="outside the plan's profile") as info:
        block_plan.run(*seq_inputs(batch, seq))
    message = str(info.value)
    assert message.startswith(
        f"input sizes {outside} are outside the plan's profile batch 1..4 (opt 4), seq 4..64 (opt 16)"
    ), message
    assert "input 'x' dimension" in message


def test_a_symbol_without_a_range_is_a_build_error_that_says_how(block):
    with pytest.raises(BuildError, match=r"no range to symbol 'seq'.*pass profile=Profile\(\{'seq': \(min, opt, max\)"):
        Builder().build(block, max_batch=4)
    with pytest.raises(BuildError, match="give max_batch or profile, not both"):
        Builder().build(block, max_batch=4, profile=SEQ_PROFILE)


def test_max_batch_is_the_batch_only_profile(block):
    g = Graph("relu")
    x = g.add_input("x", TensorType("float32", (Sym("batch"), 3)))
    g.set_outputs([g.call("nn.relu", x)])
    plan = Builder().build(g, max_batch=3)
    assert plan.profile == Profile.batch(3) and plan.max_batch == 3
    assert Builder().build(g).profile == Profile.batch(1)
    no_batch = Builder().build(block.verify(), profile=Profile({"batch": (2, 2, 2), "seq": (4, 8, 8)}))
    assert no_batch.max_batch == 2
    seq_only = Graph("seq_only")
    y = seq_only.add_input("y", TensorType("float32", (S, 3)))
    seq_only.set_outputs([seq_only.call("nn.relu", y)])
    plan = Builder().build(seq_only, profile=Profile({"seq": (1, 8, 8)}))
    assert plan.max_batch == 1, "without a batch symbol the plan runs one batch"
    data = torch.randn(5, 3)
    torch.testing.assert_close(plan.run(data)[0], torch.relu(data))


# ---------------------------------------------------------------------------------------------
# A conv net over [batch, 3, h, w]
# ---------------------------------------------------------------------------------------------

CONV_WEIGHTS = _weights(1, {"c1.w": (8, 3, 3, 3), "c1.b": (8,), "c2.w": (8, 8, 3, 3), "c2.b": (8,), "fc": (5, 8)})


def conv_net() -> Graph:
    """stride-2 conv + relu, max pool (floor), conv + residual-free relu, global average pool, dense."""
    g = Graph("convnet")
    x = g.add_input("x", TensorType("float32", (B, 3, H, W)))
    c = {name: g.add_constant(t.clone(), name) for name, t in CONV_WEIGHTS.items()}
    h = g.call("nn.conv2d", x, c["c1.w"], strides=(2, 2), padding=(1, 1))
    h = g.call("nn.relu", g.call("nn.bias_add", h, c["c1.b"], axis=1))
    h = g.call("nn.max_pool2d", h, pool_size=(2, 2), strides=(2, 2))
    h = g.call("nn.relu", g.call("nn.bias_add", g.call("nn.conv2d", h, c["c2.w"], padding=(1, 1)), c["c2.b"], axis=1))
    h = g.call("reshape", g.call("nn.global_avg_pool2d", h), newshape=(B, 8))
    g.set_outputs([g.call("nn.dense", h, c["fc"])])
    return g.verify()


def conv_eager(x: torch.Tensor) -> torch.Tensor:
    w = CONV_WEIGHTS
    h = F.relu(F.conv2d(x, w["c1.w"], w["c1.b"], stride=2, padding=1))
    h = F.relu(F.conv2d(F.max_pool2d(h, 2, 2), w["c2.w"], w["c2.b"], padding=1))
    return F.linear(h.mean(dim=(2, 3)), w["fc"])


@pytest.fixture(scope="module")
def conv_plan() -> tuple[Graph, Plan]:
    region = conv_net()
    return region, Builder().build(region, profile=IMAGE_PROFILE)


def test_conv_net_runs_every_image_size_of_its_profile(conv_plan):
    region, plan = conv_plan
    assert [layer.op for layer in plan.layers].count("engine.conv") == 2
    for batch, h, w in IMAGE_SIZES:
        x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(h * w))
        out = plan.run(x)
        assert_outputs_close(out, (conv_eager(x),), FUSED_TOL)
        assert_outputs_close(out, ir.execute(region, x), FUSED_TOL)
    with pytest.raises(ValueError, match=r"input sizes h = 65 are outside the plan's profile batch 1..2 \(opt 2\), h"):
        plan.run(torch.randn(1, 3, 65, 32))


# ---------------------------------------------------------------------------------------------
# Serialization
# ---------------------------------------------------------------------------------------------


def plan_doc(data: bytes) -> dict:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(json.loads(data[8 : 8 + n])["__metadata__"]["tensorforge.plan"])


def edit_plan(data: bytes, edit) -> bytes:
    """The plan with its JSON description changed by `edit(doc)` and resealed, as a crafted file would be."""
    doc = plan_doc(data)
    edit(doc)
    tensors = load_tensors(data)
    seal(doc, tensors)
    return save_tensors(tensors, metadata={"tensorforge.plan": json.dumps(doc)})


def test_round_trip_keeps_the_profile_and_runs_every_size(block_plan):
    data = block_plan.to_bytes()
    doc = plan_doc(data)
    assert doc["profile"] == {"batch": [1, 4, 4], "seq": [4, 16, 64]} and "max_batch" not in doc
    loaded = Plan.from_bytes(data, device="cpu")
    assert loaded.profile == SEQ_PROFILE and loaded.memory == block_plan.memory and loaded.layers == block_plan.layers
    assert loaded.to_bytes() == data
    for batch, seq in SEQ_SIZES:
        args = seq_inputs(batch, seq)
        assert all(torch.equal(a, b) for a, b in zip(loaded.run(*args), block_plan.run(*args)))
    with pytest.raises(ValueError, match="seq = 100 are outside"):
        loaded.run(*seq_inputs(1, 100))


HOSTILE_PROFILES = [
    pytest.param({"batch": [1, 4, 4], "seq": [-4, 16, 64]}, "min of 'seq' must lie in", id="negative"),
    pytest.param({"batch": [1, 4, 4], "seq": [4.0, 16, 64]}, "min of 'seq' must be an int", id="float"),
    pytest.param({"batch": [1, 4, 4], "seq": [64, 16, 4]}, "min <= opt <= max", id="min-above-max"),
    pytest.param({"batch": [1, 4, 4], "seq": [4, 16]}, "must be (min, opt, max)", id="two-numbers"),
    pytest.param({"batch": [1, 4, 4], "seq": [4, 16, 2**40]}, "must lie in", id="huge"),
    pytest.param({"batch": [1, 4, 4], "1seq": [4, 16, 64]}, "must be an identifier", id="bad-symbol"),
    pytest.param([["seq", [4, 16, 64]]], "must be a JSON object", id="not-an-object"),
    pytest.param({"batch": [1, 4, 4]}, "gives no range to symbol(s) ['seq']", id="symbol-missing"),
    pytest.param({"batch": [1, 4, 4], "seq": [4, 16, 128]}, "no valid slot", id="max-beyond-the-arena"),
]


@pytest.mark.parametrize("profile, message", HOSTILE_PROFILES)
def test_a_hostile_profile_in_a_plan_is_refused(block_plan, profile, message):
    data = edit_plan(block_plan.to_bytes(), lambda doc: doc.update(profile=profile))
    with pytest.raises(PlanCompatibilityError) as info:
        Plan.from_bytes(data, device="cpu")
    assert message in str(info.value)


@pytest.mark.parametrize(
    "edit, message",
    [
        pytest.param(lambda doc: doc.update(max_batch=4), "exactly one of max_batch and profile", id="both"),
        pytest.param(lambda doc: doc.pop("profile"), "exactly one of max_batch and profile", id="neither"),
        pytest.param(
            lambda doc: [doc.pop("profile"), doc.update(max_batch=2.5)], "max_batch is 2.5", id="float-max-batch"
        ),
    ],
)
def test_a_plan_holds_one_description_of_its_sizes(block_plan, edit, message):
    with pytest.raises(PlanCompatibilityError, match=message):
        Plan.from_bytes(edit_plan(block_plan.to_bytes(), edit), device="cpu")


def _batch_only_region() -> Graph:
    """The region of data/batch_only_plan.json (its weights from a seeded generator)."""
    gen = torch.Generator().manual_seed(0)
    batch = Sym("batch")
    g = Graph("batch_only")
    x = g.add_input("x", TensorType("float32", (batch, 3, 8, 8)))

    def w(*shape: int, name: str) -> ir.Value:
        return g.add_constant(torch.randn(*shape, generator=gen), name)

    h = g.call("nn.conv2d", x, w(4, 3, 3, 3, name="conv.w"), strides=(2, 2), padding=(1, 1))
    h = g.call("nn.relu", g.call("nn.bias_add", h, w(4, name="conv.b"), axis=1))
    h = g.call("nn.max_pool2d", h, pool_size=(2, 2), strides=(2, 2))
    h = g.call("reshape", h, newshape=(batch, 16))
    y = g.call("nn.dense", h, w(10, 16, name="fc"))
    y = g.call("transpose", g.call("reshape", y, newshape=(batch, 2, 5)), axes=(0, 2, 1))  # folds to a strided view
    g.set_outputs([g.call("nn.softmax", y, axis=-1)])
    return g.verify()


def test_a_batch_only_plan_is_written_as_before_profiles():
    """data/batch_only_plan.json is this region's plan description as tensorforge wrote it before plans had
    profiles (commit 1654ea4), less what depends on the machine (fingerprint, and the digest that covers it).
    Regenerate it only for a deliberate change of what a batch-only plan holds."""
    plan = Builder().build(_batch_only_region(), max_batch=4)
    doc = plan_doc(plan.to_bytes())
    for key in ("fingerprint", "sha256"):
        doc.pop(key)
    expected = (Path(__file__).parent / "data" / "batch_only_plan.json").read_text()
    assert json.dumps(doc, indent=1) + "\n" == expected
    assert plan.profile == Profile.batch(4) and "profile" not in doc
    x = torch.randn(3, 3, 8, 8)
    loaded = Plan.from_bytes(plan.to_bytes(), device="cpu")
    assert loaded.profile == Profile.batch(4) and torch.equal(loaded.run(x)[0], plan.run(x)[0])


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------


def test_arena_slots_hold_the_profiles_largest_sizes(block_plan):
    graph, memory = block_plan.graph, block_plan.memory
    unplanned, aliases = arena_exemptions(graph, block_plan.tactics)
    at_opt = plan_memory(graph, SEQ_PROFILE.opt_env, unplanned=unplanned, aliases=aliases)
    assert memory.arena_bytes >= at_opt.arena_bytes
    assert memory.arena_bytes > at_opt.arena_bytes, "seq 64 takes more than seq 16"
    for name, slot in memory.slots.items():
        value = next(v for node in graph.nodes for v in node.outputs if v.name == name)
        assert slot.size >= value.type.nbytes(SEQ_PROFILE.max_env), name
    args = seq_inputs(4, 64)  # the largest sizes: every view fits its slot, results right
    assert_outputs_close(block_plan.run(*args), (transformer_eager(*args),), FUSED_TOL)


def test_a_size_not_monotone_in_its_symbols_is_sized_by_its_bound():
    """`seq - batch` is largest at seq max and batch min: the slot must hold the bound over the profile, not the
    value at max (which is smaller: 4 rows of 16 - 4)."""
    g = Graph("diff")
    x = g.add_input("x", TensorType("float32", (B, S, 16)))
    tail = g.call("strided_slice", x, begin=(0, 0), end=(1, B), axes=(0, 1))  # [1, batch, 16]
    y = g.call("strided_slice", x, begin=(B,), end=(2**63 - 1,), axes=(1,))  # [batch, seq - batch, 16]
    doubled = g.call("multiply", g.call("exp", y), g.add_constant(torch.tensor(2.0), "two"))
    g.set_outputs([g.call("tanh", doubled), tail])
    g.verify()
    profile = Profile({"batch": (1, 2, 4), "seq": (8, 8, 16)})
    assert y.type.shape == (B, S - B, 16)
    bound = 4 * 15 * 16 * 4  # batch 4 rows of seq 16 - batch 1 positions
    assert slot_bytes(y.type, profile) == bound > y.type.nbytes(profile.max_env)
    plan = Builder().build(g, profile=profile)
    assert plan.memory.slots[y.name].size == align(bound)
    for batch, seq in [(1, 16), (4, 8), (3, 11), (4, 16)]:
        data = torch.randn(batch, seq, 16)
        out = plan.run(data)
        torch.testing.assert_close(out[0], torch.tanh(torch.exp(data[:, batch:]) * 2))
        torch.testing.assert_close(out[1], data[:1, :batch])
