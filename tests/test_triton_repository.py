"""Triton model repositories (no Docker): backend choice per artifact, config.pbtxt built through
the protobuf message and parsed back, the repository's layout."""
from __future__ import annotations

import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from orchestrator.results import VariantResult
from orchestrator.triton.repository import (
    NotServable,
    api_datatype,
    config_text,
    deployment_for,
    model_config,
    parse_config,
    read_config,
    write_model,
)
from runners.contract.protocol import IOSpec, LatencyStats, ProfileEntry, TensorSpec

IO = IOSpec(inputs=[TensorSpec("image", "float32", [None, 3, None, 224]), TensorSpec("mask", "int64", [None, 7])],
            outputs=[TensorSpec("logits", "float16", [None, 10]), TensorSpec("ok", "bool", [None])])
NATIVE_BACKENDS = {"onnxruntime", "pytorch", "tensorrt", "tensorflow", "python"}
# artifact file -> (format, native backend, platform), as the format registry says
ARTIFACTS = {
    "model.onnx": ("onnx", "onnxruntime", "onnxruntime_onnx"),
    "model.ts": ("torchscript-trace", "pytorch", "pytorch_libtorch"),
    "model.pt2": ("exported-program", None, None),
    "model.plan": ("tensorrt", "tensorrt", "tensorrt_plan"),  # Triton's platform name
    "savedmodel": ("savedmodel", "tensorflow", "tensorflow_savedmodel"),
}


def variant(tmp_path: Path, artifact: str, name: str = "v-fp32", fmt: str = "onnx") -> VariantResult:
    path = tmp_path / "variants" / name / artifact
    path.parent.mkdir(parents=True, exist_ok=True)
    if artifact == "savedmodel":
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"pb")
    else:
        path.write_bytes(b"weights")
    return VariantResult(name=name, format=fmt, precision="fp32", status="ok",
                         artifact=str(path.relative_to(tmp_path)))


@pytest.mark.parametrize("artifact", sorted(ARTIFACTS))
@pytest.mark.parametrize("backends", ["native", "python-only"])
def test_config_round_trips_through_the_protobuf_parser_for_every_format(tmp_path, artifact, backends):
    kind, native, platform = ARTIFACTS[artifact]
    available = NATIVE_BACKENDS if backends == "native" else {"python"}
    try:
        deployment = deployment_for(variant(tmp_path, artifact, fmt=kind), tmp_path, available)
    except NotServable as error:
        # Without their native backend, TensorRT engines and SavedModels have no Python fallback here.
        assert backends == "python-only" and kind in ("tensorrt", "savedmodel")
        assert "has no" in str(error)
        return
    for gpus in ([], ["0", "2"]):
        config = model_config(deployment, IO, max_batch_size=64, gpus=gpus)
        text = config_text(config)
        parsed = parse_config(text)
        assert parsed == config
        assert text_format.MessageToString(parsed) == text
        assert parsed.name == "v-fp32" and parsed.max_batch_size == 64
        if native and backends == "native":
            assert (parsed.backend, parsed.platform) == (native, platform)
        else:
            assert parsed.backend == "python" and not parsed.platform
            assert parsed.parameters["artifact"].string_value == Path(artifact).name
            assert parsed.parameters["precision"].string_value == "fp32"
        # The batch axis is implicit (max_batch_size > 0); other dynamic axes are -1. One value
        # per sample is dims [1] (Triton takes no empty dims), reshaped back to [batch].
        assert [list(i.dims) for i in parsed.input] == [[3, -1, 224], [7]]
        assert [i.data_type for i in parsed.input] == [mc.TYPE_FP32, mc.TYPE_INT64]
        assert [list(o.dims) for o in parsed.output] == [[10], [1]]
        assert [o.HasField("reshape") for o in parsed.output] == [False, True]
        assert not parsed.output[1].reshape.shape
        assert [o.data_type for o in parsed.output] == [mc.TYPE_FP16, mc.TYPE_BOOL]
        assert parsed.HasField("dynamic_batching")
        (group,) = parsed.instance_group
        if gpus:
            assert group.kind == mc.ModelInstanceGroup.KIND_GPU and group.count == 1 and not group.gpus
        else:
            assert group.kind == mc.ModelInstanceGroup.KIND_CPU and group.count == 1


