"""Factories whose code needs more than the framework: a package beside the factory (mylayers/, in the
mounted model folder), and libraries from PyPI that only --requirements puts into the runner image."""
import torch
from mylayers.blocks import Residual


def make_with_sibling_package() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(16, 32), Residual(32), torch.nn.Linear(32, 4)).eval()


def make_with_einops() -> torch.nn.Module:
    import einops  # noqa: F401 - the model's own library: without it the factory fails

    return make_with_sibling_package()


def make_with_tabulate() -> torch.nn.Module:
    import tabulate  # noqa: F401

    return make_with_sibling_package()
