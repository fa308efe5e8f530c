"""ONNX files as MODEL, the TensorRT formats where TensorRT is missing, and `nav-orch profile`,
end to end: real CPU images, real containers, real ONNX Runtime."""
from __future__ import annotations

import json
import shutil

import pytest
from conftest import EXAMPLES, assert_profiled, read_results
from conftest import optimize_cpu as optimize
from conftest import run_cpu as run

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cpu_images", "no_leftovers")]
MLP_INPUT = "input:8,64:float32"


def error_lines(result):
    """The lines nav-orch wrote as errors (the rest of stderr is progress), after checking for tracebacks."""
    assert "Traceback" not in result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("nav-orch:")]


def assert_skipped_for_tensorrt(variant):
    assert variant["status"] == "skipped", variant
    assert "TensorRT" in variant["error"] and "not installed" in variant["error"], variant["error"]


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory, cpu_images):
    """A folder holding the bundled MLP as an ONNX file, exported by nav-orch itself."""
    exported = tmp_path_factory.mktemp("mlp-export")
    made = optimize(exported / "ws", f"{EXAMPLES}/mlp.py:make_mlp", "--input", MLP_INPUT, "--formats", "onnx")
    assert made.returncode == 0, made.stderr
    folder = tmp_path_factory.mktemp("onnx-model")
    shutil.copyfile(exported / "ws" / "variants" / "onnx-fp32" / "model.onnx", folder / "mlp.onnx")
    return folder


def test_onnx_file_is_verified_profiled_and_chosen_and_tensorrt_is_skipped_on_cpu(onnx_dir, tmp_path):
    workspace = tmp_path / "ws"
    result = optimize(workspace, str(onnx_dir / "mlp.onnx"), "--input", MLP_INPUT, "--formats", "onnx,tensorrt")
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    assert results == read_results(workspace) and results["state"] == "complete"
    by_name = {v["name"]: v for v in results["variants"]}
    assert set(by_name) == {"onnx-fp32", "tensorrt-fp32"}
    onnx = by_name["onnx-fp32"]
    assert onnx["status"] == "ok", onnx["error"]
    assert onnx["verification"]["passed"] is True
    assert list(onnx["verification"]["outputs"]) == ["output"]  # named by the graph's outputs
    assert_profiled(onnx)
    assert (workspace / onnx["artifact"]).read_bytes() == (onnx_dir / "mlp.onnx").read_bytes()
    assert_skipped_for_tensorrt(by_name["tensorrt-fp32"])
    assert results["best"] == "onnx-fp32"
    image = results["environment"]["images"][0]
    assert image["tag"] == "nav-orch/pytorch:cpu" and image["versions"]["onnxruntime"]


def test_samples_that_do_not_fit_the_onnx_graph_are_one_clear_line(onnx_dir, tmp_path):
    result = optimize(tmp_path / "ws", str(onnx_dir / "mlp.onnx"), "--input", "input:8,64:float64")
    assert result.returncode == 2
    [error] = error_lines(result)
    assert "input 'input': the model takes float32, the samples hold float64" in error


def test_corrupt_onnx_file_is_bad_input_in_one_line(tmp_path):
    corrupt = tmp_path / "broken.onnx"
    corrupt.write_bytes(b"\x08\x07this is not a protobuf of an ONNX model\xff\xfe")
    result = optimize(tmp_path / "ws", str(corrupt), "--input", "x:2,3:float32")
    assert result.returncode == 2, result.stderr
    [error] = error_lines(result)
    assert "the source model failed on the samples: ValueError: broken.onnx is not a loadable ONNX model" in error
    assert "/nav/io" not in error  # no container paths
    assert read_results(tmp_path / "ws")["state"] == "failed"


def test_torch_model_tensorrt_formats_are_skipped_with_reasons(tmp_path):
    workspace = tmp_path / "ws"
    result = optimize(workspace, f"{EXAMPLES}/mlp.py:make_mlp", "--input", MLP_INPUT,
                      "--formats", "torch-tensorrt,tensorrt")
    assert result.returncode == 1, result.stderr  # nothing could run: no best variant
    by_format = {v["format"]: v for v in read_results(workspace)["variants"]}
    assert set(by_format) == {"torch-tensorrt", "tensorrt"}
    for variant in by_format.values():
        assert_skipped_for_tensorrt(variant)
        assert variant["profile"] == []


def test_profile_a_numpy_function(tmp_path):
    workspace = tmp_path / "ws"
    result = run("profile", workspace, f"{EXAMPLES}/numpy_function.py:predict", "--input", "x:4,16:float32")
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    assert results == read_results(workspace) and results["state"] == "complete"
    [variant] = results["variants"]
    assert (variant["name"], variant["format"], variant["status"]) == ("python-function", "python", "ok")
    assert variant["verification"] is None and variant["artifact"] is None
    assert_profiled(variant)
    assert results["best"] == "python-function" and results["triton"] is None
    assert results["environment"]["images"][0]["tag"] == "nav-orch/pytorch:cpu"


def test_profile_of_a_failing_function_exits_1_with_its_error(tmp_path):
    source = tmp_path / "fails.py"
    source.write_text("def fn(x):\n    raise ValueError('cannot handle this input')\n")
    result = run("profile", tmp_path / "ws", f"{source}:fn", "--input", "x:2,3:float32")
    assert result.returncode == 1
    [variant] = read_results(tmp_path / "ws")["variants"]
    assert variant["status"] == "failed"
    assert variant["error"] == "profile: ValueError: cannot handle this input"
