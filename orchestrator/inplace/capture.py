"""Capturing a pipeline's module as an artifact that loads without its source code.

The runner images carry torch but not the user's libraries (transformers, diffusers), so a module
leaves the user's process as an ExportedProgram (torch.export, with the recorded dynamic axes), or
as a TorchScript trace where export fails. Either takes the call's tensor leaves in order and
returns the output leaves in order (`Flat`): the nesting, the constants and the output dataclasses
stay in the user's process, which rebuilds them (swap.py). A capture counts only for the recorded
calls it reproduces; calls it does not reproduce run eager.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from orchestrator.inplace.module import RecordedCall
from orchestrator.inplace.shapes import CallLog, Signature
from orchestrator.results import CapturedModule
from runners.contract.protocol import DEFAULT_TOLERANCES, AxisRange, Precision, Tolerance, one_line
from runners.contract.structure import Node, flatten, to_data, unflatten
from runners.harness.measure import compare_output
from runners.serving.variant_loader import as_array, torch_dtype

PLAIN_CONSTANTS = (type(None), bool, int, float, str)
CAPTURE_FILES = {"exported_program": "model.pt2", "torchscript": "model.ts"}
CPU_COPY = "model.cpu.pt2"  # an ExportedProgram captured on a GPU, saved on the CPU too


class CaptureError(Exception):
    """The module cannot leave the process as an artifact; it stays eager, for this reason."""


@dataclass(frozen=True)
class Comparison:
    passed: bool
    relative: float  # the largest difference relative to the reference's largest magnitude


def compare_leaves(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], precision: str) -> Comparison:
    """Outputs against recorded ones, with the protocol's default tolerance for the precision."""
    if list(actual) != list(expected):
        return Comparison(False, float("inf"))
    atol_fraction, rtol = DEFAULT_TOLERANCES[precision]
    passed, relative = True, 0.0
    for name, reference in expected.items():
        if reference.size == 0:
            continue
        if reference.dtype.kind not in "fc":
            same = np.array_equal(actual[name], reference)
            passed, relative = passed and same, max(relative, 0.0 if same else float("inf"))
            continue
        scale = max(float(np.abs(reference.astype(np.float64)).max()), 1e-30)
        error = compare_output(actual[name], reference, Tolerance(atol_fraction * scale, rtol))
        passed, relative = passed and error.passed, max(relative, error.max_abs_err / scale)
    return Comparison(passed, relative)


def constants(node: Node) -> list[Any]:
    if node.kind == "const":
        return [node.value]
    return [value for child in node.children for value in constants(child)]


def leaf_names(node: Node) -> list[str]:
    if node.kind == "leaf":
        assert node.name is not None
        return [node.name]
    return [name for child in node.children for name in leaf_names(child)]


def check_capturable(calls: Sequence[RecordedCall]) -> None:
    """One structure and set of constants for every call, and nothing but tensors and plain values."""
    first = calls[0]
    for call in calls[1:]:
        if call.inputs_structure != first.inputs_structure:
            raise CaptureError("its calls differ in their arguments or in the constants they pass "
                               "(nav-orch captures one call signature)")
        if call.outputs_structure != first.outputs_structure:
            raise CaptureError("its calls return differently structured outputs")
    for value in constants(first.inputs_structure):
        if not isinstance(value, PLAIN_CONSTANTS):
            raise CaptureError(f"it is passed a {type(value).__name__}, which is neither a tensor nor a plain "
                               "constant (a generation cache object, say); pass tensors, or call it without one")


def dynamic_shapes(log: CallLog, names: Sequence[str], within: Optional[set[Signature]] = None
                   ) -> tuple[dict[str, list[Optional[int]]], dict[str, list[AxisRange]]]:
    """Each input's shape with None on its dynamic axes, and those axes' ranges."""
    ranges = log.dynamic_axes(within)
    shapes = {}
    for signature, _ in log.kept:
        for name, shape in signature:
            dims: list[Optional[int]] = list(shape)
            for axis in ranges.get(name, []):
                dims[axis.axis] = None
            shapes[name] = dims
    return {name: shapes[name] for name in names}, {name: ranges.get(name, []) for name in names}


def output_ranges(calls: Sequence[RecordedCall]) -> dict[str, list[AxisRange]]:
    outputs = CallLog(limit=len(calls))
    for call in calls:
        outputs.record({name: tuple(array.shape) for name, array in call.outputs.items()}, call)
    return outputs.dynamic_axes()


