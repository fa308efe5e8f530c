"""A model that tracing handles but TorchScript scripting cannot compile.

The generator expression in forward() is valid Python that torch.jit.script rejects,
so its `torchscript-script` variant fails while every other variant succeeds.
"""
import torch
from torch import nn


class WeightedBranches(nn.Module):
    def __init__(self, features: int = 16):
        super().__init__()
        self.branches = nn.ModuleList(nn.Linear(features, features) for _ in range(3))
        self.weights = (0.5, 0.3, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(w * branch(x) for w, branch in zip(self.weights, self.branches))


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return WeightedBranches().eval()
