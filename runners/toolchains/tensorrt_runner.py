"""TensorRT runner: builds an engine from the exported model.onnx on the GPU the variant runs on
(convert), then verifies and profiles it with the TensorRT runtime.

Written against TensorRT's documented Python API (10.x: named I/O tensors, execute_async_v3; the
11.x strong typing where the precision flags are gone) and not run on the hosts nav-orch is
developed on, which have no TensorRT. Device buffers are torch tensors: the NGC PyTorch image that
runs this carries torch. The decisions that need no TensorRT (API generation, profile shapes,
precision, workspace, timing cache) are in tensorrt_build.py.

int8 and fp8 plans (explicit quantization): TensorRT Model Optimizer's ONNX post-training
quantization turns the exported fp32 model.onnx into a Q/DQ model, calibrated on the calibration
arrays (else the samples), which is built as a strongly typed network with no precision flag, on
TensorRT 10 as on 11 (tensorrt_build.py `plan_precision_source` says why).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Optional

import numpy as np

from runners.contract.formats import FORMATS
from runners.contract.protocol import QUANTIZED, IOSpec, Job, JobResult, one_line
from runners.harness.common import Handlers, Skip, key_by_names, load_npz
from runners.harness.measure import Timing, inputs_at, profile_result, verification_result, verify_outputs
from runners.serving.variant_loader import Engine
from runners.toolchains.tensorrt_build import (
    attach_timing_cache,
    batch_range_of,
    builder_precision,
    calibration_shapes,
    check_fp8,
    declared_ranges,
    merge_into_file,
    modelopt_settings,
    network_flags,
    plan_precision_source,
    profile_shapes,
    timing_cache_path,
    workspace_limit,
)

try:
    import tensorrt as trt
except (ImportError, OSError):  # not installed, or its libraries are missing
    trt = None

NOT_INSTALLED = "TensorRT is not installed in this runner image"
CACHE_ENV = "NAV_ORCH_TENSORRT_CACHE"  # set by the executors (orchestrator/executor.py)


def versions() -> dict[str, str]:
    # The version guard (orchestrator/tensorrt_guard.py) compares this with the Triton image's.
    return {"tensorrt": trt.__version__} if trt is not None else {}


def require_gpu_runtime(job: Job) -> Any:
    """torch, for CUDA buffers and streams, once TensorRT and a GPU are known to be there."""
    if trt is None:
        raise Skip(NOT_INSTALLED)
    if not job.device.startswith("cuda"):
        raise Skip("TensorRT needs a GPU; this job runs on the CPU")
    try:
        import torch
    except ImportError:
        raise Skip("the TensorRT runner needs torch for GPU buffers, which this image lacks") from None
    if not torch.cuda.is_available():
        raise Skip("TensorRT needs a GPU, and CUDA sees none here")
    return torch


# --- convert: model.onnx -> model.plan ----------------------------------------------------------

def convert(job: Job) -> JobResult:
    torch = require_gpu_runtime(job)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    available = set(trt.BuilderFlag.__members__)
    # Builder flags (TensorRT 10) or the network's own types (11 on, and int8/fp8 Q/DQ models on
    # any) set the plan's precision.
    source = plan_precision_source(job.precision, trt.__version__, available)
    print(f"[nav-orch runner] TensorRT {trt.__version__}: the plan's precision comes from the "
          f"{source.replace('-', ' ')}", flush=True)
    creation = trt.NetworkDefinitionCreationFlag
    network = builder.create_network(sum(1 << int(getattr(creation, name))
                                         for name in network_flags(trt.__version__, source, set(creation.__members__))))
    parser = trt.OnnxParser(network, logger)
    # A quantized plan's Q/DQ model and ModelOpt's intermediate files live in a folder on the
    # workspace's disk (a large model's copies could fill the container's /tmp), gone once parsed.
    with tempfile.TemporaryDirectory(prefix=".qdq-", dir=job.output_dir) as work:
        model = qdq_model(job, Path(work), torch) if job.precision in QUANTIZED else Path(job.inputs.export)
        parsed = parser.parse_from_file(str(model))
    if not parsed:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)] or ["no detail"]
        raise RuntimeError(f"TensorRT's ONNX parser rejected the model: {errors[0]}")

    config = builder.create_builder_config()
    free, _ = torch.cuda.mem_get_info()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_limit(free))
    flags = builder_precision(job.precision, source, available,
                              network_types(network) if source == "network-types" else (),
                              # Gone in TensorRT 11 (strong typing decides): None, no check.
                              getattr(builder, "platform_has_fast_fp16", None),
                              torch.cuda.get_device_capability(), trt.__version__)
    for name in flags.set:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in flags.clear:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    add_profile(builder, network, config, load_npz(job.inputs.samples), job.batch_sizes, job.io)

    cache_path = timing_cache_path(os.environ.get(CACHE_ENV), job.output_dir, trt.__version__,
                                   torch.cuda.get_device_name())
    # The config keeps the cache alive through the build (set_timing_cache's keep_alive in TensorRT's bindings).
    attach_timing_cache(config, cache_path.read_bytes() if cache_path.exists() else b"", cache_path.name,
                        partial(print, flush=True))

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT could not build an engine (the log above says why)")
    target = Path(job.output_dir) / FORMATS[job.format_name()].artifact
    target.write_bytes(bytes(serialized))
    save_timing_cache(config, config.get_timing_cache(), cache_path)
    return JobResult(job.id, job.kind, "ok", artifact=target.name)


def qdq_model(job: Job, work: Path, torch: Any) -> Path:
    """The exported fp32 model.onnx as TensorRT Model Optimizer's Q/DQ model in the job's precision
    (int8, fp8), calibrated on the calibration arrays (else the samples) keyed by the model's input
    names; written in `work`, which also takes ModelOpt's intermediate files."""
    check_fp8(job.precision, torch.cuda.get_device_capability())  # before minutes of calibration
    try:
        import onnx
        from modelopt.onnx.quantization import quantize
    except (ImportError, OSError) as error:  # ModelOpt without its [onnx] dependencies raises ImportError
        raise Skip("TensorRT Model Optimizer's ONNX quantization (modelopt.onnx.quantization) cannot be "
                   f"imported in this runner image: {one_line(error)}") from None
    source = work / "model.onnx"
    shutil.copyfile(job.inputs.export, source)  # ModelOpt writes its intermediate files beside its input
    graph = onnx.load(str(source), load_external_data=False).graph
    weights = {tensor.name for tensor in graph.initializer}
    names = [tensor.name for tensor in graph.input if tensor.name not in weights]
    arrays = key_by_names(load_npz(job.inputs.calibration or job.inputs.samples), names, "the ONNX model")
    shapes = calibration_shapes({name: array.shape for name, array in arrays.items()},
                                job.io.batch_axis if job.io is not None else 0)
    target = work / "model.qdq.onnx"
    print(f"[nav-orch runner] TensorRT Model Optimizer: a {job.precision} Q/DQ model, calibrated on "
          f"{'the calibration file' if job.inputs.calibration else 'the samples'} ({shapes or 'one step'})",
          flush=True)
    quantize(onnx_path=str(source), calibration_data=arrays, calibration_shapes=shapes or None,
             output_path=str(target), **modelopt_settings(job.precision, job.device))
    return target


