"""The module itself as a candidate, in the user's process (issue 30): the hand recipe,
`torch.compile(module.half(), mode="reduce-overhead")`, searched beside the runners' variants, so
that inplace.optimize never loses to it.

It takes the options the runner search found best for the module (`in_process_options`), runs the
module as the user built it (a cast copy where the precision or layout differs), and is verified
and timed on the recorded calls as the runners' variants are (optimize.py). torch is imported only
inside the functions.
"""
from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from orchestrator.inplace.capture import Flat, as_input
from orchestrator.inplace.module import RecordedCall
from orchestrator.inplace.shapes import Signature
from orchestrator.inplace.swap import Leaves
from orchestrator.results import CapturedModule, VariantResult
from runners.contract.formats import FORMATS
from runners.contract.protocol import MemoryFormat, Precision, one_line
from runners.contract.structure import flatten, from_data, unflatten
from runners.serving import variant_loader

NAME = "module-compiled"
# On a GPU where no compiled format asked for another mode: the hand recipe.
GPU_FALLBACK_MODE = "reduce-overhead"
WARM_UP_ROUNDS = 2  # CUDA graphs are recorded on a shape's second call, not its first


@dataclass(frozen=True)
class InProcessOptions:
    """How the module is compiled here: torch.compile's mode, the precision and the weights' layout."""

    precision: Precision
    compile_mode: str
    memory_format: MemoryFormat = "contiguous"

    @property
    def name(self) -> str:
        layout = "-channels_last" if self.memory_format == "channels_last" else ""
        return f"{NAME}-{self.precision}{layout}"


def in_process_options(best: Optional[VariantResult], on_gpu: bool, searched: Sequence[Precision],
                       modes: Sequence[str] = (), convolutional: bool = False) -> InProcessOptions:
    """The options for the module compiled here. On a CPU torch.compile's default mode in fp32 (the
    CPU search is fp32 only). On a GPU a compiled best's own options (an exhaustive search);
    otherwise the precision and layout of `best`, the best variant torch ran in the runners (which
    compare both layouts on GPUs), with CUDA graphs where `modes` (those of the compiled formats
    asked for) include them or are none. With no runner variant to go by, a `convolutional` module
    (2-D convolutions) compiles in channels_last: alternated on an H100, SD-1.5's UNet loop ran 1.10x
    faster in it (1.09-1.23, 9 rounds) and ResNet-50 compiled 1.03x (docs/performance.md)."""
    if not on_gpu:
        return InProcessOptions("fp32", "default")
    own_mode = FORMATS[best.format].compile_mode if best is not None else None
    if best is not None and own_mode is not None:
        return InProcessOptions(best.precision, own_mode, best.memory_format)
    mode = GPU_FALLBACK_MODE if GPU_FALLBACK_MODE in modes or not modes else modes[0]
    if best is not None:
        return InProcessOptions(best.precision, mode, best.memory_format)
    precision: Precision = "fp16" if "fp16" in searched or not searched else searched[0]
    return InProcessOptions(precision, mode, "channels_last" if convolutional else "contiguous")


def best_torch_variant(ranked: Sequence[VariantResult]) -> Optional[VariantResult]:
    """The first of `ranked` that torch itself ran (not ONNX Runtime or TensorRT): its precision and
    layout are those torch.compile starts from."""
    return next((variant for variant in ranked if FORMATS[variant.format].runner == "torch"
                 and FORMATS[variant.format].engine_of is None and not variant.quantization), None)


def is_convolutional(module: Any) -> bool:
    """Whether the module has 2-D convolutions, whose inputs channels_last lays out."""
    import torch

    return any(isinstance(layer, torch.nn.Conv2d) for layer in module.modules())


def floating_dtypes(module: Any) -> list[Any]:
    """The dtypes of the module's floating-point weights and buffers, in order."""
    return [t.dtype for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()]


def prepared(module: Any, options: InProcessOptions) -> Any:
    """The module in the options' precision and layout: itself where it already is, else a cast copy.
    A copy costs the weights' memory once more while it lives, but leaves the user's module as it
    was: its eager fallback (swap(None)) and the in-place check keep their own precision."""
    import copy

    import torch

    dtype = variant_loader.torch_dtype(options.precision)
    if all(found == dtype for found in floating_dtypes(module)) and options.memory_format == "contiguous":
        return module
    copied = copy.deepcopy(module).to(dtype)
    return copied.to(memory_format=torch.channels_last) if options.memory_format == "channels_last" else copied


