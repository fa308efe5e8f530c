"""Running a module's variant in the user's process, in place of the module.

`load_variant` turns a verified variant (its artifact in the module's run workspace, loaded by its
format's loader as the runners loaded it to verify it: runners/serving/variant_loader.py; for
torch.compile the capture compiled here) into a function of the call's tensor leaves.
`SwappedVariant` is what an `inplace.Module` calls instead of its module: it flattens the call,
checks that it fits what was captured (the structure and constants, and each input's shape within
the ranges recorded), runs the variant and rebuilds the outputs the caller expects. A call that does
not fit, or that the variant fails on, runs eager, with a warning once per module.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from orchestrator.results import CapturedModule, VariantResult
from orchestrator.run import untrusted
from runners.contract.formats import FORMATS
from runners.contract.protocol import one_line
from runners.contract.structure import flatten, from_data, unflatten
from runners.serving import variant_loader
from runners.serving.variant_loader import CannotLoad

Leaves = Callable[[list[Any]], Sequence[Any]]  # a variant in place: tensor leaves in, output leaves out


def load_variant(variant: VariantResult, artifact: Path, variants: Path, capture: Path, device: Any) -> Leaves:
    """The variant as a function of the call's leaves, on `device`. `artifact` lies in the runners'
    `variants` folder: it is checked (no links, regular files) before anything loads it."""
    import torch

    entry = FORMATS[variant.format]
    dtype = variant_loader.torch_dtype(variant.precision)
    if entry.compile_mode:  # compiled where it runs: from the capture, which this process wrote
        model = load_capture(capture, device).to(device, dtype)
        if variant.memory_format == "channels_last":  # as the runner compiled it (torch_runner.in_layout)
            model = model.to(memory_format=torch.channels_last)
        # The runners' options (torch_runner.export_compiled): the mode, weights not frozen.
        run = cast_inputs(variant_loader.compile_module(model, entry.compile_mode, freezing=False), dtype)
        # A CUDA graph's outputs live in memory its next replay overwrites; the pipeline may still
        # hold them (a text encoder called for the prompt, then for the empty prompt).
        cudagraphs = entry.compile_mode == "reduce-overhead"
        return (lambda tensors: [tensor.clone() for tensor in run(tensors)]) if cudagraphs else run
    if not artifact.exists():
        raise CannotLoad(f"its artifact {artifact.name} is missing")
    untrusted.check_tree(variants, artifact)
    loaded = variant_loader.load(entry.loader.name, str(artifact), str(device))
    if entry.loader.name == "onnxruntime":
        return onnx_leaves(torch, loaded, device)
    if entry.loader.name == "tensorrt":
        return engine_leaves(loaded)
    return cast_inputs(loaded, dtype)


def load_capture(path: Path, device: Any) -> Any:
    if path.suffix == ".pt2":
        return variant_loader.load_exported_program(str(path), str(device))
    return variant_loader.load_torchscript(str(path), str(device))


def cast_inputs(model: Any, dtype: Any) -> Leaves:
    """A torch variant in half precision takes its floating-point inputs in that precision."""
    def run(tensors: list[Any]) -> Sequence[Any]:
        return model(*[t.to(dtype) if t.is_floating_point() else t for t in tensors])

    return run


def onnx_leaves(torch: Any, model: Any, device: Any) -> Leaves:
    """An ONNX Runtime model fed tensor leaves; on a GPU through IO binding, so the inputs stay there."""
    import numpy as np

    inputs = [(spec.name, np.dtype(variant_loader.ONNX_DTYPES[spec.type])) for spec in model.get_inputs()]
    outputs = [spec.name for spec in model.get_outputs()]

    def run(tensors: list[Any]) -> Sequence[Any]:
        if device.type != "cuda":
            feeds = {name: t.detach().cpu().numpy().astype(dtype, copy=False)
                     for (name, dtype), t in zip(inputs, tensors)}
            return [torch.from_numpy(array) for array in model.run(None, feeds)]
        binding = model.io_binding()
        bound = []  # the bound tensors must live until the run ends
        for (name, dtype), tensor in zip(inputs, tensors):
            tensor = tensor.to(torch_dtype_of(torch, dtype)).contiguous()
            bound.append(tensor)
            binding.bind_input(name, "cuda", device.index or 0, dtype, list(tensor.shape), tensor.data_ptr())
        for name in outputs:
            binding.bind_output(name, "cuda", device.index or 0)
        model.run_with_iobinding(binding)
        return [torch.from_numpy(array).to(device) for array in binding.copy_outputs_to_cpu()]

    return run


def engine_leaves(engine: variant_loader.Engine) -> Leaves:
    def run(tensors: list[Any]) -> Sequence[Any]:
        outputs = engine.bind_tensors(tensors)
        engine.execute()
        return [tensor.clone() for tensor in outputs.values()]

    return run


def torch_dtype_of(torch: Any, dtype: Any) -> Any:
    """torch's dtype for a numpy dtype (or its name)."""
    import numpy as np

    return torch.from_numpy(np.empty(0, dtype)).dtype


