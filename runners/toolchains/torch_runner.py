"""PyTorch runner: loads the source model, exports it, and verifies and profiles the
TorchScript and ExportedProgram variants in torch."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import json
import re
import sys
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from runners.contract.formats import FORMATS
from runners.contract.protocol import (
    COMPILED_OPTIONS,
    COMPILED_PROGRAM,
    NO_CHANNELS_LAST,
    QUANTIZED,
    IOSpec,
    Job,
    JobResult,
    MemoryFormat,
    one_line,
    write_text_atomic,
)
from runners.contract.structure import output_leaves
from runners.harness.common import (
    Handlers,
    LastLoaded,
    Skip,
    import_callable,
    key_by_names,
    load_npz,
    save_reference,
    sharing_a_load,
)
from runners.harness.measure import (
    Timing,
    inputs_at,
    profile_result,
    profile_source,
    verification_result,
    verify_at_batch_sizes,
)
from runners.serving.variant_loader import (
    as_array,
    compile_module,
    load,
    load_exported_program,
    place_program,
    torch_dtype,
    torch_outputs,
)
from runners.toolchains.onnx_quantize import export_quantized, quantized_onnx
from runners.toolchains.tensorrt_build import (
    TRACE_BATCH,
    BatchRange,
    ProgramDim,
    batch_range_of,
    example_batch,
    input_shapes,
    program_dims,
)
from runners.toolchains.torchao_plan import (
    compute_precision,
    device_reason,
    inductor_settings,
    int8_rows_hint,
    layers_reason,
    recipe,
    version_reason,
)

# Lines of a failed trace check kept in the log: its graph diff grows with the model.
TRACE_CHECK_LINES = 40
# Formats whose engines are built from their exported program's own shapes (Torch-TensorRT 2.9 takes
# an engine's opt size from the traced size): exported at the engine's opt batch.
ENGINE_PROGRAMS = frozenset({"torch-tensorrt"})

# fp32 means fp32: TF32 would make fp32 variants differ from the reference by ~1e-3.
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def versions() -> dict[str, str]:
    found = {"torch": torch.__version__, "cuda": torch.version.cuda or "none"}
    try:  # from its metadata: importing onnx for its version took 0.6 s of every session's end
        found["onnx"] = importlib.metadata.version("onnx")
    except importlib.metadata.PackageNotFoundError:
        pass
    return found


def gpu_uuid() -> Optional[str]:
    """The GPU torch computed on, as nvidia-smi names it; None where CUDA never started."""
    if not torch.cuda.is_initialized():
        return None
    uuid = str(getattr(torch.cuda.get_device_properties(torch.cuda.current_device()), "uuid", "") or "")
    return None if not uuid else uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"


def load_source(job: Job) -> torch.nn.Module:
    source = job.source()
    path = Path(job.inputs.model) / source.file
    if source.form == "factory":
        factory = import_callable(job)
        # Factories often initialise weights randomly; every job must build the same model.
        torch.manual_seed(0)
        model = factory(**source.args)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"{source.factory}() returned {type(model).__name__}, not a torch.nn.Module")
        return model.eval()
    if source.form == "torchscript":
        return torch.jit.load(str(path), map_location="cpu").eval()
    if source.form == "exported_program":
        # Jobs without a GPU load the capture's CPU copy where it has one (variant_loader.place_program).
        if source.cpu_file and not job.device.startswith("cuda"):
            path = path.with_name(source.cpu_file)
        return load_exported_program(str(path), job.device)
    raise ValueError(f"unknown model form {source.form!r}")


def forward_names(model: torch.nn.Module) -> Optional[list[str]]:
    if isinstance(model, torch.jit.ScriptModule):
        return [arg.name for arg in model.forward.schema.arguments[1:]]
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params if p.kind in positional]


def order_samples(samples: dict[str, np.ndarray], names: Optional[list[str]]) -> dict[str, np.ndarray]:
    """Key the samples by forward()'s parameter names (input_0, ... where it has none). Samples named
    after forward()'s leading parameters (a Hugging Face model's input_ids and attention_mask) are
    those, in its order; the parameters after them keep their defaults."""
    names = names or [f"input_{i}" for i in range(len(samples))]
    leading = names[:len(samples)]
    if set(samples) == set(leading):
        return {name: samples[name] for name in leading}
    return key_by_names(samples, names, "forward()")


def flatten_outputs(outputs: Any, names: Optional[list[str]] = None) -> dict[str, np.ndarray]:
    """The outputs as arrays, named as runners/contract/structure.py `output_leaves` names nested
    tuples, dicts and ModelOutputs (their fields left None aside); `names`: the reference's, by position."""
    arrays, _ = output_leaves(outputs, lambda value: isinstance(value, torch.Tensor))
    if names is not None:
        if len(names) != len(arrays):
            raise ValueError(f"the variant returned {len(arrays)} outputs, the source model {len(names)}")
        arrays = dict(zip(names, arrays.values()))
    return {name: as_array(t) for name, t in arrays.items()}


