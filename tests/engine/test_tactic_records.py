"""The tactic record: capabilities and requirements are declared at registration (`@tactic` keyword arguments) and
read as typed fields; a class carrying one of them as an attribute, or a near miss of one, is refused at
registration; the registry checks the requirements (Triton, compute capability) with a sentence.

Test tactics register for nn.softplus and take only nodes named "tr_...", so they never touch other tests' plans.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import torch

from engine_helpers import graph_with_input
from tensorforge.engine import BuilderConfig
from tensorforge.engine.tactics import Tactic, candidates, get_tactic, registered_tactics, tactic
from tensorforge.engine.tactics.registry import DECLARED, device_capability
from tensorforge.ir import Graph, Sym, TensorType

CL = torch.channels_last
# what the engine's own tactics declare (a tactic not listed declares every default)
EXPECTED = {
    ("*", "reference"): dict(runs_reference=True),
    ("*", "torch"): dict(writes_arena=False, runs_reference=True),
    ("reshape", "alias"): dict(writes_arena=False, aliases_input=True),
    ("engine.conv", "cudnn_nhwc"): dict(writes_arena=False, packs_weights=True, input_memory_format=CL),
    ("engine.conv", "cudnn_nchw"): dict(writes_arena=False, packs_weights=True),
    ("engine.conv", "cudnn_nhwc_triton"): dict(
        writes_arena=False, packs_weights=True, input_memory_format=CL, requires_triton=True
    ),
    ("engine.conv", "cudnn_fused_nhwc"): dict(writes_arena=False, packs_weights=True, input_memory_format=CL),
    ("engine.conv", "triton_depthwise_nhwc"): dict(
        writes_arena=False, packs_weights=True, compiles=True, requires_triton=True, input_memory_format=CL
    ),
    ("engine.conv", "triton_gemm_64x64x64"): dict(
        writes_arena=False, packs_weights=True, compiles=True, requires_triton=True, input_memory_format=CL
    ),
    ("engine.conv", "triton_tma_128x128x64"): dict(
        writes_arena=False,
        packs_weights=True,
        compiles=True,
        requires_triton=True,
        input_memory_format=CL,
        min_capability=(9, 0),
    ),
    ("engine.dense", "cublaslt_epilogue"): dict(packs_weights=True),
    ("engine.dense", "cublas_addmm"): dict(packs_weights=True),
    ("engine.dense", "triton_gemm_64x64x64"): dict(packs_weights=True, compiles=True, requires_triton=True),
    ("engine.dense", "triton_tma_128x256x64"): dict(
        packs_weights=True, compiles=True, requires_triton=True, min_capability=(9, 0)
    ),
    ("engine.layer_norm", "triton"): dict(compiles=True, requires_triton=True),
    ("nn.layer_norm", "triton_rows4"): dict(compiles=True, requires_triton=True),
    ("engine.pointwise", "triton"): dict(compiles=True, requires_triton=True),
    ("engine.pointwise", "torch_out"): dict(runs_reference=True),
    ("nn.max_pool2d", "triton_nhwc"): dict(
        writes_arena=False, compiles=True, requires_triton=True, input_memory_format=CL
    ),
}
CAPABILITY_DEFAULTS = {
    f.name: f.default
    for f in dataclasses.fields(Tactic)
    if f.name
    in (
        "writes_arena",
        "aliases_input",
        "runs_reference",
        "packs_weights",
        "compiles",
        "input_memory_format",
        "requires_triton",
        "min_capability",
    )
}


def _only_tr(node, config):
    return None if node.name.startswith("tr_") else "test tactic, only for nodes named tr_..."


def _bind(node, ctx):
    raise AssertionError("never bound")


def impl(name: str = "Impl", **attrs) -> type:
    return type(name, (), {"supports": staticmethod(_only_tr), "bind": staticmethod(_bind), **attrs})


def softplus_node(name: str):
    g, x = graph_with_input((8,))
    g.set_outputs([g.call("nn.softplus", x, name=name)])
    return g.verify().nodes[0]


@pytest.mark.parametrize("key", list(EXPECTED), ids=["/".join(k) for k in EXPECTED])
def test_the_engine_tactics_declare_their_capabilities(key):
    t = get_tactic(*key)
    assert t is not None and t.op == key[0]
    declared = {name: getattr(t, name) for name in CAPABILITY_DEFAULTS}
    assert declared == {**CAPABILITY_DEFAULTS, **EXPECTED[key]}


def test_no_implementation_class_carries_a_declared_attribute():
    for t in registered_tactics():
        carried = [name for name in DECLARED if any(name in vars(k) for k in t.impl.__mro__)]
        assert not carried, f"{t}: {carried}"
        assert all(
            isinstance(getattr(t, flag), bool)
            for flag in CAPABILITY_DEFAULTS
            if flag not in ("input_memory_format", "min_capability")
        )
        assert t.compiles <= t.requires_triton, f"{t} compiles Triton kernels without requiring Triton"


def test_a_tactic_registered_with_capabilities_reads_them_back():
    tactic(
        "nn.softplus",
        name="tr_declared",
        devices=("cuda",),
        writes_arena=False,
        packs_weights=True,
        compiles=True,
        requires_triton=True,
        input_memory_format=CL,
        min_capability=(8, 0),
    )(impl())
    t = get_tactic("nn.softplus", "tr_declared")
    assert (
        t.writes_arena,
        t.aliases_input,
        t.runs_reference,
        t.packs_weights,
        t.compiles,
        t.input_memory_format,
        t.requires_triton,
        t.min_capability,
    ) == (False, False, False, True, True, CL, True, (8, 0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.writes_arena = True


# -- registration errors ---------------------------------------------------------------------------------------


class _Base:
    writes_arena = False  # a stale class attribute, inherited

    supports = staticmethod(_only_tr)
    bind = staticmethod(_bind)


@pytest.mark.parametrize(
    "cls, message",
    [
        pytest.param(
            impl(writes_arena=False),
            r"Impl has a class attribute 'writes_arena'; declare it at registration "
            r"instead: @tactic\(\.\.\., writes_arena=\.\.\.\)",
            id="declared-name",
        ),
        pytest.param(impl(input_memory_format=CL), r"class attribute 'input_memory_format'", id="memory-format"),
        pytest.param(impl(priority=3), r"class attribute 'priority'", id="registry-field"),
        pytest.param(type("Child", (_Base,), {}), r"Child has a class attribute 'writes_arena'", id="inherited"),
        pytest.param(
            impl(write_arena=False),
            r"has an attribute 'write_arena', close to 'writes_arena': a misspelling\? "
            r"\(@tactic\(\.\.\., writes_arena=\.\.\.\) declares that\)",
            id="misspelt-capability",
        ),
        pytest.param(impl(compile=True), r"'compile', close to 'compiles'", id="misspelt-compiles"),
        pytest.param(
            type("Misspelt", (), {"support": staticmethod(_only_tr), "bind": staticmethod(_bind)}),
            r"has an attribute 'support', close to 'supports': a misspelling\? \(the method is 'supports'\)",
            id="misspelt-supports",
        ),
        pytest.param(type("NoBind", (), {}), r"NoBind needs a bind\(node, ctx\) method", id="no-bind"),
        pytest.param(impl(supports=True), r"has a supports attribute that is not a method", id="supports-not-callable"),
    ],
)
def test_a_class_carrying_what_registration_declares_is_refused(cls, message):
    with pytest.raises(TypeError, match=message):
        tactic("nn.softplus", name="tr_refused")(cls)
    assert get_tactic("nn.softplus", "tr_refused") is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        pytest.param(dict(devices=("tpu",)), r"unknown device type\(s\) \['tpu'\]", id="device"),
        pytest.param(dict(writes_arena=0), r"writes_arena must be a bool, got 0", id="not-a-bool"),
        pytest.param(dict(aliases_input=True, runs_reference=True), "declare one", id="two-view-kinds"),
        pytest.param(dict(compiles=True), r"compiles=True .* needs requires_triton=True", id="compiles-without-triton"),
        pytest.param(dict(input_memory_format="channels_last"), "must be a torch.memory_format", id="memory-format"),
        pytest.param(
            dict(devices=("cuda",), min_capability=9),
            r"min_capability must be \(major, minor\), got 9",
            id="capability-int",
        ),
        pytest.param(dict(devices=("cuda",), min_capability=(9, 0, 1)), r"must be \(major, minor\)", id="capability-3"),
        pytest.param(dict(devices=("cuda",), min_capability=[9, 0]), r"must be \(major, minor\)", id="capability-list"),
        pytest.param(
            dict(min_capability=(9, 0)),
            r"a CUDA compute capability, but it runs on \['cpu', 'cuda'\]",
            id="capability-on-cpu",
        ),
    ],
)
def test_declarations_that_do_not_make_sense_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=rf"tactic 'tr_bad' for nn.softplus: .*{message}"):
        tactic("nn.softplus", name="tr_bad", **kwargs)(impl())
    assert get_tactic("nn.softplus", "tr_bad") is None


def test_a_misspelt_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="write_arena"):
        tactic("nn.softplus", name="tr_kwarg", write_arena=False)


# -- requirements, checked by the registry ----------------------------------------------------------------------

tactic("nn.softplus", name="tr_needs_triton", requires_triton=True, priority=40)(impl("NeedsTriton"))
tactic("nn.softplus", name="tr_needs_sm90", devices=("cuda",), min_capability=(9, 0), priority=41)(impl("NeedsSm90"))


def _no_triton(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))


def test_a_tactic_requiring_triton_is_refused_without_it(monkeypatch):
    node = softplus_node("tr_layer")
    supported, _ = candidates(node, "cpu", BuilderConfig())
    assert "tr_needs_triton" in [t.name for t in supported]
    _no_triton(monkeypatch)
    supported, refused = candidates(node, "cpu", BuilderConfig())
    assert "tr_needs_triton" not in [t.name for t in supported]
    assert dict((t.name, why) for t, why in refused)["tr_needs_triton"] == "Triton is not installed"


def test_requirements_come_before_the_tactics_own_check(monkeypatch):
    _no_triton(monkeypatch)  # the node is not one the tactic takes either: the requirement is what is reported
    assert (
        get_tactic("nn.softplus", "tr_needs_triton").supports(softplus_node("other"), BuilderConfig())
        == "Triton is not installed"
    )


def test_the_compute_capability_is_compared_as_a_tuple():
    t = get_tactic("nn.softplus", "tr_needs_sm90")
    node = softplus_node("tr_layer")
    assert t.supports(node, BuilderConfig(), (8, 9)) == "needs compute capability 9.0 or newer; the device has 8.9"
    assert t.supports(node, BuilderConfig(), (9, 0)) is None
    assert t.supports(node, BuilderConfig(), (10, 0)) is None
    assert t.supports(node, BuilderConfig()) is None, "an unknown capability (no GPU here) is not checked"


def _fake_gpu(monkeypatch, capability):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)


def test_candidates_read_the_capability_of_the_device(monkeypatch):
    assert device_capability("cpu") is None
    if not torch.cuda.is_available():
        assert device_capability("cuda") is None
    _fake_gpu(monkeypatch, (8, 0))
    assert device_capability(torch.device("cuda", 0)) == (8, 0) and device_capability("cpu") is None
    node = softplus_node("tr_layer")
    supported, refused = candidates(node, "cuda", BuilderConfig())
    assert "tr_needs_sm90" not in [t.name for t in supported]
    assert (
        dict((t.name, why) for t, why in refused)["tr_needs_sm90"]
        == "needs compute capability 9.0 or newer; the device has 8.0"
    )
    _fake_gpu(monkeypatch, (9, 0))
    assert "tr_needs_sm90" in [t.name for t in candidates(node, torch.device("cuda"), BuilderConfig())[0]]


def test_the_tma_gemm_tiles_need_hopper(monkeypatch):
    g = Graph("dense")
    x = g.add_input("x", TensorType("float16", (Sym("batch"), 64)))
    w, b = g.add_constant(torch.randn(32, 64).half(), "w"), g.add_constant(torch.randn(32).half(), "b")
    g.set_outputs([g.call("engine.dense", x, w, b, has_bias=True)])
    (node,) = g.verify().nodes
    config = BuilderConfig(fp16=True, optimization_level=4)
    _fake_gpu(monkeypatch, (8, 0))
    supported, refused = candidates(node, "cuda", config)
    assert not [t.name for t in supported if t.name.startswith("triton_tma")]
    assert (
        dict((t.name, why) for t, why in refused)["triton_tma_128x128x64"]
        == "needs compute capability 9.0 or newer; the device has 8.0"
    )
    _fake_gpu(monkeypatch, (9, 0))
    assert "triton_tma_128x128x64" in [t.name for t in candidates(node, "cuda", config)[0]]
