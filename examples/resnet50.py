"""ResNet-50 from torchvision with random weights: the GPU benchmark's model (nothing is
downloaded). Needs torchvision, which the CUDA images carry."""
import torch
import torchvision


def make_resnet50() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).eval()
