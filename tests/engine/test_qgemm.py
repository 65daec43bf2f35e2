"""The quantized GEMM tactics (qgemm_triton.py's Triton tiles, qgemm_library.py's cuBLASLt calls): every case of
qgemm_cases.py and every tactic of its 8-bit type under Triton's CPU interpreter (a subprocess: TRITON_INTERPRET
must be set before triton is imported) and, on a GPU, on CUDA; what each tactic refuses, with the reason; the
order optimization level 0 takes them in; and each kernel through Triton's real compiler for the GPUs its
tactics run on (no GPU needed)."""

from __future__ import annotations

import pytest
import torch

from engine_helpers import compile_for_sm90, interpreted_cases
from qgemm_cases import CASES, FP8, input_channels, layer, run_cases, tactics_for
from tensorforge.engine import BuilderConfig
from tensorforge.engine.tactics import candidates, gemm_triton, get_tactic
from tensorforge.engine.tactics.qgemm_library import EPILOGUE_BLOCK, EPILOGUE_WARPS, LIBRARIES
from tensorforge.engine.tactics.qgemm_triton import (
    FIRST_PRIORITY,
    LAYER_TYPES,
    TILES,
    TILES_OF,
    TMA_TILES_OF,
    tactic_name,
)

pytest.importorskip("triton")
CONFIG = BuilderConfig()
FIRST_TILE = next(iter(TILES))
OURS = ("triton_qgemm_", *LIBRARIES)
OPS = ("engine.qdense", "engine.qconv")


@pytest.fixture(scope="module")
def interpreted():
    return interpreted_cases("qgemm_cases.py")


@pytest.mark.parametrize("case", list(CASES))
def test_tactics_under_the_interpreter(interpreted, case):
    results = {k: v for k, v in interpreted.items() if k.startswith(f"{case}[")}
    graph = CASES[case]()
    names = tactics_for(graph.inputs[0].type.dtype, input_channels(graph))
    assert sorted(results) == sorted(f"{case}[{name}]" for name in names)
    assert all(v is None for v in results.values()), results


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cases_on_cuda():
    """On CUDA the library tactics call cuBLASLt itself (torch._int_mm, torch._scaled_mm), with their shape rules;
    fp8 cases need compute capability 8.9."""
    results = run_cases("cuda")
    if torch.cuda.get_device_capability() < (8, 9):
        results = {k: v for k, v in results.items() if "fp8" not in k}
    assert results and all(v is None for v in results.values()), {k: v for k, v in results.items() if v}


# -- what the tactics refuse ----------------------------------------------------------------------------------


def _node(graph):
    (node,) = graph.nodes
    return node


@pytest.mark.parametrize("op", OPS)
def test_each_tactic_takes_its_own_8_bit_type(op):
    int8, fp8 = _node(layer(op, k=48, n=80)), _node(layer(op, dtype=FP8, k=48, n=80))
    for name in tactics_for("int8", 48):
        assert get_tactic(op, name).supports(int8, CONFIG) is None
        assert "multiplies int8 tensors; the layer's data is float8_e4m3fn" in get_tactic(op, name).supports(
            fp8, CONFIG
        )
    for name in tactics_for(FP8, 48):
        assert get_tactic(op, name).supports(fp8, CONFIG) is None
        assert "the layer's data is int8" in get_tactic(op, name).supports(int8, CONFIG)


@pytest.mark.parametrize("what, index", [("weight", 1), ("scale", 2), ("bias", 3)])
@pytest.mark.parametrize("name", [tactic_name("int8", FIRST_TILE), "cublaslt_int8"])
def test_weight_scale_and_bias_must_be_constants(what, index, name):
    node = _node(layer())
    node.inputs[index].data = None  # computed in the plan: the tactic could not pack it at bind time
    assert get_tactic("engine.qdense", name).supports(node, CONFIG) == f"the {what} must be a constant"


