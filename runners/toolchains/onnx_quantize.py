"""INT8 ONNX variants: ONNX Runtime's quantization of an fp32 ONNX model, dynamic (`quantize_dynamic`,
for matmul-heavy models) or static in QDQ form (`quantize_static`, calibrated, for convolutional
ones). Every runner that exports the `onnx` format quantizes through here.

The decisions (ORT's settings per method and CPU, how calibration rows are cut into batches) are
pure functions; numpy, onnx and onnxruntime are imported only inside the functions that call them,
so importing this module costs nothing in any image.
"""
from __future__ import annotations

import platform
import sys
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from runners.contract.protocol import Job, Quantization

if TYPE_CHECKING:
    import numpy as np

# Rows per calibration call: small, because the calibrator runs a copy of the model that outputs
# every intermediate tensor.
CALIBRATION_BATCH = 8
# Intermediate outputs the MinMax calibrator holds before it folds them into its ranges: the same
# ranges as holding all of them, in bounded memory, whatever the size of --calibration.
CALIBRATION_HELD_OUTPUTS = 16
# The channel axis of a normalization's 1-D scale: ORT's default per-channel axis (1) is outside it,
# and ORT then falls back to one scale for the tensor with a warning per node.
NORMALIZATION_AXES = (("LayerNormalization", -1), ("BatchNormalization", -1), ("InstanceNormalization", -1))
# Nodes that only a quantized graph holds: an "int8" model without any was left in fp32.
QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
    "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "QAttention", "QLinearMatMul", "QLinearConv",
})
# The dot-product instructions that accumulate u8 x s8 products without saturating.
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})
X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})


@dataclass(frozen=True)
class Cpu:
    """What the quantization settings depend on: the machine (platform.machine()) and its flags."""

    machine: str
    flags: frozenset[str] = frozenset()

    @property
    def x86(self) -> bool:
        return self.machine.lower() in X86_MACHINES


