"""Small models the quantization tests share: a residual CNN with a classifier and a tiny transformer block whose
attention is written out (two matmuls around a softmax), so activation x activation products appear."""

import torch
from torch import nn


class ResidualCNN(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.conv1 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.hidden = nn.Linear(32, 32)
        self.classifier = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.stem(x)))
        y = torch.relu(y + self.conv1(y))  # residual add feeding conv2 through a relu
        y = self.conv2(y).mean((2, 3))
        return self.classifier(torch.relu(self.hidden(y)))


class TinyBlock(nn.Module):
    def __init__(self, dim: int = 16, hidden: int = 32) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff1, self.ff2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.scale = dim**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        attention = torch.softmax(torch.matmul(self.q(h), self.k(h).transpose(-1, -2)) * self.scale, dim=-1)
        x = x + self.out(torch.matmul(attention, self.v(h)))
        return x + self.ff2(torch.relu(self.ff1(self.norm2(x))))


def randomized(model: nn.Module) -> nn.Module:
    """Batch norms with statistics that are not the identity, in eval mode."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()
