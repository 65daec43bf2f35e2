import torch
import torchvision

import tensorforge as forge

model = torchvision.models.resnet18().eval()
x = torch.randn(4, 3, 64, 64)

graph = forge.frontends.from_torch(model, (x,))  # typed IR, batch dimension symbolic
graph, config = forge.partition_for_tensorforge(
    graph, min_block_size=1, remove_no_mac_subgraphs=False, use_implicit_batch=True, max_workspace_size=1 << 30
)
print(config.report)  # what runs in the engine, and why not
module = forge.build(graph, config, device="cpu", fp16=False)  # plans build at first run ...
module.build_all(batch_size=4)  # ... or ahead of time
module.save("resnet18.tforge")  # one file: JSON + safetensors, no pickle

loaded = forge.load("resnet18.tforge", device="cpu")
with torch.no_grad():
    assert torch.allclose(loaded(x), model(x), rtol=1e-4, atol=1e-4)
print(loaded.plans()["tensorforge_0"][0].describe())
