"""ViT-B/16 from torchvision with random weights: the quantized GPU benchmark's image model (nothing
is downloaded). Needs torchvision, which the CUDA images carry. Input x float32 (batch, 3, 224, 224),
output the logits (batch, 1000), which verification reads as class scores (top-1 agreement)."""
import torch
import torchvision


def make_vit_b16() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None)
    # torchvision starts the classifier head at zero: every logit would be 0 whatever the precision,
    # and the accuracy figures (cosine, top-1) would say nothing.
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    return model.eval()
