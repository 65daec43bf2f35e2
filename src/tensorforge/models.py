"""The named model zoo of the command line: `tensorforge build resnet50 ...` without writing any Python.

Every entry builds a model with random weights (seeded, so two processes build the same model) and its
example inputs for a batch size:

- torchvision classifiers (`resnet18`, `resnet50`, `mobilenet_v2`, `vit_b_16`, ...): one input `input`,
  float32 images `(batch, 3, image_size, image_size)`, one output `logits`;
- Hugging Face BERT encoders built from a `transformers.BertConfig` (`bert-tiny` ... `bert-base`): inputs
  `input_ids` and `attention_mask`, int64 `(batch, seq_len)`, outputs `last_hidden_state` and
  `pooler_output`. The example mask pads the second half of the last sequence, so the mask matters.

    zoo = tensorforge.models.get("bert-tiny", seq_len=32)
    graph = tensorforge.frontends.from_torch(zoo.model, zoo.inputs(2), input_names=zoo.input_names,
                                             output_names=zoo.output_names)

torchvision and transformers are imported only when an entry of theirs is built (`tensorforge[models]`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

DEFAULT_IMAGE_SIZE = 224
DEFAULT_SEQ_LEN = 128


class UnknownModelError(ValueError):
    """A name that is not in the zoo; the message lists the names that are."""


@dataclass(frozen=True)
class ZooEntry:
    name: str
    family: str  # "torchvision" or "transformers"
    description: str
    make: Callable[[int], torch.nn.Module]  # image_size (vision) or seq_len (text) -> model
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    min_image_size: int = 32  # vision: the smallest size the architecture accepts
    image_size_multiple: int = 1  # vision: sizes must be a multiple of this (ViT: its patch size)


@dataclass
class ZooModel:
    """A built zoo entry: the model (eval mode, CPU, float32) and a maker of example inputs."""

    entry: ZooEntry
    model: torch.nn.Module
    image_size: int | None = None
    seq_len: int | None = None
    vocab_size: int | None = None
    seed: int = 0
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.entry.input_names

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.entry.output_names

    def inputs(self, batch: int) -> tuple[torch.Tensor, ...]:
        """Example inputs for `batch` (the same tensors for the same batch and seed, in any process)."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        gen = torch.Generator().manual_seed(self.seed + 1)
        if self.entry.family == "torchvision":
            assert self.image_size is not None  # load sizes every vision model
            return (torch.randn(batch, 3, self.image_size, self.image_size, generator=gen),)
        assert self.seq_len is not None and self.vocab_size is not None  # and every text model
        ids = torch.randint(0, self.vocab_size, (batch, self.seq_len), generator=gen)
        mask = torch.ones(batch, self.seq_len, dtype=torch.long)
        mask[-1, self.seq_len // 2 :] = 0  # a padded sequence, so the attention mask matters
        return ids, mask


# -- torchvision ----------------------------------------------------------------------------------


def _torchvision(arch: str, **kwargs) -> Callable[[int], torch.nn.Module]:
    def make(image_size: int) -> torch.nn.Module:
        import torchvision

        if arch.startswith("vit_"):
            kwargs["image_size"] = image_size
        model = getattr(torchvision.models, arch)(weights=None, **kwargs)
        if arch.startswith("vit_"):
            # torchvision zero-initialises the ViT head: random weights would give all-zero logits
            torch.nn.init.normal_(model.heads.head.weight, std=0.02)
        return model

    return make


_VISION = [
    ("resnet18", "ResNet-18 (11.7 M parameters)", {}),
    ("resnet34", "ResNet-34 (21.8 M parameters)", {}),
    ("resnet50", "ResNet-50 (25.6 M parameters)", {}),
    ("resnet101", "ResNet-101 (44.5 M parameters)", {}),
    ("mobilenet_v2", "MobileNetV2 (3.5 M parameters)", {}),
    ("mobilenet_v3_small", "MobileNetV3-Small (2.5 M parameters)", {}),
    ("mobilenet_v3_large", "MobileNetV3-Large (5.5 M parameters)", {}),
    ("efficientnet_b0", "EfficientNet-B0 (5.3 M parameters)", {}),
    ("convnext_tiny", "ConvNeXt-Tiny (28.6 M parameters)", {}),
    ("vit_b_16", "ViT-B/16 (86.6 M parameters; image size a multiple of 16)", {"image_size_multiple": 16}),
]


# -- transformers -----------------------------------------------------------------------------------

# The BERT sizes of Google's "BERT miniatures" (Turc et al., 2019) and BERT-base: (layers, hidden, heads).
_BERT_SIZES = {
    "bert-tiny": (2, 128, 2),
    "bert-mini": (4, 256, 4),
    "bert-small": (4, 512, 8),
    "bert-medium": (8, 512, 8),
    "bert-base": (12, 768, 12),
}
_BERT_MAX_POSITIONS = 512


def _bert_config(name: str):
    import transformers

    layers, hidden, heads = _BERT_SIZES[name]
    return transformers.BertConfig(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=_BERT_MAX_POSITIONS,
    )


def _bert(name: str) -> Callable[[int], torch.nn.Module]:
    def make(seq_len: int) -> torch.nn.Module:
        import transformers

        return transformers.BertModel(_bert_config(name), add_pooling_layer=True)

    return make


ZOO: dict[str, ZooEntry] = {}
for _name, _description, _extra in _VISION:
    ZOO[_name] = ZooEntry(_name, "torchvision", _description, _torchvision(_name), ("input",), ("logits",), **_extra)
for _name, (_layers, _hidden, _heads) in _BERT_SIZES.items():
    ZOO[_name] = ZooEntry(
        _name,
        "transformers",
        f"BertModel from a BertConfig: {_layers} layers, hidden {_hidden}, {_heads} heads",
        _bert(_name),
        ("input_ids", "attention_mask"),
        ("last_hidden_state", "pooler_output"),
    )


def names() -> list[str]:
    return list(ZOO)


def get(name: str, *, image_size: int | None = None, seq_len: int | None = None, seed: int = 0) -> ZooModel:
    """Build the zoo model `name` (random weights from `seed`), in eval mode on the CPU."""
    if name not in ZOO:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(ZOO)} (or a path to an .onnx file)")
    entry = ZOO[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if entry.family == "torchvision":
            size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
            if size < entry.min_image_size or size % entry.image_size_multiple:
                rule = f" and a multiple of {entry.image_size_multiple}" if entry.image_size_multiple > 1 else ""
                raise ValueError(f"{name}: image size must be >= {entry.min_image_size}{rule}, got {size}")
            return ZooModel(entry, entry.make(size).eval(), image_size=size, seed=seed)
        length = DEFAULT_SEQ_LEN if seq_len is None else seq_len
        if not 1 <= length <= _BERT_MAX_POSITIONS:
            raise ValueError(f"{name}: sequence length must be in 1..{_BERT_MAX_POSITIONS}, got {length}")
        model = entry.make(length).eval()
        config: Any = model.config  # a transformers configuration, which torch's Module types know nothing of
        return ZooModel(entry, model, seq_len=length, vocab_size=config.vocab_size, seed=seed)


def describe() -> str:
    """The zoo as text, one entry a line (for `tensorforge build --list-models`)."""
    width = max(len(n) for n in ZOO)
    return "\n".join(f"{e.name:<{width}}  {e.family:<12}  {e.description}" for e in ZOO.values())
