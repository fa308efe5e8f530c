"""How a TensorRT engine is built, as plain decisions that need no TensorRT: the optimization
profile of each input (its batch range and its declared dynamic axes; for Torch-TensorRT, the batch
its program is traced at and the Dims it is exported with), which TensorRT API generation sets the
precision (builder flags or the network's own types), the builder's precision flags, how an int8/fp8
plan's Q/DQ model is made (TensorRT Model Optimizer's settings and calibration steps), its workspace
limit, where the timing cache lives, how a bad one is set aside and how parallel builds merge it,
and what TF-TRT builds engines for and how its fallback to TensorFlow shows. The runners
(tensorrt_runner.py, torch_runner.py's Torch-TensorRT conversion, tensorflow_runner.py's TF-TRT)
apply them; tests/test_tensorrt_build.py checks them on hosts without a GPU."""
from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Protocol

from runners.contract.protocol import AxisRange, IOSpec, TensorSpec, one_line
from runners.harness.common import Skip

# The batch an exporter traces a model at where the size does not matter: exporters specialize a
# batch of 1, and a larger one only costs time (a trace runs the model; half precision on CPUs is slow).
TRACE_BATCH = 2
MIB = 1 << 20
GIB = 1 << 30
# The builder's scratch memory: enough for the fast tactics of large convolutions and matmuls,
# never more than half of what is free (the runtime needs the rest for activations), never so
# little that it rules out every tactic.
MIN_WORKSPACE = 256 * MIB
MAX_WORKSPACE = 8 * GIB
TIMING_CACHE_FILE = "timing.cache"

# Where a plan's precision comes from (`precision_source`).
PrecisionSource = Literal["builder-flags", "network-types"]
# Each half precision's trt.BuilderFlag (weak typing) and trt.DataType (what a strongly typed
# network must hold).
HALF_FLAGS = {"fp16": "FP16", "bf16": "BF16"}
HALF_TYPES = {"fp16": "HALF", "bf16": "BF16"}
# Each quantized precision's trt.DataType: what the Q/DQ nodes of its strongly typed network hold.
QUANTIZED_TYPES = {"int8": "INT8", "fp8": "FP8"}
# FP8 tensor cores: Ada and Hopper on.
FP8_MIN_CAPABILITY = (8, 9)
# ModelOpt calibrates in ONNX Runtime on this many samples at a time (`calibration_shapes`): enough
# for few runs, few enough that the activations of a large model fit on the GPU.
CALIBRATION_STEP = 16

# TF-TRT (tensorflow/compiler/tf2tensorrt/kernels/trt_engine_op.cc): with this variable false, a
# TRTEngineOp that has no engine for its input shapes, or whose engine fails, raises AbortedError
# with this message instead of running its segment in plain TensorFlow.
TFTRT_NATIVE_SEGMENT_ENV = "TF_TRT_ALLOW_ENGINE_NATIVE_SEGMENT_EXECUTION"
TFTRT_FALLBACK_MESSAGE = "User disallowed engine native segment execution"
TFTRT_ENGINE_OP = "TRTEngineOp"


@dataclass(frozen=True)
class BatchRange:
    min: int
    opt: int
    max: int


@dataclass(frozen=True)
class ShapeRange:
    """One input's optimization profile."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class ProgramDim:
    """How torch.export is told about one dynamic axis: a named `torch.export.Dim` within `min`..`max`
    (None: unbounded; inputs that name the same Dim share its size), or, with no name, `Dim.AUTO`
    (torch.export relates it to the other axes itself, unbounded)."""

    name: Optional[str]
    min: Optional[int] = None
    max: Optional[int] = None


@dataclass(frozen=True)
class PrecisionFlags:
    """Names of trt.BuilderFlag members to set and to clear."""

    set: tuple[str, ...] = ()
    clear: tuple[str, ...] = field(default=())


def batch_range(sample_batch: int, batch_sizes: Sequence[int]) -> BatchRange:
    """min/opt/max batch of the engine: it must run the samples (verify) and every profiled
    batch size. Kernels are tuned for `opt`: the largest profiled batch, where throughput, the
    default objective, is decided."""
    sizes = [sample_batch, *batch_sizes]
    return BatchRange(min=min(sizes), opt=max(batch_sizes or [sample_batch]), max=max(sizes))


def batch_range_of(io: Optional[IOSpec], sample_shape: Sequence[int], batch_sizes: Sequence[int]
                   ) -> Optional[BatchRange]:
    """The engine's batch range for a model described by `io` (no io: batch axis 0), from the
    samples' shape; None for a model without a batch axis."""
    batch_axis = io.batch_axis if io is not None else 0
    return None if batch_axis is None else batch_range(sample_shape[batch_axis], batch_sizes)