class FlatOutputs(torch.nn.Module):
    """The model with its outputs as the tuple of tensors `output_leaves` orders, whatever nested them.
    A traced artifact then holds no type of the model's library (a ModelOutput), which every process
    that loads it would otherwise have to import first: a server has no such library."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: Any) -> tuple[torch.Tensor, ...]:
        return tuple(torch_outputs(self.model(*inputs)))


class SourceDtypes(FlatOutputs):
    """A half-precision model behind the source's interface: floating inputs are cast to the dtype it
    computes in, its (flattened) outputs to the dtypes the source returned. A native Triton backend
    declares the reference's io (orchestrator/triton/repository.py): the artifact it serves must take
    and return just that, so that a client sends what the source model took."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype, outputs: list[torch.dtype]) -> None:
        super().__init__(model)
        self.dtype = dtype
        self.outputs = outputs

    def forward(self, *inputs: Any) -> tuple[torch.Tensor, ...]:
        cast = [x.to(self.dtype) if x.is_floating_point() else x for x in inputs]
        return tuple(y.to(dtype) for y, dtype in zip(super().forward(*cast), self.outputs))


def source_of(model: torch.nn.Module) -> torch.nn.Module:
    return model.model if isinstance(model, SourceDtypes) else model


def keeps_source_dtypes(job: Job, precision: str) -> bool:
    """Whether the artifact, exported in `precision`, is half precision behind the source's interface
    (SourceDtypes): where a native backend serves it."""
    serving = FORMATS[job.format_name()].triton
    return precision in ("fp16", "bf16") and serving is not None and serving.backend is not None


def to_tensors(samples: dict[str, np.ndarray], device: str, precision: Optional[str] = "fp32",
               memory_format: str = "contiguous") -> list[torch.Tensor]:
    """The samples as tensors on `device`, floating ones in `precision` (None: as they are)."""
    tensors = []
    for array in samples.values():
        tensor = torch.from_numpy(array).to(device)
        if tensor.dtype.is_floating_point and precision is not None:
            tensor = tensor.to(torch_dtype(precision))
        if memory_format == "channels_last" and tensor.dim() == 4:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        tensors.append(tensor)
    return tensors


def in_layout(model: torch.nn.Module, job: Job) -> torch.nn.Module:
    """The model in the job's memory format; channels_last only pays where 4-D convolution weights
    are (a model without them skips the variant rather than measure the same thing twice)."""
    if job.memory_format == "contiguous":
        return model
    if "channels_last" not in memory_formats_of(model):
        raise Skip(NO_CHANNELS_LAST)
    return model.to(memory_format=torch.channels_last)


def memory_formats_of(model: torch.nn.Module) -> list[MemoryFormat]:
    """The layouts that change the model: channels_last only where it has 4-D convolution weights."""
    return ["contiguous", "channels_last"] if any(param.dim() == 4 for param in model.parameters()) else ["contiguous"]


def job_tensors(samples: dict[str, np.ndarray], job: Job) -> list[torch.Tensor]:
    """A variant's inputs: on its device, in its precision (a quantized one's float inputs: the
    precision it computes in) and memory format."""
    return to_tensors(samples, job.device, compute_precision(job.precision), job.memory_format)


def weight_bytes(model: torch.nn.Module):
    """The parameters and buffers as bytes (any dtype: viewed as uint8), for the fingerprint."""
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        yield f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode()
        yield flat.view(torch.uint8).numpy().tobytes()


