"""The Triton quantized convolutions (engine.qconv: implicit GEMM and depthwise, int8 and fp8): every case of
qconv_cases.py under Triton's CPU interpreter (a subprocess: TRITON_INTERPRET must be set before triton is
imported) and on a GPU on CUDA, the kernels compiled for sm_90 by Triton's real compiler (tensor cores, pipelined
loads), and which layers each tactic refuses, with the reason."""

from __future__ import annotations

import pytest
import torch

from engine_helpers import compile_for_sm90, interpreted_cases
from qconv_cases import CASES, STEM, depthwise, qconv_layer, run_cases
from tensorforge.engine import BuilderConfig
from tensorforge.engine.tactics import candidates, gemm_triton, get_tactic
from tensorforge.engine.tactics.qconv_triton import GATHER_TILES, TILE_PREFERENCE, TILES, pack_weights
from tensorforge.engine.tactics.quantized_layers import FP8_CAPABILITY
from tensorforge.engine.tactics.registry import device_capability
from tensorforge.ir import Graph, Sym

pytest.importorskip("triton")
INT8 = "triton_qconv_int8_128x64x64"
FP8 = "triton_qconv_fp8_128x64x64"
DEPTHWISE = "triton_qdepthwise_int8"
ALL_TILES = {**TILES, **GATHER_TILES}


@pytest.fixture(scope="module")
def interpreted():
    return interpreted_cases("qconv_cases.py")


@pytest.mark.parametrize("case", list(CASES))
def test_qconv_under_the_interpreter(interpreted, case):
    assert interpreted[case] is None, interpreted[case]


def test_the_case_table_runs_every_kernel_variant():
    """Every int8 tile, both depthwise tactics, and fp8's gather and per-tap paths (the fp8 tiles run the int8
    ones' code but for the accumulator's type)."""
    ran = {name for _, name in CASES.values()}
    assert {f"triton_qconv_int8_{tile}" for tile in ALL_TILES} <= ran
    assert {"triton_qdepthwise_int8", "triton_qdepthwise_fp8", "triton_qconv_fp8_gather_128x64x32", FP8} <= ran


def test_registration():
    for dtype, capability in (("int8", (7, 5)), ("fp8", (8, 9))):
        for name in [f"triton_qconv_{dtype}_{t}" for t in ALL_TILES] + [f"triton_qdepthwise_{dtype}"]:
            t = get_tactic("engine.qconv", name)
            assert t is not None and t.devices == ("cuda",), name
            assert t.min_capability == capability and t.input_memory_format == torch.channels_last
            assert (t.writes_arena, t.packs_weights, t.compiles, t.requires_triton) == (False, True, True, True)


def _ours(node) -> list[str]:
    supported, _ = candidates(node, "cuda", BuilderConfig())
    return [t.name for t in supported if t.name.startswith(("triton_qconv", "triton_qdepthwise"))]


def test_the_first_choice_fits_the_layer():
    """Optimization level 0 takes the first supported tactic: the depthwise kernel, the gather tile for a stem's
    few channels, else the middle tile; every tile remains a candidate for the timing of higher levels."""
    assert _ours(depthwise().nodes[0]) == [DEPTHWISE]
    stem = _ours(qconv_layer(**STEM).nodes[0])
    assert stem[0] == "triton_qconv_int8_gather_128x64x32" and len(stem) == len(ALL_TILES)
    assert _ours(qconv_layer().nodes[0]) == [INT8, *(f"triton_qconv_int8_{t}" for t in TILE_PREFERENCE[1:])]
    capability = device_capability("cuda")  # None here; a GPU older than Ada has no fp8 tactic
    if capability is None or capability >= FP8_CAPABILITY:
        assert _ours(qconv_layer(dtype="float8_e4m3fn").nodes[0])[0] == FP8


def _refusal(name: str, graph: Graph) -> str:
    reason = get_tactic("engine.qconv", name).supports(graph.nodes[0], BuilderConfig())
    assert reason, f"{name} took {graph.nodes[0]}"
    return reason


def test_each_tactic_refuses_the_other_data_type():
    assert "takes int8 data" in _refusal(INT8, qconv_layer(dtype="float8_e4m3fn"))
    assert "takes float8_e4m3fn data" in _refusal(FP8, qconv_layer())
    assert "takes int8 data" in _refusal(DEPTHWISE, depthwise(dtype="float8_e4m3fn"))


