"""The TensorRT version guard without TensorRT: the server image's version read from a listing of
its libnvinfer files (the short container replaced by a fake), the decision whether the server can
load an engine, and which artifacts hold engines (a Torch-TensorRT TorchScript file is read for them,
crafted here as Torch-TensorRT 2.9 writes one)."""
from __future__ import annotations

import base64
import io
import os
import pickle
import pickletools
import struct
import zipfile
from pathlib import Path
from typing import Optional

import pytest

from orchestrator.containers.engine import ContainerSpec, ExitState
from orchestrator.errors import EnvironmentProblem
from orchestrator.run.untrusted import UntrustedOutput
from orchestrator.triton.stage import image_tensorrt
from orchestrator.triton.tensorrt_guard import (
    TORCH_TENSORRT_ENGINE,
    TensorRTMismatch,
    check_served_engine,
    embeds_engines,
    serves_engines,
    stream_names,
    tensorrt_in_listing,
)
from runners.contract.formats import FORMATS

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
    with pytest.raises(TensorRTMismatch, match="holds a TensorRT engine, but .* has no TensorRT .*--images RELEASE"):
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


# --- which artifacts hold engines ------------------------------------------------------------------

def binunicode(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def engine_pickle(engines: int) -> bytes:
    """data.pkl of a traced Torch-TensorRT module as TorchScript's pickler writes it (protocol 2): the
    module's state, in which each engine is a `__torch__.torch.classes.tensorrt.Engine` object (the
    class named once, then by its memo entry) whose state is Torch-TensorRT 2.9's list of strings:
    ABI version "7", name, device, the engine in base64, bindings, hardware compatibility, metadata,
    target platform, output allocator."""
    out = [b"\x80\x02c__torch__.torch.fx.graph_module\nGraphModule\nq\x00)\x81}(", binunicode("training"), b"\x89"]
    for index in range(engines):
        out.append(binunicode(f"_run_on_acc_{index}"))
        out.append(b"c" + TORCH_TENSORRT_ENGINE + b"q\x01" if index == 0 else b"h\x01")
        out.append(b")\x81](")
        state = ["7", f"_run_on_acc_{index}_engine", "0%8%9%0%NVIDIA H100 80GB HBM3",
                 base64.b64encode(b"ftrt" + bytes(range(256)) * 4).decode(), "x", "output0", "0",
                 base64.b64encode(pickle.dumps({"settings": None})).decode(), "linux_x86_64", "0"]
        out += [binunicode(field) for field in state]
        out.append(b"eb")  # APPENDS, BUILD
    out.append(b"u.")  # SETITEMS, STOP
    return b"".join(out)


def torchscript_file(path: Path, engines: int) -> Path:
    """A TorchScript archive: its pickles, code and tensors as torch.jit.save lays them out (stored)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("model/data.pkl", engine_pickle(engines))
        archive.writestr("model/constants.pkl", b"\x80\x02).")
        archive.writestr("model/code/__torch__/torch/fx/graph_module.py", "def forward(self, x): ...\n")
        archive.writestr("model/data/0", b"\x00" * 64)
        archive.writestr("model/version", "3\n")
    return path


@pytest.mark.parametrize("engines", [0, 1, 3])
def test_the_crafted_pickle_is_one_pythons_pickletools_reads_whole(engines):
    ops = [op.name for op, _, _ in pickletools.genops(engine_pickle(engines))]
    assert ops[-1] == "STOP" and ops.count("NEWOBJ") == engines + 1 and ops.count("BUILD") == engines


def test_a_torch_tensorrt_file_with_engines_is_guarded_and_one_without_is_not(tmp_path):
    with_engines = torchscript_file(tmp_path / "engines.ts", engines=2)
    all_torch = torchscript_file(tmp_path / "torch.ts", engines=0)  # every part of the graph fell back to torch
    fmt = FORMATS["torch-tensorrt"]
    assert embeds_engines(tmp_path, with_engines) and serves_engines(fmt, tmp_path, with_engines)
    assert not embeds_engines(tmp_path, all_torch) and not serves_engines(fmt, tmp_path, all_torch)


def test_a_plan_is_always_guarded_and_a_format_without_engines_never(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not read")
    assert serves_engines(FORMATS["tensorrt"], tmp_path, plan)
    assert not serves_engines(FORMATS["torchscript-trace"], tmp_path, torchscript_file(tmp_path / "m.ts", 1))


@pytest.mark.parametrize("content", [b"", b"weights", b"PK\x03\x04 cut short"])
def test_a_file_that_cannot_be_read_counts_as_holding_engines(tmp_path, content):
    path = tmp_path / "model.ts"
    path.write_bytes(content)
    assert embeds_engines(tmp_path, path)


def test_a_pickle_too_large_to_tell_counts_as_holding_engines_and_the_class_is_found_across_chunks():
    data = engine_pickle(1)
    at = data.index(TORCH_TENSORRT_ENGINE)
    # Chunks of 7 bytes: the class name always spans two of them.
    assert stream_names(io.BytesIO(data), TORCH_TENSORRT_ENGINE, chunk=7) is True
    assert stream_names(io.BytesIO(engine_pickle(0)), TORCH_TENSORRT_ENGINE, chunk=7) is False
    assert stream_names(io.BytesIO(data), TORCH_TENSORRT_ENGINE, max_bytes=at) is None
    assert stream_names(io.BytesIO(b"abc"), TORCH_TENSORRT_ENGINE, max_bytes=3) is False  # read whole


def test_a_runners_link_is_never_followed(tmp_path):
    torchscript_file(tmp_path / "host.ts", engines=0)
    link = tmp_path / "variants" / "model.ts"
    link.parent.mkdir()
    os.symlink(tmp_path / "host.ts", link)
    with pytest.raises(UntrustedOutput, match="symbolic link"):
        embeds_engines(tmp_path, link)
