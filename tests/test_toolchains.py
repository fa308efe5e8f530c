"""Which optional toolchains a runner reports (runners/harness/common.py `toolchain_versions`), and how the
host reads them (orchestrator/run/planning.py `skip_reason`)."""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from orchestrator.run.planning import Variant, skip_reason
from runners.contract.formats import FORMATS, ONNXRUNTIME_CUDA, TOOLCHAINS, Toolchain
from runners.harness.common import toolchain_versions

REPO = Path(__file__).resolve().parents[1]


def test_a_toolchain_is_found_by_importing_its_module_whatever_its_distribution_is_called():
    # `grpc` comes from the distribution `grpcio`, as `tensorrt` comes from `tensorrt-cu13-bindings`
    # when pip installs it: a look-up of the module's name as a distribution finds nothing.
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("grpc")
    assert toolchain_versions([Toolchain("grpc", "gRPC")]) == {"grpc": grpc.__version__}


def test_a_missing_module_is_no_toolchain_and_one_without_a_version_says_so():
    assert toolchain_versions([Toolchain("nav_orch_no_such_toolchain", "None")]) == {}
    assert toolchain_versions([Toolchain("string", "a module without __version__")]) == {"string": "unknown"}


def test_the_host_skips_by_the_module_name_the_runners_report():
    assert {t.module for t in TOOLCHAINS} == {"tensorrt", "torch_tensorrt", "torchao", "modelopt"}
    variant = Variant("tensorrt-fp16", "tensorrt", "fp16")
    assert FORMATS["tensorrt"].toolchain is not None and FORMATS["tensorrt"].toolchain.module == "tensorrt"
    pytorch_image = {"tensorrt": "10.13.3.9", "torch": "2.9.0"}
    assert skip_reason(variant, pytorch_image, "nav-orch/pytorch:25.10", has_gpus=True) is None
    assert skip_reason(variant, {"tensorrt_cu13": "10.13.3.9"}, "nav-orch/pytorch:25.10", has_gpus=True) == \
        "TensorRT is not installed in nav-orch/pytorch:25.10"


@pytest.mark.parametrize(("providers", "reported"), [
    (["CUDAExecutionProvider", "CPUExecutionProvider"], {"onnxruntime+cuda": "9.9.9"}),
    (["CPUExecutionProvider"], {}),  # plain onnxruntime: ONNX variants cannot run on the GPU
])
def test_a_gpu_reference_reports_onnxruntime_only_with_its_cuda_provider(tmp_path, providers, reported):
    fake = tmp_path / "onnxruntime"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        f"__version__ = '9.9.9'\ndef get_available_providers():\n    return {providers!r}\n")
    probe = ("import json; from runners.harness.common import base_versions; "
             "print(json.dumps([base_versions(True, on_gpu=True), base_versions(True, on_gpu=False)]))")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])})
    on_gpu, on_cpu = json.loads(found.stdout)
    assert {k: v for k, v in on_gpu.items() if k == ONNXRUNTIME_CUDA.module} == reported
    assert ONNXRUNTIME_CUDA.module not in on_cpu  # a CPU run never imports it for this
