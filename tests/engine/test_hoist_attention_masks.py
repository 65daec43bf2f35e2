"""hoist_attention_masks: boolean attention masks become one shared additive mask; results unchanged."""

from __future__ import annotations

import torch

from engine_helpers import BATCH, check_pass, ops
from tensorforge.engine.passes import hoist_attention_masks
from tensorforge.ir import Graph, TensorType


def _layers(n: int, mask_dtype="bool"):
    g = Graph("encoder")
    x = g.add_input("x", TensorType("float32", (BATCH, 2, 6, 4)))
    mask = g.add_input("mask", TensorType(mask_dtype, (BATCH, 1, 6, 6)))
    for _ in range(n):
        x = g.call("nn.scaled_dot_product_attention", x, x, x, mask)
    g.set_outputs([x])
    return g


def _inputs(batch=3):
    mask = torch.rand(batch, 1, 6, 6) > 0.3
    mask[..., 0] = True  # every query sees at least one key (a fully masked row is NaN either way)
    return [torch.randn(batch, 2, 6, 4), mask]


def test_one_additive_mask_serves_every_layer():
    out = check_pass(hoist_attention_masks, _layers(3), _inputs(), count=3)
    assert ops(out).count("where") == 1
    wheres = [n for n in out.nodes if n.op == "where"]
    attentions = [n for n in out.nodes if n.op == "nn.scaled_dot_product_attention"]
    assert all(a.inputs[3] is wheres[0].outputs[0] for a in attentions)
    assert wheres[0].outputs[0].type.dtype == "float32"


def test_float_masks_and_maskless_attention_stay():
    g = _layers(1, mask_dtype="float32")
    check_pass(hoist_attention_masks, g, [torch.randn(2, 2, 6, 4), torch.randn(2, 1, 6, 6)], count=0)
