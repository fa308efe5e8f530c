"""How a TensorRT engine is built, as plain decisions that need no TensorRT: the optimization
profile of each input (its batch range and its declared dynamic axes), the builder's precision
flags, its workspace limit and where the timing cache lives. The runners (tensorrt_runner.py,
torch_runner.py's Torch-TensorRT conversion) apply them; tests/test_tensorrt_build.py checks them on
hosts without a GPU."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from runners.common import Skip
from runners.protocol import AxisRange, IOSpec, TensorSpec

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
