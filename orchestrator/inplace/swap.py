"""Running a module's variant in the user's process, in place of the module.

`load_variant` turns a verified variant (its artifact in the module's run workspace, or for
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

from orchestrator.inplace.capture import torch_dtype
from orchestrator.inplace.structure import flatten, from_data, unflatten
from orchestrator.results import CapturedModule, VariantResult
from orchestrator.run import untrusted
from runners.contract.formats import FORMATS
from runners.harness.common import one_line
from runners.toolchains.exported_programs import load_program

Run = Callable[[list[Any]], Sequence[Any]]  # tensor leaves in, output leaves out


class CannotLoad(Exception):
    """This Python cannot run the variant (a missing package, no GPU provider): why."""


def load_variant(variant: VariantResult, artifact: Path, variants: Path, capture: Path, device: Any) -> Run:
    """The variant as a function of the call's leaves, on `device`. `artifact` lies in the runners'
    `variants` folder: it is checked (no links, regular files) before anything loads it."""
    import torch

    fmt, entry = variant.format, FORMATS[variant.format]
    dtype = torch_dtype(variant.precision)
    if entry.compile_mode:  # compiled where it runs: from the capture, which this process wrote
        model = load_capture(torch, capture, device).to(device, dtype)
        if variant.memory_format == "channels_last":  # as the runner compiled it (torch_runner.in_layout)
            model = model.to(memory_format=torch.channels_last)
        cudagraphs = entry.compile_mode == "reduce-overhead"
        # The runners' options (torch_runner.record_compile_options): the mode, with weights frozen.
        compiled = torch.compile(model, options={"freezing": True, "triton.cudagraphs": cudagraphs})
        run = cast_inputs(torch, compiled, dtype)
        # A CUDA graph's outputs live in memory its next replay overwrites; the pipeline may still
        # hold them (a text encoder called for the prompt, then for the empty prompt).
        return (lambda tensors: [tensor.clone() for tensor in run(tensors)]) if cudagraphs else run
    if not artifact.exists():
        raise CannotLoad(f"its artifact {artifact.name} is missing")
    untrusted.check_tree(variants, artifact)
    if fmt == "exported-program":
        return cast_inputs(torch, load_program(artifact, device), dtype)
    if fmt in ("torchscript-trace", "torchscript-script", "torch-tensorrt"):
        if fmt == "torch-tensorrt":
            try:
                import torch_tensorrt  # noqa: F401 - registers the engine class the TorchScript file holds
            except (ImportError, OSError):
                raise CannotLoad("Torch-TensorRT (torch_tensorrt, with TensorRT) is not installed in this Python") \
                    from None
        return cast_inputs(torch, torch.jit.load(str(artifact), map_location=device), dtype)
    if fmt == "onnx":
        return onnx_runtime(torch, artifact, device)
    if fmt == "tensorrt":
        return tensorrt_engine(torch, artifact, device)
    raise CannotLoad(f"nav-orch cannot run a {fmt} variant in place")


def load_capture(torch: Any, path: Path, device: Any) -> Any:
    if path.suffix == ".pt2":
        return load_program(path, device)
    return torch.jit.load(str(path), map_location=device)


def cast_inputs(torch: Any, model: Any, dtype: Any) -> Run:
    """A torch variant in half precision takes its floating-point inputs in that precision."""
    def run(tensors: list[Any]) -> Sequence[Any]:
        return model(*[t.to(dtype) if t.is_floating_point() else t for t in tensors])

    return run


def onnx_runtime(torch: Any, artifact: Path, device: Any) -> Run:
    """ONNX Runtime; on a GPU through IO binding, so the inputs stay on the GPU."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise CannotLoad("onnxruntime is not installed in this Python") from None
    import numpy as np

    from runners.toolchains.onnx_runner import ORT_DTYPES

    on_gpu = device.type == "cuda"
    if on_gpu and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise CannotLoad(f"onnxruntime {ort.__version__} here has no CUDA execution provider")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if on_gpu else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(artifact), options, providers=providers)
    inputs = [(spec.name, np.dtype(ORT_DTYPES[spec.type])) for spec in session.get_inputs()]
    outputs = [spec.name for spec in session.get_outputs()]

    def run(tensors: list[Any]) -> Sequence[Any]:
        if not on_gpu:
            feeds = {name: t.detach().cpu().numpy().astype(dtype, copy=False)
                     for (name, dtype), t in zip(inputs, tensors)}
            return [torch.from_numpy(array) for array in session.run(None, feeds)]
        binding = session.io_binding()
        bound = []  # the bound tensors must live until the run ends
        for (name, dtype), tensor in zip(inputs, tensors):
            tensor = tensor.to(torch_dtype_of(torch, dtype)).contiguous()
            bound.append(tensor)
            binding.bind_input(name, "cuda", device.index or 0, dtype, list(tensor.shape), tensor.data_ptr())
        for name in outputs:
            binding.bind_output(name, "cuda", device.index or 0)
        session.run_with_iobinding(binding)
        return [torch.from_numpy(array).to(device) for array in binding.copy_outputs_to_cpu()]

    return run


def tensorrt_engine(torch: Any, artifact: Path, device: Any) -> Run:
    try:
        from runners.toolchains import tensorrt_runner
    except ImportError:
        raise CannotLoad("TensorRT (the tensorrt package) is not installed in this Python") from None
    if device.type != "cuda":
        raise CannotLoad("a TensorRT engine runs on a GPU; the module is on the CPU")
    engine = tensorrt_runner.Engine(torch, artifact)

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

    def __init__(self, module: str, name: str, run: Run, capture: CapturedModule):
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
