"""A model built from PyTorch's own transformer layers.

In eval mode with batch_first, torch.nn.TransformerEncoderLayer takes a fused fast path when
grad is off, and the plain path otherwise. torch.jit.trace traces with grad on but runs its
sanity check without, so the two graphs differ and the check fails (torch 2.13) although the
trace itself is correct.
"""
import torch
from torch import nn


class Encoder(nn.Module):
    def __init__(self, width: int, heads: int, layers: int):
        super().__init__()
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encoder(tokens)


def make_encoder(width: int = 32, heads: int = 4, layers: int = 2) -> nn.Module:
    """Input: (batch, sequence, width) float32."""
    return Encoder(width, heads, layers)