def reference(job: Job) -> JobResult:
    model = load_source(job).to(job.device)
    samples = order_samples(load_npz(job.inputs.samples), forward_names(model))
    precision = job.source().precision
    sync = torch.cuda.synchronize if job.device.startswith("cuda") else (lambda: None)
    with torch.inference_mode():
        outputs = flatten_outputs(model(*to_tensors(samples, job.device, precision)))
        result = save_reference(job, samples, outputs, weights=weight_bytes(model))
        result.memory_formats = memory_formats_of(model)

        def call_at(batch_size: int) -> Callable[[], None]:
            tensors = to_tensors(inputs_at(samples, result.io, batch_size), job.device, precision)

            def run() -> None:
                model(*tensors)
                sync()

            return run

        result.profile = profile_source(job, call_at)
    return result


def export(job: Job) -> JobResult:
    fmt = FORMATS[job.format_name()]
    target = Path(job.output_dir) / fmt.export_file
    if fmt.compile_mode:
        return export_compiled(job, target)
    precision = export_precision(job)
    model = in_layout(load_source(job).to(job.device, torch_dtype(precision)), job)
    samples = load_npz(job.inputs.samples)
    io = job.io_spec()
    in_source_dtypes = keeps_source_dtypes(job, precision)
    if in_source_dtypes:
        model = SourceDtypes(model, torch_dtype(precision), [getattr(torch, spec.dtype) for spec in io.outputs])
    batches = batch_range_of(io, next(iter(samples.values())).shape, job.batch_sizes)
    # A model without a batch axis is traced on the samples as they are.
    batch = example_batch(batches, fmt.name in ENGINE_PROGRAMS)
    example = tuple(to_tensors(inputs_at(samples, io, batch), job.device, None if in_source_dtypes else precision,
                               job.memory_format))
    if quantized_onnx(job):
        export_quantized(job, lambda fp32: EXPORTERS[fmt.name](model, example, io, fp32, batches), target)
    else:
        EXPORTERS[fmt.name](model, example, io, target, batches)
    return JobResult(job.id, job.kind, "ok", artifact=target.name)


def export_precision(job: Job) -> str:
    """The precision the source is exported in, as the registry says: the variant's, or the one its
    quantizer quantizes (an int8 ONNX variant: the fp32 graph, runners/toolchains/onnx_quantize.py),
    or the format's own (TensorRT lowers precision itself from an fp32 graph; Torch-TensorRT takes the
    program in the variant's). A traced source (an ExportedProgram) stays in the precision it was
    traced in: planning skips the variants that would cast it (orchestrator/run/planning.py
    source_skip_reason), and a job written by hand is told why here."""
    fmt = FORMATS[job.format_name()]
    quantizer = fmt.quantizer(job.precision, job.quantization)
    wanted = quantizer.quantizes if quantizer is not None else fmt.export_precision or job.precision
    source = job.source()
    if source.form != "exported_program":
        return wanted
    if wanted != source.precision and fmt.export_precision is None:
        raise Skip(f"the source is an ExportedProgram in {source.precision}: its graph cannot be cast to "
                   f"{wanted} (export it in {wanted}; inplace modules are captured per precision)")
    return source.precision


def export_compiled(job: Job, target: Path) -> JobResult:
    """A compiled variant's folder: its options and, for a float variant, its program (the variant's
    precision and layout fixed in it), which a server compiles (variant_loader.load_compiled) where the
    runner compiles the source (load_variant). A quantized variant compiles its quantized source;
    whether torchao finds anything to quantize is decided here, before any GPU session. A model
    torch.export cannot capture compiles its source too, and says so: no server can load it."""
    target.mkdir(exist_ok=True)
    precision = export_precision(job)
    # Not frozen (weights folded into the graph as constants), as the hand recipe compiles: frozen,
    # with CUDA graphs in fp16, ResNet-50 ran at 0.92-0.97x of it at batch 64 and BERT-base at 0.88x,
    # at batch 1 0.51-0.82x, alternated in one process on an H100; unfrozen at 1.00x (docs/performance.md).
    # torchao's recipe for quantized weights compiles unfrozen too.
    options = {"mode": FORMATS[job.format_name()].compile_mode, "freezing": False,
               "automatic_dynamic_shapes": has_non_batch_axes(job.io_spec())}
    write_text_atomic(target / COMPILED_OPTIONS, json.dumps(options))
    model = in_layout(load_source(job).to(job.device, torch_dtype(precision)), job)
    if job.precision in QUANTIZED:
        quantizable(model)
        return JobResult(job.id, job.kind, "ok", artifact=target.name)
    samples, io = load_npz(job.inputs.samples), job.io_spec()
    example = tuple(to_tensors(inputs_at(samples, io, TRACE_BATCH), job.device, precision, job.memory_format))
    try:
        torch.export.save(exported_program(model, example, io), str(target / COMPILED_PROGRAM))
    except Exception as error:  # noqa: BLE001 - the source compiles all the same
        print(f"[nav-orch runner] torch.export could not capture the model ({one_line(error)}): the variant "
              "compiles its source where it runs, which no server can load", flush=True)
    return JobResult(job.id, job.kind, "ok", artifact=target.name)