@dataclass(frozen=True)
class Settings:
    """ONNX Runtime's quantization arguments for one method, by the names of its enum members
    (QuantType, QuantFormat, CalibrationMethod), so that they are decided without ONNX Runtime."""

    method: Quantization
    per_channel: bool
    reduce_range: bool
    weight_type: str
    activation_type: str  # static only: dynamic quantization's activations are always QUInt8 in ORT
    quant_format: str = "QDQ"
    calibrate_method: str = "MinMax"
    extra_options: tuple[tuple[str, object], ...] = ()


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of /proc/cpuinfo's text (x86 "flags", ARM "Features"), of its first CPU."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def this_cpu() -> Cpu:
    """The CPU this runner quantizes on, which is the one its variants are verified and timed on."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""  # not Linux: no flags, so the cautious settings (reduce_range on x86)
    return Cpu(platform.machine(), cpu_flags(text))


def needs_reduce_range(cpu: Cpu) -> bool:
    """7-bit weights on x86 without VNNI: there ORT multiplies u8 x s8 with VPMADDUBSW, whose 16-bit
    sums saturate, the more so with per-channel weights; VNNI and ARM dot products do not (ORT's
    quantization guide, "When to use reduce-range and per-channel quantization?")."""
    return cpu.x86 and not (cpu.flags & VNNI_FLAGS)


def settings_for(method: Quantization, cpu: Cpu) -> Settings:
    """ORT's settings for `method` on `cpu`, as ORT 1.32's quantize_static documents them for CPUs:
    QDQ format (its CPU kernels are written for it); on x86 uint8 activations with int8 weights
    (U8S8, which x86's integer kernels are written for; ORT's own default, S8S8, ran the small
    encoder's static variant about half as fast on an AMD EPYC with VNNI), on ARM int8 for both
    (symmetric, as ARM's kernels prefer); `needs_reduce_range` on x86 without VNNI. Weights per
    channel: weights vary in range across output channels, and one scale per tensor would spend
    int8's steps on the widest channel, at a small cost in speed."""
    reduce_range = needs_reduce_range(cpu)
    if method == "dynamic":
        return Settings("dynamic", per_channel=True, reduce_range=reduce_range, weight_type="QInt8",
                        activation_type="QUInt8")
    if method == "static":
        return Settings("static", per_channel=True, reduce_range=reduce_range, weight_type="QInt8",
                        activation_type="QUInt8" if cpu.x86 else "QInt8",
                        extra_options=(("CalibMaxIntermediateOutputs", CALIBRATION_HELD_OUTPUTS),
                                       ("QDQOpTypePerChannelSupportToAxis", dict(NORMALIZATION_AXES))))
    raise ValueError(f"no ONNX Runtime quantization method {method!r} (dynamic, static)")


def calibration_batches(arrays: Mapping[str, np.ndarray], batch_axis: Optional[int],
                        batch_size: int = CALIBRATION_BATCH) -> list[dict[str, np.ndarray]]:
    """The calibration feeds: the arrays cut along the batch axis into batches of `batch_size`
    rows (the last one shorter), or, for a model without a batch axis, the arrays as one feed."""
    if not arrays:
        raise ValueError("no calibration data: static quantization needs samples to calibrate on")
    if batch_axis is None:
        return [dict(arrays)]
    rows = {name: array.shape[batch_axis] for name, array in arrays.items()}
    if len(set(rows.values())) != 1:
        raise ValueError(f"the calibration arrays differ in rows along axis {batch_axis}: "
                         + ", ".join(f"{name} {count}" for name, count in rows.items()))
    count = next(iter(rows.values()))
    before: tuple[slice, ...] = (slice(None),) * batch_axis
    return [{name: array[before + (slice(start, start + batch_size),)] for name, array in arrays.items()}
            for start in range(0, count, batch_size)]


def quantized_onnx(job: Job) -> bool:
    """Whether the job's variant is an int8 ONNX one, which ONNX Runtime quantizes from the fp32 export
    (a quantized TensorRT variant's intermediate ONNX stays fp32: it is quantized where its plan is built)."""
    return job.format == "onnx" and bool(job.quantization)


def is_quantized(op_types: Collection[str]) -> bool:
    """Whether a graph of these node types holds quantized arithmetic."""
    return bool(QUANTIZED_OPS & set(op_types))


def calibration_arrays(job: Job, input_names: list[str]) -> dict[str, np.ndarray]:
    """What a static variant is calibrated on: `--calibration`'s arrays where given (the host checked
    that they fit the samples), else the samples; keyed by the ONNX model's input names."""
    from runners.harness.common import key_by_names, load_npz

    return key_by_names(load_npz(job.inputs.calibration or job.inputs.samples), input_names, "the ONNX model")


def graph_inputs(model: Path) -> list[str]:
    """The ONNX model's inputs in order, without the initializers that old exporters list as inputs."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    constants = {tensor.name for tensor in graph.initializer}
    return [value.name for value in graph.input if value.name not in constants]


def preprocess(fp32_model: Path, target: Path) -> Path:
    """ORT's quant_pre_process (symbolic and ONNX shape inference, basic graph optimization), which
    its guide recommends before quantizing: the quantizer needs tensor shapes, and fused nodes (a
    Conv with its BatchNormalization) quantize better. Symbolic shape inference fails on some graphs;
    then without it, and where that fails too, the model as it is (the quantizer still runs)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    for options in ({}, {"skip_symbolic_shape": True}):
        try:
            quant_pre_process(str(fp32_model), str(target), **options)
            return target
        except Exception as error:  # noqa: BLE001 - ORT's shape inference raises many types
            print(f"[nav-orch runner] quant_pre_process{options or ''} failed: {type(error).__name__}: {error}",
                  file=sys.stderr, flush=True)
    return fp32_model


@contextmanager
def temporary_files_in(folder: str) -> Iterator[None]:
    """ORT's quantizer and calibrator write copies of the model (an augmented one that outputs every
    tensor) into tempfile's folder, which in a runner container is a 2 GB tmpfs held in memory: for
    the block, they go to `folder`, in the job's folder on disk. Process-wide, as tempfile's default
    is; restored after."""
    previous = tempfile.tempdir
    tempfile.tempdir = folder
    try:
        yield
    finally:
        tempfile.tempdir = previous


def quantize_onnx(fp32_model: Path, target: Path, method: Quantization, calibration: Mapping[str, np.ndarray],
                  batch_axis: Optional[int] = 0) -> None:
    """Quantize `fp32_model` into `target` by `method` (settings_for this CPU); `calibration` (keyed
    by the model's input names; unused by dynamic) is fed in batches along `batch_axis`. A model that
    ONNX Runtime finds nothing to quantize in is skipped, not passed off as int8."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    from runners.harness.common import Skip

    settings = settings_for(method, this_cpu())
    batches = calibration_batches(calibration, batch_axis) if method == "static" else []

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(batches)

        def get_next(self) -> Optional[dict[str, np.ndarray]]:
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".quantize-") as folder, temporary_files_in(folder):
        model = preprocess(fp32_model, Path(folder) / "preprocessed.onnx")
        common = dict(per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                      weight_type=QuantType[settings.weight_type], extra_options=dict(settings.extra_options))
        if settings.method == "dynamic":
            quantize_dynamic(model, target, **common)
        else:
            quantize_static(model, target, Feeds(), quant_format=QuantFormat[settings.quant_format],
                            activation_type=QuantType[settings.activation_type],
                            calibrate_method=CalibrationMethod[settings.calibrate_method], **common)
    import onnx

    if not is_quantized({node.op_type for node in onnx.load(str(target), load_external_data=False).graph.node}):
        target.unlink()
        raise Skip(f"ONNX Runtime's {method} quantization found no operator to quantize in this model")


def export_quantized(job: Job, write_fp32: Callable[[Path], None], target: Path) -> None:
    """A quantized ONNX variant from a runner whose export writes fp32 ONNX: `write_fp32` writes it
    into a temporary file in the job's folder, which is quantized into `target` by the job's method,
    calibrated on its calibration arrays (static), and removed."""
    with tempfile.TemporaryDirectory(dir=job.output_dir, prefix=".fp32-") as folder:
        fp32_model = Path(folder) / target.name
        write_fp32(fp32_model)
        quantize_model(job, fp32_model, target)


def quantize_model(job: Job, fp32_model: Path, target: Path) -> None:
    """Quantize the fp32 ONNX model of the job's variant into `target`: by `job.quantization`, on
    the calibration arrays (static only), along the reference's batch axis."""
    calibration = calibration_arrays(job, graph_inputs(fp32_model)) if job.quantization == "static" else {}
    quantize_onnx(fp32_model, target, job.quantization, calibration, job.io_spec().batch_axis)
