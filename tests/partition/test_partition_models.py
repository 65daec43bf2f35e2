"""Whole models from the PyTorch frontend: resnet50 and swin_t each become exactly one region with nothing left
out (swin_t once its constant-only window masks are folded), and swin_t's engine plan matches eager; so do small
RoBERTa and OPT models, whose position ids are a cumsum over the attention mask."""

from __future__ import annotations

import pytest
import torch

import tensorforge as forge
from helpers import assert_close
from partition_helpers import partition_checked
from tensorforge.frontends import from_torch

torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.slow


def _convert(model, inputs):
    try:
        return from_torch(model.eval(), inputs)
    except NotImplementedError:
        pytest.skip("from_torch not ready")


def test_resnet50_is_one_region():
    torch.manual_seed(0)
    graph = _convert(torchvision.models.resnet50(), (torch.randn(2, 3, 224, 224),))
    new, config = partition_checked(graph, inputs=[torch.randn(2, 3, 224, 224)])
    report = config.report
    assert [n.op for n in new.nodes] == ["subgraph"], str(report)
    assert list(new.subgraphs) == ["tensorforge_0"]
    assert report.fallbacks == () and report.offloaded_nodes == report.total_nodes == len(graph.nodes)
    assert report.mac_share == 1.0 and report.offloaded_macs > 4e9  # ~4.1 GMACs per image
    used = {v.name for n in graph.nodes for v in n.inputs if v.data is not None}  # not num_batches_tracked
    assert set(new.subgraphs["tensorforge_0"].constants) == used
    assert new.constants == {}


def test_resnet50_for_an_old_engine_and_explicit_batch_is_still_one_region():
    torch.manual_seed(0)
    graph = _convert(torchvision.models.resnet50(), (torch.randn(2, 3, 224, 224),))
    new, config = partition_checked(
        graph,
        inputs=[torch.randn(1, 3, 224, 224)],
        version=(0, 1, 0),
        use_implicit_batch=False,
        min_block_size=5,
        remove_no_mac_subgraphs=True,
    )
    assert [n.op for n in new.nodes] == ["subgraph"] and config.report.fallbacks == ()


def test_swin_t_folds_its_window_masks_and_is_one_region_that_matches_eager():
    """Issue 12: swin_t's shifted-window masks (full, slices, copy, slice_scatter) are computed from constants
    only; unfolded, those islands split the model into 81 regions. 32x32 is the smallest input whose windows
    shift (the first stage's 8x8 maps are padded to 14x14), so the masks are really built."""
    torch.manual_seed(0)
    model = torchvision.models.swin_t().eval()
    x = torch.randn(2, 3, 32, 32)
    graph = _convert(model, (x,))
    new, config = partition_checked(graph, inputs=[x], use_implicit_batch=False)
    report = config.report
    assert [n.op for n in new.nodes] == ["subgraph"] and report.fallbacks == (), str(report)
    assert report.mac_share == 1.0 and report.offloaded_macs > 5e8  # ~0.52 GMACs per image at 32x32
    folded = report.folded_ops()
    assert len(folded["slice_scatter"]) == 18 and len(folded["full"]) == 1, folded  # one shifted block's mask
    assert report.counts()["roll"] == (2, 2)  # its cyclic shift and the shift back run in the engine
    module = forge.build(new, config, device="cpu")
    with torch.no_grad():
        actual, expected = module(x), model(x)
    assert list(module.plans()) == ["tensorforge_0"]
    assert_close(actual, expected)


class _IdsAndMask(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids, mask):
        return self.model(input_ids=ids, attention_mask=mask).last_hidden_state


_SMALL_TEXT = {  # hidden 64, 2 layers, 2 heads
    "RobertaModel": (
        "RobertaConfig",
        dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            vocab_size=100,
            max_position_embeddings=66,
        ),
    ),
    "OPTModel": (
        "OPTConfig",
        dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            ffn_dim=128,
            word_embed_proj_dim=64,
            vocab_size=100,
            max_position_embeddings=64,
            use_cache=False,
        ),
    ),
}


@pytest.mark.parametrize("name", list(_SMALL_TEXT))
def test_position_ids_from_the_mask_leave_nothing_to_pytorch(name):
    """Issue 12: RoBERTa and OPT count positions with a cumsum over the attention mask. Before cumsum had an IR op it
    ran in PyTorch, between RoBERTa's two regions and beside OPT's one; now each model is one region, nothing falls
    back, and the plans match eager with a padded sequence in the batch, and at batch 1."""
    transformers = pytest.importorskip("transformers")
    config_class, kwargs = _SMALL_TEXT[name]
    torch.manual_seed(0)
    model = _IdsAndMask(getattr(transformers, name)(getattr(transformers, config_class)(**kwargs))).eval()
    ids = torch.randint(3, 100, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 8:] = 0
    module = forge.compile(model, (ids, mask), precision="fp32", device="cpu")
    assert [n.op for n in module.graph.nodes] == ["subgraph"], str(module.report)
    assert module.report.counts()["cumsum"] == (1, 1)
    for batch in (2, 1):
        with torch.no_grad():
            assert_close(module(ids[:batch], mask[:batch]), model(ids[:batch], mask[:batch]))


def test_t5_fp16_overflow_guard_stays_in_the_engine():
    """Hugging Face's T5 guards FP16 hidden states against overflow (`torch.isinf(h).any()`, a bound from
    `torch.where`, `torch.clamp` with tensor bounds), in FP16 only. Without converters for isinf, any and clamp with
    tensor bounds those nodes ran in PyTorch and cut a 6-layer t5-small encoder into 25 regions on the GPU (the zoo
    sample, bench/results/zoo). Now the FP16 import is one region for an sm90 engine, and it computes what eager
    FP16 computes."""
    transformers = pytest.importorskip("transformers")
    config = transformers.T5Config(d_model=64, d_ff=128, num_layers=2, num_heads=2, d_kv=32, vocab_size=100)
    torch.manual_seed(0)
    model = _IdsAndMask(transformers.T5EncoderModel(config)).eval().half()
    ids = torch.randint(3, 100, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 8:] = 0
    graph = _convert(model, (ids, mask))
    guard = {"abs", "equal", "max", "maximum", "minimum"}  # isinf, any, clamp as the engine's ops
    assert guard <= set(graph.op_counts()) and not graph.opaque_nodes(), graph.op_counts()
    new, config = forge.partition_for_tensorforge(graph, device_capability=(9, 0), use_implicit_batch=False)
    assert [n.op for n in new.nodes] == ["subgraph"], str(config.report)
    with torch.no_grad():
        expected = model(ids, mask)
    (actual,) = forge.ir.execute(graph, ids, mask)
    assert actual.dtype == torch.float16
    assert_close(actual, expected)