def export_torchscript_trace(model, example, io: IOSpec, target: Path, batches: Optional[BatchRange]) -> None:
    if isinstance(source_of(model), torch.jit.ScriptModule):
        raise Skip("the source is already TorchScript: see the torchscript-script variant")
    model = FlatOutputs(model)
    try:
        traced = torch.jit.trace(model, example)
    except torch.jit.TracingCheckError as error:
        # The tracer's check re-runs the model with grad off, where fused fast paths (PyTorch's
        # own transformer layers) give another graph. nav-orch verifies the variant against the
        # reference anyway, so trace again without the check and let verification decide.
        print(f"torch.jit.trace: its sanity check failed; traced again without it "
              f"(nav-orch's verification decides):\n{head_lines(str(error), TRACE_CHECK_LINES)}",
              file=sys.stderr, flush=True)
        traced = torch.jit.trace(model, example, check_trace=False)
    # eval(): a trace of an ExportedProgram's module comes back in training mode, which freezing refuses.
    torch.jit.save(torch.jit.freeze(traced.eval()), str(target))


def head_lines(text: str, count: int) -> str:
    """The first `count` lines of `text`, and how many more there were."""
    lines = text.splitlines()
    more = len(lines) - count
    return "\n".join(lines[:count] + ([f"... ({more} more lines)"] if more > 0 else []))


def export_torchscript_script(model, example, io: IOSpec, target: Path, batches: Optional[BatchRange]) -> None:
    source = source_of(model)
    if isinstance(source, torch.fx.GraphModule):
        raise Skip("an ExportedProgram cannot be scripted")
    try:
        scripted = source if isinstance(source, torch.jit.ScriptModule) else torch.jit.script(source)
    except Exception as error:  # noqa: BLE001 - TorchScript raises many types; say where it stopped
        places = re.findall(r'File "([^"]+)", line (\d+)', str(error))
        where = f" at {Path(places[-1][0]).name}:{places[-1][1]}" if places else ""
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RuntimeError(f"torch.jit.script cannot compile the model{where}: {first}") from error
    if isinstance(model, SourceDtypes):  # the casts around the script, traced: they hold no control flow
        scripted = torch.jit.trace(SourceDtypes(scripted, model.dtype, model.outputs), example)
    torch.jit.save(torch.jit.freeze(scripted.eval()), str(target))


def export_exported_program(model, example, io: IOSpec, target: Path, batches: Optional[BatchRange]) -> None:
    """The program with an unbounded dynamic batch: whoever runs or serves it may send any batch."""
    torch.export.save(exported_program(model, example, io), str(target))


def export_bounded_program(model, example, io: IOSpec, target: Path, batches: Optional[BatchRange]) -> None:
    """The program of an engine built from it, traced at the engine's opt batch (export: `example_batch`),
    its batch bounded by `batches` and each declared dynamic axis by its recorded sizes: Torch-TensorRT
    2.9 builds the engine's profile from these ranges and the traced sizes, and cannot take an unbounded
    range (tensorrt_build.py `program_dims`)."""
    torch.export.save(exported_program(model, example, io, batches, bounded=True), str(target))


