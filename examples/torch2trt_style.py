import torch
import torchvision

import tensorforge as forge

model = torchvision.models.mobilenet_v2().eval()
x = torch.randn(1, 3, 96, 96)

trt_model = forge.convert(
    model,
    [x],
    fp16_mode=False,
    int8_mode=False,
    max_batch_size=8,
    max_workspace_size=1 << 30,
    input_names=["image"],
    output_names=["logits"],
    device="cpu",
)
torch.save(trt_model.state_dict(), "mobilenet_v2_trt.pth")  # tensors only: loads with weights_only=True

restored = forge.EngineModule()
restored.load_state_dict(torch.load("mobilenet_v2_trt.pth"))
batch = torch.randn(8, 3, 96, 96)
with torch.no_grad():
    assert torch.allclose(restored(batch), model(batch), rtol=1e-4, atol=1e-4)
