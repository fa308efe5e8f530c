"""Loading a variant where it runs: one function per loader the registry names (`Format.loader`),
and one table of dtypes.

The runners' verify and profile jobs (runners/toolchains), inplace swap-in (orchestrator/inplace)
and both servers (triton_python_model.py, pytriton_server.py) load variants here, so a variant is
verified and profiled as it is served. Standard library and numpy at import, each framework inside
its loader, and of nav-orch only runners/contract/structure.py (how outputs are named): a Triton
model folder carries a copy of both beside model.py.

A SavedModel is loaded by the TensorFlow runner alone (Triton serves it natively). A compiled
variant (torch.compile) is its source compiled in its runner, and its program compiled where it is
served (`load_compiled`); `compile_module` compiles either.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import numpy as np

try:  # in nav-orch
    from runners.contract.structure import output_leaves
except ImportError:  # in a Triton model folder, where structure.py lies beside this file
    from structure import output_leaves  # type: ignore[import-not-found,no-redef]

# What a compiled variant's folder holds, as runners/contract/protocol.py names it (a Triton model
# folder has no contract to import it from; a test keeps the two alike).
COMPILED_PROGRAM = "program.pt2"
COMPILED_OPTIONS = "options.json"
# A precision's dtype by name: torch's, and numpy's where numpy has it (it has no bfloat16).
PRECISION_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
# ONNX Runtime's element types as numpy dtypes (bfloat16 and strings have none to feed or compare).
ONNX_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
    "tensor(uint64)": "uint64", "tensor(uint32)": "uint32", "tensor(uint16)": "uint16", "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}

ArraysIn = Callable[[Sequence[np.ndarray]], list[np.ndarray]]  # a served variant: input arrays in, outputs out


class CannotLoad(Exception):
    """This process cannot run the variant (a missing package, no GPU provider, no GPU): why."""


def torch_dtype(precision: str) -> Any:
    import torch

    return getattr(torch, PRECISION_DTYPES[precision])


def gpu_index(device: str) -> int:
    """The index in "cuda:N" (0 for "cuda"): the GPU among those this process sees."""
    return int(device.partition(":")[2] or 0)


# --- torch --------------------------------------------------------------------------------------

def load_torchscript(path: str, device: str) -> Any:
    import torch

    return torch.jit.load(path, map_location=device).eval()


def load_torch_tensorrt(path: str, device: str) -> Any:
    """A TorchScript file holding TensorRT engines, whose class Torch-TensorRT registers on import."""
    try:
        import torch_tensorrt  # noqa: F401
    except (ImportError, OSError):  # OSError: installed, but TensorRT's libraries are missing
        raise CannotLoad("Torch-TensorRT (torch_tensorrt, with TensorRT) is not installed here") from None
    return load_torchscript(path, device)


def program_device(program: Any) -> str:
    """The device type ("cpu", "cuda") an ExportedProgram's weights are on; "cpu" for one without any."""
    for tensor in [*program.state_dict.values(), *program.constants.values()]:
        if hasattr(tensor, "device"):
            return str(tensor.device.type)
    return "cpu"


def place_program(program: Any, device: str) -> Any:
    """The program on `device`, moved only where it must be. A program's weights, and the device its
    graph names (torch.arange(device=...)), are those it was exported on. One moved from the CPU to an
    H100 ran eagerly but failed torch.compile there ("RuntimeError when making fake tensor call"),
    while one saved on the GPU compiled: so an inplace capture is saved on the module's device, with
    a CPU copy for the jobs that run without a GPU."""
    import torch
    from torch.export.passes import move_to_device_pass

    if program_device(program) == torch.device(device).type:
        return program
    return move_to_device_pass(program, device)


def load_exported_program(path: str, device: str) -> Any:
    import torch

    return place_program(torch.export.load(path), device).module()


def load_aoti(path: str, device: str) -> Any:
    """An AOTInductor package (torch-aoti): compiled for its device when it was exported, so it loads
    without compiling; it runs on the GPU `device` names (its index among those this process sees)."""
    from torch import _inductor

    return _inductor.aoti_load_package(path, device_index=gpu_index(device) if device.startswith("cuda") else -1)