def profile_shapes(network_dims: Sequence[int], sample_shape: Sequence[int], batches: Optional[BatchRange],
                   name: str = "input", batch_axis: Optional[int] = 0,
                   ranges: Sequence[AxisRange] = ()) -> Optional[ShapeRange]:
    """The profile of one network input (dims as TensorRT reports them, -1 where dynamic); None
    when the input is static and needs none. A dynamic axis with a declared range (`ranges`, the
    reference's) spans its min, typical (opt) and max; the batch axis spans `batches`; any other
    dynamic axis takes the samples' size. `batch_axis` None: the model has no batch axis, and
    `batches` may be None."""
    if len(network_dims) != len(sample_shape):
        raise ValueError(f"input {name!r}: the network takes rank {len(network_dims)}, "
                         f"the samples hold shape {list(sample_shape)}")
    declared = {r.axis: r for r in ranges}
    for axis, r in declared.items():
        if not 0 <= axis < len(network_dims):
            raise ValueError(f"input {name!r}: the declared dynamic axis {axis} is outside "
                             f"its rank {len(network_dims)}")
        if network_dims[axis] >= 0 and not r.min == r.max == network_dims[axis]:
            raise ValueError(f"input {name!r}: axis {axis} is fixed at {network_dims[axis]} in the network, "
                             f"but declared dynamic over {r.min}..{r.max}")
    if all(dim >= 0 for dim in network_dims):
        return None
    for axis, (dim, size) in enumerate(zip(network_dims, sample_shape)):
        if dim >= 0 and dim != size and axis != batch_axis:
            raise ValueError(f"input {name!r}: axis {axis} is {dim} in the network, {size} in the samples")

    def at(which: int) -> tuple[int, ...]:  # 0: min, 1: opt, 2: max
        dims = []
        for axis, (dim, size) in enumerate(zip(network_dims, sample_shape)):
            if dim >= 0:
                dims.append(dim)
            elif axis in declared:
                r = declared[axis]
                dims.append((r.min, r.typical, r.max)[which])
            elif axis == batch_axis:
                if batches is None:
                    raise ValueError(f"input {name!r}: a dynamic batch axis {axis} needs a batch range")
                dims.append((batches.min, batches.opt, batches.max)[which])
            else:
                dims.append(size)
        return tuple(dims)

    return ShapeRange(at(0), at(1), at(2))


def input_shapes(shape: Sequence[Optional[int]], sample_shape: Sequence[int], batches: Optional[BatchRange],
                 ranges: Sequence[AxisRange] = (), batch_axis: Optional[int] = 0,
                 name: str = "input") -> ShapeRange:
    """min/opt/max of one input as the reference describes it (`shape`: None where dynamic), for
    Torch-TensorRT, which wants them for every input: the decision of `profile_shapes`, and the
    samples' shape where the input is static."""
    dims = [-1 if size is None else size for size in shape]
    shapes = profile_shapes(dims, sample_shape, batches, name, batch_axis, ranges)
    if shapes is None:
        static = tuple(sample_shape)
        return ShapeRange(static, static, static)
    return shapes


def example_batch(batches: Optional[BatchRange], engine_program: bool) -> int:
    """The batch an exported program is traced at. Torch-TensorRT 2.9 builds each engine's
    optimization profile from the program, not from the `Input` shapes it is handed: min and max from
    each dynamic axis's range, opt from the size the axis had when it was traced
    (torch_tensorrt/dynamo/partitioning/common.py, `construct_dynamic_input` and utils.py
    `extract_var_range_info`). So the program of an engine (`engine_program`) is traced at the
    engine's opt batch, the largest profiled one (`batch_range`); any other at TRACE_BATCH. Never 1,
    which exporters specialize: the range then holds TRACE_BATCH as well."""
    if not engine_program or batches is None:
        return TRACE_BATCH
    return max(TRACE_BATCH, batches.opt)


