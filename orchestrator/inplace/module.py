"""`inplace.Module`: wraps one `torch.nn.Module` of a pipeline and behaves exactly like it. It can
record its calls (arguments and outputs as numpy arrays, by name, with their structure), run a
swapped-in variant instead of the module, and check that variant against the module in place.

torch is imported only inside the functions: this module runs in the user's process, and the
host's CLI never imports it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol

from orchestrator.inplace.shapes import CallLog
from runners.contract.structure import Node, flatten
from runners.serving.variant_loader import as_array

DEFAULT_MAX_CALLS = 16
CHECKED_CALLS = 8  # calls per module compared in place; each costs an eager call


@dataclass
class RecordedCall:
    """One call: its inputs and outputs as arrays by leaf name, and how to rebuild each side."""

    inputs: dict[str, Any]
    inputs_structure: Node
    outputs: dict[str, Any]
    outputs_structure: Node


class SwappedIn(Protocol):
    """What a Module runs instead of its module: a variant swapped in (orchestrator/inplace/swap.py)."""

    name: str

    def __call__(self, args: tuple, kwargs: dict) -> Optional[Any]:
        """The call's outputs in the module's structure; None where the eager module must run it."""


@dataclass
class InPlaceCheck:
    """The largest difference between a swapped variant's outputs and the module's own, relative to
    the largest magnitude of the module's outputs, over the first `limit` calls."""

    limit: int = CHECKED_CALLS
    calls: int = 0
    worst: float = 0.0


def Module(module: Any, name: str, max_calls: int = DEFAULT_MAX_CALLS) -> Any:  # noqa: N802 - reads as a class
    """Wrap `module` (a torch.nn.Module): attribute access, parameters, `.to()` and calls behave as
    the module's own. `record()` / `stop_recording()` switch recording of its calls on and off (at
    most `max_calls` kept, spread over the shapes seen); `swap(variant)` runs a variant instead."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"inplace.Module({name!r}) wraps a torch.nn.Module, not {type(module).__name__}")
    if not name.isidentifier():
        raise ValueError(f"inplace.Module name {name!r} must be an identifier (it names files and variants)")
    if max_calls < 1:
        raise ValueError(f"inplace.Module({name!r}): max_calls must be at least 1, not {max_calls}")

    def is_tensor(value: Any) -> bool:
        return isinstance(value, torch.Tensor)

    def as_arrays(leaves: dict[str, Any]) -> dict[str, Any]:
        # Floating point as float32 (numpy has no bfloat16): a bf16 module's calls are recorded too,
        # and cast back to each captured precision when replayed (capture.as_input).
        return {key: as_array(tensor) for key, tensor in leaves.items()}

    def relative_difference(actual: Any, expected: Any) -> float:
        got, want = flatten(actual, is_tensor, "out")[0], flatten(expected, is_tensor, "out")[0]
        if list(got) != list(want):
            return float("inf")
        scale = max([float(t.detach().abs().max()) for t in want.values() if t.numel()] + [1e-30])
        return max([float((got[k].detach().double() - want[k].detach().double()).abs().max()) / scale
                    for k in want if want[k].numel()] + [0.0])

    class InplaceModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wrapped = module  # registered as a submodule: parameters, state_dict, .to() go through
            self.nav_name = name
            self.nav_log: Optional[CallLog] = None
            self.nav_variant: Optional[SwappedIn] = None
            self.nav_check: Optional[InPlaceCheck] = None

        def record(self) -> None:
            self.nav_log = CallLog(limit=max_calls)

        def stop_recording(self) -> Optional[CallLog]:
            log, self.nav_log = self.nav_log, None
            return log

        def swap(self, variant: Optional[SwappedIn]) -> None:
            """Run `variant` instead of the module (None: the module itself again)."""
            self.nav_variant = variant

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            if self.nav_variant is not None:
                outputs = self.nav_variant(args, kwargs)
                if outputs is not None:
                    check = self.nav_check
                    if check is not None and check.calls < check.limit:
                        check.calls += 1
                        check.worst = max(check.worst, relative_difference(outputs, self.wrapped(*args, **kwargs)))
                    return outputs
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


def is_inplace_module(value: Any) -> bool:
    return hasattr(value, "nav_name") and hasattr(value, "swap") and hasattr(value, "wrapped")
