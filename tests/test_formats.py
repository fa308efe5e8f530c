"""The format registry (runners/contract/formats.py): what the host plans from and the runners build from."""
import pytest

from runners import RUNNERS_DIR
from runners.contract.formats import FORMATS, REGISTRY, default_formats, default_precisions, formats_of
from runners.serving import variant_loader


def test_two_step_formats_export_their_intermediate_file():
    assert FORMATS["tensorrt"].export_file == "model.onnx"
    assert FORMATS["torch-tensorrt"].export_file == "model.pt2"
    assert FORMATS["tf-trt"].export_file == "savedmodel"
    assert FORMATS["onnx"].export_file == "model.onnx"
    assert FORMATS["torchscript-trace"].export_file == "model.ts"


@pytest.mark.parametrize("framework, on_gpu, expected", [
    ("torch", False, ["torchscript-trace", "torchscript-script", "onnx", "exported-program"]),
    ("torch", True, ["torchscript-trace", "torchscript-script", "onnx", "exported-program",
                     "torch-compile-cudagraphs", "torch-tensorrt", "tensorrt"]),
    ("tensorflow", False, ["savedmodel", "onnx"]),
    ("jax", True, ["savedmodel", "onnx", "tensorrt", "tf-trt"]),
    ("onnx", False, ["onnx"]),
    ("onnx", True, ["onnx", "tensorrt"]),
])
def test_default_formats_follow_the_device(framework, on_gpu, expected):
    assert default_formats(framework, on_gpu) == expected


def test_half_precisions_only_on_gpus_and_onnx_has_no_bf16():
    assert default_precisions(False) == ["fp32"] and default_precisions(True) == ["fp32", "fp16", "bf16"]
    assert FORMATS["onnx"].precisions == ("fp32", "fp16")


@pytest.mark.parametrize("entry", REGISTRY, ids=lambda entry: entry.name)
def test_every_entry_points_at_real_runners_and_a_way_to_serve_or_a_reason_not_to(entry):
    runners = [entry.runner] + ([entry.conversion.runner] if entry.conversion else [])
    for runner in runners:
        assert (RUNNERS_DIR / "toolchains" / f"{runner}_runner.py").is_file(), runner
    if entry.triton is not None:
        assert entry.triton.backend or entry.triton.python_backend
        assert not entry.compile_mode  # compiled where it runs: no file to serve
    if entry.triton is not None and entry.triton.python_backend:  # the served model loads it
        assert entry.loader.name in variant_loader.LOADERS
    for framework in entry.frameworks:
        assert entry in formats_of(framework)


def test_the_format_name_type_lists_exactly_the_registrys_formats():
    from typing import get_args

    from runners.contract.protocol import FormatName

    assert list(get_args(FormatName)) == [entry.name for entry in REGISTRY]
