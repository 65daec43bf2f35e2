"""nn.scaled_dot_product_attention against attention written out (fp32) and F.scaled_dot_product_attention.

In fp32 the expected value is softmax(Q K^T * scale + mask) V spelled out with matmul and softmax, so the
masking conventions (additive float mask, boolean "keep" mask, causal = top-left lower triangle) are
checked, not assumed. In fp16/bf16 it is PyTorch's own attention in that dtype.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from helpers import case, check_case, randn

FP32, FP16, BF16 = torch.float32, torch.float16, torch.bfloat16


def attention(causal=False, scale=None):
    """softmax(q @ k^T * scale + mask) @ v, with an optional 4th argument: float (added) or bool (kept) mask."""

    def expected(q, k, v, mask=None):
        s = scale if scale is not None else 1 / math.sqrt(q.shape[-1])
        scores = (q @ k.transpose(-1, -2)) * s
        L, S = q.shape[-2], k.shape[-2]  # noqa: N806 - target and source lengths, as torch's SDPA docs write them
        if causal:
            keep = torch.ones(L, S, dtype=torch.bool).tril()
            scores = scores.masked_fill(~keep, float("-inf"))
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        return torch.softmax(scores, dim=-1) @ v

    return expected


def torch_sdpa(causal=False):
    return lambda q, k, v, mask=None: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


_QKV = lambda: [randn(2, 3, 5, 8), randn(2, 3, 5, 8), randn(2, 3, 5, 8)]  # noqa: E731
_CROSS = lambda: [randn(2, 2, 3, 8), randn(2, 2, 7, 8), randn(2, 2, 7, 4)]  # noqa: E731
_ADDITIVE = lambda: [*_CROSS(), randn(2, 1, 3, 7)]  # noqa: E731
_BOOL_MASK = lambda: [*_CROSS(), torch.rand(1, 2, 3, 7) > 0.3]  # noqa: E731

CASES = [
    case("sdpa", "nn.scaled_dot_product_attention", _QKV, attention(), dtype=FP32),
    case(
        "sdpa-causal", "nn.scaled_dot_product_attention", _QKV, attention(causal=True), {"is_causal": True}, dtype=FP32
    ),
    case(
        "sdpa-causal-cross-L3-S7",
        "nn.scaled_dot_product_attention",
        _CROSS,
        attention(causal=True),
        {"is_causal": True},
        dtype=FP32,
    ),
    case("sdpa-scale0.5", "nn.scaled_dot_product_attention", _QKV, attention(scale=0.5), {"scale": 0.5}, dtype=FP32),
    case("sdpa-cross-value-dim4", "nn.scaled_dot_product_attention", _CROSS, attention(), dtype=FP32),
    case("sdpa-additive-mask", "nn.scaled_dot_product_attention", _ADDITIVE, attention(), dtype=FP32),
    case("sdpa-bool-mask", "nn.scaled_dot_product_attention", _BOOL_MASK, attention(), dtype=FP32),
    case(
        "sdpa-3d-no-heads",
        "nn.scaled_dot_product_attention",
        lambda: [randn(2, 4, 8), randn(2, 6, 8), randn(2, 6, 8)],
        attention(),
        dtype=FP32,
    ),
    case(
        "sdpa-mask-constant",
        "nn.scaled_dot_product_attention",
        lambda: [*_QKV(), torch.zeros(5, 5).masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), -1e9)],
        attention(causal=True),
        dtype=FP32,
        const=(3,),
    ),
]
for dt in (FP16, BF16):
    CASES += [
        case("sdpa", "nn.scaled_dot_product_attention", _QKV, torch_sdpa(), dtype=dt),
        case(
            "sdpa-causal",
            "nn.scaled_dot_product_attention",
            _QKV,
            torch_sdpa(causal=True),
            {"is_causal": True},
            dtype=dt,
        ),
        case("sdpa-additive-mask", "nn.scaled_dot_product_attention", _ADDITIVE, torch_sdpa(), dtype=dt),
    ]


@pytest.mark.parametrize("c", CASES)
def test_attention(c):
    check_case(c)