def test_an_activation_outside_the_template_is_refused(monkeypatch):
    # every fusable activation has a code today (an epilogue holds no other): take one out of the template
    node = _node(layer(activation="nn.leaky_relu", attrs=(("alpha", 0.1),)))
    codes = {act: code for act, code in gemm_triton.ACTIVATION_CODES.items() if act != "nn.leaky_relu"}
    monkeypatch.setattr(gemm_triton, "ACTIVATION_CODES", codes)
    for name in (tactic_name("int8", FIRST_TILE), "cublaslt_int8"):
        assert "nn.leaky_relu is not in the template" in get_tactic("engine.qdense", name).supports(node, CONFIG)


@pytest.mark.parametrize("name", tactics_for("int8", k=40))  # layer()'s 40 input channels
def test_only_1x1_unstrided_ungrouped_convolutions(name):
    node = _node(layer("engine.qconv"))
    tactic = get_tactic("engine.qconv", name)
    assert tactic.supports(node, CONFIG) is None
    for attrs, reason in [
        ({"strides": (2, 2)}, "stride-1, unpadded, ungrouped"),
        ({"padding": (1, 1)}, "stride-1, unpadded, ungrouped"),
        ({"ndim": 1}, "1x1 2-d convolutions"),
    ]:
        node.attrs = {**node.attrs, **attrs}
        assert reason in tactic.supports(node, CONFIG)
        node.attrs = _node(layer("engine.qconv")).attrs


@pytest.mark.parametrize(
    "dtype, name, k, n, multiple",
    [("int8", "cublaslt_int8", 36, 72, 8), ("int8", "cublaslt_int8", 40, 12, 8), (FP8, "cublaslt_fp8", 40, 80, 16)],
)
def test_library_calls_need_channels_in_their_multiples(dtype, name, k, n, multiple):
    for op in OPS:
        node = _node(layer(op, dtype=dtype, k=k, n=n))
        assert f"multiples of {multiple}; the layer has {k} and {n}" in get_tactic(op, name).supports(node, CONFIG)
        # the Triton tiles take any K and N: masked (K) and wrapped (M, N) edges
        assert get_tactic(op, tactic_name(dtype, FIRST_TILE)).supports(node, CONFIG) is None


def test_compute_capabilities():
    """fp8 needs Ada's or Hopper's tensor cores; Triton's int8 dot needs Ampere, cuBLASLt's runs on Turing."""
    int8, fp8 = _node(layer()), _node(layer(dtype=FP8, k=48, n=80))
    triton_int8 = get_tactic("engine.qdense", tactic_name("int8", FIRST_TILE))
    assert "needs compute capability 8.0 or newer; the device has 7.5" in triton_int8.supports(int8, CONFIG, (7, 5))
    assert triton_int8.supports(int8, CONFIG, (8, 0)) is None
    assert get_tactic("engine.qdense", "cublaslt_int8").supports(int8, CONFIG, (7, 5)) is None
    for name in tactics_for(FP8, 48):
        assert "needs compute capability" in get_tactic("engine.qdense", name).supports(fp8, CONFIG, (8, 6))
        assert get_tactic("engine.qdense", name).supports(fp8, CONFIG, (9, 0)) is None
    for dtype, node in (("int8", int8), (FP8, fp8)):  # the persistent kernel's TMA loads start at Hopper
        for tile in TMA_TILES_OF[dtype]:
            tma = get_tactic("engine.qdense", tactic_name(dtype, tile, tma=True))
            assert "needs compute capability 9.0 or newer; the device has 8.9" in tma.supports(node, CONFIG, (8, 9))


@pytest.mark.parametrize("op", OPS)
def test_tma_tiles_need_16_byte_rows(op):
    """TMA reads rows at 16-byte aligned addresses: an 8-bit layer's K must be a multiple of 16."""
    node = _node(layer(op, k=40, n=48))
    for tile in TMA_TILES_OF["int8"]:
        tma = get_tactic(op, tactic_name("int8", tile, tma=True))
        assert "input channels in multiples of 16; the layer has 40" in tma.supports(node, CONFIG)
        assert tma.supports(_node(layer(op, k=48, n=40)), CONFIG) is None  # N is free: the store is a plain one


