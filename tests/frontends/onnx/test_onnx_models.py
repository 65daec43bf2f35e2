"""Whole models exported with `torch.onnx.export` import and match onnxruntime (FP32, rel. error <= 1e-4)
at two batch sizes, neither the traced one, with no opaque node left.

The TorchScript exporter (`dynamo=False`) is used: the dynamo exporter needs `onnxscript`, which the
test environment does not install. Opset 17; the batch axis of every input is dynamic (`dynamic_axes`).
"""

from __future__ import annotations

import onnxruntime as ort
import pytest
import torch
from onnx_helpers import relative_error

from tensorforge import ir
from tensorforge.frontends import from_onnx
from tensorforge.ir import Sym

torchvision = pytest.importorskip("torchvision")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.slow
REL_TOL = 1e-4


def _vit():
    model = torchvision.models.vit_b_16()
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zero-initialises the head
    return model


class _Bert(torch.nn.Module):
    """BertModel with positional tensor arguments and tensor outputs, as the exporter wants them."""

    def __init__(self):
        super().__init__()
        config = transformers.BertConfig(
            hidden_size=256,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=1024,
            vocab_size=2000,
            max_position_embeddings=128,
        )
        self.bert = transformers.BertModel(config)

    def forward(self, input_ids, attention_mask):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state, out.pooler_output


def _text_inputs(batch: int, length: int = 24, vocab: int = 2000):
    ids = torch.randint(0, vocab, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length // 2 :] = 0  # a padded sequence, so the attention mask matters
    return ids, mask


def _image(batch: int):
    return (torch.randn(batch, 3, 224, 224),)


# name -> (model factory, inputs for a batch size, input names)
MODELS = {
    "resnet50": (torchvision.models.resnet50, _image, ["image"]),
    "mobilenet_v2": (torchvision.models.mobilenet_v2, _image, ["image"]),
    "vit_b_16": (_vit, _image, ["image"]),
    "bert": (_Bert, _text_inputs, ["input_ids", "attention_mask"]),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_exported_model_matches_onnxruntime(name, tmp_path):
    torch.manual_seed(0)
    make_model, make_inputs, input_names = MODELS[name]
    model = make_model().eval()
    path = tmp_path / f"{name}.onnx"
    # not under no_grad: there nn.MultiheadAttention takes a fused fast path the exporter cannot write
    torch.onnx.export(
        model,
        make_inputs(2),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=input_names,
        dynamic_axes={n: {0: "batch"} for n in input_names},
    )
    graph = from_onnx(path, strict=True)  # strict: any unmapped node would raise, listing them all
    assert graph.opaque_nodes() == []
    assert all(v.type.shape[0] == Sym("batch") for v in graph.inputs), "dynamic batch expected"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        inputs = make_inputs(batch)
        expected = session.run(None, {n: t.numpy() for n, t in zip(input_names, inputs)})
        actual = ir.execute(graph, *inputs)
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            e = torch.from_numpy(e)
            assert a.shape == e.shape and a.dtype == e.dtype
            assert relative_error(a, e) <= REL_TOL, f"{name} batch {batch}: {relative_error(a, e)}"