def program_dims(io: IOSpec, example_shapes: Sequence[Sequence[int]], batches: Optional[BatchRange],
                 bounded: bool) -> list[Optional[dict[int, ProgramDim]]]:
    """Each input's dynamic axes as torch.export is told them (None: static), for a program traced on
    inputs of `example_shapes`.

    Unbounded (a program whoever runs it may call with any size): the batch axis, one Dim shared by
    every input; a model without one, its declared axes (`TensorSpec.ranges`) as Dim.AUTO.

    `bounded` (the program of an engine, which Torch-TensorRT 2.9 cannot build from an unbounded
    range: `extract_var_range_info` calls int() on its upper bound): the batch axis within `batches`,
    and every declared axis besides it within its recorded min..max, each range widened to hold the
    traced size. Axes recorded alike (same min, typical and max) and traced at the same size are one
    Dim: a decoder's tokens and mask share their length, which torch.export requires to be one Dim."""
    dims: list[Optional[dict[int, ProgramDim]]] = []
    if not bounded:
        for spec in io.inputs:
            free = {io.batch_axis: ProgramDim("batch")} if io.batch_axis is not None else {
                r.axis: ProgramDim(None) for r in spec.ranges}
            dims.append(free or None)
        return dims
    if io.batch_axis is not None and batches is None:
        raise ValueError("a bounded program with a batch axis needs the batch range")
    shared: dict[tuple[int, int, int, int], ProgramDim] = {}
    for spec, shape in zip(io.inputs, example_shapes):
        axes: dict[int, ProgramDim] = {}
        if io.batch_axis is not None and batches is not None:
            traced = shape[io.batch_axis]
            axes[io.batch_axis] = ProgramDim("batch", min(batches.min, traced), max(batches.max, traced))
        for r in spec.ranges:
            if r.axis == io.batch_axis:
                continue
            traced = shape[r.axis]
            key = (r.min, r.typical, r.max, traced)
            if key not in shared:
                shared[key] = ProgramDim(dim_name(spec.name, r.axis), min(r.min, traced), max(r.max, traced))
            axes[r.axis] = shared[key]
        dims.append(axes or None)
    return dims


def dim_name(tensor: str, axis: int) -> str:
    """A Dim's name for an axis of a tensor: an identifier, as torch.export prints it in its errors."""
    name = re.sub(r"\W", "_", f"{tensor}_{axis}")
    return name if name[0].isalpha() or name[0] == "_" else f"d_{name}"


def declared_ranges(specs: Sequence[TensorSpec], names: Sequence[str]) -> dict[str, list[AxisRange]]:
    """The declared ranges (the reference's io) of each network input: by name where every name
    matches, else in order where the counts agree (an exporter may rename inputs)."""
    if not any(spec.ranges for spec in specs):
        return {name: [] for name in names}
    by_name = {spec.name: spec.ranges for spec in specs}
    if all(name in by_name for name in names):
        return {name: by_name[name] for name in names}
    if len(specs) == len(names):
        return {name: spec.ranges for name, spec in zip(names, specs)}
    raise ValueError(f"the network's inputs ({', '.join(names)}) do not match the reference's "
                     f"({', '.join(spec.name for spec in specs)}), whose dynamic axes are declared")


def version_major(version: str) -> Optional[int]:
    """The major number of a version string ("10.13.3.9" -> 10); None where it has none."""
    match = re.match(r"\s*(\d+)", version)
    return int(match.group(1)) if match else None


def precision_source(tensorrt_version: str, builder_flags: Collection[str]) -> PrecisionSource:
    """The TensorRT API generation the build targets, as where a plan's precision comes from.

    "builder-flags" (TensorRT 10, NGC 25.10's 10.13): an fp32 network, and BuilderFlag.FP16 or
    BF16 let TensorRT choose half-precision kernels, keeping fp32 where a layer needs it (weak
    typing). "network-types": TensorRT 11 removed those flags (strong typing only, see NVIDIA's
    "Migrating from TensorRT 10.x to 11.x"), and a build without them (TensorRT-RTX) has no weak
    typing either; the network's own types then decide, so half precision needs a half-precision
    ONNX model."""
    major = version_major(tensorrt_version)
    if (major is not None and major >= 11) or "FP16" not in builder_flags:
        return "network-types"
    return "builder-flags"


