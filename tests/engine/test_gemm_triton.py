"""The Triton GEMM-with-epilogue tactics (engine.dense, 1x1 engine.conv): every case of gemm_triton_cases.py and
every tile configuration under Triton's CPU interpreter (a subprocess: TRITON_INTERPRET must be set before
triton is imported) and, on a GPU, on CUDA; what the template refuses, with the reason."""

from __future__ import annotations

import pytest
import torch

from engine_helpers import compile_for_sm90, interpreted_cases
from gemm_triton_cases import CASES, layer, run_cases
from tensorforge.engine import BuilderConfig
from tensorforge.engine.epilogue import FUSABLE_ACTIVATIONS
from tensorforge.engine.tactics import gemm_triton, get_tactic
from tensorforge.engine.tactics.gemm_triton import TILES, TMA_RESIDUAL_STAGES, TMA_TILES, WIDE_TILES
from tensorforge.ir import TensorType

pytest.importorskip("triton")
TILE = "triton_gemm_128x128x64"  # searched at the default optimization level


@pytest.fixture(scope="module")
def interpreted():
    return interpreted_cases("gemm_triton_cases.py")


@pytest.mark.parametrize("case", [c for c in CASES if "bf16" not in c])
def test_template_under_the_interpreter(interpreted, case):
    results = {k: v for k, v in interpreted.items() if k.startswith(f"{case}[")}
    assert len(results) == len(TILES) + len(TMA_TILES)
    assert all(v is None for v in results.values()), results


def test_float32_layers_keep_the_libraries():
    (node,) = layer("engine.dense").nodes
    node.inputs[0].type = TensorType("float32", node.inputs[0].type.shape)
    assert "float16/bfloat16" in get_tactic("engine.dense", TILE).supports(node, BuilderConfig())


def test_an_activation_outside_the_template_is_refused(monkeypatch):
    # every fusable activation has a code today (an epilogue holds no other): take one out of the template
    (node,) = layer("engine.dense", activation="nn.leaky_relu", attrs=(("alpha", 0.1),)).nodes
    codes = {act: code for act, code in gemm_triton.ACTIVATION_CODES.items() if act != "nn.leaky_relu"}
    monkeypatch.setattr(gemm_triton, "ACTIVATION_CODES", codes)
    assert "nn.leaky_relu is not in the template" in get_tactic("engine.dense", TILE).supports(
        node, BuilderConfig(fp16=True)
    )


def test_every_fusable_activation_is_in_the_template():
    assert set(gemm_triton.ACTIVATION_CODES) == set(FUSABLE_ACTIVATIONS) | {None}


def test_only_1x1_unstrided_convolutions():
    (node,) = layer("engine.conv").nodes
    tactic = get_tactic("engine.conv", TILE)
    assert tactic.supports(node, BuilderConfig(fp16=True)) is None
    node.attrs = {**node.attrs, "strides": (2, 2)}
    assert "stride-1" in tactic.supports(node, BuilderConfig(fp16=True))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cases_on_cuda():
    results = run_cases("cuda")
    assert len(results) == len(CASES) * (len(TILES) + len(TMA_TILES))
    assert all(v is None for v in results.values()), {k: v for k, v in results.items() if v}


