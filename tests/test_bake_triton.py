"""The Triton images in docker-bake.hcl, and targets built FROM other targets (no Docker)."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.containers.bake import BakeError, load_bake_file
from orchestrator.triton import stage as triton_stage

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def bake(monkeypatch):
    bake = load_bake_file(ROOT / "docker-bake.hcl")
    for name in bake.variables:
        monkeypatch.delenv(name, raising=False)
    return bake


def test_triton_cpu_builds_after_the_runner_image_it_starts_from(bake):
    assert bake.build_order(bake.target_names("cpu")).index("pytorch-cpu") < \
        bake.build_order(bake.target_names("cpu")).index("triton-cpu")
    # Asked alone, it brings its base along (as buildx bake does with target: contexts).
    assert bake.build_order(["triton-cpu"]) == ["pytorch-cpu", "triton-cpu"]
    (target,) = bake.select("triton-cpu")
    assert target.contexts == {"nav-orch/pytorch:cpu": "target:pytorch-cpu"}
    assert target.args["BASE_IMAGE"] == "nav-orch/pytorch:cpu" == bake.select("pytorch-cpu")[0].tags[0]
    assert target.tags == list(dict.fromkeys(triton_stage.triton_images("cpu")))  # server and perf_analyzer
    assert target.labels["org.nav-orch.tensorrt"] == "none"  # the guard then refuses to serve plans
    assert target.labels["org.nav-orch.triton-backends"] == "python"
    assert (bake.root / target.context / target.dockerfile).is_file()


def test_triton_cpu_labels_follow_what_it_is_built_with(bake):
    (target,) = bake.select("triton-cpu", {"PERF_ANALYZER_CLIENT_VERSION": "9.1.0",
                                           "TRITON_CPU_SERVER_VERSION": "9.2.0", "TORCH_CPU_VERSION": "9.3.0"})
    assert target.args["PERF_ANALYZER_CLIENT_VERSION"] == target.labels["org.nav-orch.perf-analyzer"] == "9.1.0"
    assert target.labels["org.nav-orch.tritonserver"] == "9.2.0"
    # The Python backend runs the runner image's torch: the label is that image's.
    (base,) = bake.select("pytorch-cpu", {"TORCH_CPU_VERSION": "9.3.0"})
    assert target.labels["org.nav-orch.torch"] == base.labels["org.nav-orch.torch"] == "9.3.0"


def test_cuda_triton_images_follow_the_ngc_release(bake):
    server, sdk = bake.select(["triton", "triton-sdk"], {"NGC_RELEASE": "26.01", "NGC_TENSORRT_VERSION": "10.14.1"})
    assert server.args["BASE_IMAGE"] == "nvcr.io/nvidia/tritonserver:26.01-py3"
    assert sdk.args["BASE_IMAGE"] == "nvcr.io/nvidia/tritonserver:26.01-py3-sdk"
    assert (server.tags[0], sdk.tags[0]) == triton_stage.triton_images("26.01")
    # The TensorRT guard compares the server's label with the one of the image that built a plan.
    (builder,) = bake.select("pytorch-cuda", {"NGC_RELEASE": "26.01", "NGC_TENSORRT_VERSION": "10.14.1"})
    assert server.labels["org.nav-orch.tensorrt"] == sdk.labels["org.nav-orch.tensorrt"] == \
        builder.labels["org.nav-orch.tensorrt"] == "10.14.1"
    for target in (server, sdk):
        assert (bake.root / target.context / target.dockerfile).is_file()
        assert target.labels["org.nav-orch.flavor"] == "cuda"


def test_contexts_cycles_and_unknown_targets_are_errors(tmp_path):
    path = tmp_path / "docker-bake.hcl"
    path.write_text('target "a" {\n  contexts = {\n    "b:x" = "target:b"\n  }\n}\n'
                    'target "b" {\n  contexts = {\n    "a:x" = "target:a"\n  }\n}\n'
                    'target "c" {\n  contexts = {\n    "z:x" = "target:zz"\n  }\n}\n')
    bake = load_bake_file(path)
    with pytest.raises(BakeError, match="builds from itself"):
        bake.build_order(["a"])
    with pytest.raises(BakeError, match="'zz', which is no target"):
        bake.build_order(["c"])
