"""Decoder-only language models (Llama and its relatives) compiled whole on the CPU: `forge.compile` must offload
most of the graph and match eager within the FP32 tolerance.

These models cut the graph into several engine regions (the attention mask, built from the batch size alone, stays
in PyTorch; a user may keep attention in PyTorch), and a region hands on integer position indices and the K/V
heads repeated for grouped-query attention as views (expand_dims, broadcast + reshape) of its own activations.
Issue 12: the arena gave those activations' bytes to later layers before the region returned, and Llama crashed
in `adv_index`.
"""

from __future__ import annotations

import pytest
import torch

import tensorforge as forge
from helpers import TOLERANCES, assert_close

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

SMALL = dict(
    num_hidden_layers=2,
    hidden_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=256,
    vocab_size=1000,
    max_position_embeddings=128,
    use_cache=False,
)
MODELS = {
    "llama": ("LlamaConfig", "LlamaModel", {}),
    "mistral": ("MistralConfig", "MistralModel", {}),
    "qwen2": ("Qwen2Config", "Qwen2Model", {}),
    "gemma": ("GemmaConfig", "GemmaModel", {"head_dim": 32}),  # Gemma's default head_dim is 256
}
# partition options -> what they exercise
PARTITIONS = {
    "default": {},
    # attention in PyTorch: regions end at the repeated K/V heads (views of arena activations)
    "attention_in_torch": {"torch_executed_ops": ("nn.scaled_dot_product_attention",)},
}
# With attention forced to PyTorch, Mistral offloads 79% of the nodes that remain once constant-only nodes are folded
# before partitioning (folded nodes leave the count; the attention ops and their mask plumbing stay): 0.75 keeps
# the check that the decoder's body is in the engine, every projection included (asserted below)
MIN_NODE_SHARE = 0.75


def make_model(name: str):
    config_class, model_class, extra = MODELS[name]
    if not hasattr(transformers, model_class):
        pytest.skip(f"this transformers has no {model_class}")
    config = getattr(transformers, config_class)(**SMALL, **extra)
    return getattr(transformers, model_class)(config).eval()


@pytest.mark.parametrize("partition", list(PARTITIONS))
@pytest.mark.parametrize("name", list(MODELS))
def test_decoder_compiles_and_matches_eager(name, partition):
    model = make_model(name)
    ids = torch.randint(0, SMALL["vocab_size"], (2, 32))
    module = forge.compile(model, (ids,), precision="fp32", device="cpu", **PARTITIONS[partition])
    report = module.report
    assert module.regions and report.node_share >= MIN_NODE_SHARE, report
    dense_total, dense_offloaded = report.counts()["nn.dense"]
    assert dense_offloaded == dense_total > 0, "every projection runs in the engine"
    for batch in (2, 1):  # the plan built for batch 2 also serves batch 1 (leading part of each arena slot)
        x = ids[:batch]
        with torch.no_grad():
            expected = model(x).last_hidden_state
        actual = module(x)
        # the plans ran through the reference tactics: fused math may reassociate, so the FP32 tolerance applies
        assert_close(actual, expected, tol=TOLERANCES[torch.float32])
    assert all(len(plans) == 1 for plans in module.plans().values()), "every region ran through its plan"