# -- registration ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", list(LAYER_TYPES))
def test_level_0_takes_the_first_tile_and_the_search_sees_them_all(op, dtype):
    node = _node(layer(op, dtype=dtype, k=48, n=80))
    supported, _ = candidates(node, "cuda", CONFIG)
    ours = [t.name for t in supported if t.name.startswith(OURS)]
    assert ours[0] == tactic_name(dtype, FIRST_TILE)
    assert sorted(ours) == sorted(tactics_for(dtype, 48))  # none kept out of the timed search (min_level)
    assert get_tactic(op, ours[0]).priority == FIRST_PRIORITY


@pytest.mark.parametrize("op", OPS)
def test_declarations(op):
    for dtype in LAYER_TYPES:
        for name in tactics_for(dtype):
            t = get_tactic(op, name)
            assert (t.devices, t.packs_weights, t.compiles, t.requires_triton) == (("cuda",), True, True, True)
            # a 1x1 convolution receives and writes channels-last tensors; the arena's views are NCHW
            conv = op == "engine.qconv"
            assert t.writes_arena is not conv
            assert t.input_memory_format == (torch.channels_last if conv else None)


# -- the kernels through Triton's real compiler ---------------------------------------------------------------

HOPPER_SHARED = 227 * 1024
ADA_SHARED = 99 * 1024  # Ada and consumer Ampere: the least shared memory a block gets where the tactics run
EPILOGUE_POINTERS = {"scale_ptr": "*fp32", "bias_ptr": "*fp32", "r_ptr": "*fp16"}  # a float16 residual
SCALARS = {name: "fp32" for name in ("r_scale", "lo", "hi", "slope", "out_scale")}
EPILOGUE_FLAGS = {"HAS_BIAS": True, "HAS_RESIDUAL": True, "RESIDUAL_PRE": True, "ACT": 3}


def compile_for(capability: int, kernel, signature: dict, constexprs: dict, **options):
    """`kernel` compiled for compute capability `capability` (engine_helpers.compile_for_sm90), with every pointer
    and row stride 16-byte aligned, as Triton specializes them at launch."""
    signature = {**signature, **{k: "constexpr" for k in constexprs}}
    aligned = {
        (i,): [["tt.divisibility", 16]]
        for i, name in enumerate(signature)
        if name.endswith("_ptr") or name.startswith("stride")
    }
    return compile_for_sm90(kernel, signature, constexprs, attrs=aligned, capability=capability, **options)


def _compile_qgemm(dtype: str, tile: str, capability: int, even_k: bool = True):
    from tensorforge.engine.tactics.qgemm_triton_kernel import qgemm_epilogue

    block_m, block_n, block_k, warps, stages = TILES_OF[dtype][tile]
    short = {"int8": "i8", FP8: "fp8e4nv"}[dtype]
    out = {"int8": 1, FP8: 2}[dtype]  # the layer's own type out: the 8-bit store
    signature = {
        "a_ptr": f"*{short}",
        "b_ptr": f"*{short}",
        "c_ptr": f"*{short}",
        **EPILOGUE_POINTERS,
        "M": "i32",
        "N": "i32",
        "K": "i32",
        "stride_am": "i32",
        "stride_bn": "i32",
        "stride_cm": "i32",
        "stride_rm": "i32",
        **SCALARS,
    }
    constexprs = {
        **EPILOGUE_FLAGS,
        "OUT": out,
        "BLOCK_M": block_m,
        "BLOCK_N": block_n,
        "BLOCK_K": block_k,
        "GROUP": 8,
        "EVEN_K": even_k,
    }
    return compile_for(capability, qgemm_epilogue, signature, constexprs, num_warps=warps, num_stages=stages)


@pytest.mark.parametrize("dtype, tile", [(dtype, tile) for dtype, tiles in TILES_OF.items() for tile in tiles])
def test_fused_kernel_compiles_for_hopper_tensor_cores(dtype, tile):
    """Every tile on an H100: the 8-bit operands stream through shared memory by cp.async into the tensor cores
    (wgmma from 64 rows a tile, mma.sync below), within Hopper's 227 KiB a block."""
    compiled = _compile_qgemm(dtype, tile, 90)
    ptx = compiled.asm["ptx"]
    instruction = {"int8": ".s8.s8", FP8: ".e4m3.e4m3"}[dtype]
    if TILES_OF[dtype][tile][0] >= 64:
        assert "wgmma.mma_async" in ptx and instruction in ptx
    else:
        assert "mma.sync" in ptx
    assert "cp.async" in ptx
    assert compiled.metadata.shared <= HOPPER_SHARED


