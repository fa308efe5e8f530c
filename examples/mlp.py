"""A small MLP (64 -> 256 -> 10): the quickest model to optimize end to end."""
import torch
from torch import nn


def make_mlp(in_features: int = 64, hidden: int = 256, classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    ).eval()