def compile_module(model: Any, mode: str, freezing: bool, automatic_dynamic_shapes: Optional[bool] = None,
                   settings: Mapping[str, Any] = {}) -> Any:
    """torch.compile with inductor in `mode` (its options: "reduce-overhead" captures CUDA graphs),
    weights folded into the graph as constants where `freezing`, and more inductor `settings` (a
    quantized variant's); a setting that this torch does not know is left out. One static graph per
    batch size (measured faster than one dynamic graph: ResNet-50 fp16 bs64 on an H100, 4.8 ms after
    automatic dynamic shapes, 3.5 ms static), unless `automatic_dynamic_shapes` (a model recorded at
    many sizes of another axis, an inplace decoder's length, would compile once per size); None leaves
    the process's own setting."""
    import torch
    from torch import _inductor

    if automatic_dynamic_shapes is not None:
        torch._dynamo.config.automatic_dynamic_shapes = automatic_dynamic_shapes
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    known = {name: value for name, value in settings.items() if hasattr(_inductor.config, name)}
    options = {**_inductor.list_mode_options(mode), "freezing": freezing, **known}
    return torch.compile(model, backend="inductor", options=options)


def load_compiled(path: str, device: str) -> Any:
    """A compiled variant's folder (torch-compile*): its program on `device`, compiled with its options.
    The compile happens at each batch size's first call (`warm_up` before serving)."""
    with open(os.path.join(path, COMPILED_OPTIONS)) as options_file:
        options = json.load(options_file)
    program = os.path.join(path, COMPILED_PROGRAM)
    if not os.path.isfile(program):
        raise CannotLoad("it compiles its source where it runs (a quantized variant, or a model torch.export "
                         "cannot capture): there is no program to compile here")
    return compile_module(load_exported_program(program, device), options["mode"], options["freezing"],
                          options.get("automatic_dynamic_shapes", False))


def warm_up(run: ArraysIn, inputs: Sequence[tuple[Sequence[int], Any]], batch_sizes: Sequence[int]) -> list[int]:
    """Call `run` once at each batch size on zeros of each input's dims (without its batch axis) and
    dtype, so that a compiled variant compiles, and captures its CUDA graphs, before a server reports
    ready; returns the sizes warmed (none where an input has a dynamic axis besides the batch)."""
    if any(size < 0 for dims, _ in inputs for size in dims):
        return []
    for batch_size in batch_sizes:
        run([np.zeros([batch_size, *dims], dtype=dtype) for dims, dtype in inputs])
    return list(batch_sizes)


# --- ONNX Runtime -------------------------------------------------------------------------------

def load_onnx(path: str, device: str) -> Any:
    """An ONNX Runtime InferenceSession with every graph optimization; on a GPU only with the CUDA provider:
    a GPU variant run on the CPU would mislead whoever measures or serves it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise CannotLoad("onnxruntime is not installed here") from None
    providers: list[Any] = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise CannotLoad(f"onnxruntime {ort.__version__} here has no CUDA execution provider")
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": gpu_index(device)}))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=providers)


def onnx_feeds(model: Any, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An ONNX Runtime model's feeds: by name where the names agree (they do for nav-orch's exports), else by
    position; floating-point arrays cast to the type each input takes (a half-precision variant's)."""
    specs = model.get_inputs()
    if len(specs) != len(arrays):
        raise ValueError(f"the ONNX model takes {len(specs)} inputs, {len(arrays)} were given")
    ordered = ([arrays[spec.name] for spec in specs] if {spec.name for spec in specs} == set(arrays)
               else list(arrays.values()))
    floats = {"tensor(float16)", "tensor(float)", "tensor(double)"}
    return {spec.name: array.astype(ONNX_DTYPES[spec.type], copy=False) if spec.type in floats else array
            for spec, array in zip(specs, ordered)}


# --- TensorRT -----------------------------------------------------------------------------------