def network_types(network: Any) -> set[str]:
    """The trt.DataType names of the parsed network's inputs and layer outputs: in a strongly typed
    network, the types the ONNX model gave them."""
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        tensors += [layer.get_output(j) for j in range(layer.num_outputs)]
    return {tensor.dtype.name for tensor in tensors}


def add_profile(builder: Any, network: Any, config: Any, samples: dict[str, np.ndarray],
                batch_sizes: list[int], io: Optional[IOSpec] = None) -> None:
    """One optimization profile covering the samples, every profiled batch size (where the model
    has a batch axis) and the sizes of each dynamic axis the reference's `io` declares."""
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    arrays = key_by_names(samples, names, "the engine")
    batch_axis = io.batch_axis if io is not None else 0
    batches = batch_range_of(io, next(iter(arrays.values())).shape, batch_sizes)
    ranges = declared_ranges(io.inputs if io is not None else [], names)
    profile = builder.create_optimization_profile()
    needed = False
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shapes = profile_shapes(list(tensor.shape), arrays[tensor.name].shape, batches, tensor.name,
                                batch_axis, ranges[tensor.name])
        if shapes is not None:
            profile.set_shape(tensor.name, shapes.min, shapes.opt, shapes.max)
            needed = True
    if needed:
        config.add_optimization_profile(profile)


def save_timing_cache(config: Any, cache: Any, path: Path) -> None:
    """Add this build's timings to the shared file: parallel builds on other GPUs may have written
    it since this one loaded it, so their entries are combined in (ITimingCache.combine; on a
    conflict this build's entry stays) rather than overwritten."""

    def merge(on_disk: bytes) -> bytes:
        if on_disk:
            try:
                theirs = config.create_timing_cache(on_disk)
                # Same TensorRT and GPU model by the file's name, so no header mismatch is allowed.
                combined = theirs is not None and cache.combine(theirs, False)
            except Exception:  # noqa: BLE001 - a bad cache file must not fail a finished build
                combined = False
            if not combined:
                print(f"[nav-orch runner] {path.name} could not be combined with this build's timings; "
                      "it is replaced by them", flush=True)
        return bytes(cache.serialize())

    merge_into_file(path, merge)


# --- verify and profile: running model.plan ------------------------------------------------------

def load_engine(job: Job) -> Engine:
    require_gpu_runtime(job)
    return Engine(job.inputs.artifact, job.device)


def bind(engine: Engine, batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """Copy a batch to the GPU in the engine's input types (keyed by the engine's input names: by name
    where all match, else in order); returns the output tensors, filled by each `execute()`."""
    arrays = key_by_names(batch, engine.inputs, "the engine")
    return engine.bind_tensors([engine.torch.from_numpy(arrays[name]) for name in engine.inputs])


def verify(job: Job) -> JobResult:
    engine = load_engine(job)
    reference_outputs = load_npz(job.inputs.reference)
    outputs = bind(engine, load_npz(job.inputs.samples))
    engine.execute()
    if len(outputs) != len(reference_outputs):
        raise ValueError(f"the engine returned {len(outputs)} outputs, the source model {len(reference_outputs)}")
    # Matched by name where the exporter kept the names, else in order.
    names = list(reference_outputs)
    ordered = [outputs[n] for n in names] if set(outputs) == set(names) else list(outputs.values())
    actual = {name: tensor.float().cpu().numpy() if tensor.dtype.is_floating_point else tensor.cpu().numpy()
              for name, tensor in zip(names, ordered)}
    return verification_result(job, verify_outputs(actual, reference_outputs, job.tolerances, job.budgets))


def profile(job: Job, timing: Timing) -> JobResult:
    engine = load_engine(job)
    samples = load_npz(job.inputs.samples)

    def bound(batch_size: int) -> Callable[[], None]:
        # The engine keeps the output tensors it writes to (Engine.bound); they are not read here.
        bind(engine, inputs_at(samples, job.io, batch_size))
        return engine.execute

    return profile_result(job, bound, timing)


def handlers(timing: Timing) -> Handlers:
    """This runner's jobs, for one runner process."""
    return {"convert": convert, "verify": verify, "profile": partial(profile, timing=timing)}