def compile_candidate(module: Any, options: InProcessOptions, captured: CapturedModule) -> Leaves:
    """The module compiled here, as a function of a call's tensor leaves (in the capture's order),
    its floating-point inputs cast to the options' precision and 4-D ones to its layout. torch.compile
    is lazy: the first call compiles."""
    import torch

    # Not frozen, as the runners' compiled variants are not: freezing folds the weights into the graph
    # as constants, a second copy of them in the user's process, and ran slower (torch_runner.export_compiled).
    compiled = variant_loader.compile_module(prepared(module, options), options.compile_mode, freezing=False)
    flat = Flat(compiled, from_data(captured.inputs_structure), captured.inputs, captured.outputs).eval()
    dtype = variant_loader.torch_dtype(options.precision)
    channels_last = options.memory_format == "channels_last"
    # A CUDA graph's outputs live in memory its next replay overwrites (swap.py load_variant).
    cudagraphs = options.compile_mode == "reduce-overhead"

    def cast(tensor: Any) -> Any:
        if not tensor.is_floating_point():
            return tensor
        tensor = tensor.to(dtype)
        return tensor.contiguous(memory_format=torch.channels_last) if channels_last and tensor.dim() == 4 else tensor

    def run(tensors: list[Any]) -> Sequence[Any]:
        outputs = flat(*[cast(tensor) for tensor in tensors])
        return [tensor.clone() for tensor in outputs] if cudagraphs else list(outputs)

    return run


# A module whose calls carry objects a capture cannot hold (a generation cache) keeps state between
# calls in them: CUDA graphs would leave that state in memory the next replay overwrites.
DIRECT_MODE = "default"


class CalledDirectly:
    """The module compiled here, called with each call's own arguments, objects included: the
    candidate of a module that could not be captured (a decoder passed a generation cache). Its
    floating-point tensors go in cast to the options' precision and come out in the module's own
    dtype. It is verified with the whole pipeline only: a second, eager call to check it in place
    would update such a cache twice."""

    def __init__(self, module_name: str, module: Any, options: InProcessOptions):
        import torch

        self.module, self.name = module_name, options.name
        self.compiled = variant_loader.compile_module(prepared(module, options), options.compile_mode, freezing=False)
        self.dtype = variant_loader.torch_dtype(options.precision)
        own = floating_dtypes(module)
        self.own_dtype = own[0] if own else torch.float32
        self.is_tensor = lambda value: isinstance(value, torch.Tensor)
        self.calls = 0
        self.eager_calls = 0

    def cast(self, value: Any, prefix: str, dtype: Any) -> Any:
        leaves, structure = flatten(value, self.is_tensor, prefix)
        return unflatten(structure, {name: tensor.to(dtype) if tensor.is_floating_point() else tensor
                                     for name, tensor in leaves.items()})

    def __call__(self, args: tuple, kwargs: dict) -> Optional[Any]:
        call = self.cast({"args": list(args), "kwargs": kwargs}, "in", self.dtype)
        try:
            outputs = self.compiled(*call["args"], **call["kwargs"])
        except Exception as error:  # noqa: BLE001 - the module runs it, as a swapped variant's failure does
            if self.eager_calls == 0:
                warnings.warn(f"inplace module {self.module!r}: a call runs eager instead of {self.name}: "
                              f"{one_line(error)} (warned once)", RuntimeWarning, stacklevel=4)
            self.eager_calls += 1
            return None
        self.calls += 1
        return self.cast(outputs, "out", self.own_dtype)


def time_calls(run: Leaves, calls: Sequence[tuple[Signature, RecordedCall]], inputs: Sequence[str], device: Any,
               precision: Precision, repeats: int) -> float:
    """The median seconds of `repeats` rounds of every call through `run`, after warm-up rounds
    (compiles, CUDA graph records); the inputs are on the device before the clock starts."""
    import torch

    dtype = variant_loader.torch_dtype(precision)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    tensors = [[as_input(torch, call.inputs[name], device, dtype) for name in inputs] for _, call in calls]
    times = []
    with torch.inference_mode():
        for _ in range(WARM_UP_ROUNDS):
            for leaves in tensors:
                run(leaves)
        for _ in range(max(repeats, 1)):
            sync()
            start = time.perf_counter()
            for leaves in tensors:
                run(leaves)
            sync()
            times.append(time.perf_counter() - start)
    return statistics.median(times)