def test_fp8_needs_ada_or_hopper():
    node = qconv_layer(dtype="float8_e4m3fn").nodes[0]
    assert "needs compute capability 8.9" in get_tactic("engine.qconv", FP8).supports(node, BuilderConfig(), (8, 0))
    assert get_tactic("engine.qconv", FP8).supports(node, BuilderConfig(), (9, 0)) is None


def test_only_2d_convolutions():
    graph = qconv_layer(c_in=8, kernel=(3,), stride=(1,), padding=(1,), dilation=(1,), data_shape=(Sym("batch"), 8, 9))
    assert "2-d" in _refusal(INT8, graph)
    assert "2-d" in _refusal(DEPTHWISE, graph)


def test_grouped_convolutions_only_depthwise():
    grouped = qconv_layer(c_in=8, c_out=8, groups=2)
    assert "ungrouped" in _refusal(INT8, grouped)
    assert "depthwise" in _refusal(DEPTHWISE, grouped)
    assert "depthwise" in _refusal(DEPTHWISE, qconv_layer())
    assert "ungrouped" in _refusal(INT8, depthwise())


def test_plain_1x1_convolutions_are_left_to_the_gemm_tactics():
    assert "qgemm" in _refusal(INT8, qconv_layer(kernel=(1, 1), padding=(0, 0)))
    for attrs in ({"stride": (2, 2)}, {"padding": (1, 1)}):  # strided or padded: not a plain GEMM, taken here
        assert (
            get_tactic("engine.qconv", INT8).supports(qconv_layer(kernel=(1, 1), **attrs).nodes[0], BuilderConfig())
            is None
        )


def test_the_gather_tile_is_for_few_input_channels():
    assert "fewer than 16 input channels" in _refusal("triton_qconv_int8_gather_128x64x32", qconv_layer(c_in=16))


def _with_graph_input(graph: Graph, index: int) -> Graph:
    """The one-layer `graph` with its constant input `index` computed in the plan instead (a graph input)."""
    node = graph.nodes[0]
    computed = Graph("computed")
    inputs = [
        computed.add_input(v.name, v.type) if v.data is None or i == index else computed.add_constant(v.data, v.name)
        for i, v in enumerate(node.inputs)
    ]
    computed.set_outputs([computed.call("engine.qconv", *inputs, **node.attrs)])
    return computed.verify()


@pytest.mark.parametrize("which, index", [("weight", 1), ("scale", 2), ("bias", 3)])
def test_weight_scale_and_bias_must_be_constants(which, index):
    assert f"the {which} must be a constant" in _refusal(INT8, _with_graph_input(qconv_layer(), index))
    assert f"the {which} must be a constant" in _refusal(DEPTHWISE, _with_graph_input(depthwise(), index))


def test_an_activation_outside_the_epilogue_is_refused(monkeypatch):
    # every fusable activation has a code today (an epilogue holds no other): take one out of the template
    graph = qconv_layer(activation="nn.leaky_relu", activation_attrs=(("alpha", 0.1),))
    codes = {act: code for act, code in gemm_triton.ACTIVATION_CODES.items() if act != "nn.leaky_relu"}
    monkeypatch.setattr(gemm_triton, "ACTIVATION_CODES", codes)
    assert "nn.leaky_relu is not in the template" in _refusal(INT8, graph)


@pytest.mark.parametrize("gather", [False, True])
def test_weights_pack_k_major_and_zero_padded(gather):
    weight = torch.randint(-128, 128, (5, 3, 2, 2), dtype=torch.int8)
    packed = pack_weights(weight.to(torch.float8_e4m3fn) if gather else weight, 32, gather)
    assert packed.shape == ((5, 32) if gather else (5, 4 * 32)) and packed.is_contiguous()
    taps = weight.permute(0, 2, 3, 1)
    if gather:
        assert torch.equal(packed[:, :12].float(), taps.reshape(5, 12).to(torch.float8_e4m3fn).float())
        assert not packed[:, 12:].float().any()
    else:
        by_tap = packed.view(5, 2, 2, 32)
        assert torch.equal(by_tap[..., :3], taps) and not by_tap[..., 3:].any()