def plan_precision_source(precision: str, tensorrt_version: str, builder_flags: Collection[str]) -> PrecisionSource:
    """Where the plan of `precision` takes its precision from.

    A quantized (int8, fp8) plan is built from a Q/DQ ONNX model (explicit quantization) as a
    strongly typed network ("network-types") on TensorRT 10 as on 11, with no INT8 or FP8 builder
    flag: TensorRT's explicit-quantization guide says to use it with strong typing, without
    precision-control build flags; TensorRT 10 chose no FP8 tactics for a weakly typed Q/DQ model
    with --fp8 --fp16 (NVIDIA/TensorRT#3987, "please enable --stronglyTyped"); TensorRT Model
    Optimizer, which writes the Q/DQ model with its unquantized layers in fp16 (its
    high_precision_dtype), deploys it with --stronglyTyped; and TensorRT 11 removed the INT8 and FP8
    flags for Q/DQ nodes ("Removed Python APIs and Replacements"). The float precisions follow the
    API generation (`precision_source`)."""
    if precision in QUANTIZED_TYPES:
        return "network-types"
    return precision_source(tensorrt_version, builder_flags)


def network_flags(tensorrt_version: str, source: PrecisionSource, creation_flags: Collection[str]) -> tuple[str, ...]:
    """NetworkDefinitionCreationFlag members to create the network with: EXPLICIT_BATCH before
    TensorRT 10 (from 10 on the only mode), STRONGLY_TYPED where the network's types decide and
    TensorRT still takes the flag (10.x opts in with it; 11 is strongly typed whatever it is given)."""
    major = version_major(tensorrt_version)
    flags = []
    if major is not None and major < 10 and "EXPLICIT_BATCH" in creation_flags:
        flags.append("EXPLICIT_BATCH")
    if source == "network-types" and (major is None or major < 11) and "STRONGLY_TYPED" in creation_flags:
        flags.append("STRONGLY_TYPED")
    return tuple(flags)


def onnx_export_precision(precision: str, source: PrecisionSource) -> str:
    """The precision the tensorrt format's intermediate model.onnx must be exported in: fp32 where
    builder flags lower it (TensorRT then keeps fp32 where a layer needs it), the variant's own
    where the network's types decide (an fp32 export would give an fp32 plan)."""
    return "fp32" if source == "builder-flags" else precision


def builder_precision(precision: str, source: PrecisionSource, available: Collection[str],
                      network_types: Collection[str], fast_fp16: Optional[bool],
                      compute_capability: Optional[tuple[int, int]], tensorrt_version: str) -> PrecisionFlags:
    """The builder flags of a precision for the API generation `source`; Skip (with the reason)
    where the plan cannot be built in that precision. `network_types`: the trt.DataType names the
    parsed network holds (read only where the network's types decide)."""
    if source == "builder-flags":
        return precision_flags(precision, set(available), fast_fp16, compute_capability, tensorrt_version)
    return typed_precision(precision, network_types, set(available), compute_capability, tensorrt_version)


def precision_flags(precision: str, available: set[str], fast_fp16: Optional[bool],
                    compute_capability: Optional[tuple[int, int]], tensorrt_version: str) -> PrecisionFlags:
    """The builder flags for a precision (weak typing); Skip (with the reason) where this TensorRT
    or GPU has none.

    fp32 clears TF32 (on by default on Ampere and later), for the same reason the torch runner
    turns it off: fp32 variants must match the reference to fp32 round-off. Half precisions are
    builder flags on an fp32 network, so TensorRT keeps fp32 where a layer needs it."""
    if precision == "fp32":
        return PrecisionFlags(clear=("TF32",) if "TF32" in available else ())
    flag = HALF_FLAGS.get(precision)
    if flag is None:
        raise Skip(f"TensorRT runner: unknown precision {precision!r}")
    if flag not in available:
        raise Skip(f"TensorRT {tensorrt_version} has no {flag} builder flag")
    if precision == "fp16" and fast_fp16 is False:
        raise Skip("this GPU has no fast fp16 (TensorRT's platform_has_fast_fp16 is false)")
    check_bf16(precision, compute_capability)
    return PrecisionFlags(set=(flag,))


