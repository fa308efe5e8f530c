"""How a TensorRT engine is built, as plain decisions that need no TensorRT: the optimization
profile of each input, the builder's precision flags, its workspace limit and where the timing
cache lives. The runners (tensorrt_runner.py, torch_runner.py's Torch-TensorRT conversion) apply
them; tests/test_tensorrt_build.py checks them on hosts without a GPU."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from runners.common import Skip

MIB = 1 << 20
GIB = 1 << 30
# The builder's scratch memory: enough for the fast tactics of large convolutions and matmuls,
# never more than half of what is free (the runtime needs the rest for activations), never so
# little that it rules out every tactic.
MIN_WORKSPACE = 256 * MIB
MAX_WORKSPACE = 8 * GIB
TIMING_CACHE_FILE = "timing.cache"


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


def profile_shapes(network_dims: Sequence[int], sample_shape: Sequence[int], batches: BatchRange,
                   name: str = "input", batch_axis: int = 0) -> Optional[ShapeRange]:
    """The profile of one network input (dims as TensorRT reports them, -1 where dynamic);
    None when the input is static and needs none. Dynamic axes other than the batch take the
    samples' size."""
    if len(network_dims) != len(sample_shape):
        raise ValueError(f"input {name!r}: the network takes rank {len(network_dims)}, "
                         f"the samples hold shape {list(sample_shape)}")
    if all(dim >= 0 for dim in network_dims):
        return None
    for axis, (dim, size) in enumerate(zip(network_dims, sample_shape)):
        if dim >= 0 and dim != size and axis != batch_axis:
            raise ValueError(f"input {name!r}: axis {axis} is {dim} in the network, {size} in the samples")
    if network_dims[batch_axis] >= 0:
        fixed = tuple(d if d >= 0 else s for d, s in zip(network_dims, sample_shape))
        return ShapeRange(fixed, fixed, fixed)

    def with_batch(batch: int) -> tuple[int, ...]:
        dims = [d if d >= 0 else s for d, s in zip(network_dims, sample_shape)]
        dims[batch_axis] = batch
        return tuple(dims)

    return ShapeRange(with_batch(batches.min), with_batch(batches.opt), with_batch(batches.max))


def precision_flags(precision: str, available: set[str], fast_fp16: Optional[bool],
                    compute_capability: Optional[tuple[int, int]], tensorrt_version: str) -> PrecisionFlags:
    """The builder flags for a precision; Skip (with the reason) where this TensorRT or GPU has none.

    fp32 clears TF32 (on by default on Ampere and later), for the same reason the torch runner
    turns it off: fp32 variants must match the reference to fp32 round-off. Half precisions are
    builder flags on an fp32 network (weak typing), so TensorRT keeps fp32 where a layer needs it;
    TensorRT 11 removed these flags in favour of strongly typed networks."""
    if precision == "fp32":
        return PrecisionFlags(clear=("TF32",) if "TF32" in available else ())
    flag = {"fp16": "FP16", "bf16": "BF16"}.get(precision)
    if flag is None:
        raise Skip(f"TensorRT runner: unknown precision {precision!r}")
    if flag not in available:
        raise Skip(f"TensorRT {tensorrt_version} has no {flag} builder flag (weak typing was removed): "
                   f"{precision} needs a strongly typed {precision} ONNX model, which nav-orch does not build yet")
    if precision == "fp16" and fast_fp16 is False:
        raise Skip("this GPU has no fast fp16 (TensorRT's platform_has_fast_fp16 is false)")
    if precision == "bf16" and compute_capability is not None and compute_capability < (8, 0):
        major, minor = compute_capability
        raise Skip(f"bf16 needs a GPU of compute capability 8.0 or later; this one is {major}.{minor}")
    return PrecisionFlags(set=(flag,))


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