class Engine:
    """A deserialized TensorRT plan and one execution context, fed torch tensors on the GPU.

    Written against TensorRT's documented Python API (10.x: named I/O tensors, execute_async_v3) and
    not run on the hosts nav-orch is developed on, which have no TensorRT."""

    def __init__(self, path: str, device: str):
        try:
            import tensorrt as trt
            import torch
        except (ImportError, OSError):  # not installed, or its libraries are missing
            raise CannotLoad("a TensorRT engine needs tensorrt and torch (its GPU buffers), missing here") from None
        if not device.startswith("cuda") or not torch.cuda.is_available():
            raise CannotLoad("a TensorRT engine runs on a GPU, and this runs on the CPU")
        self.trt, self.torch = trt, torch
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        with open(path, "rb") as plan:
            self.engine = self.runtime.deserialize_cuda_engine(plan.read())
        if self.engine is None:
            raise RuntimeError(f"TensorRT {trt.__version__} could not load the plan (built by another version?)")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        # The tensors whose addresses the context holds (inputs it reads, outputs it writes): kept
        # alive here until the next bind replaces them, whatever the caller keeps.
        self.bound: dict[str, Any] = {}

    def torch_dtype(self, name: str) -> Any:
        return self.torch.from_numpy(np.empty(0, dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))).dtype

    def bind_tensors(self, tensors: Sequence[Any]) -> dict[str, Any]:
        """Bind torch tensors in the engine's input order (on the GPU in the engine's types: those
        already there are bound without a copy), allocate the outputs and set their addresses;
        returns the output tensors, which each `execute()` fills."""
        bound = {}
        for name, given in zip(self.inputs, tensors):
            tensor = given.to("cuda", self.torch_dtype(name)).contiguous()
            bound[name] = tensor
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = self.torch.empty(shape, dtype=self.torch_dtype(name), device="cuda")
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        # Only now, with every address moved to the new tensors, may the previous ones be freed.
        self.bound = {**bound, **outputs}
        return outputs

    def execute(self) -> None:
        # The engine runs on a stream of its own: it must not read the inputs before the work torch
        # queued to write them (their copy and cast in bind_tensors, or the pipeline's previous module
        # in inplace swap-in) is done.
        self.stream.wait_stream(self.torch.cuda.current_stream())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT failed to run the engine")
        self.stream.synchronize()


# --- by the registry's name ---------------------------------------------------------------------

LOADERS: dict[str, Callable[[str, str], Any]] = {
    "torchscript": load_torchscript,
    "torch-tensorrt": load_torch_tensorrt,
    "exported-program": load_exported_program,
    "torch-aoti": load_aoti,
    "torch-compile": load_compiled,
    "onnxruntime": load_onnx,
    "tensorrt": Engine,
}
TORCH_LOADERS = ("torchscript", "torch-tensorrt", "exported-program", "torch-aoti", "torch-compile")


def load(loader: str, path: str, device: str) -> Any:
    """The variant at `path` on `device`, by its format's loader: a torch module, an ONNX Runtime
    InferenceSession or a TensorRT Engine."""
    if loader not in LOADERS:
        raise CannotLoad(f"no loader {loader!r} here (there are: {', '.join(LOADERS)})")
    return LOADERS[loader](path, device)


def arrays_in(loader: str, path: str, device: str, precision: str, input_names: Sequence[str]) -> ArraysIn:
    """A variant as a server runs it: input arrays in the order `input_names` gives, output arrays
    out. A torch variant takes its floating-point inputs in its precision (as it was verified);
    floating outputs leave as float32 (numpy has no bfloat16), to be cast to what the server declares."""
    if loader not in LOADERS:
        raise CannotLoad(f"no loader {loader!r} here (there are: {', '.join(LOADERS)})")
    if loader == "onnxruntime":
        model = load_onnx(path, device)
        return lambda arrays: model.run(None, onnx_feeds(model, dict(zip(input_names, arrays))))
    if loader not in TORCH_LOADERS:
        raise CannotLoad(f"a {loader} variant is not served here (servable: onnxruntime, {', '.join(TORCH_LOADERS)})")
    import torch

    module, dtype = load(loader, path, device), torch_dtype(precision)

    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        tensors = []
        for array in arrays:
            tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
            tensors.append(tensor.to(dtype) if tensor.dtype.is_floating_point else tensor)
        with torch.inference_mode():
            return [as_array(t) for t in torch_outputs(module(*tensors))]

    return run


def torch_outputs(outputs: Any) -> list[Any]:
    """A torch variant's output tensors, in the order its verification named them."""
    import torch

    return list(output_leaves(outputs, lambda value: isinstance(value, torch.Tensor))[0].values())


def as_array(tensor: Any) -> np.ndarray:
    """A torch output as a numpy array on the CPU; a floating one as float32 (numpy has no bfloat16)."""
    tensor = tensor.detach()
    return (tensor.float() if tensor.dtype.is_floating_point else tensor).cpu().numpy()