@pytest.mark.parametrize("gpus", [["2"], ["0", "2"], ["3", "1"]])
def test_gpu_instances_name_no_host_index(tmp_path, gpus):
    # `docker run --gpus device=0,2` shows the server GPUs 0 and 1; a host index such as 2 or 3
    # is a GPU Triton cannot see. Without `gpus` Triton puts `count` instances on each GPU it sees.
    deployment = deployment_for(variant(tmp_path, "model.plan", fmt="tensorrt"), tmp_path, NATIVE_BACKENDS)
    folder = write_model(tmp_path / "repository", deployment, IO, 8, gpus)
    text = (folder / "config.pbtxt").read_text()
    (group,) = parse_config(text).instance_group
    assert (group.kind, group.count, list(group.gpus)) == (mc.ModelInstanceGroup.KIND_GPU, 1, [])
    assert "gpus" not in text


def test_pytorch_backend_names_outputs_by_position(tmp_path):
    deployment = deployment_for(variant(tmp_path, "model.ts", fmt="torchscript-trace"), tmp_path, {"pytorch"})
    config = model_config(deployment, IO, 8, [])
    assert [i.name for i in config.input] == ["image", "mask"]
    assert [o.name for o in config.output] == ["logits__0", "ok__1"]


# Models Triton cannot batch along axis 0: served with max_batch_size 0 and their full shapes.
UNBATCHED = {
    "batch axis 1": IOSpec(inputs=[TensorSpec("x", "float32", [5, None])], outputs=[TensorSpec("y", "float32", [None])],
                           batch_axis=1),
    "fixed-shape graph": IOSpec(inputs=[TensorSpec("x", "float32", [1, 16])],
                                outputs=[TensorSpec("y", "float32", [1, 4])]),
    "scalars": IOSpec(inputs=[TensorSpec("x", "float32", [None, 3]), TensorSpec("t", "float32", [])],
                      outputs=[TensorSpec("y", "float32", [None, 3]), TensorSpec("loss", "float32", [])]),
}


@pytest.mark.parametrize("case", sorted(UNBATCHED))
@pytest.mark.parametrize("backends", [{"python"}, {"onnxruntime"}])
def test_a_model_without_a_batch_axis_is_served_unbatched(tmp_path, case, backends):
    io = UNBATCHED[case]
    deployment = deployment_for(variant(tmp_path, "model.onnx"), tmp_path, backends)
    config = model_config(deployment, io, 8, [])
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    # Full shapes, -1 where dynamic; a scalar is [1] (never empty dims, and no empty reshape
    # without batching, which Triton refuses).
    full = {"batch axis 1": [[5, -1], [-1]], "fixed-shape graph": [[1, 16], [1, 4]],
            "scalars": [[-1, 3], [1], [-1, 3], [1]]}[case]
    assert [list(t.dims) for t in [*config.input, *config.output]] == full
    assert not any(t.HasField("reshape") for t in [*config.input, *config.output])
    # text_format drops a zero; the file still says the model is unbatched, and parses back.
    text = config_text(config)
    assert "max_batch_size: 0" in text.splitlines() and "dynamic_batching" not in text
    assert parse_config(text) == config
    # The Python backend learns which inputs the model takes as scalars.
    scalars = config.parameters["scalars"].string_value if "scalars" in config.parameters else None
    assert scalars == ('["t"]' if case == "scalars" and "python" in backends else None)


def test_no_batch_size_asked_for_means_unbatched(tmp_path):
    deployment = deployment_for(variant(tmp_path, "model.onnx"), tmp_path, {"python"})
    assert model_config(deployment, IO, 0, []).max_batch_size == 0
    assert "max_batch_size: 64" in config_text(model_config(deployment, IO, 64, []))


def test_runtimes_and_missing_artifacts_are_not_servable(tmp_path):
    compiled = variant(tmp_path, "compiled", name="torch-compile-fp32", fmt="torch-compile")
    with pytest.raises(NotServable, match="compiled from its source where it runs .*: no program a server could"):
        deployment_for(compiled, tmp_path, NATIVE_BACKENDS)
    gone = variant(tmp_path, "model.onnx", name="gone")
    (tmp_path / gone.artifact).unlink()
    with pytest.raises(NotServable, match="missing from the workspace"):
        deployment_for(gone, tmp_path, NATIVE_BACKENDS)
    with pytest.raises(NotServable, match="no python backend"):
        deployment_for(variant(tmp_path, "model.pt2", name="ep", fmt="exported-program"), tmp_path, {"onnxruntime"})


