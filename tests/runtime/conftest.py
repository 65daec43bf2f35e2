import pytest
import torch


class SmallNet(torch.nn.Module):
    """conv -> bn -> relu -> pool -> linear: one engine region, exercising folding and fusion."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 5)
        with torch.no_grad():  # non-trivial running statistics, so folding batch norm is really tested
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3)))


class WithFallbackOp(torch.nn.Module):
    """An op the IR lacks (logcumsumexp) between two engine regions."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(16, 16)
        self.b = torch.nn.Linear(16, 4)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)).logcumsumexp(dim=1))


@pytest.fixture
def small_net():
    torch.manual_seed(0)
    return SmallNet().eval()


@pytest.fixture
def fallback_net():
    torch.manual_seed(0)
    return WithFallbackOp().eval()


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch):
    for name in (
        "TENSORFORGE_USE_FP16",
        "TENSORFORGE_CACHE_DIR",
        "TENSORFORGE_MAX_WORKSPACE_SIZE",
        "TENSORFORGE_MULTI_ENGINE",
    ):
        monkeypatch.delenv(name, raising=False)
