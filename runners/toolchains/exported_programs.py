"""Loading a saved ExportedProgram onto a device, shared by the torch runner and the user's process
(orchestrator/inplace). torch is imported inside the functions: importing this module has no
side effects, where torch_runner.py sets the process's TF32 flags.

A program's weights, and the device its graph names (torch.arange(device=...)), are those it was
exported on. It is moved with torch.export's move_to_device_pass only where it must be: an
ExportedProgram moved from the CPU to an H100 ran eagerly but failed torch.compile there
("RuntimeError when making fake tensor call"), while one saved on the GPU compiled. So an inplace
capture is saved on the module's device, with a CPU copy for the jobs that run without a GPU.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def program_device(program: Any) -> str:
    """The device type ("cpu", "cuda") its weights are on; "cpu" for a program without any."""
    for tensor in [*program.state_dict.values(), *program.constants.values()]:
        if hasattr(tensor, "device"):
            return str(tensor.device.type)
    return "cpu"


def place_program(program: Any, device: Any) -> Any:
    import torch
    from torch.export.passes import move_to_device_pass

    if program_device(program) == torch.device(device).type:
        return program
    return move_to_device_pass(program, device)


def load_program(path: Path, device: Any) -> Any:
    """The program saved at `path`, as a module on `device`."""
    import torch

    return place_program(torch.export.load(str(path)), device).module()