def export_aoti(model, example, io: IOSpec, target: Path, batches: Optional[BatchRange]) -> None:
    """AOTInductor: the program (its batch unbounded) compiled ahead of time for the job's device into
    a package that loads without compiling again (variant_loader.load_aoti), weights frozen in."""
    from torch import _inductor

    _inductor.aoti_compile_and_package(exported_program(model, example, io), package_path=str(target),
                                       inductor_configs={"freezing": True})


def exported_program(model, example, io: IOSpec, batches: Optional[BatchRange] = None, bounded: bool = False) -> Any:
    """torch.export with the dynamic axes `program_dims` decides: unbounded, or `bounded` by `batches`
    and the declared axes' recorded sizes."""
    if isinstance(model, torch.jit.ScriptModule):
        raise Skip("torch.export cannot take a TorchScript module")
    made: dict[ProgramDim, Any] = {}  # one torch Dim per ProgramDim: inputs naming it share its size

    def dim(spec: ProgramDim) -> Any:
        if spec.name is None:
            return torch.export.Dim.AUTO
        if spec not in made:
            made[spec] = torch.export.Dim(spec.name, min=spec.min, max=spec.max)
        return made[spec]

    decided = program_dims(io, [tuple(tensor.shape) for tensor in example], batches, bounded)
    dynamic = tuple(None if axes is None else {axis: dim(spec) for axis, spec in axes.items()} for axes in decided)
    # One entry for FlatOutputs.forward(*inputs): the exporter matches dynamic shapes to parameters.
    return torch.export.export(FlatOutputs(model), example, dynamic_shapes=(dynamic,))


def export_onnx(model, example, io: IOSpec, target: Path, batches: Optional[BatchRange]) -> None:
    """The ONNX exporter of torch.export (dynamo, the maintained path) from the same program as the
    exported-program variant, whose dynamic axes it keeps; a TorchScript module through the
    TorchScript-based exporter, with every axis the io leaves dynamic named."""
    names = {"input_names": [spec.name for spec in io.inputs], "output_names": [spec.name for spec in io.outputs]}
    if isinstance(source_of(model), torch.jit.ScriptModule):
        torch.onnx.export(model, example, str(target), dynamic_axes=onnx_dynamic_axes(io), dynamo=False,
                          external_data=False, **names)
    else:
        torch.onnx.export(exported_program(model, example, io), f=str(target), dynamo=True, external_data=False,
                          **names)


def onnx_dynamic_axes(io: IOSpec) -> dict[str, dict[int, str]]:
    """Every axis the io leaves dynamic (None), inputs and outputs: the batch axis is "batch",
    shared by all; any other is NAME_AXIS."""
    axes = {}
    for spec in [*io.inputs, *io.outputs]:
        dynamic = {axis: "batch" if axis == io.batch_axis else f"{spec.name}_{axis}"
                   for axis, size in enumerate(spec.shape) if size is None}
        if dynamic:
            axes[spec.name] = dynamic
    return axes


# Each format's exporter (a two-step format's: of its intermediate), given the model, an example
# batch, the reference's io, the target file and the batch range profiled.
EXPORTERS: dict[str, Callable[[torch.nn.Module, tuple, IOSpec, Path, Optional[BatchRange]], None]] = {
    "torchscript-trace": export_torchscript_trace,
    "torchscript-script": export_torchscript_script,
    "exported-program": export_exported_program,
    "torch-aoti": export_aoti,
    "onnx": export_onnx,
    "tensorrt": export_onnx,  # model.onnx, built into an engine by the tensorrt runner
    "torch-tensorrt": export_bounded_program,  # model.pt2, compiled into engines by convert()
}


def import_torch_tensorrt():
    try:
        import torch_tensorrt
    except (ImportError, OSError):  # OSError: installed, but TensorRT's libraries are missing
        raise Skip("Torch-TensorRT (torch_tensorrt, with TensorRT) is not installed in this runner image") from None
    return torch_tensorrt


