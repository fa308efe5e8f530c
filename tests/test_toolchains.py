"""Which optional toolchains a runner reports (runners/harness/common.py `toolchain_versions`), and how the
host reads them (orchestrator/run/planning.py `skip_reason`)."""
from __future__ import annotations

import importlib.metadata

import grpc
import pytest

from orchestrator.run.planning import Variant, skip_reason
from runners.contract.formats import FORMATS, TOOLCHAINS, Toolchain
from runners.harness.common import toolchain_versions


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
