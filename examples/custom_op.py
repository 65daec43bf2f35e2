import torch

import tensorforge as forge


# A custom op the IR knows nothing about ...
@torch.library.custom_op("mylib::scaled_tanh", mutates_args=())
def scaled_tanh(x: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.tanh(x) * scale


@scaled_tanh.register_fake
def _(x, scale):
    return torch.empty_like(x)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16, 16)

    def forward(self, x):
        return torch.ops.mylib.scaled_tanh(self.fc(x), 2.0)


x = torch.randn(4, 16)
print([n.op for n in forge.frontends.from_torch(Net().eval(), (x,)).nodes][-1])  # torch.mylib.scaled_tanh.default


# ... becomes one layer inside the plan once it has a plugin kernel (TensorRT's plugin idea)
@forge.plugin("mylib::scaled_tanh")
def scaled_tanh_kernel(x, *, scale):
    return torch.tanh(x) * scale


module = forge.compile(Net().eval(), (x,), device="cpu")
assert [n.op for n in module.graph.nodes] == ["subgraph"]  # nothing left to PyTorch
print([layer.op for layer in module.plans().get("tensorforge_0", [])] or "plans build at first run")
print(module(x).shape)