def typed_precision(precision: str, network_types: Collection[str], available: set[str],
                    compute_capability: Optional[tuple[int, int]], tensorrt_version: str) -> PrecisionFlags:
    """The builder flags of a strongly typed build: none to set (TensorRT runs the types the ONNX
    model holds), TF32 cleared for fp32. A half precision needs a network that holds that type: an
    fp32 export would build an fp32 plan under a half-precision name, so it is skipped instead; so
    does a quantized one, whose Q/DQ model must hold a tensor of its type."""
    if precision == "fp32":
        return PrecisionFlags(clear=("TF32",) if "TF32" in available else ())
    quantized = QUANTIZED_TYPES.get(precision)
    if quantized is not None:
        check_fp8(precision, compute_capability)
        if quantized not in network_types:
            raise Skip(f"the Q/DQ model holds no {precision} tensor: TensorRT Model Optimizer quantized none of "
                       f"its layers, so the plan would compute in floating point under the name {precision}")
        return PrecisionFlags()
    half = HALF_TYPES.get(precision)
    if half is None:
        raise Skip(f"TensorRT runner: unknown precision {precision!r}")
    check_bf16(precision, compute_capability)
    if half not in network_types:
        raise Skip(f"TensorRT {tensorrt_version} builds strongly typed networks only (no {HALF_FLAGS[precision]} "
                   f"builder flag): the {precision} plan needs an ONNX export in {precision}, and this model.onnx "
                   f"holds no {precision} tensor (its exporter wrote it in fp32)")
    return PrecisionFlags()


def check_bf16(precision: str, compute_capability: Optional[tuple[int, int]]) -> None:
    """Skip bf16 on GPUs without bf16 kernels (before Ampere), whichever generation builds it."""
    if precision == "bf16" and compute_capability is not None and compute_capability < (8, 0):
        major, minor = compute_capability
        raise Skip(f"bf16 needs a GPU of compute capability 8.0 or later; this one is {major}.{minor}")


def check_fp8(precision: str, compute_capability: Optional[tuple[int, int]]) -> None:
    """Skip fp8 on GPUs without FP8 tensor cores (before Ada)."""
    if precision == "fp8" and compute_capability is not None and compute_capability < FP8_MIN_CAPABILITY:
        major, minor = compute_capability
        raise Skip(f"fp8 needs a GPU of compute capability {FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]} or later "
                   f"(FP8 tensor cores); this one is {major}.{minor}")


def modelopt_settings(precision: str, device: str) -> dict[str, object]:
    """The arguments of modelopt.onnx.quantization.quantize besides the model, its calibration data and
    the paths: the precision as its quantize_mode; the unquantized layers in fp16 (ModelOpt's default
    since 0.37, stated so that a change of default cannot change the plans), which the strongly typed
    build keeps; calibration in ONNX Runtime on the job's GPU, else the CPU (ModelOpt's default order
    starts with the CPU)."""
    if precision not in QUANTIZED_TYPES:
        raise ValueError(f"TensorRT Model Optimizer quantizes to int8 or fp8 here, not {precision!r}")
    index = device.partition(":")[2] or "0"
    return {"quantize_mode": precision, "high_precision_dtype": "fp16", "calibration_eps": [f"cuda:{index}", "cpu"]}


def calibration_shapes(shapes: Mapping[str, Sequence[int]], batch_axis: Optional[int],
                       step: int = CALIBRATION_STEP) -> str:
    """ModelOpt's `calibration_shapes` ("name:AxB,name:C"): the shape of one calibration step, from the
    calibration arrays' shapes. ModelOpt splits the arrays along axis 0 into as many steps as the
    first input's step fits, so a model with its batch on axis 0 is calibrated `step` samples at a
    time; any other (no batch axis, or another one) in one step of the arrays as they are. A scalar
    input is left out: ModelOpt reads its shape from the model."""
    parts = []
    for name, shape in shapes.items():
        dims = list(shape)
        if not dims:
            continue
        if batch_axis == 0:
            dims[0] = max(1, min(step, dims[0]))
        parts.append(f"{name}:{'x'.join(str(d) for d in dims)}")
    return ",".join(parts)