def capture(module: Any, log: CallLog, folder: Path, device: Any, precision: Precision
            ) -> tuple[CapturedModule, RecordedCall]:
    """Capture `module` (the torch module a Module wraps, in `precision`) from its recorded calls
    into `folder`: an ExportedProgram, else a TorchScript trace, whichever first reproduces the
    calls within the precision's tolerance. Also returns the typical call: of those reproduced, the
    one whose shapes were seen most often."""
    import torch

    dtype = torch_dtype(precision)

    calls = log.calls()
    if not calls:
        raise CaptureError("it was never called while the pipeline ran on the samples")
    check_capturable(calls)
    structure = calls[0].inputs_structure
    inputs, outputs = leaf_names(structure), leaf_names(calls[0].outputs_structure)
    if not inputs:
        raise CaptureError("it takes no tensors")
    _, ranges = dynamic_shapes(log, inputs)
    flat = Flat(module, structure, inputs, outputs).eval()
    # The largest call as the example: a dynamic axis of size 1 would be specialized by the exporters.
    example_call = max(calls, key=lambda call: sum(array.size for array in call.inputs.values()))
    example = tuple(as_input(torch, example_call.inputs[name], device, dtype) for name in inputs)
    failures = []
    for form, build in (("exported_program", export_program), ("torchscript", trace)):
        target = folder / CAPTURE_FILES[form]
        try:
            with torch.inference_mode(False), torch.no_grad():
                run = build(torch, flat, example, [ranges[name] for name in inputs], target, device)
            reproduced, missed, _ = reproduce(run, log.kept, inputs, device, precision)
        except Exception as error:  # noqa: BLE001 - exporters raise many types; the reason is kept
            failures.append(f"{form}: {one_line(error)}")
            continue
        if not reproduced:
            failures.append(f"{form}: it reproduced none of the recorded calls ({missed[0][1]})")
            continue
        shapes, kept_ranges = dynamic_shapes(log, inputs, within={signature for signature, _ in reproduced})
        note = None
        if missed:
            shown = ", ".join(f"{dict(signature)} ({why})" for signature, why in missed[:2])
            note = f"{len(missed)} recorded call(s) not reproduced, which run eager: {shown}"
        kept_calls = [call for _, call in reproduced]
        _, typical = max(reproduced, key=lambda pair: (log.seen[pair[0]], sum(a.size for a in pair[1].inputs.values())))
        cpu_copy = target.with_name(CPU_COPY)
        return CapturedModule(
            precision=precision, form=form, file=target.name, inputs=inputs, outputs=outputs,
            cpu_file=cpu_copy.name if form == "exported_program" and cpu_copy.exists() else None,
            inputs_structure=to_data(structure),
            outputs_structure=to_data(calls[0].outputs_structure), input_shapes=shapes, input_ranges=kept_ranges,
            output_ranges=output_ranges(kept_calls),
            output_dtypes={name: str(array.dtype) for name, array in calls[0].outputs.items()},
            calls_checked=len(reproduced), note=note), typical
    raise CaptureError("it could not be captured: " + "; ".join(failures))


def reproduce(run: Callable[[list[Any]], Sequence[Any]], kept: Sequence[tuple[Signature, RecordedCall]],
              inputs: Sequence[str], device: Any, precision: Precision
              ) -> tuple[list[tuple[Signature, RecordedCall]], list[tuple[Signature, str]], float]:
    """The recorded calls `run` (a capture, or a variant in place) reproduces within the precision's
    tolerance, those it does not, with why, and the largest difference of those it reproduces,
    relative to the outputs' magnitude."""
    import torch

    reproduced, missed, worst = [], [], 0.0
    dtype = torch_dtype(precision)
    for signature, call in kept:
        try:
            with torch.inference_mode():
                got = run([as_input(torch, call.inputs[name], device, dtype) for name in inputs])
            comparison = compare_leaves(as_outputs(got, call.outputs), call.outputs, precision)
        except Exception as error:  # noqa: BLE001 - a shape the artifact was specialized away from, say
            missed.append((signature, one_line(error)))
            continue
        if comparison.passed:
            reproduced.append((signature, call))
            worst = max(worst, comparison.relative)
        else:
            missed.append((signature, f"outputs differ by {comparison.relative:.2e} of their magnitude"))
    return reproduced, missed, worst


def as_input(torch: Any, array: np.ndarray, device: Any, dtype: Any) -> Any:
    """A recorded input as the module in `dtype` takes it: floating-point leaves in that dtype."""
    tensor = torch.from_numpy(array).to(device)
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


def as_outputs(tensors: Sequence[Any], recorded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Output leaves as arrays named like the recorded ones."""
    return {name: as_array(tensor) for name, tensor in zip(recorded, tensors)}


def Flat(module: Any, structure: Node, inputs: Sequence[str], outputs: Sequence[str]) -> Any:  # noqa: N802
    """A torch module that takes the call's tensor leaves in order and returns its output leaves in order."""
    import torch

    def is_tensor(value: Any) -> bool:
        return isinstance(value, torch.Tensor)

    class FlatCall(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *leaves: Any) -> tuple:
            call = unflatten(structure, dict(zip(inputs, leaves)))
            found, _ = flatten(self.inner(*call["args"], **call["kwargs"]), is_tensor, "out")
            return tuple(found[name] for name in outputs)

    return FlatCall()


def export_program(torch: Any, flat: Any, example: tuple, ranges: list[list[AxisRange]], target: Path,
                   device: Any) -> Callable[[list[Any]], Sequence[Any]]:
    from torch.export.passes import move_to_device_pass

    from runners.serving.variant_loader import load_exported_program, program_device

    # Dim.AUTO: the exporter works out which dynamic axes are one and the same (a sequence length
    # that several inputs share), where named Dims would fail on every relation not declared.
    dynamic = tuple({axis.axis: torch.export.Dim.AUTO for axis in axes} or None for axes in ranges)
    # One entry for forward(*leaves): the exporter matches dynamic shapes to parameters.
    program = torch.export.export(flat, example, dynamic_shapes=(dynamic,), strict=False)
    torch.export.save(program, str(target))
    cpu_copy = target.with_name(CPU_COPY)
    cpu_copy.unlink(missing_ok=True)  # an earlier capture's, on a GPU
    if program_device(program) != "cpu":  # a copy for the runners' jobs without a GPU
        torch.export.save(move_to_device_pass(program, "cpu"), str(cpu_copy))
    loaded = load_exported_program(str(target), str(device))
    return lambda tensors: loaded(*tensors)


def trace(torch: Any, flat: Any, example: tuple, ranges: list[list[AxisRange]], target: Path,
          device: Any) -> Callable[[list[Any]], Sequence[Any]]:
    # check_trace off: the reproduction of every recorded call below is the stricter check.
    traced = torch.jit.trace(flat, example, check_trace=False, strict=False)
    torch.jit.save(traced, str(target))
    loaded = torch.jit.load(str(target), map_location=device)
    return lambda tensors: loaded(*tensors)