def test_write_model_lays_out_a_readable_repository(tmp_path):
    repository = tmp_path / "triton" / "model_repository"
    repository.mkdir(parents=True, mode=0o700)
    python = deployment_for(variant(tmp_path, "model.pt2", name="ep-fp32", fmt="exported-program"), tmp_path,
                             {"python"})
    native = deployment_for(variant(tmp_path, "model.onnx", name="onnx-fp32"), tmp_path, {"onnxruntime"})
    for deployment in (python, native):
        write_model(repository, deployment, IO, 16, [])
    assert sorted(p.name for p in (repository / "ep-fp32" / "1").iterdir()) == [
        "model.pt2", "model.py", "structure.py", "variant_loader.py"]
    assert sorted(p.name for p in (repository / "onnx-fp32" / "1").iterdir()) == ["model.onnx"]
    assert (repository / "ep-fp32" / "1" / "model.py").read_text().startswith('"""Triton Python-backend model')
    assert read_config(repository, "ep-fp32").parameters["loader"].string_value == "exported-program"
    assert read_config(repository, "missing") is None
    for path in [repository, *repository.rglob("*")]:
        mode = path.stat().st_mode
        assert mode & stat.S_IROTH and (not path.is_dir() or mode & stat.S_IXOTH), path
    # Rewriting replaces the folder, with nothing stale left.
    (repository / "onnx-fp32" / "1" / "stale.txt").write_text("x")
    write_model(repository, native, IO, 16, [])
    assert not (repository / "onnx-fp32" / "1" / "stale.txt").exists()


def test_the_python_model_loads_with_nothing_of_nav_orch_but_its_loader_beside_it(tmp_path):
    """Triton's Python backend imports model.py from the version folder: with runners/ out of reach,
    it finds the loader copied beside it."""
    repository = tmp_path / "repository"
    deployment = deployment_for(variant(tmp_path, "model.onnx"), tmp_path, {"python"})
    version = write_model(repository, deployment, IO, 16, []) / "1"
    code = ("import sys; sys.modules['runners'] = None; sys.path.insert(0, sys.argv[1]); import model, variant_loader; "
            "print(model.arrays_in.__code__.co_filename, variant_loader.output_leaves.__code__.co_filename)")
    found = subprocess.run([sys.executable, "-c", code, str(version)], capture_output=True, text=True, check=True,
                           cwd=tmp_path).stdout.split()
    assert found == [str(version / "variant_loader.py"), str(version / "structure.py")]


def test_a_compiled_variant_with_its_program_is_served_and_warmed_at_its_batch_sizes(tmp_path):
    folder = tmp_path / "variants" / "torch-compile-fp32" / "compiled"
    folder.mkdir(parents=True)
    for name in ("program.pt2", "options.json"):
        (folder / name).write_bytes(b"x")
    entry = ProfileEntry(batch_size=4, latency_ms=LatencyStats(1, 1, 1, 1, 1), throughput=1.0, windows=1, stable=True)
    compiled = VariantResult(name="torch-compile-fp32", format="torch-compile", precision="fp32", status="ok",
                             artifact="variants/torch-compile-fp32/compiled",
                             profile=[replace(entry, batch_size=size) for size in (4, 1)])
    deployment = deployment_for(compiled, tmp_path, {"python"})
    assert (deployment.backend, deployment.warmup, deployment.file) == ("python", (1, 4), "compiled")
    parameters = {k: v.string_value for k, v in model_config(deployment, IO, 4, []).parameters.items()}
    assert (parameters["loader"], parameters["warmup"]) == ("torch-compile", "[1, 4]")
    version = write_model(tmp_path / "repository", deployment, IO, 4, []) / "1"
    assert sorted(p.name for p in (version / "compiled").iterdir()) == ["options.json", "program.pt2"]


def test_api_datatypes():
    assert api_datatype(mc.TYPE_FP32) == "FP32"
    assert api_datatype(mc.TYPE_INT64) == "INT64"
    assert api_datatype(mc.TYPE_STRING) == "BYTES"