def compile_program(torch_tensorrt: Any, program: torch.export.ExportedProgram, io: IOSpec,
                    example: list[torch.Tensor], batches: Optional[BatchRange], precision: str) -> Any:
    """Torch-TensorRT's API for exported programs, `torch_tensorrt.dynamo.compile` (2.9, NGC 25.10:
    its `compile(ir="dynamo")` traces a module and cannot take a program). 2.9 builds each engine's
    profile from the program (min and max from its ranges, opt from the sizes it was traced at), not
    from the `Input`s, which it requires all the same: they state the same ranges (tensorrt_build.py
    `input_shapes`), the opt nav-orch means (the largest profiled batch, each declared axis's typical
    size)."""
    inputs = []
    for spec, tensor in zip(io.inputs, example):
        shapes = input_shapes(spec.shape, tuple(tensor.shape), batches, spec.ranges, io.batch_axis, spec.name)
        inputs.append(torch_tensorrt.Input(min_shape=shapes.min, opt_shape=shapes.opt, max_shape=shapes.max,
                                           dtype=tensor.dtype))
    return torch_tensorrt.dynamo.compile(program, arg_inputs=inputs, enabled_precisions={torch_dtype(precision)})


def convert(job: Job) -> JobResult:
    """Torch-TensorRT: compile the exported program into TensorRT engines for this GPU, saved as
    TorchScript: with a dynamic batch from the smallest to the largest batch size, tuned for the
    largest, and each declared dynamic axis over its recorded sizes (the program's ranges:
    `export_bounded_program`)."""
    if job.format != "torch-tensorrt":
        raise ValueError(f"the torch runner converts only torch-tensorrt, not {job.format}")
    torch_tensorrt = import_torch_tensorrt()
    if not job.device.startswith("cuda"):
        raise Skip("Torch-TensorRT needs a GPU; this job runs on the CPU")
    # Exported on this GPU, in this session (Format.exported_in_check): moving a CPU program here would
    # take the fake-tensor path that failed torch.compile (variant_loader.place_program).
    program = place_program(torch.export.load(job.inputs.export), job.device)
    samples = load_npz(job.inputs.samples)
    io = job.io_spec()
    batches = batch_range_of(io, next(iter(samples.values())).shape, job.batch_sizes)
    example = to_tensors(samples, job.device, None if keeps_source_dtypes(job, job.precision) else job.precision)
    if len(example) != len(io.inputs):
        raise ValueError(f"the samples hold {len(example)} arrays, the reference's inputs are {len(io.inputs)}")
    compiled = compile_program(torch_tensorrt, program, io, example, batches, job.precision)
    target = Path(job.output_dir) / FORMATS[job.format_name()].artifact
    torch_tensorrt.save(compiled, str(target), output_format="torchscript", arg_inputs=example)
    return JobResult(job.id, job.kind, "ok", artifact=target.name)


def load_variant(job: Job) -> torch.nn.Module:
    """The variant ready to run (verify and profile share it through LastLoaded): its artifact
    through its format's loader, as a server loads it; a compiled variant as its source compiled
    here. A server compiles the variant's program instead (variant_loader.load_compiled), which the
    source cannot be: compiled here, that program ran at 0.72x the hand recipe in nav-orch's GPU run
    on an H100, for a cause not found yet, while alone it compiles to the module's speed
    (docs/performance.md)."""
    fmt = FORMATS[job.format_name()]
    folder = Path(job.inputs.artifact)
    if fmt.compile_mode is None:
        return load(fmt.loader.name, str(folder), job.device)
    options = json.loads((folder / COMPILED_OPTIONS).read_text())
    if options["mode"] == "reduce-overhead" and not job.device.startswith("cuda"):
        raise Skip("CUDA graphs (mode=reduce-overhead) need a GPU")
    if job.precision in QUANTIZED:
        check_torchao(job)
    model = in_layout(load_source(job).to(job.device, torch_dtype(compute_precision(job.precision))), job)
    if job.precision in QUANTIZED:
        quantize_module(model, job.precision)
    return compile_module(model, options["mode"], options["freezing"], options["automatic_dynamic_shapes"],
                          inductor_settings(job.precision))


def quantizable(model: torch.nn.Module) -> None:
    """Skip a quantized variant of a model in which torchao finds nothing to quantize."""
    reason = layers_reason(sum(isinstance(module, torch.nn.Linear) for module in model.modules()))
    if reason is not None:
        raise Skip(reason)


