import torch
import transformers

import tensorforge as forge

config = transformers.BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)
model = transformers.BertModel(config).eval()
ids = torch.randint(0, config.vocab_size, (2, 32))
mask = torch.ones(2, 32, dtype=torch.long)

fast = forge.compile(model, (ids, mask), precision="fp32", device="cpu")  # "fp16"/"bf16" on a GPU
hidden, pooled = fast(ids, mask)
with torch.no_grad():
    reference = model(ids, attention_mask=mask)
assert torch.allclose(hidden, reference.last_hidden_state, rtol=1e-4, atol=1e-4)
print(fast.report)