class SwappedVariant:
    """What a Module runs instead of its module: `name`'s `run`, fitted to the captured calls."""

    def __init__(self, module: str, name: str, run: Leaves, capture: CapturedModule):
        import torch

        self.module, self.name, self.run, self.capture = module, name, run, capture
        self.structure = from_data(capture.inputs_structure)
        self.outputs_structure = from_data(capture.outputs_structure)
        self.output_dtypes = {name: torch_dtype_of(torch, dtype) for name, dtype in capture.output_dtypes.items()}
        self.is_tensor: Callable[[Any], bool] = lambda value: isinstance(value, torch.Tensor)
        self.calls = 0  # run by the variant
        self.eager_calls = 0  # run by the module instead (warned about once)

    def __call__(self, args: tuple, kwargs: dict) -> Optional[Any]:
        leaves, structure = flatten({"args": list(args), "kwargs": kwargs}, self.is_tensor, "in")
        reason = self.misfit(leaves, structure)
        if reason is None:
            try:
                outputs = self.run([leaves[name] for name in self.capture.inputs])
            except Exception as error:  # noqa: BLE001 - any failure of the variant: the module runs it
                reason = f"the variant failed on it ({one_line(error)})"
        if reason is not None:
            if self.eager_calls == 0:
                warnings.warn(f"inplace module {self.module!r}: a call runs eager instead of {self.name}: {reason} "
                              "(warned once)", RuntimeWarning, stacklevel=4)
            self.eager_calls += 1
            return None
        self.calls += 1
        named = {name: tensor.to(self.output_dtypes[name]) for name, tensor in zip(self.capture.outputs, outputs)}
        return unflatten(self.outputs_structure, named)

    def misfit(self, leaves: dict[str, Any], structure: Any) -> Optional[str]:
        """Why the call does not fit what was captured; None if it does."""
        if structure != self.structure:
            return "it passes other arguments or constants than the recorded calls"
        return shape_misfit(self.capture, {name: tuple(leaf.shape) for name, leaf in leaves.items()})


def shape_misfit(capture: CapturedModule, shapes: Mapping[str, tuple[int, ...]]) -> Optional[str]:
    """Why inputs of these shapes lie outside the capture's: None if every input's static axes match
    and its dynamic ones lie within the sizes recorded."""
    for name, dims in capture.input_shapes.items():
        shape = shapes[name]
        ranges = {axis.axis: axis for axis in capture.input_ranges.get(name, [])}
        fits = len(shape) == len(dims) and all(
            size == dim if dim is not None else ranges[axis].min <= size <= ranges[axis].max
            for axis, (size, dim) in enumerate(zip(shape, dims)))
        if not fits:
            shown = [f"{ranges[a].min}..{ranges[a].max}" if d is None else str(d) for a, d in enumerate(dims)]
            return f"input {name} has shape {list(shape)}, outside the captured [{', '.join(shown)}]"
    return None
