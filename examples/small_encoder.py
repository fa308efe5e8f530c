"""A small transformer encoder (torch.nn.TransformerEncoder) with random, seeded weights: the CPU
quantization benchmark's matmul-heavy model with attention (benchmarks/quantized_cpu.py).

One input, `x` float32 (batch, seq, d_model), and one output of the same shape, the last layer's
hidden states, e.g.
    nav-orch optimize examples/small_encoder.py:make_small_encoder --input x:8,64,256:float32
"""
import torch
from torch import nn


class Encoder(nn.Module):
    """The encoder called on its input alone (no masks), so that forward() takes one tensor."""

    def __init__(self, encoder: nn.TransformerEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def make_small_encoder(d_model: int = 256, heads: int = 4, layers: int = 3, feedforward: int = 1024) -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=feedforward, dropout=0.0, batch_first=True)
    # No nested tensors: they apply only with a padding mask, and warn without one.
    return Encoder(nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)).eval()
