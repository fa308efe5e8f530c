"""`inplace.Module`: wraps one `torch.nn.Module` of a pipeline, behaves exactly like it, and can
record its calls (arguments and outputs as numpy arrays, by name, with their structure).

torch is imported only inside the functions: this module runs in the user's process, and the
host's CLI never imports it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from orchestrator.inplace.shapes import CallLog
from orchestrator.inplace.structure import Node, flatten

DEFAULT_MAX_CALLS = 16


@dataclass
class RecordedCall:
    """One call: its inputs and outputs as arrays by leaf name, and how to rebuild each side."""

    inputs: dict[str, Any]
    inputs_structure: Node
    outputs: dict[str, Any]
    outputs_structure: Node


def Module(module: Any, name: str, max_calls: int = DEFAULT_MAX_CALLS) -> Any:  # noqa: N802 - reads as a class
    """Wrap `module` (a torch.nn.Module): attribute access, parameters, `.to()` and calls behave as
    the module's own; `record()` / `stop_recording()` switch recording of its calls on and off."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"inplace.Module({name!r}) wraps a torch.nn.Module, not {type(module).__name__}")
    if not name.isidentifier():
        raise ValueError(f"inplace.Module name {name!r} must be an identifier (it names files and variants)")

    def is_tensor(value: Any) -> bool:
        return isinstance(value, torch.Tensor)

    def as_arrays(leaves: dict[str, Any]) -> dict[str, Any]:
        return {key: tensor.detach().cpu().numpy() for key, tensor in leaves.items()}

    class InplaceModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wrapped = module  # registered as a submodule: parameters, state_dict, .to() go through
            self.nav_name = name
            self.nav_log: Optional[CallLog] = None

        def record(self) -> None:
            self.nav_log = CallLog(limit=max_calls)

        def stop_recording(self) -> Optional[CallLog]:
            log, self.nav_log = self.nav_log, None
            return log

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            outputs = self.wrapped(*args, **kwargs)
            if self.nav_log is not None:
                inputs, inputs_structure = flatten({"args": list(args), "kwargs": kwargs}, is_tensor, "in")
                leaves, outputs_structure = flatten(outputs, is_tensor, "out")
                self.nav_log.record({key: tuple(tensor.shape) for key, tensor in inputs.items()},
                                    RecordedCall(as_arrays(inputs), inputs_structure, as_arrays(leaves),
                                                 outputs_structure))
            return outputs

        def __getattr__(self, attribute: str) -> Any:
            try:
                return super().__getattr__(attribute)  # parameters, buffers, submodules of the wrapper
            except AttributeError:
                return getattr(self.wrapped, attribute)  # config, dtype, device, methods: the module's own

    return InplaceModule()
