"""The `cudnn_nhwc_triton` conv tactic: convolution, then the whole epilogue as one generated kernel.

Every case of conv_epilogue_cases.py runs under Triton's CPU interpreter (a subprocess: TRITON_INTERPRET must
be set before triton is imported) and, on a GPU, on CUDA; refusals say why; on a GPU a MobileNet-style block
built FP16 runs its convs in the engine with a cuDNN tactic and matches eager."""

from __future__ import annotations

import pytest
import torch

from conv_epilogue_cases import CASES, conv_layer, run_cases
from engine_helpers import interpreted_cases
from tensorforge.engine import BuilderConfig
from tensorforge.engine.tactics import get_tactic

pytest.importorskip("triton")
TACTIC = get_tactic("engine.conv", "cudnn_nhwc_triton")


@pytest.fixture(scope="module")
def interpreted():
    return interpreted_cases("conv_epilogue_cases.py")


@pytest.mark.parametrize("case", list(CASES))
def test_epilogue_under_the_interpreter(interpreted, case):
    assert interpreted[case] is None, interpreted[case]


def test_a_bare_convolution_is_left_to_cudnn_nhwc():
    (node,) = conv_layer(activation=None, bias=False).nodes
    assert "no epilogue" in TACTIC.supports(node, BuilderConfig())


def test_the_tactic_runs_only_on_cuda():
    assert TACTIC.devices == ("cuda",)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cases_on_cuda():
    assert run_cases("cuda") == {name: None for name in CASES}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_mobilenet_block_fp16_on_cuda():
    import tensorforge as forge

    torch.manual_seed(0)
    block = torch.nn.Sequential(
        torch.nn.Conv2d(16, 96, 1, bias=False),
        torch.nn.BatchNorm2d(96),
        torch.nn.ReLU6(),
        torch.nn.Conv2d(96, 96, 3, padding=1, groups=96, bias=False),
        torch.nn.BatchNorm2d(96),
        torch.nn.ReLU6(),
        torch.nn.Conv2d(96, 16, 1, bias=False),
        torch.nn.BatchNorm2d(16),
    ).eval()
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    block = block.cuda().half()
    x = torch.randn(8, 16, 28, 28, device="cuda", dtype=torch.half)
    module = forge.compile(block, (x,), precision="fp16", device="cuda").build_all(8)
    layers = [layer for ps in module.plans().values() for p in ps for layer in p.layers]
    assert [layer.op for layer in layers] == ["engine.conv"] * 3, layers  # BN folded, epilogues fused
    assert all(layer.tactic.startswith(("cudnn_", "triton_gemm_", "triton_depthwise_")) for layer in layers), layers
    with torch.no_grad():
        expected = block(x).float()
    got = module(x).float()
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)
