"""ONNX Runtime INT8 quantization's decisions (runners/toolchains/onnx_quantize.py): the settings per method and
CPU, how calibration rows are cut, which variants quantize. Pure parts only: the host has no
onnxruntime (the end-to-end tests quantize for real, in the runner images)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runners.contract.arrays import save_npz
from runners.contract.protocol import Job, JobInputs, Precision, Quantization
from runners.toolchains.onnx_quantize import (
    Cpu,
    calibration_arrays,
    calibration_batches,
    cpu_flags,
    is_quantized,
    needs_reduce_range,
    quantized_onnx,
    settings_for,
)

X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse4_1 avx2 avx512f avx512_vnni
"""
ARM_CPUINFO = """processor\t: 0
Features\t: fp asimd asimddp
CPU implementer\t: 0x41
"""
VNNI = Cpu("x86_64", frozenset({"avx2", "avx512f", "avx512_vnni"}))
NO_VNNI = Cpu("x86_64", frozenset({"avx2", "avx512f"}))
ARM = Cpu("aarch64", frozenset({"asimd", "asimddp"}))


def test_the_flags_come_from_the_flags_line_on_x86_and_the_features_line_on_arm():
    assert cpu_flags(X86_CPUINFO) == {"fpu", "sse4_1", "avx2", "avx512f", "avx512_vnni"}
    assert cpu_flags(ARM_CPUINFO) == {"fp", "asimd", "asimddp"}
    assert cpu_flags("") == frozenset()


@pytest.mark.parametrize("cpu, reduce", [
    (NO_VNNI, True),  # VPMADDUBSW's 16-bit sums saturate: 7-bit weights
    (VNNI, False),
    (Cpu("x86_64", frozenset({"avx2", "avx_vnni"})), False),  # AVX-VNNI (client cores) counts too
    (Cpu("AMD64", frozenset()), True),  # x86 with nothing known: the cautious setting
    (ARM, False),
])
def test_weights_are_reduced_to_7_bits_only_on_x86_without_vnni(cpu, reduce):
    assert needs_reduce_range(cpu) is reduce
    assert settings_for("dynamic", cpu).reduce_range is reduce
    assert settings_for("static", cpu).reduce_range is reduce


def test_dynamic_quantization_takes_int8_weights_per_channel():
    settings = settings_for("dynamic", VNNI)
    assert (settings.method, settings.per_channel, settings.weight_type) == ("dynamic", True, "QInt8")


def test_static_quantization_is_qdq_u8s8_per_channel_on_x86_and_s8s8_on_arm():
    x86, arm = settings_for("static", VNNI), settings_for("static", ARM)
    assert (x86.quant_format, x86.activation_type, x86.weight_type, x86.per_channel) == ("QDQ", "QUInt8", "QInt8", True)
    assert (arm.activation_type, arm.weight_type) == ("QInt8", "QInt8")
    assert x86.calibrate_method == "MinMax"
    # The calibrator folds its intermediate outputs into ranges as it goes: memory bounded by --calibration's size.
    options = dict(x86.extra_options)
    assert options["CalibMaxIntermediateOutputs"] > 0
    # A normalization's 1-D scale is quantized along the axis it has.
    assert options["QDQOpTypePerChannelSupportToAxis"]["LayerNormalization"] == -1


def test_an_unknown_method_is_refused():
    with pytest.raises(ValueError, match="no ONNX Runtime quantization method ''"):
        settings_for("", VNNI)


def test_calibration_rows_are_cut_into_small_batches_along_the_batch_axis():
    x = np.arange(20 * 3, dtype=np.float32).reshape(20, 3)
    mask = np.arange(20, dtype=np.int64)
    batches = calibration_batches({"x": x, "mask": mask}, 0, batch_size=8)
    assert [b["x"].shape[0] for b in batches] == [8, 8, 4]
    assert all(list(b) == ["x", "mask"] for b in batches)
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b["mask"] for b in batches]), mask)


def test_calibration_batches_follow_a_batch_axis_other_than_0():
    tokens = np.arange(2 * 10 * 4).reshape(2, 10, 4)
    batches = calibration_batches({"tokens": tokens}, 1, batch_size=4)
    assert [b["tokens"].shape for b in batches] == [(2, 4, 4), (2, 4, 4), (2, 2, 4)]
    np.testing.assert_array_equal(np.concatenate([b["tokens"] for b in batches], axis=1), tokens)


def test_a_model_without_a_batch_axis_is_calibrated_on_its_arrays_as_they_are():
    ids = np.zeros((1, 17), np.int64)
    [feed] = calibration_batches({"ids": ids}, None)
    assert feed["ids"] is ids


def test_calibration_arrays_of_different_row_counts_are_refused():
    with pytest.raises(ValueError, match="differ in rows along axis 0: a 4, b 3"):
        calibration_batches({"a": np.zeros((4, 2)), "b": np.zeros((3, 2))}, 0)


def test_no_calibration_arrays_is_a_clear_error():
    with pytest.raises(ValueError, match="static quantization needs samples"):
        calibration_batches({}, 0)


def test_a_graph_counts_as_quantized_only_with_quantized_nodes():
    assert not is_quantized({"Gemm", "Relu", "Add"})
    assert is_quantized({"DynamicQuantizeLinear", "MatMulInteger", "Mul"})  # quantize_dynamic
    assert is_quantized({"QuantizeLinear", "DequantizeLinear", "Gemm"})  # QDQ


def job(fmt: str, quantization: Quantization, precision: Precision = "int8", **inputs: str) -> Job:
    return Job(id="export", kind="export", runner="torch", output_dir="/out", format=fmt,
               precision=precision, quantization=quantization, inputs=JobInputs(**inputs))


def test_only_quantized_onnx_variants_are_quantized_by_onnx_runtime():
    assert quantized_onnx(job("onnx", "dynamic"))
    assert quantized_onnx(job("onnx", "static"))
    assert not quantized_onnx(job("onnx", "", precision="fp32"))
    # TensorRT's int8 intermediate stays fp32: Model Optimizer quantizes it where the plan is built.
    assert not quantized_onnx(job("tensorrt", "static"))


def test_static_variants_calibrate_on_the_calibration_file_where_given(tmp_path: Path):
    samples, calibration = tmp_path / "samples.npz", tmp_path / "calibration.npz"
    save_npz(samples, {"input": np.zeros((8, 4), np.float32)})
    save_npz(calibration, {"input": np.ones((32, 4), np.float32)})
    given = calibration_arrays(job("onnx", "static", samples=str(samples), calibration=str(calibration)), ["input"])
    assert given["input"].shape == (32, 4) and given["input"].min() == 1
    fallback = calibration_arrays(job("onnx", "static", samples=str(samples)), ["input"])
    assert fallback["input"].shape == (8, 4)


def test_calibration_arrays_take_the_onnx_models_input_names(tmp_path: Path):
    # The user's names differ from the graph's (tf2onnx, a renamed input): matched in order.
    calibration = tmp_path / "calibration.npz"
    save_npz(calibration, {"a": np.zeros((2, 1), np.float32), "b": np.ones((2, 1), np.int64)})
    keyed = calibration_arrays(job("onnx", "static", calibration=str(calibration)), ["pixels", "mask"])
    assert list(keyed) == ["pixels", "mask"] and keyed["mask"].dtype == np.int64