def workspace_limit(free_bytes: int) -> int:
    """The builder's workspace memory-pool limit for a GPU with `free_bytes` free."""
    return max(MIN_WORKSPACE, min(MAX_WORKSPACE, free_bytes // 2))


def timing_cache_path(cache_dir: Optional[str], output_dir: str, tensorrt_version: str, device_name: str) -> Path:
    """Where the builder's timing cache is kept between builds.

    In the run's cache folder when the executor gives one (every variant and precision of the run,
    and later runs in the same workspace, then share it), named for the TensorRT version and the GPU
    model because timings hold only for both; else in the job's own output folder."""
    if not cache_dir:
        return Path(output_dir) / TIMING_CACHE_FILE
    device = re.sub(r"[^A-Za-z0-9.]+", "-", device_name).strip("-") or "gpu"
    return Path(cache_dir) / f"timing-{tensorrt_version}-{device}.cache"


class TimingCacheConfig(Protocol):
    """The two methods of trt.IBuilderConfig that attach a timing cache."""

    def create_timing_cache(self, serialized_timing_cache: bytes) -> Any: ...
    def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool: ...


def attach_timing_cache(config: TimingCacheConfig, stored: bytes, name: str, log: Callable[[str], None]) -> Any:
    """Attach the timing cache `stored` (b"": none yet) to the builder config and return it; where
    TensorRT cannot take it (a file cut short by a full disk, or written by another build of
    TensorRT), the build starts from an empty cache and `log` says so: a cache only saves time,
    and a bad one must not cost the build. TensorRT 10 reports a corrupt blob by returning no
    cache (Polygraphy's CreateConfig falls back the same way) or by refusing it in
    set_timing_cache; an exception is treated alike."""
    if stored:
        try:
            cache = config.create_timing_cache(stored)
            refused = "TensorRT read no cache from it" if cache is None else (
                None if config.set_timing_cache(cache, False) else "TensorRT refused it")
        except Exception as error:  # noqa: BLE001 - whatever TensorRT raises, the build goes on
            refused = one_line(error)
        if refused is None:
            return cache
        log(f"[nav-orch runner] the timing cache {name} could not be used ({refused}): this build starts "
            "from an empty timing cache, and replaces the file with its own")
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, False):
        raise RuntimeError("TensorRT could not attach an empty timing cache to the builder config")
    return cache


def merge_into_file(path: Path, merge: Callable[[bytes], bytes]) -> None:
    """Replace `path` with `merge(what it holds now)` (b"" where it does not exist yet), under an
    exclusive lock and atomically: builds that finish together (other GPUs, other containers on the
    same cache folder) each add to the file instead of the last writer's copy replacing the others'.
    Readers never lock: they see the old file or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        data = merge(path.read_bytes() if path.exists() else b"")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)


# --- TF-TRT --------------------------------------------------------------------------------------

def tftrt_build_batches(sample_batch: int, batch_sizes: Sequence[int]) -> list[int]:
    """The batch sizes TF-TRT builds engines for, each once: the samples' own (verification runs
    it), then every profiled size. With the "Optimal" profile strategy each gets a profile of its
    own, and an input shape with none makes the TRTEngineOp fall back to TensorFlow."""
    return list(dict.fromkeys([sample_batch, *batch_sizes]))


def tftrt_engine_problem(op_types: Iterable[str]) -> Optional[str]:
    """Why a TF-TRT conversion is no TensorRT variant, from the op types of the converted graph
    (its nodes and its functions' nodes); None when some segment became a TRTEngineOp."""
    if TFTRT_ENGINE_OP in set(op_types):
        return None
    return ("TF-TRT replaced no part of the graph with a TensorRT engine (no TRTEngineOp after conversion: "
            "no segment of supported ops was large enough), so the variant would be the SavedModel itself")


def tftrt_fallback_reason(message: str, shapes: Mapping[str, Sequence[int]],
                          batch_sizes: Sequence[int] = ()) -> Optional[str]:
    """A one-line reason for a TF-TRT call that failed because a TRTEngineOp would have fallen back
    to TensorFlow (`TFTRT_NATIVE_SEGMENT_ENV` off); None for any other failure. `shapes`: the
    inputs as given, repeated to each of `batch_sizes` where those are given."""
    if TFTRT_FALLBACK_MESSAGE not in message:
        return None
    given = ", ".join(f"{name} {list(shape)}" for name, shape in shapes.items()) or "no inputs"
    if batch_sizes:
        given += f"; at batch sizes {', '.join(map(str, batch_sizes))}"
    return (f"a TF-TRT engine op would have run plain TensorFlow on these inputs ({given}): it has no TensorRT "
            "engine for their shapes, or its engine failed to build or run (the log says which)")