@pytest.mark.parametrize("act", [0, 2, 3, 4, 9])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("even_k", [False, True])
def test_kernel_compiles_for_sm90_and_pipelines_its_loads(act, residual, even_k):
    """The interpreter runs Python semantics; Triton's real compiler checks types and lowering (no GPU needed).
    With 16-byte aligned operands (as Triton specializes them at launch), A and B must stream through shared
    memory by cp.async, NUM_STAGES deep, into Hopper's wgmma: a masked-row load once kept the whole template
    from being pipelined, and it lost to cuBLAS on every large GEMM."""
    from tensorforge.engine.tactics.gemm_triton_kernel import gemm_epilogue

    block_m, block_n, block_k, warps, stages = TILES[TILE]
    constexprs = {
        "HAS_BIAS": True,
        "HAS_RESIDUAL": residual,
        "RESIDUAL_PRE": True,
        "ACT": act,
        "BLOCK_M": block_m,
        "BLOCK_N": block_n,
        "BLOCK_K": block_k,
        "GROUP": 8,
        "EVEN_K": even_k,
    }
    signature = {
        "a_ptr": "*fp16",
        "b_ptr": "*fp16",
        "c_ptr": "*fp16",
        "bias_ptr": "*fp16",
        "r_ptr": "*fp16",
        "M": "i32",
        "N": "i32",
        "K": "i32",
        "stride_am": "i32",
        "stride_bk": "i32",
        "stride_cm": "i32",
        "stride_rm": "i32",
        "lo": "fp32",
        "hi": "fp32",
        "slope": "fp32",
        **{k: "constexpr" for k in constexprs},
    }
    aligned = {
        (i,): [["tt.divisibility", 16]]
        for i, name in enumerate(signature)
        if name.endswith("_ptr") or name.startswith("stride")
    }
    compiled = compile_for_sm90(gemm_epilogue, signature, constexprs, attrs=aligned, num_warps=warps, num_stages=stages)
    ptx = compiled.asm["ptx"]
    assert "wgmma.mma_async" in ptx and "cp.async" in ptx
    stage_bytes = (block_m + block_n) * block_k * 2
    assert compiled.metadata.shared >= (stages - 1) * stage_bytes


@pytest.mark.parametrize("tile", list(TMA_TILES))
@pytest.mark.parametrize("residual", [False, True])
def test_persistent_tma_kernel_compiles_for_sm90(tile, residual):
    """The persistent kernel loads and stores through TMA (cp.async.bulk.tensor) into wgmma, within Hopper's
    shared memory (227 KiB per block), for every registered tile."""
    from tensorforge.engine.tactics.gemm_triton_kernel import gemm_epilogue_tma

    block_m, block_n, block_k, warps, stages = TMA_TILES[tile]
    stages = TMA_RESIDUAL_STAGES.get(tile, stages) if residual else stages
    constexprs = {
        "HAS_BIAS": True,
        "HAS_RESIDUAL": residual,
        "RESIDUAL_PRE": True,
        "ACT": 3,
        "BLOCK_M": block_m,
        "BLOCK_N": block_n,
        "BLOCK_K": block_k,
        "GROUP": 8,
    }
    descriptors = {"a_desc": (block_m, block_k), "b_desc": (block_k, block_n), "c_desc": (block_m, block_n)}
    signature = {
        **{name: f"tensordesc<fp16[{rows}, {cols}]>" for name, (rows, cols) in descriptors.items()},
        "bias_ptr": "*fp16",
        "r_ptr": "*fp16",
        "M": "i32",
        "N": "i32",
        "K": "i32",
        "stride_rm": "i32",
        "lo": "fp32",
        "hi": "fp32",
        "slope": "fp32",
        "programs": "i32",
        **{k: "constexpr" for k in constexprs},
    }
    try:
        compiled = compile_for_sm90(gemm_epilogue_tma, signature, constexprs, num_warps=warps, num_stages=stages)
    except KeyError as exc:  # another Triton's signature syntax; the GPU tests compile for real
        pytest.skip(f"this Triton spells tensor descriptors differently: {exc}")
    ptx = compiled.asm["ptx"]
    assert "wgmma.mma_async" in ptx and "cp.async.bulk.tensor" in ptx
    assert compiled.metadata.shared <= 227 * 1024


def test_tma_tiles_need_16_byte_rows():
    (node,) = layer("engine.dense", k=36).nodes
    tma = get_tactic("engine.dense", next(iter(TMA_TILES)))
    assert "multiples of 8" in tma.supports(node, BuilderConfig(fp16=True, optimization_level=4))
    assert get_tactic("engine.dense", TILE).supports(node, BuilderConfig(fp16=True)) is None


def test_wide_and_tma_tiles_are_searched_from_level_4():
    (node,) = layer("engine.dense").nodes
    for name in WIDE_TILES:
        tactic = get_tactic("engine.dense", name)
        assert "optimization level 4 (this build: 3)" in tactic.supports(node, BuilderConfig(fp16=True))
        assert tactic.supports(node, BuilderConfig(fp16=True, optimization_level=4)) is None
    assert set(TILES) - set(WIDE_TILES) == {"triton_gemm_128x128x64", "triton_gemm_128x64x64", "triton_gemm_64x64x64"}
