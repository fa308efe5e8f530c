"""The TensorRT version guard without TensorRT: the server image's version read from a listing of
its libnvinfer files (the short container replaced by a fake), and the decision whether the
server can load an engine."""
from __future__ import annotations

from typing import Optional

import pytest

from orchestrator.containers.engine import ContainerSpec, ExitState
from orchestrator.errors import EnvironmentProblem
from orchestrator.triton.stage import image_tensorrt
from orchestrator.triton.tensorrt_guard import TensorRTMismatch, check_served_engine, tensorrt_in_listing

IMAGE = "nav-orch/triton:25.10"
# What `find /usr /opt -name libnvinfer.so.*` prints in an NGC image: the entrypoint's banner
# first, the soname links beside the library, and libraries whose names only begin alike.
NGC_LISTING = """
=============================
== Triton Inference Server ==
=============================
NVIDIA Release 25.10 (build 1234)
WARNING: The NVIDIA Driver was not detected.  GPU functionality will not be available.
/usr/lib/x86_64-linux-gnu/libnvinfer.so.10
/usr/lib/x86_64-linux-gnu/libnvinfer.so.10.13.3
/usr/lib/x86_64-linux-gnu/libnvinfer_plugin.so.10.13.3
/usr/lib/x86_64-linux-gnu/libnvinfer_builder_resource.so.10.13.3
/usr/lib/x86_64-linux-gnu/libnvinfer_lean.so.10.14.1
"""


def test_the_version_is_the_full_name_of_the_runtime_library():
    assert tensorrt_in_listing(NGC_LISTING, IMAGE) == "10.13.3"
    assert tensorrt_in_listing("/usr/local/tensorrt/lib/libnvinfer.so.10.13.3.9\n", IMAGE) == "10.13.3.9"


@pytest.mark.parametrize("listing", ["", "/usr/lib/x86_64-linux-gnu/libnvinfer.so.10\n",
                                     "/usr/lib/x86_64-linux-gnu/libnvinfer_plugin.so.10.13.3\n",
                                     "/usr/lib/x86_64-linux-gnu/libnvinfer.so.10.13.3.bak\n"])
def test_no_runtime_library_means_no_tensorrt(listing):
    assert tensorrt_in_listing(listing, IMAGE) is None


def test_two_runtimes_cannot_vouch_for_an_engine():
    listing = "/usr/lib/x86_64-linux-gnu/libnvinfer.so.10.13.3\n/opt/trt/lib/libnvinfer.so.10.9.0\n"
    with pytest.raises(TensorRTMismatch, match=r"ships several TensorRT runtimes \(10.13.3, 10.9.0\)"):
        tensorrt_in_listing(listing, IMAGE)


def test_an_engine_loads_only_in_the_tensorrt_that_built_it():
    check_served_engine("trt-fp16", "10.13.3.9", IMAGE, "10.13.3")  # the runner's 4 parts, the file's 3
    with pytest.raises(TensorRTMismatch, match="built with TensorRT 10.13.3.9 but nav-orch/triton:25.10 carries "
                                               "TensorRT 10.14.1: an engine loads only"):
        check_served_engine("trt-fp16", "10.13.3.9", IMAGE, "10.14.1")
    with pytest.raises(TensorRTMismatch, match="has no TensorRT .*--images RELEASE"):
        check_served_engine("trt-fp16", "10.13.3.9", IMAGE, None)
    with pytest.raises(TensorRTMismatch, match=r"version that built the engine is unknown.*ships 10.13.3\)"):
        check_served_engine("trt-fp16", None, IMAGE, "10.13.3")
    with pytest.raises(TensorRTMismatch):
        check_served_engine("trt-fp16", "10.13", IMAGE, "10.13.3")  # too vague to vouch for an engine


class FakeRun:
    """engine.run_to_exit as a function: records each spec, answers with (state, output)."""

    def __init__(self, state: Optional[ExitState], output: str):
        self.answer = (state, output)
        self.specs: list[ContainerSpec] = []

    def __call__(self, spec: ContainerSpec, timeout_s: float) -> tuple[Optional[ExitState], str]:
        self.specs.append(spec)
        return self.answer


def test_the_image_is_asked_by_a_short_container_without_a_shell():
    run = FakeRun(ExitState(0, False, ""), NGC_LISTING)
    assert image_tensorrt(run, IMAGE, "run-1") == "10.13.3"
    (spec,) = run.specs
    assert spec.image == IMAGE and spec.gpus == "none" and spec.network == "none" and not spec.mounts
    assert spec.command == ["find", "/usr", "/opt", "-name", "libnvinfer.so.*"]
    assert spec.labels["org.nav-orch.run"] == "run-1"


def test_an_unreadable_folder_costs_nothing_once_the_library_is_found():
    denied = "find: '/opt/secret': Permission denied\n"
    assert image_tensorrt(FakeRun(ExitState(1, False, ""), NGC_LISTING + denied), IMAGE, "r") == "10.13.3"
    assert image_tensorrt(FakeRun(ExitState(0, False, ""), "\n"), IMAGE, "r") is None
    with pytest.raises(EnvironmentProblem, match=f"cannot look for libnvinfer.so.\\* in {IMAGE}: find: '/opt/"):
        image_tensorrt(FakeRun(ExitState(1, False, ""), denied), IMAGE, "r")
    with pytest.raises(EnvironmentProblem, match="no answer in 120 s"):
        image_tensorrt(FakeRun(None, ""), IMAGE, "r")
