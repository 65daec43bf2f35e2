"""Small models that several test folders run (tests/ is on sys.path through tests/conftest.py)."""

from __future__ import annotations

import torch


class TinyEncoder(torch.nn.Module):
    """Embedding, one self-attention block with a head split, layer norms and an MLP: what a BERT layer does, at a
    size that builds in seconds on a CPU."""

    def __init__(self, vocab: int = 50, hidden: int = 32, heads: int = 4, mlp: int = 64):
        super().__init__()
        self.heads = heads
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.qkv = torch.nn.Linear(hidden, 3 * hidden)
        self.out = torch.nn.Linear(hidden, hidden)
        self.norm1, self.norm2 = torch.nn.LayerNorm(hidden), torch.nn.LayerNorm(hidden)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(hidden, mlp), torch.nn.GELU(), torch.nn.Linear(mlp, hidden))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        b, s, h = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        x = self.norm1(x + self.out(attn.transpose(1, 2).reshape(b, s, h)))
        return self.norm2(x + self.mlp(x))


def tiny_bert() -> torch.nn.Module:
    """A Hugging Face BertModel at a size that exports and builds in seconds (2 layers, hidden 32, 128 positions),
    random weights, in eval mode; needs `transformers`."""
    import transformers

    config = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    return transformers.BertModel(config).eval()
