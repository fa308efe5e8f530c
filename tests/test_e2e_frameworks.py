"""`nav-orch optimize` end to end for TensorFlow 2 / Keras and JAX models: real CPU images
(nav-orch/tensorflow:cpu, nav-orch/jax:cpu), real containers."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from conftest import E2E_BATCH_SIZES, EXAMPLES, assert_verified_and_profiled, read_results, write_two_input_samples
from conftest import optimize_cpu as optimize

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cpu_images", "no_leftovers")]


def assert_savedmodel_and_onnx_ok(workspace, results):
    assert results["state"] == "complete"
    by_format = {v["format"]: v for v in results["variants"]}
    assert set(by_format) == {"savedmodel", "onnx"}  # CPU defaults: TensorRT and TF-TRT need a GPU
    for variant in by_format.values():
        assert_verified_and_profiled(variant)
    assert (workspace / by_format["savedmodel"]["artifact"] / "saved_model.pb").is_file()
    assert (workspace / by_format["onnx"]["artifact"]).is_file()
    assert results["best"] in {"savedmodel-fp32", "onnx-fp32"}
    assert results["selection"]["batch_size"] in E2E_BATCH_SIZES
    return by_format


def test_keras_factory_savedmodel_and_onnx_verified_profiled_best_chosen(tmp_path):
    workspace = tmp_path / "ws"
    run = optimize(workspace, f"{EXAMPLES}/keras_mlp.py:make_keras_mlp", "--input", "features:8,64:float32")
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    assert results == read_results(workspace)
    assert_savedmodel_and_onnx_ok(workspace, results)
    image = results["environment"]["images"][0]
    assert image["tag"] == "nav-orch/tensorflow:cpu"
    assert image["versions"]["tensorflow"] == "2.21.0" and image["versions"]["tf2onnx"] == "1.17.0"
    assert "tensorrt" not in image["versions"]
    # The reference names the output after the Keras model's output layer.
    with np.load(workspace / "reference" / "reference.npz") as reference:
        assert reference.files == ["logits"] and reference["logits"].shape == (8, 10)
    assert "best:" in run.stderr


def test_keras_two_heads_then_its_savedmodel_folder_as_the_model(tmp_path):
    samples = write_two_input_samples(tmp_path / "samples.npz")  # keyed mask, image: matched by name
    first = tmp_path / "ws-factory"
    run = optimize(first, f"{EXAMPLES}/keras_mlp.py:make_keras_two_heads", "--samples", str(samples))
    assert run.returncode == 0, run.stderr
    by_format = assert_savedmodel_and_onnx_ok(first, read_results(first))
    for variant in by_format.values():
        assert set(variant["verification"]["outputs"]) == {"scores", "embedding"}

    # The SavedModel that run exported is a model nav-orch takes as it is (a folder MODEL).
    exported = first / by_format["savedmodel"]["artifact"]
    second = tmp_path / "ws-savedmodel"
    run = optimize(second, str(exported), "--samples", str(samples))
    assert run.returncode == 0, run.stderr
    assert_savedmodel_and_onnx_ok(second, read_results(second))
    with np.load(first / "reference" / "reference.npz") as a, np.load(second / "reference" / "reference.npz") as b:
        assert sorted(a.files) == sorted(b.files) == ["embedding", "scores"]
        for name in a.files:  # the folder's outputs are the factory model's, by name
            np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6)


def test_jax_function_savedmodel_and_onnx_verified_profiled_best_chosen(tmp_path):
    workspace = tmp_path / "ws"
    run = optimize(workspace, f"{EXAMPLES}/jax_mlp.py:make_jax_mlp", "--input", "x:8,64:float32")
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    assert_savedmodel_and_onnx_ok(workspace, results)
    image = results["environment"]["images"][0]
    assert image["tag"] == "nav-orch/jax:cpu"
    assert image["versions"]["jax"] == "0.5.3" and image["versions"]["tensorflow"] == "2.21.0"
    with np.load(workspace / "reference" / "reference.npz") as reference:
        assert reference.files == ["output"] and reference["output"].shape == (8, 10)


@pytest.mark.parametrize("model, sample", [
    ("keras_mlp.py:make_keras_mlp", "features:4,64:float32"),
    ("jax_mlp.py:make_jax_mlp", "x:4,64:float32"),
])
def test_tensorrt_and_tf_trt_skipped_on_cpu_images_with_reason(tmp_path, model, sample):
    workspace = tmp_path / "ws"
    run = optimize(workspace, f"{EXAMPLES}/{model}", "--input", sample, "--formats", "tensorrt,tf-trt")
    assert run.returncode == 1, run.stderr  # nothing could be built: no variant to choose
    results = read_results(workspace)
    by_format = {v["format"]: v for v in results["variants"]}
    assert set(by_format) == {"tensorrt", "tf-trt"}
    for variant in by_format.values():
        assert variant["status"] == "skipped"
        assert "TensorRT" in variant["error"] or "GPU" in variant["error"], variant["error"]
    assert results["best"] is None


def test_a_keras_file_is_a_model_too(tmp_path):
    """A `.keras` file, written by Keras itself in the TensorFlow image (the host has no Keras)."""
    tmp_path.chmod(0o777)  # the image's user writes the file
    save = ("import sys; sys.path.insert(0, '/examples'); from keras_mlp import make_keras_mlp; "
            "make_keras_mlp().save('/out/mlp.keras')")
    made = subprocess.run(["docker", "run", "--rm", "--network", "none", "-v", f"{EXAMPLES}:/examples:ro",
                           "-v", f"{tmp_path}:/out", "nav-orch/tensorflow:cpu", "python", "-c", save],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    (tmp_path / "mlp.keras").chmod(0o644)
    workspace = tmp_path / "ws"
    run = optimize(workspace, str(tmp_path / "mlp.keras"), "--input", "features:8,64:float32")
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    assert_savedmodel_and_onnx_ok(workspace, results)
    assert results["environment"]["images"][0]["tag"] == "nav-orch/tensorflow:cpu"
