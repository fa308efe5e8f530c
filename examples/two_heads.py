"""A model with two named inputs and two outputs, to exercise input/output mapping."""
import torch
from torch import nn


class TwoHeads(nn.Module):
    def __init__(self, image_features: int = 32, mask_features: int = 8, classes: int = 5):
        super().__init__()
        self.image_encoder = nn.Sequential(nn.Linear(image_features, 64), nn.GELU())
        self.mask_encoder = nn.Linear(mask_features, 64)
        self.classifier = nn.Linear(64, classes)

    def forward(self, image: torch.Tensor, mask: torch.Tensor):
        embedding = self.image_encoder(image) * torch.sigmoid(self.mask_encoder(mask))
        return self.classifier(embedding), embedding


def make_two_heads(classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return TwoHeads(classes=classes).eval()
