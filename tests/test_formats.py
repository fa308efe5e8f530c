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
    if entry.triton is not None and entry.triton.python_backend:  # the served model loads it
        assert entry.loader.name in variant_loader.LOADERS
    for framework in entry.frameworks:
        assert entry in formats_of(framework)


def test_the_format_name_type_lists_exactly_the_registrys_formats():
    from typing import get_args

    from runners.contract.protocol import FormatName

    assert list(get_args(FormatName)) == [entry.name for entry in REGISTRY]


def test_the_loader_names_a_compiled_folders_files_as_the_contract_does():
    from runners.contract import protocol

    for name in ("COMPILED_PROGRAM", "COMPILED_OPTIONS"):
        assert getattr(variant_loader, name) == getattr(protocol, name)


def test_warming_up_calls_every_batch_size_on_zeros_unless_another_axis_is_dynamic():
    import numpy as np

    calls = []

    def run(arrays):
        calls.append([(a.shape, a.dtype) for a in arrays])
        return []

    inputs = [([3, 8], np.dtype("float32")), ([8], np.dtype("int64"))]
    assert variant_loader.warm_up(run, inputs, [1, 4]) == [1, 4]
    assert calls == [[((1, 3, 8), np.float32), ((1, 8), np.int64)], [((4, 3, 8), np.float32), ((4, 8), np.int64)]]
    assert variant_loader.warm_up(run, [([-1, 8], np.dtype("float32"))], [1]) == [] and len(calls) == 2


def test_formats_whose_export_records_or_needs_its_gpu_are_exported_in_their_check_session():
    """A trace records its device; Torch-TensorRT's program is compiled on the GPU, where one moved from
    the CPUs takes the fake-tensor path that failed torch.compile (variant_loader.place_program); a
    compiled format only fixes its options. The rest export on the CPUs, while the GPUs check."""
    in_check = {entry.name for entry in REGISTRY if entry.exported_in_check}
    assert in_check == {"torchscript-trace", "torch-tensorrt", "torch-aoti", "torch-compile",
                        "torch-compile-cudagraphs"}
    assert FORMATS["torch-tensorrt"].compiled_from_program and not FORMATS["torch-tensorrt"].compiled
    assert not FORMATS["exported-program"].exported_in_check and not FORMATS["tensorrt"].exported_in_check


def test_engines_only_one_tensorrt_runs_are_guarded_whether_a_plan_or_embedded_in_torchscript():
    guarded = {entry.name: entry.engines_embedded for entry in REGISTRY if entry.engine_of is not None}
    assert guarded == {"tensorrt": False, "torch-tensorrt": True}
    assert FORMATS["torch-tensorrt"].engine_of == FORMATS["tensorrt"].engine_of == FORMATS["tensorrt"].toolchain