@pytest.mark.parametrize("dtype, tile", [(dtype, tile) for dtype, tiles in TMA_TILES_OF.items() for tile in tiles])
def test_persistent_tma_kernel_compiles_for_hopper(dtype, tile):
    """The persistent kernel's tiles: TMA bulk-tensor loads (cp.async.bulk.tensor) into 8-bit wgmma, a residual
    and GELU in the epilogue, within Hopper's shared memory."""
    from tensorforge.engine.tactics.qgemm_triton_kernel import qgemm_epilogue_tma

    block_m, block_n, block_k, warps, stages = TMA_TILES_OF[dtype][tile]
    short = {"int8": "i8", FP8: "fp8e4nv"}[dtype]
    signature = {
        "a_desc": f"tensordesc<{short}[{block_m}, {block_k}]>",
        "b_desc": f"tensordesc<{short}[{block_n}, {block_k}]>",
        "c_ptr": f"*{short}",
        **EPILOGUE_POINTERS,
        "M": "i32",
        "N": "i32",
        "K": "i32",
        "stride_cm": "i32",
        "stride_rm": "i32",
        **SCALARS,
        "programs": "i32",
    }
    constexprs = {
        **EPILOGUE_FLAGS,
        "OUT": {"int8": 1, FP8: 2}[dtype],
        "BLOCK_M": block_m,
        "BLOCK_N": block_n,
        "BLOCK_K": block_k,
        "GROUP": 8,
    }
    try:
        compiled = compile_for(90, qgemm_epilogue_tma, signature, constexprs, num_warps=warps, num_stages=stages)
    except KeyError as exc:  # another Triton's signature syntax; the GPU tests compile for real
        pytest.skip(f"this Triton spells tensor descriptors differently: {exc}")
    ptx = compiled.asm["ptx"]
    instruction = {"int8": ".s8.s8", FP8: ".e4m3.e4m3"}[dtype]
    assert "wgmma.mma_async" in ptx and instruction in ptx and "cp.async.bulk.tensor" in ptx
    assert compiled.metadata.shared <= HOPPER_SHARED


@pytest.mark.parametrize("dtype, capability", [("int8", 80), (FP8, 89)])
def test_level_0_tile_compiles_for_the_oldest_gpus_it_runs_on(dtype, capability):
    """The tile optimization level 0 takes, on Ampere (int8) and Ada (fp8): their tensor cores, masked K, and the
    shared memory every GPU of the kind has."""
    compiled = _compile_qgemm(dtype, FIRST_TILE, capability, even_k=False)
    assert "mma.sync" in compiled.asm["ptx"]
    assert compiled.metadata.shared <= ADA_SHARED


@pytest.mark.parametrize("sums, capability", [("*i32", 75), ("*fp32", 89), ("*fp16", 75)])
def test_library_epilogue_compiles_for_the_oldest_gpus_it_runs_on(sums, capability):
    """cuBLASLt's int8 tactic (int32 sums) and the float16 library path (quantized_float.py: float16 sums) run on
    Turing: their epilogue kernel (no dot) must compile there; cuBLASLt's fp8 one (float32 sums) from Ada."""
    from tensorforge.engine.tactics.qgemm_triton_kernel import qepilogue

    signature = {
        "p_ptr": sums,
        "c_ptr": "*i8",
        **EPILOGUE_POINTERS,
        "M": "i32",
        "N": "i32",
        "stride_pm": "i32",
        "stride_cm": "i32",
        "stride_rm": "i32",
        **SCALARS,
    }
    constexprs = {**EPILOGUE_FLAGS, "OUT": 1, "BLOCK_M": EPILOGUE_BLOCK[0], "BLOCK_N": EPILOGUE_BLOCK[1]}
    compiled = compile_for(capability, qepilogue, signature, constexprs, num_warps=EPILOGUE_WARPS)
    assert compiled.metadata.shared <= ADA_SHARED