def _signature(data: str, out: str, constexprs: dict) -> tuple[dict, dict]:
    signature = {f"{p}_ptr": f"*{data}" for p in ("x", "w")}
    signature.update(y_ptr=f"*{out}", scale_ptr="*fp32", bias_ptr="*fp32", r_ptr="*fp16")
    ints = ("M", "H", "W", "OH", "OW", "C_OUT", "KP") if "GATHER" in constexprs else ("P", "C", "H", "W", "OH", "OW")
    signature.update({k: "i32" for k in ints})
    signature.update({k: "fp32" for k in ("r_scale", "lo", "hi", "slope", "out_scale")})
    signature.update({k: "constexpr" for k in constexprs})
    # pointers, channel counts and row lengths 16-byte aligned, as Triton specializes them at launch
    aligned = {
        (i,): [["tt.divisibility", 16]]
        for i, k in enumerate(signature)
        if k.endswith("_ptr") or k in ("C", "C_OUT", "KP")
    }
    return signature, aligned


@pytest.mark.parametrize(
    "name, data, out",
    [(n, "i8", "i8") for n in ALL_TILES]
    + [("128x64x64", "fp8e4nv", "fp16"), ("gather_128x64x32", "fp8e4nv", "fp8e4nv")],
)
def test_implicit_gemm_compiles_for_sm90_onto_the_tensor_cores(name, data, out):
    """Triton's real compiler checks what the interpreter cannot: the 8-bit dot lowers to Hopper's wgmma and the
    weight tiles stream through shared memory by cp.async, num_stages deep."""
    from tensorforge.engine.tactics.qconv_triton_kernel import qconv2d_implicit_gemm_nhwc

    block_m, block_n, block_k, warps, stages = ALL_TILES[name]
    gather = name.startswith("gather")
    constexprs = dict(  # the gather tile at a stem's shape: 7x7x3, five K steps to pipeline
        C_IN=3 if gather else 64,
        KH=7 if gather else 3,
        KW=7 if gather else 3,
        SH=2,
        SW=2,
        PH=1,
        PW=1,
        DH=1,
        DW=1,
        INT8=data == "i8",
        GATHER=gather,
        HAS_BIAS=True,
        HAS_RESIDUAL=True,
        RESIDUAL_PRE=False,
        ACT=5,
        OUT={"i8": 1, "fp8e4nv": 2}.get(out, 0),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        GROUP=8,
    )
    signature, aligned = _signature(data, out, constexprs)
    compiled = compile_for_sm90(
        qconv2d_implicit_gemm_nhwc, signature, constexprs, attrs=aligned, num_warps=warps, num_stages=stages
    )
    ptx = compiled.asm["ptx"]
    kind = "s32.s8.s8" if data == "i8" else "f32.e4m3.e4m3"
    assert f".{kind}" in ptx and "wgmma.mma_async" in ptx and "cp.async" in ptx
    assert compiled.metadata.shared >= (stages - 1) * block_n * block_k  # the weight tiles are staged


@pytest.mark.parametrize("data, out", [("i8", "i8"), ("fp8e4nv", "fp16")])
def test_depthwise_compiles_for_sm90(data, out):
    from tensorforge.engine.tactics.qconv_triton import DEPTHWISE_BLOCK_C, DEPTHWISE_BLOCK_P, DEPTHWISE_WARPS
    from tensorforge.engine.tactics.qconv_triton_kernel import qdepthwise_conv2d_nhwc

    constexprs = dict(
        KH=3,
        KW=3,
        SH=2,
        SW=2,
        PH=1,
        PW=1,
        DH=1,
        DW=1,
        INT8=data == "i8",
        HAS_BIAS=True,
        HAS_RESIDUAL=True,
        RESIDUAL_PRE=True,
        ACT=2,
        OUT=1 if out == "i8" else 0,
        BLOCK_P=DEPTHWISE_BLOCK_P,
        BLOCK_C=DEPTHWISE_BLOCK_C,
    )
    signature, aligned = _signature(data, out, constexprs)
    assert compile_for_sm90(
        qdepthwise_conv2d_nhwc, signature, constexprs, attrs=aligned, num_warps=DEPTHWISE_WARPS
    ).asm["cubin"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cases_on_cuda():
    assert run_cases("cuda") == {name: None for name in CASES}