def check_torchao(job: Job) -> None:
    """Skip a quantized compiled variant where torchao cannot run it: no CUDA, fp8 on a GPU without
    FP8 tensor cores, no torchao, or a torchao that does not support this torch (its version read
    from its metadata: whether its module imports is not the question)."""
    on_cuda = job.device.startswith("cuda") and torch.cuda.is_available()
    capability = torch.cuda.get_device_capability(torch.device(job.device)) if on_cuda else None
    reason = device_reason(job.precision, on_cuda, capability)
    if reason is None:
        try:
            installed: Optional[str] = importlib.metadata.version("torchao")
        except importlib.metadata.PackageNotFoundError:
            installed = None
        reason = version_reason(installed, torch.__version__)
    if reason is not None:
        raise Skip(reason)


def quantize_module(model: torch.nn.Module, precision: str) -> None:
    """Quantize the Linear layers of the model (in bf16, on its GPU) in place with torchao's config
    for `precision` (runners/toolchains/torchao_plan.py `recipe`)."""
    quantizable(model)
    from torchao import quantization

    chosen = recipe(precision)
    granularity = {"granularity": quantization.PerRow()} if chosen.per_row else {}
    # set_inductor_config=False: its process-wide settings are set per variant (load_variant).
    config = getattr(quantization, chosen.config)(set_inductor_config=False, **granularity)
    quantization.quantize_(model, config)


def has_non_batch_axes(io: IOSpec) -> bool:
    return any(axis.axis != io.batch_axis for spec in io.inputs for axis in spec.ranges)


def variant_key(job: Job) -> tuple:
    return (job.format, job.inputs.artifact, job.precision, job.device)


def verify(job: Job, loaded: LastLoaded) -> JobResult:
    model = loaded.get(variant_key(job), lambda: load_variant(job))
    samples = load_npz(job.inputs.samples)
    reference_outputs = load_npz(job.inputs.reference)

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return flatten_outputs(model(*job_tensors(inputs, job)), list(reference_outputs))

    try:
        with torch.inference_mode():
            return verification_result(job, verify_at_batch_sizes(run, samples, reference_outputs, job))
    except RuntimeError as error:
        hint = int8_rows_hint(str(error)) if job.precision == "int8" else None
        if hint is None:
            raise
        raise RuntimeError(f"{one_line(error)}: {hint}") from error


def timed_call(model: Callable[..., object], job: Job, samples: dict[str, np.ndarray],
               batch_size: int) -> Callable[[], None]:
    """The one synchronous call of `model` at `batch_size` that a profile or a comparison times."""
    tensors = job_tensors(inputs_at(samples, job.io, batch_size), job)
    sync = torch.cuda.synchronize if job.device.startswith("cuda") else (lambda: None)

    def run() -> None:
        model(*tensors)
        sync()

    return run


def profile(job: Job, loaded: LastLoaded, timing: Timing) -> JobResult:
    model = loaded.get(variant_key(job), lambda: load_variant(job))
    samples = load_npz(job.inputs.samples)
    with torch.inference_mode():
        return profile_result(job, partial(timed_call, model, job, samples), timing)


def timed_candidate(job: Job, samples: dict[str, np.ndarray], batch_size: int, stack: ExitStack) -> Callable[[], None]:
    """A comparison's candidate (its profile `job`), loaded; its one call at `batch_size`, for
    runners/harness/main.py's compare job to time while `stack` is open."""
    stack.enter_context(torch.inference_mode())
    return timed_call(load_variant(job), job, samples, batch_size)


# What a GPU session keeps loaded between its verifications and its profiles (LastLoaded): the eager
# variants of ResNet-50 or BERT-base fit (weights of 51 to 102 MB, and 220 to 440 MB, a variant),
# most of a larger model's do not. One session per runner and GPU holds several variants.
KEEP_LOADED_BYTES = 4 << 30


def gpu_memory_in_use() -> int:
    """The GPU memory this process allocated; on a machine without CUDA, more than any budget."""
    return torch.cuda.memory_allocated() if torch.cuda.is_available() else 1 << 62


def handlers(timing: Timing) -> Handlers:
    """This runner's jobs, for one runner process."""
    return sharing_a_load({"reference": reference, "export": export, "convert": convert},
                          {"verify": verify, "profile": partial(profile, timing=timing)},
                          LastLoaded(gpu_memory_in_use, KEEP_LOADED_BYTES))
